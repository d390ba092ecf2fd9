"""GenerationWorker: a busy API sends the job back to the queue until it is too old; each job
is sent as its own model's body, refused in words before any call when the model can't take it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.aimlapi import GeneratedImage, GenerationResult, RateLimitedError
from services.jobs import Job, JobQueue
from services.model_registry import (
    DREAMINA_UPSCALE,
    FLUX2_EDIT,
    KONTEXT_PRO,
    REGISTRY,
    ReferenceInfo,
    model_entry,
)
from services.store import Generation, GenerationStatus, Store
from services.store.job_queue import Claimed, NoClaim, Refusal
from services.worker import BUSY_TOO_LONG, GenerationWorker, ReferenceUnreadable
from tests import images
from tests.services.store.records import new

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


class BusyApi:
    """Answers every generation with a 429 and remembers how it was asked."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def generate(self, body: dict[str, Any], **options: Any) -> None:
        self.calls.append(options)
        raise RateLimitedError(detail="API answered HTTP 429", status=429, retry_after=3.0)


class Publisher:
    def __init__(self) -> None:
        self.failed: list[tuple[int, str]] = []

    async def fresh_reference_urls(self, generation: Generation) -> list[str]:
        return list(generation.references)

    async def ready_for_results(self, generation: Generation) -> None:
        raise AssertionError("a busy API never gets this far")

    async def job_succeeded(self, *_: object) -> list[int]:
        raise AssertionError("a busy API never succeeds")

    async def job_failed(self, generation: Generation, reason: str) -> None:
        self.failed.append((generation.id, reason))

    async def edit_card(self, card_message_id: int) -> None:
        raise AssertionError("cards are the service's business, not the worker's")

    async def posted_results(self, generation: Generation) -> list[int]:
        return []


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(f"sqlite:///{tmp_path}/worker.sqlite3") as opened:
        yield opened


async def queued(store: Store) -> Generation:
    return await store.generations.create(new(), created_at=T0)


async def claim(store: Store) -> Job:
    """The next job as this process's queue would hand it to the worker: claimed, running."""

    async def never(job: Job) -> None:
        raise AssertionError("the test runs the worker itself")

    claimed = await store.queue.claim("test-worker", max_concurrent=4)
    assert isinstance(claimed, Claimed), claimed
    return Job(
        claimed.generation,
        JobQueue(never, store.queue, store.workers, max_concurrent=4, max_per_user=5),
    )


def worker(
    store: Store,
    api: Any,
    publisher: Publisher,
    now: datetime,
    shown: list[Generation] | None = None,
) -> GenerationWorker:
    return GenerationWorker(
        store=store,
        api=api,
        publisher=lambda: publisher,
        show_on_card=(shown if shown is not None else []).append,
        job_timeout_seconds=600,
        now=lambda: now,
    )


async def test_a_429_puts_a_young_job_back_in_line_for_the_queue_to_retry(store: Store):
    generation = await queued(store)
    api, publisher, shown = BusyApi(), Publisher(), []
    run = worker(store, api, publisher, T0 + timedelta(seconds=599), shown)

    await run(await claim(store))

    [options] = api.calls
    assert options["retry_rate_limited"] is False  # no retrying on its own
    assert options["client_request_id"] == f"fluxbot:{generation.id}:1"
    stored = await store.generations.get(generation.id)
    assert stored is not None and stored.status == GenerationStatus.QUEUED
    assert stored.started_at is None and stored.attempts == 1
    # The card showed "generating", then "queued" again; nothing was reported as failed.
    assert [g.status for g in shown] == [GenerationStatus.RUNNING, GenerationStatus.QUEUED]
    assert publisher.failed == []
    # The whole queue waits the Retry-After before it starts anything, this job included.
    refused = await store.queue.claim("another", max_concurrent=4)
    assert isinstance(refused, NoClaim) and refused.reason is Refusal.BACKING_OFF
    assert refused.retry_in is not None and 2.0 < refused.retry_in <= 3.0


async def test_a_429_after_job_timeout_fails_the_job_plainly(store: Store):
    generation = await queued(store)
    publisher = Publisher()
    run = worker(store, BusyApi(), publisher, T0 + timedelta(seconds=600))

    await run(await claim(store))  # not back in line: the job is over

    stored = await store.generations.get(generation.id)
    assert stored is not None and stored.status == GenerationStatus.FAILED
    assert stored.error == BUSY_TOO_LONG
    assert publisher.failed == [(generation.id, BUSY_TOO_LONG)]


# --------------------------------------------------------------------------- each job's own model


class RecordingApi:
    """Answers every generation with one image and keeps the bodies it was sent."""

    def __init__(self, reference: bytes) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.downloads: list[str | None] = []
        self.reference = reference

    async def generate(self, body: dict[str, Any], **options: Any) -> GenerationResult:
        self.bodies.append(body)
        return GenerationResult(images=[GeneratedImage(url="https://cdn.example/result.png")])

    async def download(self, image: GeneratedImage, *, max_bytes: int) -> bytes:
        self.downloads.append(image.url)
        return self.reference if image.url == REFERENCE_URL else images.png(8, 8)


class Delivered(Publisher):
    async def ready_for_results(self, generation: Generation) -> None:
        pass

    async def job_succeeded(self, *_: object) -> list[int]:
        return [555]


REFERENCE_URL = "https://cdn.discordapp.com/attachments/1/2/ref.png?ex=1&is=2&hm=3"


