"""/fluxbot-stats' job figures against a seeded database, on both engines."""

from __future__ import annotations

from datetime import timedelta

from services.job_stats import job_stats
from services.store import GenerationStatus, Store
from tests.services.store.records import SNOWFLAKE, T0, mark_running, new

GUILD = SNOWFLAKE + 1


async def finished(store: Store, seconds: float, *, model: str | None = None, fail: bool = False):
    extra = {"model": model} if model else {}
    job = await store.generations.create(new(**extra), created_at=T0)
    await mark_running(store, job.id, T0)
    at = T0 + timedelta(seconds=seconds)
    if fail:
        await store.generations.mark_failed(job.id, "down", at)
    else:
        await store.generations.mark_done(
            job.id, seed=1, result_message_ids=[1], inference_seconds=1.0, finished_at=at
        )


async def test_outcomes_models_and_waits_of_one_guild_since_a_day(store: Store):
    for seconds in (1, 2, 3, 4, 100):
        await finished(store, seconds)
    await finished(store, 7, model="flux/kontext-pro/image-to-image")
    await finished(store, 50, fail=True)
    waiting = await store.generations.create(new(), created_at=T0)
    await store.generations.create(new(guild_id=GUILD + 1), created_at=T0)  # another server
    await store.generations.create(new(), created_at=T0 - timedelta(days=2))  # too old

    rows = await store.generations.outcomes(guild_id=GUILD, since=T0 - timedelta(hours=1))
    stats = job_stats(rows)

    assert stats.total == 8 and waiting.status is GenerationStatus.QUEUED
    assert stats.by_outcome == {
        GenerationStatus.DONE: 6,
        GenerationStatus.FAILED: 1,
        GenerationStatus.QUEUED: 1,
    }
    assert stats.by_model == {"flux/dev/image-to-image": 7, "flux/kontext-pro/image-to-image": 1}
    # Done jobs only: 1, 2, 3, 4, 7, 100 s -> nearest rank p50 = 3 s, p95 = 100 s.
    assert (stats.p50_seconds, stats.p95_seconds) == (3.0, 100.0)
    assert job_stats(rows, since=T0 + timedelta(seconds=1)).total == 0
