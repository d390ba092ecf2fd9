"""The one queue every generation goes through: bounded concurrency, fair across members.

Fairness rule (DESIGN §7): when a slot frees, the member served least recently goes first;
within one member, first in first out. A member who presses Reroll forty times therefore
waits behind everyone else's next job, never in front of it.

Rate limits (DESIGN §7): a runner raises :class:`RateLimited` when the API answered 429. The
queue as a whole then backs off (live concurrency halved, no new starts until Retry-After or an
exponential backoff has passed) and earns one slot back per later success. The job goes back to
the front of its member's line and keeps its member's turn, so a 429 costs nobody their place.
Time comes from an injected clock and sleep, so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.backoff import equal_jitter
from services.errors import UserFacingError

log = logging.getLogger(__name__)

#: Backoff after a 429 without Retry-After: equal jitter in [d/2, d], d = base * 2**strikes.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
#: Told to a member whose job is accepted while the bot shuts down (DESIGN §7).
QUEUED_FOR_RESTART = "⏳ Queued — the bot is restarting; your image will be made once it's back."


@dataclass(eq=False)
class Job:
    """A queued generation; the store holds everything else about it."""

    generation_id: int
    user_id: int
    guild_id: int | None = None
    seq: int = field(default=0, init=False)
    #: The throttle epoch the job was started in (see ``JobQueue._epoch``).
    epoch: int = field(default=0, init=False)
    #: Its member's turn when it started, and the one before, given back if the API turns it away.
    turn: int = field(default=0, init=False)
    served_before: int = field(default=0, init=False)
    #: Set by the queue when the job starts: call it once the API has answered.
    _release: Callable[[], None] | None = field(default=None, init=False, repr=False)

    def api_call_done(self) -> None:
        """Free this job's API slot: what is left (download, posting) needs no API capacity.

        Holding the slot through delivery would leave the account's concurrency idle while
        Discord uploads run, costing throughput for nothing.
        """
        if self._release is not None:
            release, self._release = self._release, None
            release()


class QueueRefused(UserFacingError):
    """A job that is not accepted; ``user_message`` says why in plain words."""


class Requeue(Exception):
    """Raised by a runner: this job cannot run now; put it back first in its member's line.

    The runner has already put the job back in the state "waiting" wherever it keeps state.
    """


class RateLimited(Requeue):
    """Raised by a runner: the API is too busy for this job now (429); it should run later,
    and the queue as a whole slows down.
    """

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(f"rate limited (retry after {retry_after})")
        self.retry_after = retry_after


JobRunner = Callable[[Job], Awaitable[None]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class JobQueue:
    def __init__(
        self,
        runner: JobRunner,
        *,
        max_concurrent: int,
        max_per_user: int,
        started: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
    ) -> None:
        """``started=False`` holds every job until ``start()`` (the bot resumes stored jobs
        first, so they keep their place ahead of commands that arrive while it connects)."""
        self._runner = runner
        self.max_concurrent = max_concurrent
        self.max_per_user = max_per_user
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._waiting: dict[int, deque[Job]] = {}
        self._running: dict[int, Job] = {}
        #: Jobs holding an API slot (started and not yet answered); a subset of ``_running``.
        self._calling: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_served: dict[int, int] = {}
        #: Place in line of each waiting job, rebuilt only after the line changed (cards ask often).
        self._places: dict[int, int] | None = None
        self._seq = itertools.count(1)
        self._served = itertools.count(1)
        self._stopping = False
        self._paused = not started
        self._idle = asyncio.Event()
        self._idle.set()
        # Rate-limit state: the live cap, when starts may resume, and how many 429s in a row.
        self._limit = max_concurrent
        self._resume_at = float("-inf")
        self._strikes = 0
        #: Bumped by every slow-down. A 429 or success from a job started in an older epoch
        #: belongs to a congestion event already acted on, so it neither halves nor adds.
        self._epoch = 0
        self._wake: asyncio.Task[None] | None = None

    # -- what callers ask -------------------------------------------------------------------

    def check_admission(self, user_id: int) -> None:
        """Refuse before anything is stored, so a refused press costs nothing.

        While the bot shuts down jobs are still admitted: they are stored and run after the
        restart (DESIGN §7), so the per-member cap keeps applying to them.
        """
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
        self._places = None
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
                    self._places = None
                    self._update_idle()
                    return True
        return False

    def __contains__(self, generation_id: object) -> bool:
        """Waiting or running here."""
        return generation_id in self._running or any(
            job.generation_id == generation_id for jobs in self._waiting.values() for job in jobs
        )

    def jobs_ahead(self, generation_id: int) -> int | None:
        """Jobs that start before this one under the fairness rule; None if not waiting."""
        if self._places is None:
            order = self._dispatch_order()
            self._places = {job.generation_id: place for place, job in enumerate(order)}
        return self._places.get(generation_id)

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def waiting_count(self) -> int:
        return sum(len(jobs) for jobs in self._waiting.values())

    @property
    def concurrency_limit(self) -> int:
        """The live cap: ``max_concurrent``, or less while the API is rate limiting us."""
        return self._limit

    @property
    def stopping(self) -> bool:
        """Shutting down: new jobs are kept for the next start instead of being run."""
        return self._stopping

    # -- rate limits ------------------------------------------------------------------------

    def throttle(self, retry_after: float | None = None) -> float:
        """Slow the whole queue down after a 429; returns the pause in seconds.

        Halves the live concurrency (never below 1) and starts nothing new until
        ``retry_after`` (the server's hint) or an exponential backoff with jitter has passed.
        """
        self._limit = max(1, self._limit // 2)
        self._epoch += 1
        if retry_after is None:
            delay = equal_jitter(
                self._strikes, base=self.backoff_base, cap=self.backoff_cap, random=self._jitter
            )
        else:
            delay = max(0.0, retry_after)
        self._strikes += 1
        self._pause_for(delay)
        log.warning(
            "API rate limit: %d call(s) at once at most, new calls wait %.2fs",
            self._limit,
            delay,
        )
        return delay

    def _pause_for(self, delay: float) -> None:
        self._resume_at = max(self._resume_at, self._clock() + delay)
        if self._wake is None or self._wake.done():
            self._wake = asyncio.create_task(self._wake_up(), name="job-queue-backoff")

    async def _wake_up(self) -> None:
        while (delay := self._resume_at - self._clock()) > 0:
            await self._sleep(delay)
        self._wake = None
        self._pump()

    def _requeue(self, job: Job, exc: Requeue) -> None:
        """Put ``job`` first in its member's line, keeping its turn; after a 429 also back off
        (once per congestion event)."""
        if self._stopping:
            return  # the runner stored it as waiting: it resumes after the restart
        if isinstance(exc, RateLimited):
            if job.epoch == self._epoch:
                self.throttle(exc.retry_after)
            elif exc.retry_after is not None:
                self._pause_for(exc.retry_after)
        self._waiting.setdefault(job.user_id, deque()).appendleft(job)
        if self._last_served.get(job.user_id) == job.turn:
            self._last_served[job.user_id] = job.served_before
        self._places = None
        log.info("generation %s: back in line (%s)", job.generation_id, type(exc).__name__)

    def _succeeded(self, job: Job) -> None:
        """A call started since the last slow-down was not turned away: earn one slot back."""
        if job.epoch == self._epoch:
            self._strikes = 0
            self._limit = min(self.max_concurrent, self._limit + 1)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Begin running jobs (see ``started=False``)."""
        if not self._stopping:
            self._paused = False
            self._pump()

    def pause(self) -> None:
        """Start nothing new until ``start()``; running jobs go on."""
        self._paused = True

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def shutdown(self, grace: float) -> tuple[list[Job], list[Job]]:
        """Start nothing new, give running jobs ``grace`` seconds, cancel the rest.

        Returns ``(waiting, interrupted)``: jobs that never started (in their order) and jobs
        cancelled mid-call. The store still holds both, so they resume on the next start. Jobs
        submitted after this are kept waiting, never started.
        """
        self._stopping = True
        self._paused = True
        if self._wake is not None:
            self._wake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._wake
        interrupted: list[Job] = []
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            interrupted = list(self._running.values())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._update_idle()
        return self._dispatch_order(), interrupted

    # -- scheduling -------------------------------------------------------------------------

    def _next_job(self, last_served: dict[int, int], waiting: dict[int, deque[Job]]) -> Job:
        user_id = min(waiting, key=lambda uid: (last_served.get(uid, 0), waiting[uid][0].seq))
        return waiting[user_id][0]

    def _dispatch_order(self) -> list[Job]:
        """The waiting jobs in the order they would start if nothing else arrived.

        The same rule as ``_next_job``, replayed with a heap: O(n log members), not O(n²).
        """
        waiting = {uid: deque(jobs) for uid, jobs in self._waiting.items() if jobs}
        heap = [(self._last_served.get(uid, 0), jobs[0].seq, uid) for uid, jobs in waiting.items()]
        heapq.heapify(heap)
        tick = max(self._last_served.values(), default=0)
        order: list[Job] = []
        while heap:
            _, _, uid = heapq.heappop(heap)
            jobs = waiting[uid]
            order.append(jobs.popleft())
            if jobs:
                tick += 1  # served now: after everyone already served
                heapq.heappush(heap, (tick, jobs[0].seq, uid))
        return order

    def _pump(self) -> None:
        if self._clock() < self._resume_at:
            return  # backing off; ``_wake_up`` pumps again when the pause is over
        while (
            not self._paused
            and self._waiting
            and len(self._calling) < self._limit
            # Delivery is bounded too, so a slow Discord can't pile up results in memory.
            and len(self._running) < 2 * self.max_concurrent
        ):
            job = self._next_job(self._last_served, self._waiting)
            jobs = self._waiting[job.user_id]
            jobs.popleft()
            if not jobs:
                del self._waiting[job.user_id]
            job.served_before = self._last_served.get(job.user_id, 0)
            self._last_served[job.user_id] = job.turn = next(self._served)
            self._places = None
            job.epoch = self._epoch
            self._running[job.generation_id] = job
            self._calling.add(job.generation_id)
            job._release = functools.partial(self._call_done, job)
            task = asyncio.create_task(self._run(job), name=f"generation-{job.generation_id}")
            self._tasks.add(task)

    def _call_done(self, job: Job) -> None:
        self._calling.discard(job.generation_id)
        self._succeeded(job)
        self._pump()

    async def _run(self, job: Job) -> None:
        try:
            await self._runner(job)
        except asyncio.CancelledError:
            raise
        except Requeue as exc:
            job._release = None
            self._calling.discard(job.generation_id)
            self._running.pop(job.generation_id, None)
            self._requeue(job, exc)
        except Exception:
            log.exception("generation %s: runner failed", job.generation_id)
        else:
            job.api_call_done()  # a runner that did not report: its return is the answer
        finally:
            job._release = None  # a runner that failed still frees its slot here
            self._calling.discard(job.generation_id)
            self._running.pop(job.generation_id, None)
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._pump()
            self._update_idle()

    def _update_idle(self) -> None:
        if not self._running and not self._waiting:
            self._idle.set()
