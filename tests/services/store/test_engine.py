"""URLs and the engine: every accepted DATABASE_URL form, and SQLite configured as we rely on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Executable, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.asyncio import engine as async_engine_module
from sqlalchemy.pool import QueuePool

from services.store import SCHEMA_VERSION, Store, current_version, normalise_database_url
from services.store import engine as engine_module
from services.store import prepared as prepared_module
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
            # Nothing waits on the event loop's thread: not for a lock, not for a checkpoint.
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 0
            assert (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar() == 0
        assert await current_version(store.engine) == SCHEMA_VERSION


class Trips(list[tuple[str, str | None]]):
    """Calls made to aiosqlite's thread: the function's name and, for one run there until the
    lock is free, the name of what it runs. ``made`` is set at each."""

    def __init__(self) -> None:
        super().__init__()
        self.made = asyncio.Event()


@contextlib.asynccontextmanager
async def trips_to_thread(conn: AsyncConnection) -> AsyncIterator[Trips]:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    execute = driver._execute
    trips = Trips()

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        inner = args[1].__name__ if function.__name__ == "_patiently" else None
        trips.append((function.__name__, inner))
        trips.made.set()
        return await execute(function, *args, **kwargs)

    driver._execute = counted  # counting its calls
    try:
        yield trips
    finally:
        driver._execute = execute


@contextlib.asynccontextmanager
async def statements_sent(conn: AsyncConnection) -> AsyncIterator[list[str]]:
    """The SQL that ``conn``'s SQLite connection runs meanwhile, BEGIN and COMMIT included."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    sent: list[str] = []
    driver._conn.set_trace_callback(sent.append)
    try:
        yield sent
    finally:
        driver._conn.set_trace_callback(None)


@contextlib.asynccontextmanager
async def another_holds_the_lock(
    tmp_path: Path,
) -> AsyncIterator[tuple[AsyncConnection, AsyncConnection]]:
    """Table ``t``, where another engine (another process, as it were) wrote 1 in a transaction
    still open; yields its connection and ours, whose transactions ask for the write lock."""
    url = f"sqlite:///{tmp_path}/x.sqlite3"
    engine, other = make_engine(url), make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        async with other.connect() as holding, engine.connect() as conn:
            holder = await holding.execution_options(fluxbot_begin="IMMEDIATE")
            await holder.begin()
            await holder.execute(text("INSERT INTO t VALUES (1)"))
            yield holder, await conn.execution_options(fluxbot_begin="IMMEDIATE")
    finally:
        await other.dispose()
        await engine.dispose()


async def test_sqlite_statements_run_on_the_event_loops_thread(tmp_path: Path) -> None:
    """Rows, RETURNING, executemany, commits and driver errors as SQLAlchemy expects them,
    with no trip to aiosqlite's thread (issue 10): the trip cost more than the statement."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.connect() as conn, trips_to_thread(conn) as trips:
            async with conn.begin():
                await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
                await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "a"}, {"v": "b"}])
                returned = await conn.execute(
                    text("UPDATE t SET v = 'c' WHERE v = 'b' RETURNING id")
                )
                assert returned.scalar_one() == 2
            rows = (await conn.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
            assert [tuple(row) for row in rows] == [(1, "a"), (2, "c")]
            with pytest.raises(IntegrityError):
                await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
            await conn.rollback()
            assert trips == []
    finally:
        await engine.dispose()


async def test_statements_that_each_commit_go_to_the_thread_at_once(tmp_path: Path) -> None:
    """``executemany`` outside a transaction commits row by row: refused half-way for a lock,
    it could not be run again from the start, so it runs where it may wait."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        async with single_reads(engine).connect() as conn, trips_to_thread(conn) as trips:
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": 1}, {"v": 2}])
            assert trips == [("_patiently", "_execute")]
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2
    finally:
        await engine.dispose()


