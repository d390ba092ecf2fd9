"""The same store on PostgreSQL (asyncpg), when ``FLUXBOT_TEST_POSTGRES_URL`` names a database.

Skipped otherwise. Every test starts from an empty database: the tables are dropped first, so
point it at a database kept for tests only, e.g. ``postgresql://fluxbot@127.0.0.1:5432/test``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from services.model_registry import DEFAULT_MODEL
from services.parameters import SEED_MAX, GenerationParameters
from services.safety import GuildSettings
from services.store import (
    SCHEMA_VERSION,
    GenerationKind,
    GenerationStatus,
    Store,
    current_version,
    make_engine,
    migrate,
)
from services.store.schema import metadata
from tests.services.store.records import (
    BIG_SNOWFLAKE,
    T0,
    V1_GENERATIONS,
    FakeClock,
    new,
    v1_row,
)
from tests.services.store.schemas import describe_database, describe_metadata
from tests.services.test_costs import race_for_the_last_cents

pytest.importorskip("asyncpg")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = os.environ.get("FLUXBOT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("FLUXBOT_TEST_POSTGRES_URL is not set")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for table in (
                "api_attempts",
                "budgets",
                "generations",
                "meta",
                "guild_settings",
                "schema_version",
            ):
                await conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    finally:
        await engine.dispose()
    yield url


async def test_v1_with_rows_upgrades_to_the_runtime_schema(pg_url: str) -> None:
    cases = [
        GenerationParameters(prompt="old", strength=0.9, seed=SEED_MAX, steps=28, count=1),
        GenerationParameters(
            prompt="🐱 'quoted'",
            strength=0.123456789,
            seed=None,
            guidance=20.0,
            safety_checker=False,
        ),
    ]
    created = datetime(2024, 12, 31, 23, 59, 59, 1, tzinfo=UTC)
    engine = make_engine(pg_url)
    try:
        assert await current_version(engine) == 0
        assert await migrate(engine, target=1) == 1
        async with engine.begin() as conn:
            for parameters in cases:
                row = v1_row(parameters, user_id=BIG_SNOWFLAKE, created_at=created)
                await conn.execute(V1_GENERATIONS.insert().values(row))
            await conn.execute(
                V1_GENERATIONS.insert().values(
                    v1_row(cases[0], parent_id=1, kind="reroll", created_at=created)
                )
            )
        assert await migrate(engine) == SCHEMA_VERSION
        async with engine.connect() as conn:
            found = await conn.run_sync(describe_database)
        assert found == describe_metadata(metadata, engine.dialect)
    finally:
        await engine.dispose()

    async with await Store.open(pg_url) as store:
        for generation_id, parameters in enumerate(cases, start=1):
            old = await store.generations.get(generation_id)
            assert old is not None
            assert (old.parameters, old.model, old.created_at) == (
                parameters,
                DEFAULT_MODEL,
                created,
            )
        child = await store.generations.get(3)
        assert child is not None and child.parent_id == 1
        assert (await store.generations.create(new())).id == 4


async def test_repositories_round_trip(pg_url: str) -> None:
    async with await Store.open(pg_url, clock=lambda: T0) as store:
        job = await store.generations.create(new(seed=SEED_MAX, user_id=BIG_SNOWFLAKE))
        assert await store.generations.get(job.id) == job
        assert job.created_at == T0
        running = await store.generations.mark_running(job.id)
        assert running is not None and running.attempts == 1
        assert await store.generations.mark_cancelled(job.id, cancelled_by=1) is None
        done = await store.generations.mark_done(
            job.id, seed=5, result_message_ids=[BIG_SNOWFLAKE], inference_seconds=1.5
        )
        assert done is not None and done.result_message_ids == (BIG_SNOWFLAKE,)
        waiting = await store.generations.create(new(card_message_id=9), created_at=T0)
        assert [g.id for g in await store.generations.unfinished()] == [waiting.id]
        assert await store.generations.count_since(since=T0 - timedelta(seconds=1)) == 2
        assert (
            await store.generations.count_since(
                since=T0, statuses=[GenerationStatus.DONE], user_id=BIG_SNOWFLAKE
            )
            == 1
        )
        latest = await store.generations.latest_for_card(9)
        assert latest is not None and latest.id == waiting.id
        reroll = await store.generations.create(
            waiting.follow_up(kind=GenerationKind.REROLL, user_id=1, parameters=waiting.parameters)
        )
        assert reroll.parent_id == waiting.id

        chosen = GuildSettings(guild_id=7, open_rerolls=True, blocked_terms=("gore",))
        await store.guild_settings.save(chosen, updated_by=1)
        await store.guild_settings.save(chosen, updated_by=2)
        await store.meta.set("k", "v")
        await store.meta.set("k", "w")
    async with await Store.open(pg_url) as store:
        assert await store.guild_settings.get(7) == chosen
        assert await store.meta.get("k") == "w"


async def test_start_and_cancel_race_has_one_winner(pg_url: str) -> None:
    async with await Store.open(pg_url) as store:
        jobs = [await store.generations.create(new()) for _ in range(10)]
        results = await asyncio.gather(
            *(store.generations.mark_running(j.id) for j in jobs),
            *(store.generations.mark_cancelled(j.id, cancelled_by=7) for j in jobs),
        )
    for started, cancelled in zip(results[:10], results[10:], strict=True):
        assert (started is None) != (cancelled is None)


async def test_processes_migrating_at_once_apply_each_step_once(pg_url: str) -> None:
    engines = [make_engine(pg_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(engine) for engine in engines))
        assert results == [SCHEMA_VERSION] * 3
        assert await current_version(engines[0]) == SCHEMA_VERSION
    finally:
        for engine in engines:
            await engine.dispose()


async def test_two_processes_admitting_for_the_last_cents_let_only_one_in(pg_url: str) -> None:
    """The advisory lock of ``Store.admission``: READ COMMITTED alone would let both in."""
    await race_for_the_last_cents(pg_url, FakeClock())
