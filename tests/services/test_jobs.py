"""JobQueue: fairness, caps, cancellation and 429 back-off, driven by events and a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from services.jobs import Job, JobQueue, QueueRefused, RateLimited


class FakeClock:
    """Monotonic time that moves only when the test says; ``sleep`` waits for ``advance``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, wake))
        await wake

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for at, wake in list(self._sleepers):
            if at <= self.now:
                self._sleepers.remove((at, wake))
                if not wake.done():
                    wake.set_result(None)


class GatedRunner:
    """A runner whose jobs finish only when the test says so, and how the test says."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.outcomes: dict[int, Exception] = {}
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
            del self.gates[job.generation_id]  # a job run again after a 429 needs a new release
            if (outcome := self.outcomes.pop(job.generation_id, None)) is not None:
                raise outcome
        finally:
            self.running -= 1
            # The queue handles the outcome before this task next yields, so a waiter woken
            # by this notice already sees the queue's new state.
            async with self.changed:
                self.ended.append(job.generation_id)
                self.changed.notify_all()

    def release(self, generation_id: int, outcome: Exception | None = None) -> None:
        if outcome is not None:
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
async def queues():
    made: list[JobQueue] = []
    yield made
    for queue in made:  # a failed test must not leave tasks behind
        await queue.shutdown(grace=0)


@pytest.fixture
def runner() -> GatedRunner:
    return GatedRunner()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_queue(queues, runner, clock):
    def make(
        runner: GatedRunner = runner,
        *,
        concurrent: int = 1,
        per_user: int = 50,
        started: bool = True,
        jitter: float = 1.0,
    ) -> JobQueue:
        queue = JobQueue(
            runner,
            max_concurrent=concurrent,
            max_per_user=per_user,
            started=started,
            clock=clock,
            sleep=clock.sleep,
            jitter=lambda: jitter,
            backoff_base=1.0,
            backoff_cap=8.0,
        )
        queues.append(queue)
        return queue

    return make


async def test_one_member_flood_does_not_delay_another_members_first_job(runner, make_queue):
    queue = make_queue(runner)
    for n in range(1, 6):  # member 1 presses five times
        queue.submit(Job(n, user_id=1))
    assert queue.submit(Job(100, user_id=2)) == 0  # job 1 runs; member 2 is next
    await runner.wait_started(1)
    runner.release(1)
    await runner.wait_started(2)
    assert runner.started == [1, 100]


async def test_members_are_served_in_turn_and_fifo_within_a_member(runner, make_queue):
    queue = make_queue(runner)
    for generation_id, user_id in [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3)]:
        queue.submit(Job(generation_id, user_id=user_id))
    predicted = [queue.jobs_ahead(n) for n in (2, 3, 4, 5, 6)]
    for expected_count in range(1, 7):
        await runner.wait_started(expected_count)
        runner.release(runner.started[-1])
    assert runner.started == [1, 4, 6, 2, 5, 3]
    assert predicted == [2, 4, 0, 3, 1]


async def test_concurrency_never_exceeds_the_cap(runner, make_queue):
    queue = make_queue(runner, concurrent=3)
    for n in range(1, 21):
        queue.submit(Job(n, user_id=n % 7))
    for done in range(20):
        await runner.wait_started(min(done + 3, 20))
        assert runner.running <= 3
        runner.release(runner.started[done])
    await asyncio.wait_for(queue.wait_idle(), 5)
    assert runner.peak == 3
    assert sorted(runner.started) == list(range(1, 21))


async def test_per_member_cap_counts_waiting_and_running(runner, make_queue):
    queue = make_queue(runner, per_user=2)
    queue.submit(Job(1, user_id=7))
    queue.submit(Job(2, user_id=7))
    with pytest.raises(QueueRefused, match="You have 2 images in progress"):
        queue.submit(Job(3, user_id=7))
    queue.submit(Job(4, user_id=8))  # another member is unaffected
    await runner.wait_started(1)
    runner.release(1)
    await runner.wait_started(2)
    queue.check_admission(7)  # one slot free again


async def test_cancel_removes_a_waiting_job_but_not_a_running_one(runner, make_queue):
    queue = make_queue(runner)
    queue.submit(Job(1, user_id=1))
    queue.submit(Job(2, user_id=2))
    await runner.wait_started(1)
    assert not queue.cancel(1)
    assert queue.cancel(2)
    assert queue.jobs_ahead(2) is None
    runner.release(1)
    await asyncio.wait_for(queue.wait_idle(), 5)
    assert runner.started == [1]


async def test_shutdown_interrupts_running_jobs_and_keeps_new_ones_waiting(runner, make_queue):
    queue = make_queue(runner)
    queue.submit(Job(1, user_id=1))
    queue.submit(Job(2, user_id=2))
    await runner.wait_started(1)
    waiting, interrupted = await queue.shutdown(grace=0)

    assert [job.generation_id for job in waiting] == [2]
    assert [job.generation_id for job in interrupted] == [1]
    assert queue.stopping
    assert queue.submit(Job(3, user_id=3)) == 1  # still accepted, to run after the restart
    assert queue.running_count == 0 and runner.started == [1]


async def test_shutdown_lets_a_job_that_finishes_within_the_grace_complete(runner, make_queue):
    queue = make_queue(runner)
    queue.submit(Job(1, user_id=1))
    queue.submit(Job(2, user_id=2))
    await runner.wait_started(1)
    runner.release(1)  # finishes while shutdown waits; job 2 must not start meanwhile
    waiting, interrupted = await queue.shutdown(grace=30)

    assert interrupted == []
    assert [job.generation_id for job in waiting] == [2]
    assert runner.started == [1] and runner.ended == [1]


async def test_per_member_cap_still_applies_while_shutting_down(runner, make_queue):
    queue = make_queue(runner, per_user=1)
    await queue.shutdown(grace=0)
    queue.submit(Job(1, user_id=7))
    with pytest.raises(QueueRefused, match="You have 1 images in progress"):
        queue.check_admission(7)


async def test_a_queue_made_stopped_runs_nothing_until_started(runner, make_queue):
    queue = make_queue(runner, started=False, concurrent=2)
    queue.submit(Job(1, user_id=1))
    queue.submit(Job(2, user_id=1))
    assert queue.running_count == 0 and 1 in queue and 3 not in queue
    queue.start()
    assert queue.running_count == 2
    await runner.wait_started(2)
    assert runner.started == [1, 2]


async def test_a_failing_runner_frees_its_slot(fail_on_error_logs):
    seen: list[int] = []

    async def runner(job: Job) -> None:
        seen.append(job.generation_id)
        if job.generation_id == 1:
            raise RuntimeError("boom")

    queue = JobQueue(runner, max_concurrent=1, max_per_user=5)
    queue.submit(Job(1, user_id=1))
    queue.submit(Job(2, user_id=1))
    await asyncio.wait_for(queue.wait_idle(), 5)
    assert seen == [1, 2]
    assert [r.getMessage() for r in fail_on_error_logs.records] == ["generation 1: runner failed"]
    fail_on_error_logs.records.clear()


# -- 429: the queue slows down as a whole, then recovers ---------------------------------------


async def test_a_429_halves_concurrency_pauses_starts_and_recovers_one_slot_per_success(
    runner, make_queue, clock
):
    queue = make_queue(runner, concurrent=4)
    for n in range(1, 9):
        queue.submit(Job(n, user_id=n))
    await runner.wait_started(4)

    runner.release(1, RateLimited(retry_after=10))
    await runner.wait_until(lambda: queue.concurrency_limit == 2)
    assert queue.jobs_ahead(1) == 0, "back at the front, keeping its member's turn"
    assert clock.sleeps == [10]

    runner.release(2)  # started before the slow-down: no slot back, nothing new starts yet
    runner.release(3)
    runner.release(4, RateLimited())  # same congestion event: not halved again
    await runner.wait_ended(4)
    assert queue.concurrency_limit == 2
    assert queue.running_count == 0 and len(runner.started) == 4

    clock.advance(10)
    await runner.wait_started(6)
    assert runner.started[4:] == [1, 4] and queue.running_count == 2

    runner.release(1)  # a success after the pause: one slot back, so two more start
    await runner.wait_started(8)
    assert runner.started[6:] == [5, 6]
    assert queue.concurrency_limit == 3 and queue.running_count == 3
    runner.release(4)
    await runner.wait_started(10)
    assert queue.concurrency_limit == 4 and queue.running_count == 4
    for n in (5, 6, 7, 8):
        runner.release(n)
    await asyncio.wait_for(queue.wait_idle(), 5)
    assert runner.peak == 4
    assert sorted(set(runner.started)) == list(range(1, 9))


async def test_backoff_without_retry_after_doubles_with_jitter_and_resets_after_success(
    runner, make_queue, clock
):
    queue = make_queue(runner, jitter=1.0)  # the top of the jitter range: exactly 1, 2, 4...
    queue.submit(Job(1, user_id=1))
    for attempt, expected in enumerate([1.0, 2.0, 4.0, 8.0, 8.0], start=1):  # capped at 8
        await runner.wait_started(attempt)
        runner.release(1, RateLimited())
        await runner.wait_ended(attempt)
        assert clock.sleeps[-1] == expected
        assert queue.concurrency_limit == 1  # never below one
        clock.advance(expected)
    await runner.wait_started(6)
    runner.release(1)
    await asyncio.wait_for(queue.wait_idle(), 5)

    queue.submit(Job(2, user_id=1))
    await runner.wait_started(7)
    runner.release(2, RateLimited())
    await runner.wait_ended(7)
    assert clock.sleeps[-1] == 1.0, "a success starts the backoff over"
    assert queue.throttle() == 2.0
    low = make_queue(GatedRunner(), jitter=0.0)
    assert low.throttle() == 0.5, "jitter draws from [d/2, d]"


async def test_nothing_starts_during_a_pause_even_when_slots_are_free(runner, make_queue, clock):
    queue = make_queue(runner, concurrent=2)
    queue.throttle(retry_after=5)  # halved to 1 and paused
    queue.submit(Job(1, user_id=1))
    queue.submit(Job(2, user_id=2))
    assert queue.running_count == 0
    clock.advance(4.9)
    assert queue.running_count == 0
    clock.advance(0.1)
    await runner.wait_started(1)
    assert queue.running_count == 1 and runner.started == [1]


async def test_a_job_rate_limited_during_shutdown_is_left_for_the_restart(runner, make_queue):
    queue = make_queue(runner)
    queue.submit(Job(1, user_id=1))
    await runner.wait_started(1)
    runner.release(1, RateLimited(retry_after=1))
    waiting, interrupted = await queue.shutdown(grace=30)

    assert waiting == [] and interrupted == []  # the runner stored it as waiting already
    assert runner.started == [1]


async def test_the_api_slot_frees_when_the_call_answers_not_when_delivery_ends(make_queue):
    second_started = asyncio.Event()
    finish_delivery = asyncio.Event()

    async def runner(job: Job) -> None:
        job.api_call_done()  # the API answered; posting the result is still to do
        if job.generation_id == 1:
            await finish_delivery.wait()
        else:
            second_started.set()

    queue = make_queue(runner, concurrent=1)
    queue.submit(Job(1, user_id=1))
    queue.submit(Job(2, user_id=2))
    await asyncio.wait_for(second_started.wait(), 5)  # started while job 1 still delivers

    assert 1 in queue and queue.waiting_count == 0  # job 1 runs on: it still delivers
    finish_delivery.set()
    await asyncio.wait_for(queue.wait_idle(), 5)


@pytest.mark.parametrize("seed", range(5))
async def test_predicted_places_match_the_order_jobs_really_start(runner, make_queue, seed):
    rng = random.Random(seed)
    queue = make_queue(runner)
    queue.submit(Job(0, user_id=rng.randrange(6)))  # one running, so earlier turns count
    jobs = [Job(n, user_id=rng.randrange(6)) for n in range(1, 40)]
    for job in jobs:
        queue.submit(job)
    predicted = sorted(range(1, 40), key=lambda n: queue.jobs_ahead(n))
    for started in range(1, 41):
        await runner.wait_started(started)
        runner.release(runner.started[-1])

    assert runner.started[1:] == predicted