async def test_a_sqlite_transaction_sends_begin_with_its_first_statement(tmp_path: Path) -> None:
    """BEGIN rides with the first statement, a transaction with none sends nothing, and
    only an open transaction is committed or rolled back (issue 10)."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        async with engine.connect() as conn, statements_sent(conn) as sent:
            await conn.commit()  # nothing began: nothing sent
            assert sent == []
            writer = await conn.execution_options(fluxbot_begin="IMMEDIATE")
            async with writer.begin():
                await writer.execute(text("INSERT INTO t VALUES (1)"))
                assert sent == ["BEGIN IMMEDIATE", "INSERT INTO t VALUES (1)"]
            assert sent[2:] == ["COMMIT"]
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
            await conn.rollback()
            assert sent[3:] == ["BEGIN IMMEDIATE", "SELECT count(*) FROM t", "ROLLBACK"]
    finally:
        await engine.dispose()


async def test_a_locked_database_is_waited_for_off_the_event_loop(tmp_path: Path) -> None:
    """Another connection's write lock refuses our BEGIN IMMEDIATE on the loop's thread (busy
    timeout 0); it is sent again on aiosqlite's thread, which waits while the loop goes on."""
    async with another_holds_the_lock(tmp_path) as (holder, writer):

        async def write() -> None:
            async with writer.begin():
                await writer.execute(text("INSERT INTO t VALUES (2)"))

        async with trips_to_thread(writer) as trips:
            waiting = asyncio.create_task(write())
            await trips.made.wait()
            assert trips == [("_patiently", "_execute")]
            assert not waiting.done()
            await holder.commit()  # on the loop, while the other waits on its thread
            await waiting
        assert (await writer.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2
        assert (await writer.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 0


async def test_a_lock_held_past_the_busy_timeout_fails_as_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
    async with another_holds_the_lock(tmp_path) as (holder, writer):
        with pytest.raises(OperationalError, match="database is locked"):
            async with writer.begin():
                await writer.execute(text("INSERT INTO t VALUES (2)"))
        await holder.commit()
        async with writer.begin():  # the connection is usable again
            await writer.execute(text("INSERT INTO t VALUES (3)"))
        assert (await writer.execute(text("SELECT sum(v) FROM t"))).scalar_one() == 4


async def test_the_write_ahead_log_is_checkpointed_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own checkpoints are off (they would sync the disk inside a commit, on the
    loop): every CHECKPOINT_EVERY-th commit of a connection is followed by one on the thread."""
    monkeypatch.setattr(engine_module, "CHECKPOINT_EVERY", 3)
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
            await conn.commit()
            async with trips_to_thread(conn) as trips:
                for value in range(7):
                    await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
                    await conn.commit()
                    await conn.commit()  # nothing open: not counted
            assert trips == [("_checkpoint", None), ("_checkpoint", None)]
            checkpoint = await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            busy, frames, written_back = tuple(checkpoint.one())
            assert (busy, frames) == (0, written_back), "every frame written back"
    finally:
        await engine.dispose()


async def test_a_single_read_sends_no_begin_and_leaves_no_transaction(tmp_path: Path) -> None:
    """A read of one statement sends no BEGIN, so no ROLLBACK follows it (issue 10); what it
    reads is whatever was committed, as a transaction's first read would have seen."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (7)"))
        async with single_reads(engine).connect() as conn, statements_sent(conn) as sent:
            assert (await conn.execute(text("SELECT v FROM t"))).scalar_one() == 7
        assert sent == ["SELECT v FROM t"], "no BEGIN, and closed without a ROLLBACK"
        async with engine.begin() as conn:  # the pooled connection writes as before
            await conn.execute(text("INSERT INTO t VALUES (8)"))
        async with single_reads(engine).connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2
    finally:
        await engine.dispose()


@contextlib.contextmanager
def greenlets_spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of what SQLAlchemy's async layer runs in a greenlet of its own, meanwhile."""
    spawned: list[str] = []
    spawn = async_engine_module.greenlet_spawn

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        spawned.append(function.__name__)
        return await spawn(function, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(async_engine_module, "greenlet_spawn", counted)
        patch.setattr(engine_module, "greenlet_spawn", counted)
        yield spawned


async def test_sqlite_work_needs_no_greenlet_but_for_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connect, execute and close are plain calls on SQLite (a greenlet and a task each cost
    more than the statement, issue 10); a transaction's end keeps one (a checkpoint may follow)."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        async with engine.begin() as conn:  # the pool's first connection is made in one
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        with greenlets_spawned(monkeypatch) as spawned:
            async with engine.execution_options(**engine_module.WRITE).begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
            assert spawned == ["__exit__"]
            async with single_reads(engine).connect() as conn:
                assert (await conn.execute(text("SELECT sum(v) FROM t"))).scalar_one() == 1
            assert spawned == ["__exit__"]
    finally:
        await engine.dispose()


async def test_a_connection_the_pool_closes_is_closed_on_the_thread(tmp_path: Path) -> None:
    """More connections at once than the pool keeps: those it closes on their return are
    closed on aiosqlite's thread (their threads end), the others kept open for reuse."""
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    try:
        async with contextlib.AsyncExitStack() as stack:
            drivers = []
            for _ in range(pool.size() + 2):
                conn = await stack.enter_async_context(engine.connect())
                assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
                drivers.append((await conn.get_raw_connection()).driver_connection)
        closed = [driver for driver in drivers if driver._connection is None]
        assert len(closed) == 2
        assert pool.checkedin() == pool.size()
        async with engine.connect() as conn:  # a kept one serves again
            assert (await conn.execute(text("SELECT 2"))).scalar_one() == 2
    finally:
        await engine.dispose()


_INSERT_3 = text("INSERT INTO t VALUES (3)")


async def _through_execute(conn: AsyncConnection, statement: Executable) -> object:
    return await conn.execute(statement)


@pytest.mark.parametrize(
    "run", [_through_execute, prepared_module.execute], ids=["execute", "prepared"]
)
async def test_a_locked_database_is_waited_for_off_the_loop_by_a_store_write(
    tmp_path: Path, run: Callable[[AsyncConnection, Executable], Awaitable[object]]
) -> None:
    """An engine's write transaction (the store's every write) whose first statement finds
    the lock held: the statement goes again on aiosqlite's thread and waits there, whether
    SQLAlchemy executes it or ``prepared.execute``."""
    url = f"sqlite:///{tmp_path}/x.sqlite3"
    engine, other = make_engine(url), make_engine(url)
    writes = engine.execution_options(**engine_module.WRITE)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        async with other.connect() as holding:
            holder = await holding.execution_options(**engine_module.WRITE)
            await holder.begin()
            await holder.execute(text("INSERT INTO t VALUES (2)"))
            seen: asyncio.Future[Trips] = asyncio.get_running_loop().create_future()

            async def write() -> None:
                async with writes.begin() as conn, trips_to_thread(conn) as trips:
                    seen.set_result(trips)
                    await run(conn, _INSERT_3)

            writing = asyncio.create_task(write())
            trips = await seen
            await trips.made.wait()
            assert trips == [("_patiently", "_execute")]
            assert not writing.done()
            await holder.commit()  # on the loop, while the other waits on its thread
            await writing
        async with single_reads(engine).connect() as conn:
            assert (await conn.execute(text("SELECT sum(v) FROM t"))).scalar_one() == 6
    finally:
        await other.dispose()
        await engine.dispose()
