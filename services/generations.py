"""The one place a command, a button or a resumed job asks for a generation.

``GenerationService`` admits a job (per-member cap, daily quotas, budgets), stores it, queues it,
cancels it, resumes what a restart left behind, and asks the delivery side to refresh job cards.
Cogs never touch the queue or the store's job states directly, so the rules live here once.

Discord is reached only through a :class:`Publisher` that the delivery extension attaches when
it loads; until one is attached the queue holds every job rather than run it with nowhere to go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.aimlapi import AimlApiClient
from services.card_updates import CardUpdater
from services.clock import utc_now
from services.costs import BudgetGuard, PriceList
from services.errors import UserFacingError
from services.jobs import INTAKE_LOST, JobQueue
from services.metrics import Metrics, Outcome
from services.model_registry import DEFAULT_MODEL
from services.quotas import DailyQuotas
from services.store import Generation, NewGeneration, Store
from services.store.queue_reads import WAITING
from services.worker import GenerationWorker, NoPublisher, Publisher

log = logging.getLogger(__name__)

RESUME_TOO_LATE = "The bot restarted and this job waited too long. Press Reroll to try again."


class JobLost(UserFacingError):
    """A job taken in that is no longer waiting to be queued (its process was taken for dead)."""

    default_user_message = INTAKE_LOST


#: Told of a job the API refused for want of credits, and of each job queued meanwhile.
CreditListener = Callable[[Generation], Awaitable[None]]


@dataclass(frozen=True)
class Submitted:
    generation: Generation
    #: Jobs that start before this one under the fairness rule.
    ahead: int


class GenerationService:
    def __init__(
        self,
        *,
        store: Store,
        api: AimlApiClient,
        quotas: DailyQuotas,
        max_concurrent: int,
        max_per_user: int,
        job_timeout_seconds: float,
        card_edit_interval: float = 1.0,
        now: Callable[[], datetime] = utc_now,
        prices: PriceList | None = None,
        budgets: BudgetGuard | None = None,
        metrics: Metrics | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        description: str = "",
    ) -> None:
        """``lease_seconds``: how long a silent process keeps its jobs before another takes them
        up; ``poll_seconds``: how often an idle process looks for jobs stored by others;
        ``description``: what the ``workers`` table says of this process (shards, role)."""
        self._store = store
        self.metrics = metrics or Metrics()
        self._quotas = quotas
        self.prices = prices or PriceList()
        #: Daily budgets: the bot's, and those guild admins set (read afresh at each admission).
        self.budgets = budgets or BudgetGuard(store)
        self._credit_listener: CreditListener | None = None
        self._job_timeout = timedelta(seconds=job_timeout_seconds)
        self._now = now
        self._publisher: Publisher | None = None
        self._admission = asyncio.Lock()
        self._resumed = False
        #: Job cards: every edit goes through one coalescing updater, so edits never race.
        self.cards = CardUpdater(self._edit_card, min_interval=card_edit_interval)
        worker = GenerationWorker(
            store=store,
            api=api,
            publisher=self.publisher,
            show_on_card=self.show_on_card,
            job_timeout_seconds=job_timeout_seconds,
            now=now,
            metrics=self.metrics,
            out_of_credits=self._out_of_credits,
        )
        # Claims nothing until ``resume``: what a stop left behind is put back in line first.
        self.queue = JobQueue(
            worker,
            store.queue,
            store.workers,
            max_concurrent=max_concurrent,
            max_per_user=max_per_user,
            lease_seconds=lease_seconds,
            poll_seconds=poll_seconds,
            description=description,
        )
        self.queue.on_abandoned = self._abandoned
        self.metrics.watch_queue(self.depth)

    # -- the delivery side ----------------------------------------------------------------

    def attach(self, publisher: Publisher) -> None:
        self._publisher = publisher
        if self._resumed:
            self.queue.start()

    def detach(self) -> None:
        """Jobs wait (and their cards stay as they are) until a publisher is attached again."""
        self._publisher = None
        self.queue.pause()

    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise NoPublisher(detail="no delivery extension is loaded")
        return self._publisher

    def show_on_card(self, generation: Generation) -> None:
        """Have the generation's job card show its current state soon (coalesced, cheap)."""
        if generation.card_message_id is not None:
            self.cards.request(generation.card_message_id)

    async def _edit_card(self, card_message_id: int) -> None:
        if self._publisher is not None:
            await self._publisher.edit_card(card_message_id)

    # -- what commands and buttons call ---------------------------------------------------

    async def admit(
        self,
        user_id: int,
        guild_id: int | None,
        *,
        model: str = DEFAULT_MODEL,
        count: int = 1,
    ) -> None:
        """Raise ``QueueRefused`` (``QuotaExceeded``, ``BudgetExceeded``) if this member may not
        queue a job of ``count`` images on ``model`` now.

        Commands call it before answering, so a refusal is private and nothing is stored;
        ``submit`` checks again, as the state may have changed meanwhile.
        """
        await self.queue.check_admission(user_id)
        await self._quotas.check(user_id, guild_id)
        await self.budgets.check(user_id, guild_id, self.prices.estimate(model, count))

    async def submit(self, new: NewGeneration) -> Submitted:
        """Admit, store and queue a job, and have its card show it."""
        estimate = self.prices.estimate(new.model, new.parameters.count)
        new = new.model_copy(update={"estimate_usd_nanos": estimate})
        generation = await self._admitted(new)
        # Its place first: once the queue is told, this job may be claimed and done at once.
        ahead = await self.queue.jobs_ahead(generation.id)
        await self._queued(generation)
        return Submitted(generation, ahead or 0)

    async def accept(self, new: NewGeneration) -> Generation:
        """Store a job before its command is answered, while its picture is still to be read
        (``intake``): no process runs it until ``submit_accepted``, and if this process dies
        first the job fails plainly instead of vanishing.

        The caps, quotas and budgets are read here (a refusal is private and stores nothing)
        but decided in ``submit_accepted``'s transaction: a burst of commands then waits on
        one insert each before its answer, not on the admission lock.
        """
        await self.admit(new.user_id, new.guild_id, model=new.model, count=new.parameters.count)
        estimate = self.prices.estimate(new.model, new.parameters.count)
        return await self._store.generations.create(
            new.model_copy(update={"estimate_usd_nanos": estimate}), intake_by=self.queue.worker_id
        )

    async def set_card(self, generation_id: int, *, channel_id: int, message_id: int) -> None:
        """The card that answered the command: where an abandoned intake says so."""
        await self._store.generations.set_card(
            generation_id, channel_id=channel_id, message_id=message_id
        )

    async def submit_accepted(self, generation_id: int, taken_in: NewGeneration) -> Generation:
        """Admit and queue a job taken in, with its references, thread and card as ``taken_in``
        says. Raises ``QueueRefused`` (and its kin) if another job took the place meanwhile."""
        async with self._admission_for(taken_in) as conn:
            generation = await self._store.generations.mark_queued(generation_id, taken_in, conn)
        if generation is None:
            raise JobLost(detail=f"generation {generation_id} left intake meanwhile")
        await self._queued(generation)  # its card shows its place; no one else asks for it
        return generation

    async def reject_accepted(self, generation_id: int, reason: str) -> None:
        """A job whose picture was refused (its card says why): failed, never run."""
        failed = await self._store.generations.mark_failed(generation_id, reason)
        if failed is not None:
            self.metrics.job_ended(failed, Outcome.FAILED)

    async def _admitted(self, new: NewGeneration) -> Generation:
        """Store ``new`` as queued if the member's cap, the quotas and the budgets let it in."""
        async with self._admission_for(new) as conn:
            return await self._store.generations.create(new, conn=conn)

    @contextlib.asynccontextmanager
    async def _admission_for(self, new: NewGeneration) -> AsyncIterator[AsyncConnection]:
        """The checks, in a transaction that no other admission, in any process, interleaves
        with (``Store.admission``); what the caller writes in it is let in by them. Two presses
        can't both take a member's last place, a quota's last job or a budget's last cent."""
        estimate = new.estimate_usd_nanos
        if estimate is None:
            estimate = self.prices.estimate(new.model, new.parameters.count)
        # One admission of this process at a time: each holds a connection while it waits for
        # the database's admission lock, and its checks read on a second one, so a burst of
        # commands waiting in the database would exhaust the pool and block the lock's holder.
        async with self._admission, self._store.admission() as conn:
            await self.queue.check_admission(new.user_id, conn)
            await self._quotas.check(new.user_id, new.guild_id)
            if await self.budgets.applies(new.user_id, new.guild_id):
                await self.budgets.check(new.user_id, new.guild_id, estimate, conn)
            yield conn

    async def _queued(self, generation: Generation) -> None:
        self.queue.notify()
        self.show_on_card(generation)
        if self.credit_hold and self._credit_listener is not None:
            await self._credit_listener(generation)

    async def _abandoned(self, generations: Sequence[Generation]) -> None:
        """Jobs whose intake process fell silent: failed plainly, their cards told so."""
        for generation in generations:
            log.warning("generation %s: its intake was cut off; failed", generation.id)
            self.metrics.job_ended(generation, Outcome.FAILED)
            self.show_on_card(generation)

    async def cancel(self, generation: Generation, *, by: int) -> bool:
        """Cancel a waiting job; False if it already started (a paid call is never cancelled).

        The store's guarded update decides, whichever process would have claimed it."""
        cancelled = await self._store.generations.mark_cancelled(generation.id, cancelled_by=by)
        if cancelled is None:
            return False
        self.metrics.job_ended(cancelled, Outcome.CANCELLED)
        self.show_on_card(cancelled)
        return True

    async def jobs_ahead(self, generation_id: int) -> int | None:
        return await self.queue.jobs_ahead(generation_id)

    async def depth(self) -> tuple[int, int]:
        """Running and waiting jobs of the whole bot, every process."""
        return await self._store.queue.depth()

    # -- out of credits -------------------------------------------------------------------

    def watch_credits(self, listener: CreditListener | None) -> None:
        """``listener`` (the balance watch) decides on pauses for credits; None: jobs the API
        refuses for want of credits fail instead."""
        self._credit_listener = listener

    @property
    def credit_hold(self) -> bool:
        """The queue is paused because the API account is out of credits (as last read)."""
        return self.queue.credit_hold

    async def release_credit_hold(self) -> bool:
        """Start jobs again after a pause for credits, in every process; False if there was
        none."""
        released = await self._store.queue.set_credit_hold(False)
        self.queue.credit_hold = False
        self.queue.notify()
        return released

    async def _out_of_credits(self, generation: Generation) -> bool:
        """The API refused ``generation`` for want of credits: pause the queue, if watched."""
        if self._credit_listener is None:
            return False
        await self._store.queue.set_credit_hold(True)
        self.queue.credit_hold = True
        await self._credit_listener(generation)
        return True

    @property
    def stopping(self) -> bool:
        """Shutting down: jobs accepted now run after the restart."""
        return self.queue.stopping

    # -- lifecycle ------------------------------------------------------------------------

    async def resume(self) -> None:
        """Jobs a stop or crash left behind run again, oldest first; stale ones fail loudly.

        Jobs of a process whose lease ran out go back in line first; claims start only
        afterwards. Each job fetches a fresh reference URL from its card when it runs.
        """
        if self._resumed or self.queue.stopping:
            return
        self._resumed = True
        try:
            await self.queue.heartbeat()
            cutoff = self._now() - self._job_timeout
            resumed = 0
            for generation in await self._store.generations.unfinished():
                if generation.status not in WAITING:
                    continue  # running in another process, under its lease
                if generation.created_at < cutoff:
                    await self._fail_stale(generation)
                else:
                    self.show_on_card(generation)
                    resumed += 1
            log.info("resumed %d waiting generations", resumed)
        finally:
            if self._publisher is not None:
                self.queue.start()
            else:  # its load failure is logged already
                log.warning("no delivery extension is loaded: jobs wait until one is")

    async def _fail_stale(self, generation: Generation) -> None:
        failed = await self._store.generations.mark_failed(generation.id, RESUME_TOO_LATE)
        if failed is not None:
            self.metrics.job_ended(failed, Outcome.FAILED)
        if failed is not None and self._publisher is not None:
            await self._publisher.job_failed(failed, RESUME_TOO_LATE)
            self.show_on_card(failed)

    async def shutdown(self, grace: float) -> None:
        """DESIGN §7: no new API calls; running ones get ``grace`` seconds, then are interrupted.

        Jobs accepted meanwhile are stored, to run after the restart (or in another process)
        with every job still waiting.
        """
        interrupted = await self.queue.shutdown(grace)
        for generation_id in interrupted:
            log.warning(
                "generation %s: still running after %gs; interrupted, it runs again after "
                "the restart (the API may bill it twice unless it had answered)",
                generation_id,
                grace,
            )
        await self.cards.flush()
