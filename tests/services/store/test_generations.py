"""Generations on a real SQLite file: round trips, guarded transitions, restarts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from services.model_registry import DEFAULT_MODEL
from services.parameters import SEED_MAX, GenerationParameters
from services.store import (
    SCHEMA_VERSION,
    GenerationKind,
    GenerationStatus,
    NewGeneration,
    Store,
    current_version,
)
from tests.services.store.records import BIG_SNOWFLAKE, SNOWFLAKE, T0, FakeClock, mark_running, new


async def test_create_get_round_trip_with_extreme_values(store: Store) -> None:
    created = await store.generations.create(
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
    assert await store.generations.get(created.id) == created
    assert await store.generations.get(created.id + 1) is None

    await mark_running(
        store, created.id, datetime(2025, 3, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    )
    done = await store.generations.mark_done(
        created.id,
        seed=SEED_MAX,
        result_message_ids=[SNOWFLAKE, BIG_SNOWFLAKE],
        inference_seconds=1.5,
    )
    again = await store.generations.get(created.id)
    assert again == done
    assert again is not None
    assert again.seed == SEED_MAX and again.user_id == BIG_SNOWFLAKE
    assert again.result_message_ids == (SNOWFLAKE, BIG_SNOWFLAKE)
    assert again.started_at == datetime(2025, 3, 1, 12, 0, 0, 1, tzinfo=UTC)
    assert again.started_at is not None and again.started_at.tzinfo is UTC


async def test_ids_increase_and_parameters_round_trip(store: Store) -> None:
    parameters = GenerationParameters(prompt="dog", strength=0.5, seed=42, steps=10, count=4)
    first = await store.generations.create(
        NewGeneration(
            parameters=parameters,
            kind=GenerationKind.IMAGINE,
            user_id=1,
            channel_id=2,
            reference_url="https://x/y.png",
        )
    )
    reroll = await store.generations.create(
        new(kind=GenerationKind.REROLL, parent_id=first.id, seed=None)
    )
    assert reroll.id > first.id and reroll.parent_id == first.id
    assert first.parameters == parameters


async def test_setters_touch_one_field_and_refuse_unknown_ids(store: Store) -> None:
    job = await store.generations.create(new())
    moved = await store.generations.set_reference_url(job.id, "https://cdn.example/new.png")
    assert moved == job.model_copy(update={"reference_url": "https://cdn.example/new.png"})
    assert await store.generations.set_reference_url(job.id + 100, "https://x/y.png") is None


async def test_parent_must_exist(store: Store) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        await store.generations.create(new(parent_id=12345))


# --------------------------------------------------------------------------- transitions


async def test_happy_path_transitions(store: Store, clock: FakeClock) -> None:
    job = await store.generations.create(new())
    clock.now = T0 + timedelta(seconds=3)
    running = await mark_running(store, job.id)
    assert running is not None
    assert running.status is GenerationStatus.RUNNING
    assert running.attempts == 1 and running.started_at == clock.now
    done = await store.generations.mark_done(
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
    assert await mark_running(store, job.id) is None
    assert await store.generations.mark_failed(job.id, "late") is None
    assert await store.generations.mark_cancelled(job.id, cancelled_by=1) is None
    assert await store.generations.get(job.id) == done


async def test_cancel_after_start_does_not_apply(store: Store) -> None:
    job = await store.generations.create(new())
    assert await mark_running(store, job.id) is not None
    assert await store.generations.mark_cancelled(job.id, cancelled_by=SNOWFLAKE) is None
    stored = await store.generations.get(job.id)
    assert stored is not None and stored.status is GenerationStatus.RUNNING
    assert stored.cancelled_by is None


async def test_start_after_cancel_does_not_apply(store: Store) -> None:
    job = await store.generations.create(new())
    cancelled = await store.generations.mark_cancelled(job.id, cancelled_by=SNOWFLAKE)
    assert cancelled is not None
    assert (cancelled.status, cancelled.cancelled_by) == (GenerationStatus.CANCELLED, SNOWFLAKE)
    assert cancelled.finished_at == T0
    assert await mark_running(store, job.id) is None
    assert (
        await store.generations.mark_done(
            job.id, seed=1, result_message_ids=[], inference_seconds=1
        )
        is None
    )


async def test_cancel_and_start_race_has_one_winner(store: Store) -> None:
    jobs = [await store.generations.create(new()) for _ in range(10)]
    results = await asyncio.gather(
        *(mark_running(store, j.id) for j in jobs),
        *(store.generations.mark_cancelled(j.id, cancelled_by=7) for j in jobs),
    )
    started, cancelled = results[:10], results[10:]
    for job, s, c in zip(jobs, started, cancelled, strict=True):
        assert (s is None) != (c is None), job.id


async def test_done_needs_running_and_unknown_ids_do_nothing(store: Store) -> None:
    job = await store.generations.create(new())
    assert (
        await store.generations.mark_done(
            job.id, seed=1, result_message_ids=[], inference_seconds=1
        )
        is None
    )
    assert await mark_running(store, 999) is None
    assert await store.generations.mark_failed(999, "x") is None


async def test_failed_keeps_plain_error_and_interrupted_resumes(store: Store) -> None:
    job = await store.generations.create(new())
    await mark_running(store, job.id)
    assert await store.workers.retire("tests") == [job.id]  # the process stopped
    interrupted = await store.generations.get(job.id)
    assert interrupted is not None and interrupted.status is GenerationStatus.INTERRUPTED
    rerun = await mark_running(store, job.id, T0 + timedelta(minutes=1))
    assert rerun is not None and rerun.attempts == 2
    assert rerun.started_at == T0 + timedelta(minutes=1)
    failed = await store.generations.mark_failed(
        job.id, "The image service is down. Press Reroll to retry.", T0 + timedelta(minutes=2)
    )
    assert failed is not None and failed.status is GenerationStatus.FAILED
    assert failed.finished_at == T0 + timedelta(minutes=2)
    assert failed.error == "The image service is down. Press Reroll to retry."
    assert await store.workers.retire("tests") == []


async def test_unfinished_oldest_first_and_crash_marking(store: Store, clock: FakeClock) -> None:
    late = await store.generations.create(new(prompt="late"), created_at=T0 + timedelta(minutes=5))
    early = await store.generations.create(new(prompt="early"), created_at=T0)
    middle = await store.generations.create(new(prompt="mid"), created_at=T0 + timedelta(minutes=1))
    done = await store.generations.create(new(prompt="done"), created_at=T0 - timedelta(hours=1))
    await mark_running(store, done.id)
    await store.generations.mark_done(
        done.id, seed=5, result_message_ids=[1], inference_seconds=1.0
    )
    await mark_running(store, middle.id)

    assert [g.id for g in await store.generations.unfinished()] == [early.id, middle.id, late.id]
    clock.now += timedelta(minutes=1)  # the process running ``middle`` died a minute ago
    lease = timedelta(seconds=30)
    assert (await store.workers.heartbeat("another", lease=lease)).reaped == 1
    assert (await store.workers.heartbeat("another", lease=lease)).reaped == 0
    statuses = [g.status for g in await store.generations.unfinished()]
    assert statuses == [
        GenerationStatus.QUEUED,
        GenerationStatus.INTERRUPTED,
        GenerationStatus.QUEUED,
    ]
    stored_done = await store.generations.get(done.id)
    assert stored_done is not None and stored_done.status is GenerationStatus.DONE


async def test_count_since(store: Store) -> None:
    other_user, other_guild = SNOWFLAKE + 10, SNOWFLAKE + 11
    await store.generations.create(new(), created_at=T0 - timedelta(microseconds=1))
    at_boundary = await store.generations.create(new(), created_at=T0)
    await store.generations.create(new(user_id=other_user), created_at=T0 + timedelta(hours=1))
    await store.generations.create(new(guild_id=other_guild), created_at=T0 + timedelta(hours=2))
    await store.generations.mark_cancelled(at_boundary.id)

    assert await store.generations.count_since(since=T0) == 3
    assert await store.generations.count_since(since=T0, user_id=SNOWFLAKE) == 2
    assert await store.generations.count_since(since=T0, guild_id=SNOWFLAKE + 1) == 2
    assert (
        await store.generations.count_since(since=T0, user_id=SNOWFLAKE, guild_id=other_guild) == 1
    )
    assert await store.generations.count_since(since=T0 - timedelta(days=1), user_id=SNOWFLAKE) == 3
    not_cancelled = [s for s in GenerationStatus if s is not GenerationStatus.CANCELLED]
    assert (
        await store.generations.count_since(since=T0, user_id=SNOWFLAKE, statuses=not_cancelled)
        == 1
    )
    # Another offset, same instant.
    assert (
        await store.generations.count_since(since=T0.astimezone(timezone(timedelta(hours=-5)))) == 3
    )
    with pytest.raises(ValueError, match="naive"):
        await store.generations.count_since(since=datetime(2025, 3, 1))


async def test_latest_for_card(store: Store) -> None:
    card = SNOWFLAKE + 99
    first = await store.generations.create(new(card_message_id=card))
    await store.generations.create(new(card_message_id=card + 1))
    second = await store.generations.create(
        new(kind=GenerationKind.REMIX, card_message_id=card, parent_id=first.id),
        created_at=T0 - timedelta(hours=1),  # ids, not clocks, say which came last
    )
    latest = await store.generations.latest_for_card(card)
    assert latest is not None and latest.id == second.id
    assert await store.generations.latest_for_card(1) is None


async def test_reopen_after_close_keeps_data(db_url: str) -> None:
    async with await Store.open(db_url) as store:
        job = await store.generations.create(new(seed=SEED_MAX))
        await mark_running(store, job.id)
        await store.meta.set("k", "v")
    async with await Store.open(db_url) as store:
        # A running job whose process is not registered at all has no lease to wait for.
        assert (await store.workers.heartbeat("next", lease=timedelta(seconds=30))).reaped == 1
        resumed = await store.generations.get(job.id)
        assert resumed is not None
        assert resumed.status is GenerationStatus.INTERRUPTED
        assert resumed.model_dump(exclude={"status"}) == job.model_dump(
            exclude={"status", "attempts", "started_at"}
        ) | {"attempts": 1, "started_at": resumed.started_at, "claimed_by": None}
        assert await store.meta.get("k") == "v"
        assert await current_version(store.engine) == SCHEMA_VERSION


# --------------------------------------------------------------------------- model, parameters


async def test_a_job_runs_on_the_default_model_unless_told_otherwise(store: Store) -> None:
    default = await store.generations.create(new())
    assert default.model == DEFAULT_MODEL
    other = await store.generations.create(new(model="flux/kontext-pro/image-to-image"))
    assert other.model == "flux/kontext-pro/image-to-image"
    assert await store.generations.get(other.id) == other


def test_a_model_id_must_fit_its_column() -> None:
    new(model="m" * 100)
    for bad in ("", "m" * 101):
        with pytest.raises(ValidationError):
            new(model=bad)


async def test_follow_ups_keep_place_card_reference_and_model(store: Store) -> None:
    source = await store.generations.create(
        new(model="flux/kontext-max/image-to-image", card_message_id=SNOWFLAKE, upload_limit=10)
    )
    parameters = source.parameters.model_copy(update={"prompt": "a dog", "seed": None})
    follow_up = source.follow_up(kind=GenerationKind.REMIX, user_id=7, parameters=parameters)
    assert (
        follow_up.model_dump()
        == new(
            kind=GenerationKind.REMIX,
            parent_id=source.id,
            user_id=7,
            model="flux/kontext-max/image-to-image",
            card_message_id=SNOWFLAKE,
            upload_limit=10,
            prompt="a dog",
        ).model_dump()
    )
    remix = await store.generations.create(follow_up)
    assert (remix.model, remix.parent_id, remix.parameters) == (source.model, source.id, parameters)


async def test_parameters_are_stored_as_one_json_column(store: Store) -> None:
    parameters = GenerationParameters(
        prompt='say "hi" 🐱', strength=0.123456789, seed=SEED_MAX, steps=1, guidance=19.99, count=4
    )
    job = await store.generations.create(new(**parameters.model_dump()))
    async with store.engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT parameters FROM generations WHERE id = :id"), {"id": job.id}
            )
        ).scalar_one()
    assert json.loads(stored) == parameters.model_dump(mode="json")
    assert job.parameters == parameters


async def test_stored_parameters_are_read_leniently(store: Store) -> None:
    """A limit tightened later, or a knob added later, must not make an old job unreadable."""
    job = await store.generations.create(new())
    async with store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE generations SET parameters = :json WHERE id = :id"),
            {"json": '{"prompt": "", "strength": 7.5, "steps": 999, "count": 0}', "id": job.id},
        )
    old = await store.generations.get(job.id)
    assert old is not None
    assert (old.parameters.prompt, old.parameters.strength) == ("", 7.5)
    assert (old.parameters.steps, old.parameters.count) == (999, 0)
    assert old.parameters.guidance == GenerationParameters.model_fields["guidance"].default
    assert old.parameters.seed is None and old.parameters.safety_checker is True
