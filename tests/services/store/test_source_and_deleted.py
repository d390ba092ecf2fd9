"""v0005: which result image a job started from, Delete's mark, and /history's query."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from services.store import GenerationKind, Store, make_engine, migrate
from tests.services.store.records import SNOWFLAKE, T0, FakeClock, new


async def test_a_v4_database_gains_the_columns_and_keeps_its_rows(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=4) == 4
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO generations (kind, user_id, channel_id, parameters, "
                    "reference_url, status, created_at) VALUES ('imagine', 1, 2, "
                    "'{\"prompt\": \"old\"}', 'u', 'done', '2025-01-01 00:00:00.000000')"
                )
            )
        assert await migrate(engine, target=5) == 5
    finally:
        await engine.dispose()
    async with await Store.open(db_url) as store:
        old = await store.generations.get(1)
        assert old is not None and old.parameters.prompt == "old"
        assert (old.source_id, old.source_image, old.deleted_at, old.deleted_by) == (None,) * 4
        assert [g.id for g in await store.generations.history(1, offset=0, limit=10)] == [1]


async def test_follow_ups_keep_the_source_image_unless_given_a_new_one(store: Store) -> None:
    first = await store.generations.create(new())
    parameters = first.parameters.model_copy(update={"seed": None})
    vary = await store.generations.create(
        first.follow_up(kind=GenerationKind.VARY, user_id=7, parameters=parameters, image=2)
    )
    assert (vary.parent_id, vary.source_id, vary.source_image) == (first.id, first.id, 2)
    reroll = await store.generations.create(
        vary.follow_up(kind=GenerationKind.REROLL, user_id=7, parameters=parameters)
    )
    # The reroll of a variation varies the same image again: its reference does not change.
    assert (reroll.parent_id, reroll.source_id, reroll.source_image) == (vary.id, first.id, 2)
    remix = first.follow_up(kind=GenerationKind.REMIX, user_id=7, parameters=parameters)
    assert (remix.source_id, remix.source_image) == (None, None)


async def test_a_generation_is_marked_deleted_once(store: Store, clock: FakeClock) -> None:
    job = await store.generations.create(new())
    deleted = await store.generations.mark_deleted(job.id, deleted_by=SNOWFLAKE)
    assert deleted is not None
    assert (deleted.deleted_at, deleted.deleted_by) == (T0, SNOWFLAKE)
    assert deleted.status is job.status  # nothing else changes
    assert await store.generations.mark_deleted(job.id, deleted_by=1) is None
    assert await store.generations.mark_deleted(job.id + 1, deleted_by=1) is None
    again = await store.generations.get(job.id)
    assert again is not None and again.deleted_by == SNOWFLAKE


async def test_history_is_a_members_own_newest_first_without_deleted_ones(
    store: Store, clock: FakeClock
) -> None:
    mine = []
    for n in range(13):
        clock.now = T0 + timedelta(minutes=n)
        mine.append(await store.generations.create(new(prompt=f"mine {n}", user_id=SNOWFLAKE)))
        await store.generations.create(new(prompt=f"theirs {n}", user_id=SNOWFLAKE + 5))
    await store.generations.mark_deleted(mine[11].id, deleted_by=SNOWFLAKE)

    first = await store.generations.history(SNOWFLAKE, offset=0, limit=10)
    second = await store.generations.history(SNOWFLAKE, offset=10, limit=10)
    prompts = [g.parameters.prompt for g in first + second]
    assert prompts == [f"mine {n}" for n in (12, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)]
    assert len(first) == 10 and await store.generations.count_history(SNOWFLAKE) == 12
    assert await store.generations.count_history(1) == 0


def test_a_source_image_must_not_be_negative() -> None:
    with pytest.raises(ValidationError, match="source_image"):
        new(source_id=1, source_image=-1)
