"""The store on a real SQLite file: round trips, guarded transitions, restarts and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from services.parameters import SEED_MAX, GenerationParameters
from services.store import (
    PARAMETER_COLUMNS,
    SCHEMA_VERSION,
    Generation,
    GenerationKind,
    GenerationStatus,
    NewGeneration,
    SchemaTooNewError,
    Store,
    make_engine,
    metadata,
    migrate,
    normalise_database_url,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SNOWFLAKE = 1_234_567_890_123_456_789  # 19 digits
BIG_SNOWFLAKE = 9_223_372_036_854_775_807  # the largest a BIGINT holds


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def new(**overrides: Any) -> NewGeneration:
    fields: dict[str, Any] = {
        "kind": GenerationKind.IMAGINE,
        "user_id": SNOWFLAKE,
        "guild_id": SNOWFLAKE + 1,
        "channel_id": SNOWFLAKE + 2,
        "reference_url": "https://cdn.discordapp.com/attachments/1/2/ref.png?ex=1&is=2&hm=3",
    }
    knobs: dict[str, Any] = {"prompt": "a cat in a hat", "strength": 0.8, "count": 2}
    for name in ("prompt", "strength", "seed", "steps", "guidance", "count"):
        if name in overrides:
            knobs[name] = overrides.pop(name)
    parameters = GenerationParameters(**knobs)
    return NewGeneration(**(fields | overrides), parameters=parameters)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/nested/dir/fluxbot.sqlite3"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(db_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    async with await Store.open(db_url, clock=clock) as opened:
        yield opened


# --------------------------------------------------------------------------- URLs


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


async def test_open_creates_parent_dir_and_configures_sqlite(db_url: str, tmp_path: Path) -> None:
    async with await Store.open(db_url) as store:
        assert (tmp_path / "nested/dir/fluxbot.sqlite3").is_file()
        async with store._engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000
        assert await store.schema_version() == SCHEMA_VERSION


# --------------------------------------------------------------------------- generations


async def test_create_get_round_trip_with_extreme_values(store: Store) -> None:
    created = await store.create_generation(
        new(
            seed=SEED_MAX,
            user_id=BIG_SNOWFLAKE,
            guild_id=None,
            card_message_id=SNOWFLAKE,
            prompt="@everyone 🐱\nline two " + "x" * 3979,
        )
    )
    assert created.status is GenerationStatus.QUEUED
    assert created.attempts == 0 and created.nsfw_withheld == 0
    assert created.created_at == T0 and created.created_at.tzinfo is UTC
    assert created.result_message_ids == ()
    assert await store.get_generation(created.id) == created
    assert await store.get_generation(created.id + 1) is None

    await store.set_seed(created.id, SEED_MAX)
    await store.mark_running(
        created.id, datetime(2025, 3, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    )
    done = await store.mark_done(
        created.id,
        seed=SEED_MAX,
        result_message_ids=[SNOWFLAKE, BIG_SNOWFLAKE],
        inference_seconds=1.5,
    )
    again = await store.get_generation(created.id)
    assert again == done
    assert again is not None
    assert again.seed == SEED_MAX and again.user_id == BIG_SNOWFLAKE
    assert again.result_message_ids == (SNOWFLAKE, BIG_SNOWFLAKE)
    assert again.started_at == datetime(2025, 3, 1, 12, 0, 0, 1, tzinfo=UTC)
    assert again.started_at is not None and again.started_at.tzinfo is UTC


async def test_ids_increase_and_parameters_round_trip(store: Store) -> None:
    parameters = GenerationParameters(prompt="dog", strength=0.5, seed=42, steps=10, count=4)
    first = await store.create_generation(
        NewGeneration(
            parameters=parameters,
            kind=GenerationKind.IMAGINE,
            user_id=1,
            channel_id=2,
            reference_url="https://x/y.png",
        )
    )
    reroll = await store.create_generation(
        new(kind=GenerationKind.REROLL, parent_id=first.id, seed=None)
    )
    assert reroll.id > first.id and reroll.parent_id == first.id
    assert first.parameters == parameters


async def test_setters_touch_one_field_and_refuse_unknown_ids(store: Store) -> None:
    job = await store.create_generation(new())
    seeded = await store.set_seed(job.id, 77)
    assert seeded == job.model_copy(update={"seed": 77})
    moved = await store.set_reference_url(job.id, "https://cdn.example/new.png")
    assert moved == seeded.model_copy(update={"reference_url": "https://cdn.example/new.png"})
    assert await store.set_seed(job.id + 100, 1) is None
    assert await store.set_reference_url(job.id + 100, "https://x/y.png") is None


async def test_parent_must_exist(store: Store) -> None:
    with pytest.raises(Exception, match="FOREIGN KEY"):
        await store.create_generation(new(parent_id=12345))


# --------------------------------------------------------------------------- transitions


async def test_happy_path_transitions(store: Store, clock: FakeClock) -> None:
    job = await store.create_generation(new())
    clock.now = T0 + timedelta(seconds=3)
    running = await store.mark_running(job.id)
    assert running is not None
    assert running.status is GenerationStatus.RUNNING
    assert running.attempts == 1 and running.started_at == clock.now
    done = await store.mark_done(
        job.id,
        seed=SEED_MAX,
        result_message_ids=[SNOWFLAKE],
        inference_seconds=2.54,
        nsfw_withheld=1,
        finished_at=T0 + timedelta(seconds=9),
    )
    assert done is not None and done.status is GenerationStatus.DONE
    assert (done.status, done.seed, done.result_message_ids) == (
        GenerationStatus.DONE,
        SEED_MAX,
        (SNOWFLAKE,),
    )
    assert (done.inference_seconds, done.nsfw_withheld) == (2.54, 1)
    assert done.finished_at == T0 + timedelta(seconds=9)
    # Finished is final: nothing moves it again.
    assert await store.mark_running(job.id) is None
    assert await store.mark_failed(job.id, "late") is None
    assert await store.mark_cancelled(job.id, cancelled_by=1) is None
    assert await store.get_generation(job.id) == done


async def test_cancel_after_start_does_not_apply(store: Store) -> None:
    job = await store.create_generation(new())
    assert await store.mark_running(job.id) is not None
    assert await store.mark_cancelled(job.id, cancelled_by=SNOWFLAKE) is None
    stored = await store.get_generation(job.id)
    assert stored is not None and stored.status is GenerationStatus.RUNNING
    assert stored.cancelled_by is None


async def test_start_after_cancel_does_not_apply(store: Store) -> None:
    job = await store.create_generation(new())
    cancelled = await store.mark_cancelled(job.id, cancelled_by=SNOWFLAKE)
    assert cancelled is not None
    assert (cancelled.status, cancelled.cancelled_by) == (GenerationStatus.CANCELLED, SNOWFLAKE)
    assert cancelled.finished_at == T0
    assert await store.mark_running(job.id) is None
    assert await store.mark_done(job.id, seed=1, result_message_ids=[], inference_seconds=1) is None


async def test_cancel_and_start_race_has_one_winner(store: Store) -> None:
    jobs = [await store.create_generation(new()) for _ in range(10)]
    results = await asyncio.gather(
        *(store.mark_running(j.id) for j in jobs),
        *(store.mark_cancelled(j.id, cancelled_by=7) for j in jobs),
    )
    started, cancelled = results[:10], results[10:]
    for job, s, c in zip(jobs, started, cancelled, strict=True):
        assert (s is None) != (c is None), job.id


async def test_done_needs_running_and_unknown_ids_do_nothing(store: Store) -> None:
    job = await store.create_generation(new())
    assert await store.mark_done(job.id, seed=1, result_message_ids=[], inference_seconds=1) is None
    assert await store.mark_running(999) is None
    assert await store.mark_failed(999, "x") is None


async def test_failed_keeps_plain_error_and_interrupted_resumes(store: Store) -> None:
    job = await store.create_generation(new())
    await store.mark_running(job.id)
    interrupted = await store.mark_interrupted(job.id)
    assert interrupted is not None and interrupted.status is GenerationStatus.INTERRUPTED
    rerun = await store.mark_running(job.id, T0 + timedelta(minutes=1))
    assert rerun is not None and rerun.attempts == 2
    assert rerun.started_at == T0 + timedelta(minutes=1)
    failed = await store.mark_failed(
        job.id, "The image service is down. Press Reroll to retry.", T0 + timedelta(minutes=2)
    )
    assert failed is not None and failed.status is GenerationStatus.FAILED
    assert failed.finished_at == T0 + timedelta(minutes=2)
    assert failed.error == "The image service is down. Press Reroll to retry."
    assert await store.mark_interrupted(job.id) is None


async def test_unfinished_oldest_first_and_crash_marking(store: Store) -> None:
    late = await store.create_generation(new(prompt="late"), created_at=T0 + timedelta(minutes=5))
    early = await store.create_generation(new(prompt="early"), created_at=T0)
    middle = await store.create_generation(new(prompt="mid"), created_at=T0 + timedelta(minutes=1))
    done = await store.create_generation(new(prompt="done"), created_at=T0 - timedelta(hours=1))
    await store.mark_running(done.id)
    await store.mark_done(done.id, seed=5, result_message_ids=[1], inference_seconds=1.0)
    await store.mark_running(middle.id)

    assert [g.id for g in await store.unfinished_generations()] == [early.id, middle.id, late.id]
    assert await store.mark_running_as_interrupted() == 1
    assert await store.mark_running_as_interrupted() == 0
    statuses = [g.status for g in await store.unfinished_generations()]
    assert statuses == [
        GenerationStatus.QUEUED,
        GenerationStatus.INTERRUPTED,
        GenerationStatus.QUEUED,
    ]
    stored_done = await store.get_generation(done.id)
    assert stored_done is not None and stored_done.status is GenerationStatus.DONE


async def test_count_since(store: Store) -> None:
    other_user, other_guild = SNOWFLAKE + 10, SNOWFLAKE + 11
    await store.create_generation(new(), created_at=T0 - timedelta(microseconds=1))
    at_boundary = await store.create_generation(new(), created_at=T0)
    await store.create_generation(new(user_id=other_user), created_at=T0 + timedelta(hours=1))
    await store.create_generation(new(guild_id=other_guild), created_at=T0 + timedelta(hours=2))
    await store.mark_cancelled(at_boundary.id)

    assert await store.count_since(since=T0) == 3
    assert await store.count_since(since=T0, user_id=SNOWFLAKE) == 2
    assert await store.count_since(since=T0, guild_id=SNOWFLAKE + 1) == 2
    assert await store.count_since(since=T0, user_id=SNOWFLAKE, guild_id=other_guild) == 1
    assert await store.count_since(since=T0 - timedelta(days=1), user_id=SNOWFLAKE) == 3
    not_cancelled = [s for s in GenerationStatus if s is not GenerationStatus.CANCELLED]
    assert await store.count_since(since=T0, user_id=SNOWFLAKE, statuses=not_cancelled) == 1
    # Another offset, same instant.
    assert await store.count_since(since=T0.astimezone(timezone(timedelta(hours=-5)))) == 3
    with pytest.raises(ValueError, match="naive"):
        await store.count_since(since=datetime(2025, 3, 1))


async def test_latest_for_card(store: Store) -> None:
    card = SNOWFLAKE + 99
    first = await store.create_generation(new(card_message_id=card))
    await store.create_generation(new(card_message_id=card + 1))
    second = await store.create_generation(
        new(kind=GenerationKind.REMIX, card_message_id=card, parent_id=first.id),
        created_at=T0 - timedelta(hours=1),  # ids, not clocks, say which came last
    )
    latest = await store.latest_for_card(card)
    assert latest is not None and latest.id == second.id
    assert await store.latest_for_card(1) is None


async def test_meta(store: Store) -> None:
    assert await store.get_meta("command_tree_hash") is None
    await store.set_meta("command_tree_hash", "abc")
    await store.set_meta("command_tree_hash", "def")
    await store.set_meta("other", "")
    assert await store.get_meta("command_tree_hash") == "def"
    assert await store.get_meta("other") == ""


# --------------------------------------------------------------------------- restarts, schema


async def test_reopen_after_close_keeps_data(db_url: str) -> None:
    async with await Store.open(db_url) as store:
        job = await store.create_generation(new(seed=SEED_MAX))
        await store.mark_running(job.id)
        await store.set_meta("k", "v")
    async with await Store.open(db_url) as store:
        assert await store.mark_running_as_interrupted() == 1
        resumed = await store.get_generation(job.id)
        assert resumed is not None
        assert resumed.status is GenerationStatus.INTERRUPTED
        assert resumed.model_dump(exclude={"status"}) == job.model_dump(
            exclude={"status", "attempts", "started_at"}
        ) | {"attempts": 1, "started_at": resumed.started_at}
        assert await store.get_meta("k") == "v"
        assert await store.schema_version() == SCHEMA_VERSION


async def test_schema_matches_runtime_tables(store: Store) -> None:
    """Guards against a migration and the runtime Table definitions drifting apart."""

    def describe(conn: Any) -> dict[str, tuple[set[str], set[str]]]:
        inspector = inspect(conn)
        return {
            name: (
                {c["name"] for c in inspector.get_columns(name)},
                {str(i["name"]) for i in inspector.get_indexes(name)},
            )
            for name in inspector.get_table_names()
            if name != "schema_version"
        }

    async with store._engine.connect() as conn:
        found = await conn.run_sync(describe)
    expected = {
        table.name: ({c.name for c in table.columns}, {str(i.name) for i in table.indexes})
        for table in metadata.sorted_tables
    }
    assert found == expected
    fields = set(Generation.model_fields) - {"parameters", "model"} | set(
        PARAMETER_COLUMNS.values()
    )
    assert fields == expected["generations"][0]


async def test_upgrade_from_v1_database(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=1) == 1
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO generations (kind, user_id, channel_id, prompt, strength, "
                    "seed_requested, steps, guidance, count, safety_checker, reference_url, "
                    "status, created_at) VALUES ('imagine', :user, 5, 'old', 0.9, :seed, 28, "
                    "3.5, 1, 1, 'https://x/ref.png', 'queued', '2024-12-31 23:59:59.000001')"
                ),
                {"user": BIG_SNOWFLAKE, "seed": SEED_MAX},
            )
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "meta" not in tables
    finally:
        await engine.dispose()

    async with await Store.open(db_url) as store:
        assert await store.schema_version() == SCHEMA_VERSION == 3
        (old,) = await store.unfinished_generations()
        assert (old.parameters.prompt, old.user_id) == ("old", BIG_SNOWFLAKE)
        assert old.parameters.seed == SEED_MAX
        assert old.created_at == datetime(2024, 12, 31, 23, 59, 59, 1, tzinfo=UTC)
        assert old.cancelled_by is None and old.attempts == 0
        cancelled = await store.mark_cancelled(old.id, cancelled_by=SNOWFLAKE)
        assert cancelled is not None and cancelled.cancelled_by == SNOWFLAKE
        await store.set_meta("k", "v")
        assert await store.get_meta("k") == "v"


async def test_open_is_idempotent(db_url: str) -> None:
    for _ in range(2):
        async with await Store.open(db_url) as store:
            assert await store.schema_version() == SCHEMA_VERSION
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, version FROM schema_version"))).all()
        assert [tuple(r) for r in rows] == [(1, SCHEMA_VERSION)]
    finally:
        await engine.dispose()


async def test_database_newer_than_code_is_refused(db_url: str) -> None:
    async with await Store.open(db_url) as store, store._engine.begin() as conn:
        await conn.execute(text("UPDATE schema_version SET version = 99"))
    with pytest.raises(SchemaTooNewError, match="version 99") as caught:
        await Store.open(db_url)
    assert (caught.value.found, caught.value.supported) == (99, SCHEMA_VERSION)


async def test_failed_migration_rolls_back(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step is one transaction: a step that fails half-way leaves the old version intact."""
    import services.store as store_module

    def broken(conn: Any) -> None:
        store_module._migrate_2_meta_cancelled_by_indexes(conn)
        raise RuntimeError("boom")

    engine = make_engine(db_url)
    try:
        await migrate(engine, target=1)
        monkeypatch.setattr(store_module, "MIGRATIONS", (store_module.MIGRATIONS[0], broken))
        with pytest.raises(RuntimeError, match="boom"):
            await migrate(engine, target=2)
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar()
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert version == 1 and "meta" not in tables
    finally:
        await engine.dispose()
    monkeypatch.undo()
    async with await Store.open(db_url) as store:
        assert await store.schema_version() == SCHEMA_VERSION
