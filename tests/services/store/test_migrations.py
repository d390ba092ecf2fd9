"""Schema versions: every older database upgrades, and the result is what the code queries."""

from __future__ import annotations

import asyncio
import importlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.model_registry import DEFAULT_MODEL
from services.parameters import SEED_MAX, GenerationParameters
from services.safety import GuildSettings
from services.store import (
    SCHEMA_VERSION,
    Generation,
    GenerationKind,
    GenerationStatus,
    SchemaTooNewError,
    Store,
    current_version,
    make_engine,
    migrate,
)
from services.store.migrations import MIGRATIONS, Migration, MigrationError, discover
from services.store.migrations.v0002_meta_cancelled_by_indexes import meta_v2
from services.store.migrations.v0003_guild_settings_upload_limit import guild_settings_v3
from services.store.schema import metadata
from tests.services.store.records import BIG_SNOWFLAKE, SNOWFLAKE, V1_GENERATIONS, v1_row
from tests.services.store.schemas import describe_database, describe_metadata

v0004 = importlib.import_module("services.store.migrations.v0004_model_and_parameters")


async def schema_of(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await conn.run_sync(describe_database)


async def test_schema_matches_runtime_tables(store: Store) -> None:
    """Guards against a migration and the runtime Table definitions drifting apart."""
    expected = describe_metadata(metadata, store.engine.dialect)
    assert await schema_of(store.engine) == expected
    assert set(expected) == {
        *("generations", "meta", "guild_settings", "api_attempts", "budgets"),
        *("workers", "queue_members", "queue_state"),
    }
    assert set(Generation.model_fields) == set(expected["generations"]["columns"])


async def test_upgrade_from_v1_database(sqlite_url: str) -> None:
    """The row as v1 wrote it on SQLite, in raw SQL (naive ISO text, 1 for true)."""
    engine = make_engine(sqlite_url)
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

    async with await Store.open(sqlite_url) as store:
        assert await current_version(store.engine) == SCHEMA_VERSION == 10
        (old,) = await store.generations.unfinished()
        assert (old.parameters.prompt, old.user_id) == ("old", BIG_SNOWFLAKE)
        assert old.parameters.seed == SEED_MAX
        assert old.created_at == datetime(2024, 12, 31, 23, 59, 59, 1, tzinfo=UTC)
        assert old.cancelled_by is None and old.attempts == 0
        cancelled = await store.generations.mark_cancelled(old.id, cancelled_by=SNOWFLAKE)
        assert cancelled is not None and cancelled.cancelled_by == SNOWFLAKE
        await store.meta.set("k", "v")
        assert await store.meta.get("k") == "v"


async def test_upgrade_from_v2_adds_guild_settings_and_upload_limit(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=2) == 2
    finally:
        await engine.dispose()
    async with await Store.open(db_url) as store:
        assert await current_version(store.engine) == SCHEMA_VERSION == 10
        await store.guild_settings.save(GuildSettings(guild_id=1, open_rerolls=True), updated_by=2)
        assert (await store.guild_settings.get(1)).open_rerolls


async def test_upgrade_from_v1_with_rows_keeps_every_parameter(db_url: str) -> None:
    cases = [
        dict(prompt="old", strength=0.9, seed=SEED_MAX, steps=28, guidance=3.5, count=1),
        dict(prompt="@everyone 🐱\nline two", strength=0.01, seed=None, steps=1, guidance=1.0,
             count=4, safety_checker=False),
        dict(prompt="x" * 4000, strength=1.0, seed=1, steps=50, guidance=20.0, count=2),
        dict(prompt='"quoted" \\ back\\slash', strength=0.123456789, seed=42, steps=13,
             guidance=7.77, count=3, safety_checker=False),
    ]  # fmt: skip
    expected = [GenerationParameters(**case) for case in cases]
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=1) == 1
        async with engine.begin() as conn:
            for parameters in expected:
                await conn.execute(V1_GENERATIONS.insert().values(v1_row(parameters)))
            await conn.execute(
                V1_GENERATIONS.insert().values(
                    v1_row(expected[0], parent_id=1, kind="reroll", status="done")
                    | {"seed": 77, "result_message_ids": "[1, 2]", "attempts": 1}
                )
            )
        assert await migrate(engine) == SCHEMA_VERSION == 10
        assert await schema_of(engine) == describe_metadata(metadata, engine.dialect)
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT parameters FROM generations"))).scalars()
            # The knobs v0004 knew; later ones are absent and read back as their defaults.
            assert [json.loads(s) for s in stored] == [
                p.model_dump(mode="json", include=set(v0004.OLD_COLUMNS))
                for p in [*expected, expected[0]]
            ]
    finally:
        await engine.dispose()

    async with await Store.open(db_url) as store:
        for generation_id, parameters in enumerate(expected, start=1):
            old = await store.generations.get(generation_id)
            assert old is not None
            assert old.parameters == parameters
            assert old.parameters.model_dump() == parameters.model_dump()
            assert old.model == DEFAULT_MODEL
            assert old.created_at == datetime(2024, 12, 31, 23, 59, 59, 1, tzinfo=UTC)
        child = await store.generations.get(len(expected) + 1)
        assert child is not None
        assert (child.parent_id, child.kind, child.status) == (
            1,
            GenerationKind.REROLL,
            GenerationStatus.DONE,
        )
        assert (child.seed, child.result_message_ids, child.attempts) == (77, (1, 2), 1)
        assert child.parameters.seed == SEED_MAX


