"""JobQueue: fairness, caps and cancellation, driven by events the test releases."""

from __future__ import annotations

import asyncio

import pytest

from services.jobs import Job, JobQueue, QueueRefused


class GatedRunner:
    """A runner whose jobs finish only when the test says so."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}
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
        finally:
            self.running -= 1

    def release(self, generation_id: int) -> None:
        self.gates.setdefault(generation_id, asyncio.Event()).set()

    async def wait_started(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.started) >= count), 5)


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
def make_queue(queues, runner):
    def make(runner: GatedRunner = runner, *, concurrent: int = 1, per_user: int = 50) -> JobQueue:
        queue = JobQueue(runner, max_concurrent=concurrent, max_per_user=per_user)
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


async def test_shutdown_returns_unfinished_jobs_and_refuses_new_ones(runner, make_queue):
    queue = make_queue(runner)
    queue.submit(Job(1, user_id=1))
    queue.submit(Job(2, user_id=2))
    await runner.wait_started(1)
    leftover = await queue.shutdown(grace=0)
    assert sorted(job.generation_id for job in leftover) == [1, 2]
    with pytest.raises(QueueRefused, match="restarting"):
        queue.check_admission(3)


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
