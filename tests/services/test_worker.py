"""GenerationWorker and 429s: a busy API sends the job back to the queue until it is too old."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.aimlapi import RateLimitedError
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

    async def ready_for_results(self, generation: Generation) -> None:
        raise AssertionError("a busy API never gets this far")

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
    api: BusyApi,
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