async def test_upgrade_from_v3_database(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=3) == 3
        async with engine.begin() as conn:
            parameters = GenerationParameters(prompt="v3", seed=None, count=2)
            await conn.execute(V1_GENERATIONS.insert().values(v1_row(parameters)))
            await conn.execute(
                text("UPDATE generations SET cancelled_by = :by, upload_limit = :limit"),
                {"by": SNOWFLAKE, "limit": 25 * 1024 * 1024},
            )
            await conn.execute(meta_v2(MetaData()).insert().values(key="k", value="v"))
            await conn.execute(
                guild_settings_v3(MetaData())
                .insert()
                .values(guild_id=9, open_rerolls=True, blocked_terms='["gore"]')
            )
    finally:
        await engine.dispose()

    async with await Store.open(db_url) as store:
        assert await current_version(store.engine) == SCHEMA_VERSION
        assert await schema_of(store.engine) == describe_metadata(metadata, store.engine.dialect)
        old = await store.generations.get(1)
        assert old is not None
        assert (old.parameters, old.model) == (parameters, DEFAULT_MODEL)
        assert (old.cancelled_by, old.upload_limit) == (SNOWFLAKE, 25 * 1024 * 1024)
        assert await store.meta.get("k") == "v"
        settings = await store.guild_settings.get(9)
        assert settings.open_rerolls and settings.blocked_terms == ("gore",)
        reroll = await store.generations.create(
            old.follow_up(kind=GenerationKind.REROLL, user_id=1, parameters=old.parameters)
        )
        assert (reroll.id, reroll.parent_id, reroll.model) == (2, 1, DEFAULT_MODEL)


async def test_open_is_idempotent(db_url: str) -> None:
    for _ in range(2):
        async with await Store.open(db_url) as store:
            assert await current_version(store.engine) == SCHEMA_VERSION
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, version FROM schema_version"))).all()
        assert [tuple(r) for r in rows] == [(1, SCHEMA_VERSION)]
    finally:
        await engine.dispose()


async def test_database_newer_than_code_is_refused(db_url: str) -> None:
    async with await Store.open(db_url) as store, store.engine.begin() as conn:
        await conn.execute(text("UPDATE schema_version SET version = 99"))
    with pytest.raises(SchemaTooNewError, match="version 99") as caught:
        await Store.open(db_url)
    assert (caught.value.found, caught.value.supported) == (99, SCHEMA_VERSION)


