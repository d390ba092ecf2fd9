"""The store: one per process; it opens the database, migrates it, and hands out repositories."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.clock import utc_now
from services.store.api_attempts import ApiAttemptRepository
from services.store.budgets import BudgetRepository
from services.store.columns import as_utc
from services.store.engine import WRITE, make_engine
from services.store.generations import GenerationRepository
from services.store.guild_settings import GuildSettingsRepository
from services.store.job_queue import JobQueueRepository
from services.store.meta import MetaRepository
from services.store.migrations import migrate
from services.store.prepared import execute
from services.store.workers import WorkerRepository

Clock = Callable[[], datetime]
#: PostgreSQL advisory lock key held by an admission that checks budgets ("fluxbud$" in ASCII).
_ADMISSION_LOCK = int.from_bytes(b"fluxbud$", "big")
_TAKE_ADMISSION_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


class Store:
    """All persistence for the bot: ``store.generations``, ``store.guild_settings``,
    ``store.meta``, ``store.api_attempts``, ``store.budgets``, ``store.queue``,
    ``store.workers``. Open with ``await Store.open(url)``; close with ``close()`` or
    ``async with``.
    """

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        """Wrap an engine whose schema is already current; ``Store.open`` is the usual way in."""
        self._engine = engine
        self._writer = engine.execution_options(**WRITE)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._clock = clock
        # SQLite has one writer at a time and its busy handler polls with sleeps of up to 100 ms;
        # queueing our own writers here is fairer and faster. Other processes still get the
        # busy timeout. PostgreSQL needs no such thing.
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        # Each of its writes is one statement (or joins the caller's transaction).
        self.generations = GenerationRepository(engine, write=self._write_one, now=self._now)
        self.guild_settings = GuildSettingsRepository(engine, write=self._write, now=self._now)
        self.meta = MetaRepository(engine, write=self._write)
        self.api_attempts = ApiAttemptRepository(engine, write=self._write, now=self._now)
        self.budgets = BudgetRepository(engine, write=self._write, now=self._now)
        self.queue = JobQueueRepository(engine, write=self._write, now=self._now)
        self.workers = WorkerRepository(engine, write=self._write, now=self._now)

    @classmethod
    async def open(cls, url: str, *, clock: Clock = utc_now) -> Self:
        """Connect, create or upgrade the schema, and return a ready store."""
        engine = make_engine(url)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, clock=clock)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: after this process's earlier writers, then ``BEGIN IMMEDIATE``."""
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _write_one(self) -> AsyncIterator[AsyncConnection]:
        """A write of one statement, which is a transaction by itself: PostgreSQL runs it in
        autocommit, one round trip instead of three (``BEGIN``, it, ``COMMIT``); SQLite as any
        write (the lock is taken up front either way)."""
        if self._engine.dialect.name != "postgresql":
            async with self._write() as conn:
                yield conn
            return
        async with self._autocommit.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction in which no other admission, in any process, runs meanwhile.

        What is read in it (spend, reservations) stays true until it commits, so a budget check
        and the job it lets in are one step. SQLite: ``BEGIN IMMEDIATE`` already excludes every
        other writer. PostgreSQL: a transaction-scoped advisory lock that every admission takes;
        its reads, made after the lock (READ COMMITTED), see every admission committed before.
        """
        async with self._write() as conn:
            if conn.dialect.name == "postgresql":
                await execute(conn, _TAKE_ADMISSION_LOCK, {"key": _ADMISSION_LOCK})
            yield conn

    def _now(self, value: datetime | None = None) -> datetime:
        return as_utc(self._clock() if value is None else value)
