"""Database URLs and the engine: the one place that knows SQLite and PostgreSQL differ at connect.

SQLAlchemy async Core over aiosqlite; PostgreSQL (asyncpg) is a ``DATABASE_URL`` change.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import Connection, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

#: SQLite waits this long for another writer's lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Execution options of a write transaction: ``BEGIN IMMEDIATE`` on SQLite (see ``make_engine``).
WRITE = {"fluxbot_begin": "IMMEDIATE"}
#: Execution options of a read of one statement, which needs no transaction around it
#: (SQLite; PostgreSQL uses autocommit): see :func:`single_reads`.
_NO_BEGIN = {"fluxbot_begin": None}
#: Opens a write transaction (the ``Store`` queues its own writers first on SQLite).
Writer = Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]]


def normalise_database_url(url: str) -> str:
    """Map the accepted ``DATABASE_URL`` forms to an async driver URL.

    A relative SQLite path is resolved against the working directory now, so the file does not
    move if the process changes directory later. ``postgres(ql)://`` gets asyncpg, which spells
    libpq's ``sslmode`` as ``ssl``.
    """
    try:
        parsed = make_url(url.strip())
    except Exception as exc:  # ArgumentError; never echo the URL, it may hold a password
        raise ValueError("DATABASE_URL is not a valid database URL") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        database = parsed.database if parsed.database != ":memory:" else None
        if database and not parsed.query.get("uri"):
            database = str(Path(database).expanduser().absolute())
        parsed = URL.create("sqlite+aiosqlite", database=database, query=parsed.query)
    elif backend in {"postgres", "postgresql"}:
        parsed = parsed.set(drivername=f"postgresql+{driver or 'asyncpg'}")
        if parsed.drivername == "postgresql+asyncpg" and "sslmode" in parsed.query:
            sslmode = parsed.query["sslmode"]
            parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": sslmode})
    else:
        raise ValueError(
            f"DATABASE_URL scheme {backend!r} is not supported: use sqlite:/// or postgresql://"
        )
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> AsyncEngine:
    """An engine for ``url`` (any accepted form); SQLite gets WAL, a busy timeout, foreign keys.

    SQLite's Python driver does not BEGIN before DDL, so we take over BEGIN ourselves: migrations
    are then truly transactional. Write transactions ask for ``BEGIN IMMEDIATE`` (execution
    option ``fluxbot_begin``, see :data:`WRITE`) so they wait for the lock up front instead of
    failing mid-way.
    """
    parsed = make_url(normalise_database_url(url))
    is_file = parsed.database not in (None, ":memory:") and not parsed.query.get("uri")
    if parsed.get_backend_name() == "sqlite" and is_file:
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, module=OneHopDBAPI(aiosqlite, sqlite3))
    else:
        engine = create_async_engine(parsed)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # The timeout first: switching a new file to WAL takes a lock that another process
            # opening it at the same moment may hold.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("fluxbot_begin", "DEFERRED")
            if mode is None:
                return  # a read of one statement: no transaction (see single_reads)
            driver: Any = conn.connection.dbapi_connection
            if isinstance(driver, OneHopConnection):
                driver.begin_with_next_statement(f"BEGIN {mode}")
            else:
                conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def single_reads(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for reads of one statement, which need no transaction around them: SQLite
    sends no ``BEGIN`` (so no ``ROLLBACK`` trip to its thread after), PostgreSQL runs them in
    autocommit (one round trip instead of three). Never for writes, nor reads that must agree."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**_NO_BEGIN)
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def upsert(engine: AsyncEngine, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` that has ``on_conflict_do_update``; both dialects spell it alike."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class OneHopCursor:
    """A cursor whose ``execute`` is one trip to aiosqlite's thread, not four.

    SQLAlchemy's aiosqlite adapter makes a cursor, executes, fetches and closes, each a trip
    through aiosqlite's queue and back through the event loop's self-pipe: about 40 µs of CPU
    each, ~10 trips for a one-statement transaction. Here the statement runs, its rows are
    fetched and its cursor closed in one function on that thread (issue 10). Rows are always
    fetched at once, as SQLAlchemy's own adapter does for non-streaming cursors.
    """

    server_side = False

    def __init__(self, adapt_connection: OneHopConnection) -> None:
        self._adapt_connection = adapt_connection
        self._rows: collections.deque[Any] = collections.deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> None:
        self._run(_execute_on_thread, operation, parameters, False)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        self._run(_execute_on_thread, operation, seq_of_parameters, True)

    def _run(self, function: Callable[..., Any], *args: Any) -> None:
        adapted = self._adapt_connection
        begin, adapted._pending_begin = adapted._pending_begin, None
        try:
            rows, self.description, self.rowcount, self.lastrowid, adapted._in_transaction = (
                await_only(adapted._on_thread(function, begin, *args))
            )
        except Exception as error:
            adapted._in_transaction = True  # unknown after a failure: let rollback go through
            adapted._handle_exception(error)
        self._rows = collections.deque(rows)

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(count, len(self._rows)))]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        """SQLAlchemy's hook to close a cursor early; this one holds no driver cursor."""

    def setinputsizes(self, *inputsizes: Any) -> None:
        pass


def _execute_on_thread(
    conn: sqlite3.Connection, begin: str | None, operation: str, parameters: Any, many: bool
) -> tuple[list[Any], Any, int, int | None, bool]:
    if begin is not None:
        conn.execute(begin)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return rows, cursor.description, cursor.rowcount, cursor.lastrowid, conn.in_transaction
    finally:
        cursor.close()


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """The connection behind :class:`OneHopCursor`; it also saves the trips of ``BEGIN``
    (sent with the transaction's first statement) and of a commit or rollback with nothing to
    end (a transaction with no statement, or none open)."""

    __slots__ = ("_in_transaction", "_pending_begin")

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._pending_begin: str | None = None
        self._in_transaction = True  # until a statement says otherwise

    def begin_with_next_statement(self, begin: str) -> None:
        self._pending_begin = begin

    def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        # aiosqlite's own queue to its thread (untyped, and private as SQLAlchemy's use of it is).
        driver: Any = self._connection
        return driver._execute(function, driver._conn, *args)

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:
            self._flush_begin()
            self._in_transaction = True
            return super().cursor(server_side=True)
        return OneHopCursor(self)

    def _flush_begin(self) -> None:
        if self._pending_begin is not None:
            OneHopCursor(self).execute("SELECT 1")  # sends the BEGIN with it

    def commit(self) -> None:
        self._end(super().commit)

    def rollback(self) -> None:
        self._end(super().rollback)

    def _end(self, end: Callable[[], None]) -> None:
        if self._pending_begin is not None:  # BEGIN never sent: nothing to end
            self._pending_begin = None
            return
        if self._in_transaction:
            end()
            self._in_transaction = False


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """aiosqlite as SQLAlchemy adapts it, with :class:`OneHopCursor` for plain cursors."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return OneHopConnection(self, adapted._connection)
