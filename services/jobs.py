"""This process's share of the one queue: it claims jobs from the database and runs them.

The queue's truth is the database (``services.store.job_queue``, DESIGN §9): every process
claims the next job under the fairness rule (DESIGN §7: the member served least recently first,
within a member first in first out) while the whole bot's live cap allows, and holds it under a
lease that its heartbeat renews. A process that dies loses its leases; any other one then takes
its jobs up. The 429 back-off and the out-of-credits hold live there too, so they hold for every
process at once.

Here: when to claim (at once on local news, else every ``poll_seconds``), running each claimed
job, the heartbeat, and a stop that hands running jobs back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.backoff import equal_jitter
from services.errors import UserFacingError
from services.store import Generation, NewApiAttempt
from services.store.job_queue import Claimed, JobQueueRepository, NoClaim, Refusal, Requeued
from services.store.workers import Heartbeat, WorkerRepository

log = logging.getLogger(__name__)

#: Backoff after a 429 without Retry-After: equal jitter in [d/2, d], d = base * 2**strikes.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
#: Told to a member whose job is accepted while the bot shuts down (DESIGN §7).
QUEUED_FOR_RESTART = "⏳ Queued — the bot is restarting; your image will be made once it's back."
#: Told when the process taking a job's picture in stopped before it was queued.
INTAKE_LOST = "The bot restarted while it was reading your picture. Run the command again."
#: Told when something unforeseen broke a job off.
UNEXPECTED = "Something went wrong on our side. Press Reroll to retry."
#: Claim durations kept for the benchmark's latency figures.
CLAIM_SAMPLES = 10_000


class QueueRefused(UserFacingError):
    """A job that is not accepted; ``user_message`` says why in plain words."""


@dataclass(eq=False)
class Job:
    """A job this process claimed: the stored generation as the claim left it (``running``)."""

    generation: Generation
    _queue: JobQueue = field(repr=False)
    #: The claim's word: started while the queue was slowed down (see ``Claimed``).
    throttled: bool = True

    @property
    def generation_id(self) -> int:
        return self.generation.id

    async def answered(
        self, answer: str, seed: int | None, paid: NewApiAttempt | None = None
    ) -> Generation | None:
        """The API answered: store the answer (and ``paid``, the attempt that answered, in the
        cost ledger) and free the job's API slot for the next job.

        What is left (download, posting) needs no API capacity; holding the slot through it
        would leave the account's concurrency idle while Discord uploads run. ``None``: this
        process lost the job's lease meanwhile, so it must not post it.
        """
        return await self._queue.answered(self, answer, seed, paid)

    async def requeue(
        self, *, rate_limited: bool = False, retry_after: float | None = None
    ) -> Requeued | None:
        """Back first in its member's line, keeping its turn; after a 429 the queue slows down."""
        return await self._queue.requeue(self, rate_limited=rate_limited, retry_after=retry_after)


