"""Database URLs and the engine: the one place that knows SQLite and PostgreSQL differ at connect.

SQLAlchemy async Core over aiosqlite; PostgreSQL (asyncpg) is a ``DATABASE_URL`` change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

#: SQLite waits this long for another writer's lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Execution options of a write transaction: ``BEGIN IMMEDIATE`` on SQLite (see ``make_engine``).
WRITE = {"fluxbot_begin": "IMMEDIATE"}
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
            conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def upsert(engine: AsyncEngine, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` that has ``on_conflict_do_update``; both dialects spell it alike."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
