"""The one queue every generation goes through: bounded concurrency, fair across members.

Fairness rule (DESIGN §7): when a slot frees, the member served least recently goes first;
within one member, first in first out. A member who presses Reroll forty times therefore
waits behind everyone else's next job, never in front of it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """A queued generation; the store holds everything else about it."""

    generation_id: int
    user_id: int
    guild_id: int | None = None
    seq: int = field(default=0, init=False)


class QueueRefused(Exception):
    """A job that is not accepted; ``user_message`` says why in plain words."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


JobRunner = Callable[[Job], Awaitable[None]]


class JobQueue:
    def __init__(self, runner: JobRunner, *, max_concurrent: int, max_per_user: int) -> None:
        self._runner = runner
        self.max_concurrent = max_concurrent
        self.max_per_user = max_per_user
        self._waiting: dict[int, deque[Job]] = {}
        self._running: dict[int, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_served: dict[int, int] = {}
        self._seq = itertools.count(1)
        self._served = itertools.count(1)
        self._accepting = True
        self._paused = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what callers ask -------------------------------------------------------------------

    def check_admission(self, user_id: int) -> None:
        """Refuse before anything is stored, so a refused press costs nothing."""
        if not self._accepting:
            raise QueueRefused("The bot is restarting. Try again in a minute.")
        active = len(self._waiting.get(user_id, ())) + sum(
            1 for job in self._running.values() if job.user_id == user_id
        )
        if active >= self.max_per_user:
            raise QueueRefused(
                f"You have {active} images in progress. Wait for one to finish, then try again."
            )

    def submit(self, job: Job, *, check: bool = True) -> int:
        """Queue ``job`` and return how many jobs will start before it."""
        if check:
            self.check_admission(job.user_id)
        job.seq = next(self._seq)
        self._waiting.setdefault(job.user_id, deque()).append(job)
        self._idle.clear()
        self._pump()
        return self.jobs_ahead(job.generation_id) or 0

    def cancel(self, generation_id: int) -> bool:
        """Remove a waiting job; a running one is already paid for and cannot be cancelled."""
        for user_id, jobs in self._waiting.items():
            for job in jobs:
                if job.generation_id == generation_id:
                    jobs.remove(job)
                    if not jobs:
                        del self._waiting[user_id]
                    self._update_idle()
                    return True
        return False

    def is_running(self, generation_id: int) -> bool:
        return generation_id in self._running

    def jobs_ahead(self, generation_id: int) -> int | None:
        """Jobs that start before this one under the fairness rule; None if not waiting."""
        for position, job in enumerate(self._dispatch_order()):
            if job.generation_id == generation_id:
                return position
        return None

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def waiting_count(self) -> int:
        return sum(len(jobs) for jobs in self._waiting.values())

    # -- lifecycle --------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        self._accepting = False

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def shutdown(self, grace: float) -> list[Job]:
        """Start nothing new, give running jobs ``grace`` seconds, cancel the rest.

        Returns the jobs that did not finish (waiting or cancelled while running); the store
        still holds them, so they are resumed on the next start.
        """
        self._accepting = False
        self._paused = True
        leftover = self._dispatch_order()
        self._waiting.clear()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            interrupted = [job for job in self._running.values()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            leftover.extend(interrupted)
        self._update_idle()
        return leftover

    # -- scheduling -------------------------------------------------------------------------

    def _next_job(self, last_served: dict[int, int], waiting: dict[int, deque[Job]]) -> Job:
        user_id = min(waiting, key=lambda uid: (last_served.get(uid, 0), waiting[uid][0].seq))
        return waiting[user_id][0]

    def _dispatch_order(self) -> list[Job]:
        """The waiting jobs in the order they would start if nothing else arrived."""
        waiting = {uid: deque(jobs) for uid, jobs in self._waiting.items() if jobs}
        last_served = dict(self._last_served)
        order: list[Job] = []
        tick = -1
        while waiting:
            job = self._next_job(last_served, waiting)
            order.append(job)
            waiting[job.user_id].popleft()
            if not waiting[job.user_id]:
                del waiting[job.user_id]
            last_served[job.user_id] = tick = max(tick, *last_served.values(), 0) + 1
        return order

    def _pump(self) -> None:
        while not self._paused and self._waiting and len(self._running) < self.max_concurrent:
            job = self._next_job(self._last_served, self._waiting)
            jobs = self._waiting[job.user_id]
            jobs.popleft()
            if not jobs:
                del self._waiting[job.user_id]
            self._last_served[job.user_id] = next(self._served)
            self._running[job.generation_id] = job
            task = asyncio.create_task(self._run(job), name=f"generation-{job.generation_id}")
            self._tasks.add(task)

    async def _run(self, job: Job) -> None:
        try:
            await self._runner(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("generation %s: runner failed", job.generation_id)
        finally:
            self._running.pop(job.generation_id, None)
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._pump()
            self._update_idle()

    def _update_idle(self) -> None:
        if not self._running and not self._waiting:
            self._idle.set()
