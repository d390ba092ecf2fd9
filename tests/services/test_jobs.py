"""JobQueue, this process's share of the database queue: it claims, runs, backs off and hands
jobs back, driven by events and a fake clock (the store's tests cover the rules themselves)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import pytest

from services.jobs import Job, JobQueue, QueueRefused
from services.store import GenerationStatus, Store
from tests.services.store.records import T0, new


class FakeClock:
    """Time that moves only when the test says: the store's ``now`` and the queue's ``sleep``."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + timedelta(seconds=delay), wake))
        await wake

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        for at, wake in list(self._sleepers):
            if at <= self.now:
                self._sleepers.remove((at, wake))
                if not wake.done():
                    wake.set_result(None)


class GatedRunner:
    """A runner whose jobs finish only when the test says so, and how the test says."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.started: list[int] = []
        self.ended: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.outcomes: dict[int, str] = {}
        #: Jobs started and not yet released ("calling the API").
        self.running = 0
        self.peak = 0
        self.changed = asyncio.Condition()

    async def __call__(self, job: Job) -> None:
        gate = self.gates.setdefault(job.generation_id, asyncio.Event())
        async with self.changed:
            self.started.append(job.generation_id)
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.changed.notify_all()
        try:
            await gate.wait()
            self.running -= 1  # the "API" answered: what follows holds no slot
            del self.gates[job.generation_id]  # a job run again after a 429 needs a new release
            outcome = self.outcomes.pop(job.generation_id, "answered")
            if outcome == "429":
                await job.requeue(rate_limited=True, retry_after=10)
            elif outcome == "boom":
                raise RuntimeError("boom")
            else:
                await job.answered("{}", 1)
                await finish(self.store, job)
        finally:
            async with self.changed:
                self.ended.append(job.generation_id)
                self.changed.notify_all()

    def release(self, generation_id: int, outcome: str = "answered") -> None:
        self.outcomes[generation_id] = outcome
        self.gates.setdefault(generation_id, asyncio.Event()).set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), 5)

    async def wait_started(self, count: int) -> None:
        await self.wait_until(lambda: len(self.started) >= count)

    async def wait_ended(self, count: int) -> None:
        await self.wait_until(lambda: len(self.ended) >= count)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(database_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    async with await Store.open(database_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def runner(store: Store) -> GatedRunner:
    return GatedRunner(store)


async def finish(store: Store, job: Job) -> None:
    """What the worker does once the result is posted."""
    await store.generations.mark_done(
        job.generation_id, seed=1, result_message_ids=[], inference_seconds=None
    )


@pytest.fixture
async def make_queue(store: Store, runner: GatedRunner, clock: FakeClock):
    made: list[JobQueue] = []

    def make(concurrent: int = 1, per_user: int = 50, runner: object = runner) -> JobQueue:
        queue = JobQueue(
            runner,  # type: ignore[arg-type]
            store.queue,
            store.workers,
            max_concurrent=concurrent,
            max_per_user=per_user,
            sleep=clock.sleep,
        )
        made.append(queue)
        return queue

    yield make
    for queue in made:  # a failed test must not leave tasks behind
        await queue.shutdown(grace=0)


async def submit(store: Store, queue: JobQueue, *users: int) -> list[int]:
    ids = [(await store.generations.create(new(user_id=user))).id for user in users]
    queue.notify()
    return ids


async def test_jobs_run_fairly_and_never_more_than_the_cap_at_once(store, runner, make_queue):
    queue = make_queue(concurrent=3)
    ids = await submit(store, queue, *(n % 7 for n in range(20)))
    queue.start()
    for done in range(20):
        await runner.wait_started(min(done + 3, 20))
        assert runner.running <= 3
        runner.release(runner.started[done])
    await asyncio.wait_for(queue.wait_idle(), 5)
    assert runner.peak == 3
    assert sorted(runner.started) == ids


async def test_a_queue_not_started_claims_nothing(store, runner, make_queue):
    queue = make_queue(concurrent=2)
    first, second = await submit(store, queue, 1, 1)
    assert queue.running_count == 0 and await queue.jobs_ahead(second) == 1
    queue.start()
    await runner.wait_started(2)
    assert runner.started == [first, second]


async def test_the_per_member_cap_counts_waiting_and_running_jobs(store, runner, make_queue):
    queue = make_queue(per_user=2)
    await submit(store, queue, 7, 7, 8)
    with pytest.raises(QueueRefused, match="You have 2 images in progress"):
        await queue.check_admission(7)
    await queue.check_admission(8)  # another member is unaffected
    queue.start()
    await runner.wait_started(1)
    runner.release(runner.started[0])
    await runner.wait_ended(1)
    await queue.check_admission(7)  # one place free again


async def test_the_api_slot_frees_when_the_call_answers_not_when_delivery_ends(store, make_queue):
    second_started = asyncio.Event()
    finish_delivery = asyncio.Event()

    async def runner(job: Job) -> None:
        await job.answered("{}", None)  # the API answered; posting the result is still to do
        if job.generation_id == first:
            await finish_delivery.wait()
        else:
            second_started.set()
        await finish(store, job)

    queue = make_queue(concurrent=1, runner=runner)
    first, _ = await submit(store, queue, 1, 2)
    queue.start()
    await asyncio.wait_for(second_started.wait(), 5)  # started while the first still delivers
    assert queue.is_running(first)
    finish_delivery.set()
    await asyncio.wait_for(queue.wait_idle(), 5)


async def test_a_failing_runner_frees_its_slot(store, make_queue, fail_on_error_logs):
    seen: list[int] = []

    async def runner(job: Job) -> None:
        seen.append(job.generation_id)
        if len(seen) == 1:
            raise RuntimeError("boom")
        await finish(store, job)

    queue = make_queue(concurrent=1, runner=runner)
    ids = await submit(store, queue, 1, 1)
    queue.start()
    await asyncio.wait_for(queue.wait_idle(), 5)
    assert seen == ids
    assert [r.getMessage() for r in fail_on_error_logs.records] == [
        f"generation {ids[0]}: runner failed"
    ]
    broken = await store.generations.get(ids[0])
    assert broken is not None and broken.status is GenerationStatus.FAILED
    fail_on_error_logs.records.clear()


async def test_a_429_pauses_every_start_until_retry_after_then_runs_the_job_again(
    store, runner, make_queue, clock
):
    queue = make_queue(concurrent=2)
    first, second, third = await submit(store, queue, 1, 2, 3)
    queue.start()
    await runner.wait_started(2)
    runner.release(first, "429")
    await runner.wait_ended(1)
    assert await queue.jobs_ahead(first) == 0, "back at the front, keeping its member's turn"
    runner.release(second)  # a slot is free, but the whole queue waits out the pause
    await runner.wait_ended(2)
    await runner.wait_until(lambda: 10.0 in clock.sleeps)
    assert runner.started == [first, second]
    clock.advance(10)
    await runner.wait_started(3)
    assert runner.started[2] == first
    runner.release(first)
    await runner.wait_started(4)
    assert runner.started[3] == third
    runner.release(third)
    await asyncio.wait_for(queue.wait_idle(), 5)


async def test_shutdown_hands_running_jobs_back_and_claims_nothing_new(store, runner, make_queue):
    queue = make_queue()
    first, second = await submit(store, queue, 1, 2)
    queue.start()
    await runner.wait_started(1)
    assert await queue.shutdown(grace=0) == [first]
    assert queue.stopping
    stored = await store.generations.get(first)
    assert stored is not None and stored.status is GenerationStatus.INTERRUPTED
    await submit(store, queue, 3)  # still stored, to run after the restart
    assert runner.started == [first] and queue.running_count == 0
    assert await store.queue.depth() == (0, 3)
    assert second in await store.queue.dispatch_order()


async def test_shutdown_lets_a_job_that_finishes_within_the_grace_complete(
    store, runner, make_queue
):
    queue = make_queue()
    first, second = await submit(store, queue, 1, 2)
    queue.start()
    await runner.wait_started(1)
    runner.release(first)  # finishes while shutdown waits; the second must not start meanwhile
    assert await queue.shutdown(grace=30) == []
    assert runner.started == [first] and runner.ended == [first]
    assert await queue.jobs_ahead(second) == 0
