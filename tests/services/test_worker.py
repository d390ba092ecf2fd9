"""GenerationWorker and 429s: a busy API sends the job back to the queue until it is too old."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.aimlapi import GeneratedImage, GenerationResult, RateLimitedError
from services.jobs import Job, RateLimited
from services.store import Generation, GenerationStatus, Store
from services.worker import BUSY_TOO_LONG, GenerationWorker
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

    async def fresh_reference_url(self, generation: Generation) -> str:
        return generation.reference_url

    async def job_succeeded(self, *_: object) -> list[int]:
        raise AssertionError("a busy API never succeeds")

    async def job_failed(self, generation: Generation, reason: str) -> None:
        self.failed.append((generation.id, reason))

    async def edit_card(self, card_message_id: int) -> None:
        raise AssertionError("cards are the service's business, not the worker's")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(f"sqlite:///{tmp_path}/worker.sqlite3") as opened:
        yield opened


async def queued(store: Store) -> Generation:
    return await store.generations.create(new(), created_at=T0)


def worker(
    store: Store,
    api: BusyApi | AnsweringApi,
    publisher: Publisher,
    now: datetime,
    shown: list[Generation] | None = None,
) -> GenerationWorker:
    return GenerationWorker(
        store=store,
        api=api,  # type: ignore[arg-type]
        publisher=lambda: publisher,
        show_on_card=(shown if shown is not None else []).append,
        job_timeout_seconds=600,
        now=lambda: now,
    )


async def test_a_429_puts_a_young_job_back_in_line_for_the_queue_to_retry(store: Store):
    generation = await queued(store)
    api, publisher, shown = BusyApi(), Publisher(), []
    run = worker(store, api, publisher, T0 + timedelta(seconds=599), shown)

    with pytest.raises(RateLimited) as raised:
        await run(Job(generation.id, user_id=1))

    assert raised.value.retry_after == 3.0
    assert api.calls == [{"retry_rate_limited": False}]  # no retrying on its own
    stored = await store.generations.get(generation.id)
    assert stored is not None and stored.status == GenerationStatus.QUEUED
    assert stored.started_at is None and stored.attempts == 1
    # The card showed "generating", then "queued" again; nothing was reported as failed.
    assert [g.status for g in shown] == [GenerationStatus.RUNNING, GenerationStatus.QUEUED]
    assert publisher.failed == []


async def test_a_429_after_job_timeout_fails_the_job_plainly(store: Store):
    generation = await queued(store)
    publisher = Publisher()
    run = worker(store, BusyApi(), publisher, T0 + timedelta(seconds=600))

    await run(Job(generation.id, user_id=1))  # no RateLimited: the job is over

    stored = await store.generations.get(generation.id)
    assert stored is not None and stored.status == GenerationStatus.FAILED
    assert stored.error == BUSY_TOO_LONG
    assert publisher.failed == [(generation.id, BUSY_TOO_LONG)]


class AnsweringApi:
    """Answers every generation with one image, whose download waits for the seed to be stored."""

    def __init__(self, seed_stored: asyncio.Event) -> None:
        self.seed_stored = seed_stored

    async def generate(self, body: dict[str, Any], **options: Any) -> GenerationResult:
        return GenerationResult(images=[GeneratedImage(url="https://cdn.example/1.png")], seed=42)

    async def download(self, image: GeneratedImage, *, max_bytes: int) -> bytes:
        # Only possible if the seed is written while the image downloads, not after.
        await asyncio.wait_for(self.seed_stored.wait(), 5)
        return b"\x89PNG..."


class RecordingPublisher(Publisher):
    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.seed_when_posted: int | None = None

    async def job_succeeded(self, generation: Generation, *_: object) -> list[int]:
        stored = await self.store.generations.get(generation.id)
        assert stored is not None
        self.seed_when_posted = stored.seed
        return [1234]


async def test_the_seed_is_stored_while_the_result_downloads_and_before_it_is_posted(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    generation = await queued(store)
    seed_stored = asyncio.Event()
    set_seed = store.generations.set_seed

    async def storing(generation_id: int, seed: int | None) -> Generation | None:
        stored = await set_seed(generation_id, seed)
        seed_stored.set()
        return stored

    monkeypatch.setattr(store.generations, "set_seed", storing)
    publisher = RecordingPublisher(store)
    run = worker(store, AnsweringApi(seed_stored), publisher, T0)

    await run(Job(generation.id, user_id=1))

    assert publisher.seed_when_posted == 42
    done = await store.generations.get(generation.id)
    assert done is not None and done.status == GenerationStatus.DONE
    assert list(done.result_message_ids) == [1234]
