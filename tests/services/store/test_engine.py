"""URLs and the engine: every accepted DATABASE_URL form, and SQLite configured as we rely on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store import SCHEMA_VERSION, Store, current_version, normalise_database_url
from services.store.engine import make_engine, single_reads


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/x.sqlite3", "sqlite+aiosqlite:///{cwd}/data/x.sqlite3"),
        ("sqlite:////abs/x.sqlite3", "sqlite+aiosqlite:////abs/x.sqlite3"),
        ("sqlite+aiosqlite:////abs/x.sqlite3", "sqlite+aiosqlite:////abs/x.sqlite3"),
        ("sqlite+aiosqlite:///rel.db", "sqlite+aiosqlite:///{cwd}/rel.db"),
        ("  sqlite:///data/x.sqlite3\n", "sqlite+aiosqlite:///{cwd}/data/x.sqlite3"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite:///:memory:", "sqlite+aiosqlite://"),
        ("postgresql://u:p@db:5432/flux", "postgresql+asyncpg://u:p@db:5432/flux"),
        ("postgres://u:p@db/flux", "postgresql+asyncpg://u:p@db/flux"),
        ("postgresql+asyncpg://u:p@db/flux", "postgresql+asyncpg://u:p@db/flux"),
        ("postgres://u:p%40ss@db/flux", "postgresql+asyncpg://u:p%40ss@db/flux"),
        ("postgres://u:p@db/flux?sslmode=require", "postgresql+asyncpg://u:p@db/flux?ssl=require"),
    ],
)
def test_normalise_database_url(
    given: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_database_url(given) == expected.format(cwd=tmp_path)


@pytest.mark.parametrize("bad", ["mysql://u:secret@h/db", "not a url", ""])
def test_normalise_database_url_refuses_without_echoing(bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalise_database_url(bad)
    assert "secret" not in str(caught.value)


async def test_open_creates_parent_dir_and_configures_sqlite(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with await Store.open(sqlite_url) as store:
        assert (tmp_path / "nested/dir/fluxbot.sqlite3").is_file()
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000
        assert await current_version(store.engine) == SCHEMA_VERSION


@contextlib.asynccontextmanager
async def trips_to_thread(conn: AsyncConnection) -> AsyncIterator[list[tuple[str, str | None]]]:
    """Each call made meanwhile to the aiosqlite thread of ``conn``'s connection: the function's
    name and, for a statement, the ``BEGIN`` sent with it."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    execute = driver._execute
    trips: list[tuple[str, str | None]] = []

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        begin = args[1] if function.__name__ == "_execute_on_thread" else None
        trips.append((function.__name__, begin))
        return await execute(function, *args, **kwargs)

    driver._execute = counted  # counting its calls
    try:
        yield trips
    finally:
        driver._execute = execute


async def test_a_sqlite_statement_is_one_trip_to_the_drivers_thread(tmp_path: Path) -> None:
    """Rows, RETURNING, executemany and driver errors as SQLAlchemy expects them, each
    statement in one call on aiosqlite's thread (issue 10)."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
            async with trips_to_thread(conn) as trips:
                await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "a"}, {"v": "b"}])
                returned = await conn.execute(
                    text("UPDATE t SET v = 'c' WHERE v = 'b' RETURNING id")
                )
                assert returned.scalar_one() == 2
                rows = (await conn.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
                assert [tuple(row) for row in rows] == [(1, "a"), (2, "c")]
                assert len(trips) == 3
                with pytest.raises(IntegrityError):
                    await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
    finally:
        await engine.dispose()


async def test_a_sqlite_transaction_sends_begin_with_its_first_statement(tmp_path: Path) -> None:
    """BEGIN rides with the first statement, a transaction with none sends nothing, and
    only an open transaction is committed or rolled back (issue 10): a write is two trips."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    other = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        async with engine.connect() as conn, trips_to_thread(conn) as trips:
            await conn.commit()  # nothing began: nothing sent
            assert trips == []
            writer = await conn.execution_options(fluxbot_begin="IMMEDIATE")
            async with writer.begin():
                await writer.execute(text("INSERT INTO t VALUES (1)"))
                # BEGIN IMMEDIATE went with the insert: another writer waits for this one.
                async with other.connect() as blocked:
                    await blocked.exec_driver_sql("PRAGMA busy_timeout=0")
                    await blocked.commit()
                    second = await blocked.execution_options(fluxbot_begin="IMMEDIATE")
                    with pytest.raises(OperationalError, match="database is locked"):
                        async with second.begin():
                            await second.execute(text("SELECT 1"))
            assert trips == [("_execute_on_thread", "BEGIN IMMEDIATE"), ("commit", None)]
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
            await conn.rollback()
            assert [name for name, _ in trips[2:]] == ["_execute_on_thread", "rollback"]
    finally:
        await other.dispose()
        await engine.dispose()


async def test_a_single_read_is_one_trip_and_leaves_no_transaction(tmp_path: Path) -> None:
    """A read of one statement sends no BEGIN, so no ROLLBACK follows it (issue 10); what it
    reads is whatever was committed, as a transaction's first read would have seen."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (7)"))
        async with single_reads(engine).connect() as conn, trips_to_thread(conn) as trips:
            assert (await conn.execute(text("SELECT v FROM t"))).scalar_one() == 7
        assert trips == [("_execute_on_thread", None)], "no BEGIN, and closed without a ROLLBACK"
        async with engine.begin() as conn:  # the pooled connection writes as before
            await conn.execute(text("INSERT INTO t VALUES (8)"))
        async with single_reads(engine).connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2
    finally:
        await engine.dispose()