JobRunner = Callable[[Job], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class JobQueue:
    def __init__(
        self,
        runner: JobRunner,
        repository: JobQueueRepository,
        workers: WorkerRepository,
        *,
        max_concurrent: int,
        max_per_user: int,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        description: str = "",
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
    ) -> None:
        """Nothing is claimed before ``start()`` (the bot resumes what a stop left first)."""
        self._runner = runner
        self._repository = repository
        self._workers = workers
        self.max_concurrent = max_concurrent
        self.max_per_user = max_per_user
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.worker_id = f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(4)}"
        self._description = description or self.worker_id
        self._sleep = sleep
        self._jitter = jitter
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        #: Claimed here and not yet finished.
        self._running: dict[int, asyncio.Task[None]] = {}
        self._registered = False
        self._paused = True
        self._stopping = False
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        #: The last claims stopped for want of a slot (the cap, or this process's delivery
        #: bound), so a freed slot should wake the claims at once.
        self._starved = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._loops: list[asyncio.Task[None]] = []
        #: Whole-bot figures as last read (metrics are sampled synchronously).
        self.waiting_count = 0
        self.credit_hold = False
        #: Told of jobs that failed because the process taking them in fell silent.
        self.on_abandoned: Callable[[Sequence[Generation]], Awaitable[None]] | None = None
        #: Seconds each claim transaction took (the benchmark's claim latency).
        self.claim_seconds: deque[float] = deque(maxlen=CLAIM_SAMPLES)

    # -- what callers ask -------------------------------------------------------------------

    async def check_admission(self, user_id: int, conn: AsyncConnection | None = None) -> None:
        """Refuse before anything is stored, so a refused press costs nothing. Counts the
        member's jobs in every process. While the bot shuts down jobs are still admitted: they
        are stored and run after the restart (DESIGN §7), so the cap keeps applying to them."""
        active = await self._repository.member_active(user_id, conn)
        if active >= self.max_per_user:
            raise QueueRefused(
                f"You have {active} images in progress. Wait for one to finish, then try again."
            )

    def notify(self) -> None:
        """A job was stored or a slot freed here: claim now rather than at the next poll."""
        self._idle.clear()
        self._wake.set()

    async def jobs_ahead(self, generation_id: int) -> int | None:
        """Jobs that start before this one under the fairness rule; None if not waiting."""
        order = await self._repository.dispatch_order()
        self.waiting_count = len(order)
        with contextlib.suppress(ValueError):
            return order.index(generation_id)
        return None

    @property
    def running_count(self) -> int:
        """Jobs this process runs now."""
        return len(self._running)

    @property
    def stopping(self) -> bool:
        """Shutting down: new jobs are kept for the next start instead of being run."""
        return self._stopping

    def is_running(self, generation_id: int) -> bool:
        return generation_id in self._running

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Claim and run jobs (after ``pause()``, again)."""
        if self._stopping:
            return
        if not self._loops:
            self._loops = [
                asyncio.create_task(self._dispatch(), name="job-queue-claims"),
                asyncio.create_task(self._heartbeat(), name="job-queue-heartbeat"),
            ]
        self._paused = False
        self.notify()

    def pause(self) -> None:
        """Claim nothing new until ``start()``; running jobs go on."""
        self._paused = True

    async def wait_idle(self) -> None:
        """Until nothing runs here and the last claim found nothing to start."""
        await self._idle.wait()

    async def shutdown(self, grace: float) -> list[int]:
        """Claim nothing new, give running jobs ``grace`` seconds, cancel the rest, and hand
        every job still running here back to the queue (``interrupted``; it runs again on the
        next start or in another process). Returns their ids."""
        self._stopping = True
        self._paused = True
        # Not cancelled: a claim cut mid-transaction could leave SQLite's write lock behind.
        self._stop.set()
        self._wake.set()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._running:
            _, pending = await asyncio.wait(set(self._running.values()), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        interrupted: list[int] = []
        if self._registered:
            interrupted = await self._workers.retire(self.worker_id)
            self._registered = False
        self._idle.set()
        return interrupted

    # -- what a running job reports -----------------------------------------------------------

    async def answered(
        self, job: Job, answer: str, seed: int | None, paid: NewApiAttempt | None
    ) -> Generation | None:
        stored = await self._repository.answered(
            job.generation,
            answer=answer,
            seed=seed,
            max_concurrent=self.max_concurrent,
            throttled=job.throttled,
            paid=paid,
        )
        self._slot_freed()
        return stored

    async def requeue(
        self, job: Job, *, rate_limited: bool, retry_after: float | None
    ) -> Requeued | None:
        requeued = await self._repository.requeue(
            job.generation,
            rate_limited=rate_limited,
            retry_after=retry_after,
            backoff=self._backoff,
            max_concurrent=self.max_concurrent,
        )
        if requeued is not None:
            log.info("generation %s: back in line", job.generation_id)
            if requeued.pause is not None:
                log.warning("API rate limit: new calls wait %.2fs", requeued.pause)
            self.notify()  # a job waits again: claim it as soon as the pause allows
        return requeued

    def _backoff(self, strikes: int) -> float:
        return equal_jitter(
            strikes, base=self.backoff_base, cap=self.backoff_cap, random=self._jitter
        )

    # -- claiming -----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Claim while this process has room; then wait for news, the poll, or the back-off."""
        while not self._registered and not self._stopping:
            try:
                await self._workers.register(self.worker_id, self._description)
                self._registered = True
            except Exception:
                log.exception("could not register this process with the queue; trying again")
                await self._wait(self._stop, self.poll_seconds)
        while not self._stopping:
            self._wake.clear()
            wait = self.poll_seconds
            # Delivery is bounded too, so a slow Discord can't pile up results in memory.
            self._starved = True
            while not self._paused and len(self._running) < 2 * self.max_concurrent:
                outcome = await self._claim()
                if isinstance(outcome, NoClaim):
                    self.credit_hold = outcome.reason is Refusal.CREDIT_HOLD
                    self._starved = outcome.reason is Refusal.FULL
                    if outcome.retry_in is not None:
                        wait = min(wait, outcome.retry_in)
                    if outcome.reason is Refusal.EMPTY and not self._running:
                        self._idle.set()
                    break
                self.credit_hold = False
                job = Job(outcome.generation, self, outcome.throttled)
                self._running[job.generation_id] = asyncio.create_task(
                    self._run(job), name=f"generation-{job.generation_id}"
                )
                if not (outcome.others_waiting and outcome.slot_left):
                    # Another claim would be refused: wait for news, as after a refusal.
                    self._starved = outcome.others_waiting
                    break
            await self._wait(self._wake, wait)

    def _slot_freed(self) -> None:
        """Claim again only if the last try was turned away for want of a slot: after a try
        that found nothing waiting, a freed slot changes nothing (new jobs wake us anyway)."""
        if self._starved:
            self._wake.set()
        elif not self._running and not self._paused:
            self._idle.set()

    async def _claim(self) -> Claimed | NoClaim:
        started = time.perf_counter()
        try:
            return await self._repository.claim(self.worker_id, max_concurrent=self.max_concurrent)
        except Exception:
            log.exception("claiming a job failed; trying again at the next poll")
            return NoClaim(Refusal.EMPTY)
        finally:
            self.claim_seconds.append(time.perf_counter() - started)

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event`` is set or ``seconds`` have passed (on the injected clock)."""
        woken = asyncio.ensure_future(event.wait())
        slept = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()

    async def _run(self, job: Job) -> None:
        generation = job.generation
        try:
            await self._runner(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("generation %s: runner failed", generation.id)
            with contextlib.suppress(Exception):  # logged above; the lease frees it otherwise
                await self._repository.fail_abandoned(generation, UNEXPECTED)
        finally:
            self._running.pop(generation.id, None)
            self._slot_freed()

    async def heartbeat(self) -> Heartbeat:
        """Renew the lease; jobs of processes gone silent go back in line, or fail if they were
        still being taken in (``on_abandoned`` is told, to show it on their cards)."""
        beat = await self._workers.heartbeat(
            self.worker_id, lease=self.lease, abandoned_reason=INTAKE_LOST
        )
        if beat.reaped:
            log.warning(
                "%d generations were interrupted mid-call (their process stopped answering); "
                "they run again",
                beat.reaped,
            )
            self.notify()
        if beat.abandoned and self.on_abandoned is not None:
            await self.on_abandoned(beat.abandoned)
        return beat

    async def _heartbeat(self) -> None:
        """Renew this process's lease; put the jobs of processes gone silent back in line."""
        while not self._stopping:
            await self._wait(self._stop, self.lease.total_seconds() / 3)
            if not self._registered or self._stopping:
                continue
            try:
                beat = await self.heartbeat()
                self.waiting_count = (await self._repository.depth())[1]
            except Exception:
                log.exception("queue heartbeat failed; trying again")
                continue
            if not beat.alive:
                log.warning("this process was taken for dead (its heartbeat was late): rejoining")
                await self._workers.register(self.worker_id, self._description)