async def test_failed_migration_rolls_back(db_url: str) -> None:
    """Each step is one transaction: a step that fails half-way leaves the old version intact."""

    def broken(conn: Any) -> None:
        MIGRATIONS[1].upgrade(conn)
        raise RuntimeError("boom")

    engine = make_engine(db_url)
    try:
        await migrate(engine, target=1)
        steps = (MIGRATIONS[0], Migration(2, "v0002_broken", broken))
        with pytest.raises(RuntimeError, match="boom"):
            await migrate(engine, target=2, migrations=steps)
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar()
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert version == 1 and "meta" not in tables
        assert await current_version(engine) == 1
        if engine.dialect.name == "sqlite":
            async with engine.connect() as conn:  # the step's connection, back in the pool
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await engine.dispose()
    async with await Store.open(db_url) as store:
        assert await current_version(store.engine) == SCHEMA_VERSION


# --------------------------------------------------------------------------- discovery


def migration_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *files: str) -> str:
    """A throwaway package holding ``files``, each an upgrade that records its own name."""
    name = f"migrations_{uuid.uuid4().hex}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for file in files:
        (package / file).write_text(f"def upgrade(conn):\n    conn.append({file!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return name


def test_the_real_migrations_are_numbered_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert all(m.name.startswith(f"v{m.version:04d}_") for m in MIGRATIONS)


def test_migrations_are_discovered_in_number_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = ["v0010_ten.py", "v0002_two.py", "v0001_one.py", "_helpers.py"]
    files += [f"v{n:04d}_n{n}.py" for n in range(3, 10)]
    package = migration_package(tmp_path, monkeypatch, *files)
    steps = discover(package)
    assert [s.version for s in steps] == list(range(1, 11))
    names = [s.name for s in steps]
    assert (names[0], names[1], names[-1]) == ("v0001_one", "v0002_two", "v0010_ten")
    applied: list[str] = []
    for step in steps:
        step.upgrade(applied)  # type: ignore[arg-type]
    assert applied == [f"{s.name}.py" for s in steps]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["v0001_one.py", "v0003_three.py"], "missing v0002"),
        (["v0002_two.py"], "missing v0001"),
        (["v0000_zero.py", "v0001_one.py"], "numbered from 1"),
        (["v0001_one.py", "v0001_again.py"], "both version 1"),
        (["v0001_one.py", "v002_two.py"], "named vNNNN_"),
        (["v0001_one.py", "0002_two.py"], "named vNNNN_"),
    ],
)
def test_a_gap_or_a_stray_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: list[str], message: str
) -> None:
    package = migration_package(tmp_path, monkeypatch, *files)
    with pytest.raises(MigrationError, match=message):
        discover(package)


def test_a_step_without_upgrade_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = migration_package(tmp_path, monkeypatch, "v0001_one.py")
    (tmp_path / package / "v0002_empty.py").write_text("UPGRADE = None\n")
    importlib.invalidate_caches()
    with pytest.raises(MigrationError, match="no upgrade"):
        discover(package)


# --------------------------------------------------------------------------- concurrency, versions


async def test_current_version_of_an_empty_database_is_zero(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await current_version(engine) == 0
        assert await migrate(engine, target=2) == 2
        assert await current_version(engine) == 2
    finally:
        await engine.dispose()


async def test_two_processes_migrating_at_once_apply_each_step_once(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(3)]
    try:
        # The file exists, in WAL mode, as after any first start: two processes creating a new
        # SQLite file at the same instant can still collide switching it to WAL.
        async with engines[0].connect():
            pass
        results = await asyncio.gather(*(migrate(engine) for engine in engines))
        assert results == [SCHEMA_VERSION] * 3
        async with engines[0].connect() as conn:
            rows = (await conn.execute(text("SELECT id, version FROM schema_version"))).all()
        assert [tuple(r) for r in rows] == [(1, SCHEMA_VERSION)]
    finally:
        for engine in engines:
            await engine.dispose()
