"""Database URLs and the engine: the one place that knows SQLite and PostgreSQL differ at connect.

SQLAlchemy async Core over aiosqlite, whose statements run on the event loop's thread where
nothing can wait (``LoopCursor``), and, when nothing needs to wait, outside SQLAlchemy's greenlet
(``LoopAsyncEngine``); PostgreSQL (asyncpg) is a ``DATABASE_URL`` change.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
from sqlalchemy import Connection, Executable, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.engine.interfaces import CoreExecuteOptionsParameter, _CoreAnyExecuteParams
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import await_only
from sqlalchemy.util.concurrency import greenlet_spawn, in_greenlet

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: SQLite waits this long for another writer's lock instead of failing at once (on aiosqlite's
#: thread: on the event loop's it never waits, see LoopCursor).
SQLITE_BUSY_TIMEOUT_MS = 5000
#: A checkpoint of the write-ahead log after this many commits of a connection (LoopConnection).
CHECKPOINT_EVERY = 64
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
        # The connection is made on aiosqlite's thread and used on the event loop's too
        # (LoopCursor), never on both at once: each call to the thread is awaited.
        adapted = create_async_engine(
            parsed, module=LoopDBAPI(aiosqlite, sqlite3), connect_args={"check_same_thread": False}
        )
        engine: AsyncEngine = LoopAsyncEngine(adapted.sync_engine)
    else:
        engine = create_async_engine(parsed)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # No waiting on the loop (see LoopCursor); this first, as switching a new file to
            # WAL takes a lock that another process opening it at the same moment may hold.
            cursor.execute("PRAGMA busy_timeout=0")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # see LoopConnection
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("fluxbot_begin", "DEFERRED")
            if mode is None:
                return  # a read of one statement: no transaction (see single_reads)
            driver: Any = conn.connection.dbapi_connection
            if isinstance(driver, LoopConnection):
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


class LoopCursor:
    """A cursor whose statement runs on the event loop's thread, where SQLite never waits.

    A statement on aiosqlite's thread costs a trip there and back through the event loop's
    self-pipe, about 50 µs of CPU (issue 10); the statement itself takes a few. So it runs here,
    its rows fetched and its cursor closed at once, as SQLAlchemy's own adapter does for
    non-streaming cursors. What could wait stays off the loop: the connection's busy timeout is
    0 on this thread, and a statement refused because another connection holds the lock runs
    again on aiosqlite's thread, which waits up to ``SQLITE_BUSY_TIMEOUT_MS`` (see
    :class:`LoopConnection` for disk syncs).
    """

    server_side = False

    def __init__(self, adapt_connection: LoopConnection) -> None:
        self._adapt_connection = adapt_connection
        self._rows: collections.deque[Any] = collections.deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> None:
        self._run(operation, parameters, False)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        self._run(operation, seq_of_parameters, True)

    def _run(self, operation: str, parameters: Any, many: bool) -> None:
        adapted = self._adapt_connection
        begin, adapted._pending_begin = adapted._pending_begin, None
        try:
            outcome = adapted.run(begin, operation, parameters, many)
            rows, self.description, self.rowcount, self.lastrowid, adapted._in_transaction = outcome
        except WaitOffLoop:
            adapted._pending_begin = begin  # not sent: it goes with the statement's second try
            raise
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


_Outcome = tuple[list[Any], Any, int, int | None, bool]


def _execute(
    conn: sqlite3.Connection, begin: str | None, operation: str, parameters: Any, many: bool
) -> _Outcome:
    if begin is not None and not conn.in_transaction:  # not again when retried after a refusal
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


def _patiently(conn: sqlite3.Connection, function: Callable[..., Any], *args: Any) -> Any:
    """``function`` on aiosqlite's thread, waiting for another connection's lock if need be."""
    conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
    try:
        return function(conn, *args)
    finally:
        conn.execute("PRAGMA busy_timeout=0")


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _locked(error: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, extended codes included: waiting might have helped."""
    primary = getattr(error, "sqlite_errorcode", 0) & 0xFF
    return primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


async def _now(function: Callable[..., Any], *args: Any) -> Any:
    """``function`` called as SQLAlchemy awaits a driver call: it requires one, and this one
    returns at once."""
    return function(*args)


