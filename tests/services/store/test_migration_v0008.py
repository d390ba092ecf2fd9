"""v0008: a job left running by a version before the database queue runs again after the upgrade."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from services.parameters import GenerationParameters
from services.store import GenerationStatus, Store, make_engine, migrate
from services.store.job_queue import Claimed, NoClaim, Refusal
from tests.services.store.records import V1_GENERATIONS, v1_row


async def test_a_job_running_before_the_upgrade_is_taken_up_by_the_queue(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=1) == 1
        async with engine.begin() as conn:
            values = v1_row(GenerationParameters(prompt="running at the upgrade"))
            await conn.execute(V1_GENERATIONS.insert().values(values))
            await conn.execute(update(V1_GENERATIONS).values(status="running"))
        assert await migrate(engine, target=7) == 7
        assert await migrate(engine, target=8) == 8
    finally:
        await engine.dispose()
    async with await Store.open(db_url) as store:
        assert await store.queue.claim("w", max_concurrent=1) == NoClaim(Refusal.FULL)
        beat = await store.workers.heartbeat("w", lease=timedelta(seconds=30))
        assert beat.reaped == 1, "no process holds it: it goes back in line at once"
        claimed = await store.queue.claim("w", max_concurrent=1)
        assert isinstance(claimed, Claimed)
        assert claimed.generation.status is GenerationStatus.RUNNING
        assert claimed.generation.attempts == 1
        assert not await store.queue.credit_hold()
