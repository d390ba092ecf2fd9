"""Daily quotas on a real SQLite store, with a fake clock moved across UTC midnight."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.jobs import QueueRefused
from services.quotas import DailyQuotas, QuotaExceeded
from services.store import Store
from tests.services.store.records import mark_running, new

EVENING = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)
MIDNIGHT = datetime(2025, 3, 2, tzinfo=UTC)
GUILD = 500


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(EVENING)


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    async with await Store.open(f"sqlite:///{tmp_path}/quotas.sqlite3", clock=clock) as opened:
        yield opened


async def add_job(store: Store, user_id: int, guild_id: int | None = GUILD, **at: Any) -> int:
    return (await store.generations.create(new(user_id=user_id, guild_id=guild_id), **at)).id


async def test_a_member_over_the_daily_limit_is_told_when_it_resets(store: Store, clock: Clock):
    quotas = DailyQuotas(store, user_limit=2, clock=clock)
    await add_job(store, user_id=1)
    await quotas.check(1, GUILD)
    await add_job(store, user_id=1)

    with pytest.raises(QuotaExceeded) as refused:
        await quotas.check(1, GUILD)
    assert isinstance(refused.value, QueueRefused)  # handled wherever the queue's refusals are
    assert refused.value.resets_at == MIDNIGHT
    assert f"<t:{int(MIDNIGHT.timestamp())}:R>" in refused.value.user_message
    assert "2 images" in refused.value.user_message
    await quotas.check(2, GUILD)  # another member is unaffected


async def test_the_quota_resets_at_utc_midnight(store: Store, clock: Clock):
    quotas = DailyQuotas(store, user_limit=1, clock=clock)
    await add_job(store, user_id=1, created_at=EVENING - timedelta(hours=23))
    with pytest.raises(QuotaExceeded):
        await quotas.check(1, None)
    clock.now = MIDNIGHT - timedelta(microseconds=1)
    with pytest.raises(QuotaExceeded):
        await quotas.check(1, None)
    clock.now = MIDNIGHT
    await quotas.check(1, None)
    assert quotas.today() == (MIDNIGHT, MIDNIGHT + timedelta(days=1))


async def test_cancelled_and_failed_jobs_give_their_quota_back(store: Store, clock: Clock):
    quotas = DailyQuotas(store, user_limit=2, clock=clock)
    cancelled = await add_job(store, user_id=1)
    failed = await add_job(store, user_id=1)
    await store.generations.mark_cancelled(cancelled, cancelled_by=1)
    await mark_running(store, failed)
    await store.generations.mark_failed(failed, "API down")
    await quotas.check(1, GUILD)
    done = await add_job(store, user_id=1)
    await mark_running(store, done)
    await store.generations.mark_done(done, seed=1, result_message_ids=[1], inference_seconds=1.0)
    await add_job(store, user_id=1)  # still waiting: counts too
    with pytest.raises(QuotaExceeded):
        await quotas.check(1, GUILD)


async def test_the_guild_limit_counts_every_member_and_spares_dms(store: Store, clock: Clock):
    quotas = DailyQuotas(store, guild_limit=3, clock=clock)
    for user_id in (1, 2, 3):
        await add_job(store, user_id=user_id)
    await add_job(store, user_id=4, guild_id=GUILD + 1)  # another server's job
    with pytest.raises(QuotaExceeded, match="This server has used all 3 images"):
        await quotas.check(4, GUILD)
    await quotas.check(4, GUILD + 1)
    await quotas.check(4, None)  # a DM has no server quota


async def test_zero_means_unlimited(store: Store, clock: Clock):
    unlimited = DailyQuotas(store, user_limit=0, guild_limit=0, clock=clock)
    capped = DailyQuotas(store, user_limit=20, guild_limit=20, clock=clock)
    for _ in range(20):
        await add_job(store, user_id=1)
    await unlimited.check(1, GUILD)  # 20 today, and still no refusal
    await unlimited.check(1, None)
    with pytest.raises(QuotaExceeded):  # the same day with a limit does refuse
        await capped.check(1, GUILD)