class LoopConnection(AsyncAdapt_aiosqlite_connection):
    """The connection behind :class:`LoopCursor`; it also sends ``BEGIN`` with the
    transaction's first statement, and ends only a transaction that is open.

    SQLite's own checkpoints (copying the write-ahead log into the database, with disk syncs)
    would run inside whichever commit crosses their threshold, so they are off
    (``wal_autocheckpoint=0``) and every ``CHECKPOINT_EVERY``-th commit is followed by one on
    aiosqlite's thread.
    """

    __slots__ = ("_commits", "_in_transaction", "_pending_begin")

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._pending_begin: str | None = None
        self._in_transaction = True  # until a statement says otherwise
        self._commits = 0

    def begin_with_next_statement(self, begin: str) -> None:
        self._pending_begin = begin

    def run(self, begin: str | None, operation: str, parameters: Any, many: bool) -> _Outcome:
        """The statement here, or on aiosqlite's thread if the database is locked; statements
        that each commit on their own (``executemany`` outside a transaction) go there at once,
        as a retry could repeat the first of them."""
        args = (begin, operation, parameters, many)
        if many and begin is None and not self._sqlite.in_transaction:
            return cast(_Outcome, self._on_thread(_patiently, _execute, *args))
        return cast(_Outcome, self._here_or_waiting(_execute, *args))

    @property
    def _sqlite(self) -> sqlite3.Connection:
        driver: Any = self._connection  # aiosqlite's (private, as SQLAlchemy's use of it is)
        return cast(sqlite3.Connection, driver._conn)

    def _here_or_waiting(self, function: Callable[..., Any], *args: Any) -> Any:
        awaiting = in_greenlet()
        try:
            if not awaiting:  # called by LoopAsyncConnection: nothing to satisfy
                return function(self._sqlite, *args)
            return await_only(_now(function, self._sqlite, *args))
        except sqlite3.OperationalError as error:
            if not _locked(error):
                raise
        return self._on_thread(_patiently, function, *args)

    def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        if not in_greenlet():
            raise WaitOffLoop  # only a call under SQLAlchemy's greenlet can await the thread
        driver: Any = self._connection
        return await_only(driver._execute(function, self._sqlite, *args))

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:
            if not in_greenlet():
                raise WaitOffLoop  # aiosqlite's cursors are made on its thread
            self._flush_begin()
            self._in_transaction = True
            return super().cursor(server_side=True)
        return LoopCursor(self)

    def _flush_begin(self) -> None:
        if self._pending_begin is not None:
            LoopCursor(self).execute("SELECT 1")  # sends the BEGIN with it

    def commit(self) -> None:
        if self._end(sqlite3.Connection.commit):
            self._commits += 1
            if self._commits % CHECKPOINT_EVERY == 0:
                try:
                    self._on_thread(_checkpoint)
                except sqlite3.Error as error:  # the commit stands; a later one tries again
                    log.warning("SQLite checkpoint failed: %s", error)

    def rollback(self) -> None:
        self._end(sqlite3.Connection.rollback)

    def _end(self, end: Callable[[sqlite3.Connection], None]) -> bool:
        """End the open transaction, if any; whether there was one."""
        if self._pending_begin is not None:  # BEGIN never sent: nothing to end
            self._pending_begin = None
            return False
        if not self._in_transaction:
            return False
        try:
            self._here_or_waiting(end)
        except Exception as error:
            self._handle_exception(error)
        self._in_transaction = False
        return True


class WaitOffLoop(Exception):
    """Raised by :class:`LoopConnection` for a call made outside SQLAlchemy's greenlet that must
    go to aiosqlite's thread (the database is locked, say): the caller makes it again inside one.
    What was refused has not run (a BEGIN sent before it stands, and is not sent again)."""


class LoopAsyncConnection(AsyncConnection):
    """SQLite: connect, execute and close without SQLAlchemy's greenlet when nothing waits.

    ``AsyncConnection`` runs each of them in a new greenlet (a statement there also yields to
    the event loop once), and closes through a task of its own: with statements already on the
    loop's thread, that machinery cost more CPU than SQLAlchemy's own execution (issue 10). So
    each runs as a plain call when it cannot wait: a pooled connection is free (else one is
    made, on aiosqlite's thread), the pool takes it back without closing it, the statement does
    not find the database locked (:class:`WaitOffLoop`). Otherwise, SQLAlchemy's way. Commits
    keep it, as a checkpoint may follow them on the thread.
    """

    async def start(self, is_ctxmanager: bool = False) -> AsyncConnection:
        pool = self.sync_engine.pool
        if self.sync_connection is None and isinstance(pool, QueuePool) and pool.checkedin():
            self.sync_connection = self._assign_proxied(self.sync_engine.connect())
            return self
        return await super().start(is_ctxmanager)

    async def execute(
        self,
        statement: Executable,
        parameters: _CoreAnyExecuteParams | None = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> CursorResult[Any]:
        return cast(
            CursorResult[Any],
            await self.run_one_statement(
                Connection.execute, statement, parameters, execution_options=execution_options
            ),
        )

    async def run_one_statement(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``function(sync_connection, *args, **kwargs)``, which runs one statement at most: a
        plain call, or again in a greenlet if that statement must wait (:class:`WaitOffLoop`;
        nothing of it has run then). For others, what ``run_sync`` is."""
        try:
            return function(self._proxied, *args, **kwargs)
        except WaitOffLoop:
            return await greenlet_spawn(function, self._proxied, *args, **kwargs)

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        if self._closes_here():
            self._proxied.close()
        else:
            await super().__aexit__(type_, value, traceback)

    def _closes_here(self) -> bool:
        """Whether closing only rolls back and hands the connection back to the pool, all on
        the loop's thread: a connection the pool closes instead is closed on aiosqlite's."""
        pool = self.sync_engine.pool
        connection = self.sync_connection
        return (
            connection is not None
            and not connection.invalidated
            and isinstance(pool, QueuePool)
            and pool.checkedin() < pool.size()
        )


class LoopAsyncEngine(AsyncEngine):
    """The SQLite engine: its connections are :class:`LoopAsyncConnection`."""

    _connection_cls = LoopAsyncConnection

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """As ``AsyncEngine.begin``; the transaction begins without a greenlet (BEGIN itself
        is sent with its first statement), its commit or rollback in one."""
        async with self.connect() as conn:
            assert conn.sync_connection is not None
            transaction = conn.sync_connection.begin()
            try:
                yield conn
            except BaseException:
                await greenlet_spawn(transaction.__exit__, *sys.exc_info())
                raise
            await greenlet_spawn(transaction.__exit__, None, None, None)

    def execution_options(self, **opt: Any) -> AsyncEngine:
        return LoopAsyncEngine(self.sync_engine.execution_options(**opt))


class LoopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """aiosqlite as SQLAlchemy adapts it, with :class:`LoopCursor` for plain cursors."""

    def connect(self, *arg: Any, **kw: Any) -> LoopConnection:
        adapted = super().connect(*arg, **kw)
        return LoopConnection(self, adapted._connection)
