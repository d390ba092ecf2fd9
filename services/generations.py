"""The one place a command, a button or a resumed job asks for a generation.

``GenerationService`` admits a job (per-member cap, daily quotas, budgets), stores it, queues it,
cancels it, resumes what a restart left behind, and asks the delivery side to refresh job cards.
Cogs never touch the queue or the store's job states directly, so the rules live here once.

Discord is reached only through a :class:`Publisher` that the delivery extension attaches when
it loads; until one is attached the queue holds every job rather than run it with nowhere to go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.aimlapi import AimlApiClient
from services.card_updates import CardUpdater
from services.clock import utc_now
from services.costs import BudgetGuard, PriceList
from services.jobs import Job, JobQueue
from services.metrics import Metrics, Outcome
from services.model_registry import DEFAULT_MODEL
from services.quotas import DailyQuotas
from services.store import Generation, NewGeneration, Store
from services.worker import GenerationWorker, NoPublisher, Publisher

log = logging.getLogger(__name__)

RESUME_TOO_LATE = "The bot restarted and this job waited too long. Press Reroll to try again."

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
    ) -> None:
        self._store = store
        self.metrics = metrics or Metrics()
        self._quotas = quotas
        self.prices = prices or PriceList()
        #: Daily budgets: the bot's, and those guild admins set (read afresh at each admission).
        self.budgets = budgets or BudgetGuard(store)
        #: Set while the API account is out of credits: the queue starts nothing new.
        self._credit_hold = False
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
        # Held until ``resume``: stored jobs go first, in their order.
        self.queue = JobQueue(
            worker, max_concurrent=max_concurrent, max_per_user=max_per_user, started=False
        )
        self.metrics.watch_queue(lambda: self.queue.waiting_count, lambda: self.queue.running_count)

    # -- the delivery side ----------------------------------------------------------------

    def attach(self, publisher: Publisher) -> None:
        self._publisher = publisher
        if self._resumed and not self._credit_hold:
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
        self.queue.check_admission(user_id)
        await self._quotas.check(user_id, guild_id)
        await self.budgets.check(user_id, guild_id, self.prices.estimate(model, count))

    async def submit(self, new: NewGeneration) -> Submitted:
        """Admit, store and queue a job, and have its card show it.

        Under a budget, its check and the job's insert are one transaction that no other
        admission, in any process, interleaves with (``Store.admission``).
        """
        estimate = self.prices.estimate(new.model, new.parameters.count)
        new = new.model_copy(update={"estimate_usd_nanos": estimate})
        async with self._admission:  # check and store as one step, or two presses both pass
            self.queue.check_admission(new.user_id)
            await self._quotas.check(new.user_id, new.guild_id)
            if await self.budgets.applies(new.user_id, new.guild_id):
                async with self._store.admission() as conn:
                    await self.budgets.check(new.user_id, new.guild_id, estimate, conn)
                    generation = await self._store.generations.create(new, conn=conn)
            else:
                generation = await self._store.generations.create(new)
        ahead = self.queue.submit(
            Job(generation.id, generation.user_id, generation.guild_id), check=False
        )
        self.show_on_card(generation)
        if self._credit_hold and self._credit_listener is not None:
            await self._credit_listener(generation)
        return Submitted(generation, ahead)

    async def cancel(self, generation: Generation, *, by: int) -> bool:
        """Cancel a waiting job; False if it already started (a paid call is never cancelled)."""
        if not self.queue.cancel(generation.id):
            return False
        cancelled = await self._store.generations.mark_cancelled(generation.id, cancelled_by=by)
        if cancelled is None:
            return False
        self.metrics.job_ended(cancelled, Outcome.CANCELLED)
        self.show_on_card(cancelled)
        return True

    def jobs_ahead(self, generation_id: int) -> int | None:
        return self.queue.jobs_ahead(generation_id)

    # -- out of credits -------------------------------------------------------------------

    def watch_credits(self, listener: CreditListener | None) -> None:
        """``listener`` (the balance watch) decides on pauses for credits; None: jobs the API
        refuses for want of credits fail instead."""
        self._credit_listener = listener

    @property
    def credit_hold(self) -> bool:
        """The queue is paused because the API account is out of credits."""
        return self._credit_hold

    def release_credit_hold(self) -> bool:
        """Start jobs again after a pause for credits; False if there was none."""
        if not self._credit_hold:
            return False
        self._credit_hold = False
        if self._resumed and self._publisher is not None:
            self.queue.start()
        return True

    async def _out_of_credits(self, generation: Generation) -> bool:
        """The API refused ``generation`` for want of credits: pause the queue, if watched."""
        if self._credit_listener is None:
            return False
        if not self._credit_hold:
            self._credit_hold = True
            self.queue.pause()
        await self._credit_listener(generation)
        return True

    @property
    def stopping(self) -> bool:
        """Shutting down: jobs accepted now run after the restart."""
        return self.queue.stopping

    # -- lifecycle ------------------------------------------------------------------------

    async def resume(self) -> None:
        """Jobs a stop or crash left behind run again, oldest first; stale ones fail loudly.

        The queue starts only afterwards, so commands that arrived while the bot connected
        wait behind them. Each job fetches a fresh reference URL from its card when it runs.
        """
        if self._resumed or self.queue.stopping:
            return
        self._resumed = True
        try:
            interrupted = await self._store.generations.mark_running_as_interrupted()
            if interrupted:
                log.warning("%d generations were interrupted mid-call; they run again", interrupted)
            cutoff = self._now() - self._job_timeout
            resumed = 0
            for generation in await self._store.generations.unfinished():
                if generation.created_at < cutoff:
                    await self._fail_stale(generation)
                elif generation.id not in self.queue:  # not one queued since start-up
                    job = Job(generation.id, generation.user_id, generation.guild_id)
                    self.queue.submit(job, check=False)
                    self.show_on_card(generation)
                    resumed += 1
            log.info("resumed %d waiting generations", resumed)
        finally:
            if self._publisher is not None and not self._credit_hold:
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

        Jobs accepted meanwhile are stored, to run after the restart with every job still waiting.
        """
        waiting, interrupted = await self.queue.shutdown(grace)
        for job in interrupted:
            await self._store.generations.mark_interrupted(job.generation_id)
            log.warning(
                "generation %s: still running after %gs; interrupted, it runs again after "
                "the restart (the API may bill it twice)",
                job.generation_id,
                grace,
            )
        await self._store.generations.mark_running_as_interrupted()  # any the grace cut mid-write
        if waiting:
            log.info("%d waiting generations kept for the next start", len(waiting))
        await self.cards.flush()