@pytest.mark.parametrize("model", list(REGISTRY))
async def test_the_worker_sends_the_body_of_the_generations_own_model(
    store: Store, model: str
) -> None:
    reference = images.png(160, 90)
    generation = await store.generations.create(
        new(model=model, prompt="give the cat a hat", seed=3, count=1), created_at=T0
    )
    api = RecordingApi(reference)
    await worker(store, api, Delivered(), T0)(await claim(store))

    entry = model_entry(model)
    measured = (
        ReferenceInfo.measure(reference) if entry.needs_reference(generation.parameters) else None
    )
    assert api.bodies == [
        entry.request_body(generation.parameters, [REFERENCE_URL], reference=measured)
    ]
    assert api.bodies[0]["model"] == model
    # The reference is fetched (to measure it) only for models whose body or limits need it.
    assert (REFERENCE_URL in api.downloads) is (measured is not None)
    stored = await store.generations.get(generation.id)
    assert stored is not None and stored.status == GenerationStatus.DONE


async def test_an_edit_keeps_the_references_shape(store: Store) -> None:
    await store.generations.create(
        new(model=KONTEXT_PRO, prompt="give the cat a hat"), created_at=T0
    )
    api = RecordingApi(images.png(90, 160))
    await worker(store, api, Delivered(), T0)(await claim(store))
    assert api.bodies[0]["aspect_ratio"] == "9:16"
    assert "strength" not in api.bodies[0] and "num_inference_steps" not in api.bodies[0]


async def test_what_the_model_refuses_fails_in_plain_words_without_a_call(store: Store) -> None:
    generation = await store.generations.create(
        new(model=FLUX2_EDIT, prompt="give the cat a hat", steps=2), created_at=T0
    )
    api, publisher = RecordingApi(images.png(64, 48)), Delivered()
    await worker(store, api, publisher, T0)(await claim(store))

    message = "FLUX.2 edit needs at least 4 steps; you chose 2."
    assert api.bodies == []
    assert publisher.failed == [(generation.id, message)]
    stored = await store.generations.get(generation.id)
    assert stored is not None and (stored.status, stored.error) == (
        GenerationStatus.FAILED,
        message,
    )


async def test_an_unreadable_reference_fails_plainly_without_a_call(store: Store) -> None:
    generation = await store.generations.create(
        new(model=DREAMINA_UPSCALE, prompt="sharper"), created_at=T0
    )
    api, publisher = RecordingApi(b"<html>gone</html>"), Delivered()
    await worker(store, api, publisher, T0)(await claim(store))
    assert api.bodies == []
    assert publisher.failed == [(generation.id, ReferenceUnreadable.default_user_message)]


@pytest.mark.parametrize(("model", "key"), [(KONTEXT_PRO, "image_url"), (FLUX2_EDIT, "image_urls")])
async def test_every_reference_goes_in_order_as_the_model_takes_them(
    store: Store, model: str, key: str
) -> None:
    extra = ("https://cdn.discordapp.com/a/2.png", "https://cdn.discordapp.com/a/3.png")
    await store.generations.create(
        new(model=model, prompt="combine them", extra_reference_urls=extra), created_at=T0
    )
    api = RecordingApi(images.png(64, 64))
    await worker(store, api, Delivered(), T0)(await claim(store))
    assert api.bodies[0][key] == [REFERENCE_URL, *extra]
    assert api.downloads[0] == REFERENCE_URL  # the first one is the one measured


class AnsweringApi:
    """Answers every generation with one image, and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, body: dict[str, Any], **options: Any) -> GenerationResult:
        self.calls += 1
        return GenerationResult(images=[GeneratedImage(url="https://cdn.example/1.png")], seed=42)

    async def download(self, image: GeneratedImage, *, max_bytes: int) -> bytes:
        return b"\x89PNG..."


class RecordingPublisher(Publisher):
    def __init__(self, store: Store, posted_before: list[int] | None = None) -> None:
        super().__init__()
        self.store = store
        self.seed_when_posted: int | None = None
        self.posts = 0
        self.posted_before = posted_before or []

    async def job_succeeded(self, generation: Generation, *_: object) -> list[int]:
        stored = await self.store.generations.get(generation.id)
        assert stored is not None
        self.seed_when_posted = stored.seed
        self.posts += 1
        return [1234]

    async def ready_for_results(self, generation: Generation) -> None:
        pass

    async def posted_results(self, generation: Generation) -> list[int]:
        return self.posted_before


async def test_the_answer_and_seed_are_stored_before_the_result_is_posted(store: Store):
    generation = await queued(store)
    publisher = RecordingPublisher(store)
    await worker(store, AnsweringApi(), publisher, T0)(await claim(store))

    assert publisher.seed_when_posted == 42
    done = await store.generations.get(generation.id)
    assert done is not None and done.status == GenerationStatus.DONE
    assert list(done.result_message_ids) == [1234]
    assert done.answer is not None and '"seed":42' in done.answer


@pytest.mark.parametrize("posted_before", [[], [777]])
async def test_a_job_answered_before_a_crash_is_posted_once_and_never_paid_twice(
    store: Store, posted_before: list[int]
):
    generation = await queued(store)
    api = AnsweringApi()
    job = await claim(store)
    result = await api.generate({})
    await job.answered(result.model_dump_json(), result.seed)
    # The process dies here: its lease runs out, and another process takes the job up.
    assert await store.workers.retire("test-worker") == [generation.id]
    publisher = RecordingPublisher(store, posted_before)
    await worker(store, api, publisher, T0)(await claim(store))

    assert api.calls == 1, "the answer was kept: no second call"
    assert publisher.posts == (0 if posted_before else 1)
    done = await store.generations.get(generation.id)
    assert done is not None and done.status == GenerationStatus.DONE
    assert list(done.result_message_ids) == (posted_before or [1234])
