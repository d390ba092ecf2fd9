"""What only PostgreSQL can show: real concurrent sessions, and a server not in UTC.

Every other store test runs on PostgreSQL too (``db_url`` in this folder's conftest); these
take a database of their own on the session's server (tests/postgres.py), whose time zone is
deliberately not UTC so a naive timestamp anywhere would shift.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from services.parameters import SEED_MAX
from services.safety import GuildSettings
from services.store import GenerationKind, GenerationStatus, Store
from tests.postgres import PostgresServer
from tests.services.store.records import BIG_SNOWFLAKE, T0, FakeClock, mark_running, new
from tests.services.test_costs import race_for_the_last_cents


@pytest.fixture
async def pg_url(postgres: PostgresServer) -> AsyncIterator[str]:
    async with postgres.database() as url:
        yield url


async def test_repositories_round_trip(pg_url: str) -> None:
    async with await Store.open(pg_url, clock=lambda: T0) as store:
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("SHOW timezone"))).scalar() != "UTC"
        job = await store.generations.create(new(seed=SEED_MAX, user_id=BIG_SNOWFLAKE))
        assert await store.generations.get(job.id) == job
        assert job.created_at == T0
        running = await mark_running(store, job.id)
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
            *(mark_running(store, j.id) for j in jobs),
            *(store.generations.mark_cancelled(j.id, cancelled_by=7) for j in jobs),
        )
    for started, cancelled in zip(results[:10], results[10:], strict=True):
        assert (started is None) != (cancelled is None)


async def test_two_processes_admitting_for_the_last_cents_let_only_one_in(pg_url: str) -> None:
    """The advisory lock of ``Store.admission``: READ COMMITTED alone would let both in."""
    await race_for_the_last_cents(pg_url, FakeClock())
