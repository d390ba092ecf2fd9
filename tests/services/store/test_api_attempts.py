"""The ledger of API attempts: every attempt a row, sums per day, guild, member and model."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from services.store import NewApiAttempt, Store
from tests.services.store.records import SNOWFLAKE, T0, attempt, mark_running, new


async def test_attempts_round_trip_in_order(store: Store) -> None:
    generation = await store.generations.create(new())
    failed = attempt(generation, 1, status=500, outcome="ServerError", credits=0, usd_nanos=0)
    await store.api_attempts.record(failed)
    await store.api_attempts.record(attempt(generation, 2))

    stored = await store.api_attempts.for_generation(generation.id)

    assert [(a.attempt, a.outcome, a.usd_nanos) for a in stored] == [
        (1, "ServerError", 0),
        (2, "ok", 25_000_000),
    ]
    assert stored[1].client_request_id == f"fluxbot:{generation.id}:1:2"
    assert stored[1].created_at == T0


async def test_the_same_attempt_cannot_be_recorded_twice(store: Store) -> None:
    generation = await store.generations.create(new())
    await store.api_attempts.record(attempt(generation))
    with pytest.raises(IntegrityError):
        await store.api_attempts.record(attempt(generation))


def test_an_attempt_must_name_its_outcome_and_cost_nothing_negative() -> None:
    with pytest.raises(ValidationError):
        NewApiAttempt(generation_id=1, run=1, attempt=1, user_id=1, model="m", outcome="")
    with pytest.raises(ValidationError):
        NewApiAttempt(
            generation_id=1, run=1, attempt=1, user_id=1, model="m", outcome="ok", usd_nanos=-1
        )


async def test_spend_is_summed_per_scope_and_day(store: Store) -> None:
    guild, other_guild = SNOWFLAKE + 1, SNOWFLAKE + 9
    alice = await store.generations.create(new(user_id=11, guild_id=guild))
    bob = await store.generations.create(new(user_id=12, guild_id=guild))
    elsewhere = await store.generations.create(new(user_id=11, guild_id=other_guild))
    yesterday = T0 - timedelta(days=1)
    await store.api_attempts.record(attempt(alice, usd_nanos=10), created_at=yesterday)
    await store.api_attempts.record(attempt(alice, 2, usd_nanos=20))
    await store.api_attempts.record(attempt(bob, usd_nanos=300))
    await store.api_attempts.record(attempt(elsewhere, usd_nanos=4000))

    today = T0.replace(hour=0, minute=0, second=0, microsecond=0)
    assert await store.api_attempts.spent(since=today) == 4320
    assert await store.api_attempts.spent(since=today, guild_id=guild) == 320
    assert await store.api_attempts.spent(since=today, guild_id=guild, user_id=11) == 20
    assert await store.api_attempts.spent(since=yesterday, guild_id=guild, user_id=11) == 30
    assert await store.api_attempts.daily(since=yesterday, guild_id=guild) == {
        date(2025, 2, 28): 10,
        date(2025, 3, 1): 320,
    }
    by_member = await store.api_attempts.totals(since=yesterday, guild_id=guild, by="user_id")
    assert by_member == [(12, 300, 1), (11, 30, 2)]
    by_model = await store.api_attempts.totals(since=today, by="model")
    assert by_model == [(alice.model, 4320, 3)]


async def test_unsettled_jobs_reserve_their_estimates(store: Store) -> None:
    guild = SNOWFLAKE + 1
    waiting = await store.generations.create(new(user_id=11, guild_id=guild, estimate_usd_nanos=7))
    await store.generations.create(new(user_id=12, guild_id=guild, estimate_usd_nanos=100))
    done = await store.generations.create(new(user_id=11, guild_id=guild, estimate_usd_nanos=5000))
    await mark_running(store, done.id)
    await store.generations.mark_done(
        done.id, seed=1, result_message_ids=[], inference_seconds=None
    )
    await store.generations.create(new(user_id=11, guild_id=None))  # no estimate: counts 0

    async with store.engine.connect() as conn:
        assert await store.generations.reserved(conn) == 107
        assert await store.generations.reserved(conn, guild_id=guild, user_id=11) == 7
    await store.generations.mark_cancelled(waiting.id)
    async with store.engine.connect() as conn:
        assert await store.generations.reserved(conn, guild_id=guild, user_id=11) == 0
