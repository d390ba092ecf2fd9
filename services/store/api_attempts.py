"""Every HTTP attempt at the API and what it cost: the ledger budgets and stats sum."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import Date, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from services.store.columns import as_utc
from services.store.engine import Writer
from services.store.prepared import execute
from services.store.records import ApiAttemptRecord, NewApiAttempt
from services.store.schema import api_attempts

#: Built once: building it cost more CPU than running it (issue 10).
_INSERT = api_attempts.insert().returning(*api_attempts.c)


async def add_attempt(
    conn: AsyncConnection, attempt: NewApiAttempt, created_at: datetime
) -> ApiAttemptRecord:
    """One row of the ledger, in the caller's write transaction (alone, or with the answer it
    paid for: ``JobQueueRepository.answered``)."""
    values = attempt.model_dump() | {"created_at": created_at}
    result = await execute(conn, _INSERT, values)
    return ApiAttemptRecord.model_validate(result.one()._asdict())


class ApiAttemptRepository:
    """The ``api_attempts`` table. Rows are only ever added."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write: Writer,
        now: Callable[[datetime | None], datetime],
    ) -> None:
        self._engine = engine
        self._write = write
        self._now = now

    async def record(
        self, attempt: NewApiAttempt, *, created_at: datetime | None = None
    ) -> ApiAttemptRecord:
        async with self._write() as conn:
            return await add_attempt(conn, attempt, self._now(created_at))

    async def for_generation(self, generation_id: int) -> list[ApiAttemptRecord]:
        query = (
            select(api_attempts)
            .where(api_attempts.c.generation_id == generation_id)
            .order_by(api_attempts.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ApiAttemptRecord.model_validate(row._asdict()) for row in rows]

    async def spent(
        self,
        conn: AsyncConnection | None = None,
        *,
        since: datetime,
        guild_id: int | None = None,
        user_id: int | None = None,
    ) -> int:
        """Nano-dollars spent since ``since`` (optionally in one guild / by one member)."""
        query = self._scoped(
            select(func.coalesce(func.sum(api_attempts.c.usd_nanos), 0)), since, guild_id, user_id
        )
        if conn is not None:
            return int((await conn.execute(query)).scalar_one())
        async with self._engine.connect() as own:
            return int((await own.execute(query)).scalar_one())

    async def daily(self, *, since: datetime, guild_id: int | None = None) -> dict[date, int]:
        """Spend per UTC day since ``since``: the chart's bars."""
        day = self._utc_day()
        query = self._scoped(
            select(day, func.sum(api_attempts.c.usd_nanos)), since, guild_id, None
        ).group_by(day)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {_as_date(row[0]): int(row[1]) for row in rows}

    async def totals(
        self, *, since: datetime, guild_id: int | None = None, by: Literal["user_id", "model"]
    ) -> list[tuple[Any, int, int]]:
        """``(key, nano-dollars, billed answers)`` per ``by`` (``"user_id"`` or ``"model"``),
        most spent first."""
        key = api_attempts.c[by]
        answered = func.sum(case((api_attempts.c.outcome == "ok", 1), else_=0))
        spend = func.sum(api_attempts.c.usd_nanos)
        query = (
            self._scoped(select(key, spend, answered), since, guild_id, None)
            .group_by(key)
            .order_by(spend.desc(), key)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row[0], int(row[1] or 0), int(row[2] or 0)) for row in rows]

    def _scoped(
        self, query: Any, since: datetime, guild_id: int | None, user_id: int | None
    ) -> Any:
        query = query.select_from(api_attempts).where(api_attempts.c.created_at >= as_utc(since))
        if guild_id is not None:
            query = query.where(api_attempts.c.guild_id == guild_id)
        if user_id is not None:
            query = query.where(api_attempts.c.user_id == user_id)
        return query

    def _utc_day(self) -> ColumnElement[Any]:
        """The UTC day of ``created_at``: SQLite keeps UTC text, PostgreSQL a timestamptz."""
        if self._engine.dialect.name == "postgresql":
            return cast(func.timezone("UTC", api_attempts.c.created_at), Date)
        return func.substr(api_attempts.c.created_at, 1, 10)


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
