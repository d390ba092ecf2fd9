"""The API account's credit: its balance checked at start and hourly, and the pause when it is gone.

A 403 from the API means the account is out of credits (DESIGN §4): every later call would fail
the same way, so instead of failing jobs one by one the queue pauses (``GenerationService``), each
affected job card gets one message, and the operator one note. The queue starts again when the
balance is back (checked every minute while paused) or when an admin presses Resume.

Discord is reached only through :class:`CostNotices`, which the stats extension attaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Protocol

from services.aimlapi import AimlApiError, Balance
from services.costs import format_usd, usd_to_nanos
from services.generations import GenerationService
from services.store import Generation, Store

log = logging.getLogger(__name__)

#: How often the balance is read, and how often while the queue waits for credits.
CHECK_INTERVAL = 3600.0
PAUSED_INTERVAL = 60.0
TOP_UP = "https://aimlapi.com/app/billing"

PAUSED_CARD = (
    "⏸️ Paused: the bot's image service account is out of credits. Your image waits in line "
    "and will be made once an operator tops it up."
)


class CostNotices(Protocol):
    """What the balance watch needs from Discord."""

    async def admin_note(self, text: str, *, offer_resume: bool = False) -> None:
        """Tell the operator (``ADMIN_CHANNEL_ID``), with a Resume button if asked."""

    async def card_notice(self, generation: Generation, text: str) -> None:
        """Post ``text`` once where this generation's results go."""


class CreditWatch:
    def __init__(
        self,
        *,
        balance: Callable[[], Awaitable[Balance]],
        generations: GenerationService,
        store: Store,
        low_balance: Decimal = Decimal(0),
        interval: float = CHECK_INTERVAL,
        paused_interval: float = PAUSED_INTERVAL,
    ) -> None:
        """``balance`` is ``AimlApiClient.balance``; ``low_balance`` 0 never warns."""
        self._balance = balance
        self._generations = generations
        self._store = store
        self.low_balance = low_balance
        self.interval = interval
        self.paused_interval = paused_interval
        self._notices: CostNotices | None = None
        #: The last balance read, for ``/fluxbot-stats``.
        self.last: Balance | None = None
        self._low_noted = False
        #: Job cards told of the current pause (one message each).
        self._told: set[tuple[str, int]] = set()
        self._paused_noted = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._notifying: set[asyncio.Task[None]] = set()
        generations.watch_credits(self.out_of_credits)

    # -- the Discord side -----------------------------------------------------------------

    def attach(self, notices: CostNotices) -> None:
        self._notices = notices

    def detach(self) -> None:
        self._notices = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Read the balance now, then every ``interval`` (``paused_interval`` while paused)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fluxbot-credit-watch")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._notifying) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("the balance check failed")
            woken = False
            with contextlib.suppress(TimeoutError):
                interval = self.paused_interval if self.paused else self.interval
                woken = await asyncio.wait_for(self._wake.wait(), interval)
            if woken:  # a pause began: look again after the short interval, not at once
                self._wake.clear()
                await asyncio.sleep(self.paused_interval)

    @property
    def paused(self) -> bool:
        return self._generations.credit_hold

    # -- checks ---------------------------------------------------------------------------

    async def check(self) -> Balance | None:
        """Read the balance: warn when low, and end a pause once credits are back."""
        try:
            balance = await self._balance()
        except AimlApiError as exc:
            log.warning("could not read the AI/ML API balance: %s", exc)
            return None
        self.last = balance
        amount = balance.current_balance
        log.info("AI/ML API balance: %s %s", amount, balance.currency)
        if self.low_balance and amount < self.low_balance:
            shown, limit = _usd(amount), _usd(self.low_balance)
            log.warning(
                "AI/ML API balance is %s, below LOW_BALANCE_USD (%s): top it up at %s",
                shown,
                limit,
                TOP_UP,
            )
            if not self._low_noted:
                self._low_noted = True
                await self._note(
                    f"⚠️ The AI/ML API balance is {shown}, below LOW_BALANCE_USD ({limit}). "
                    f"Top it up at <{TOP_UP}>."
                )
        elif amount >= self.low_balance:
            self._low_noted = False
        if self.paused and amount > 0:
            await self.resume(reason=f"the balance is back ({_usd(amount)})")
        return balance

    # -- the pause ------------------------------------------------------------------------

    async def out_of_credits(self, generation: Generation) -> None:
        """A job the API refused for want of credits, or one queued while paused."""
        if not self._paused_noted:
            self._paused_noted = True
            waiting = sum(await self._generations.depth())
            log.warning(
                "the AI/ML API account is out of credits (HTTP 403): the queue is paused with "
                "%d jobs; it resumes once the balance is back or an admin presses Resume",
                waiting,
            )
            self._wake.set()
            await self._note(
                f"⏸️ The AI/ML API account is out of credits, so the queue is paused "
                f"({waiting} jobs wait). Top it up at <{TOP_UP}>: the queue resumes by itself "
                "within a minute of the balance being back, or press Resume.",
                offer_resume=True,
            )
            task = asyncio.create_task(self._tell_waiting(), name="fluxbot-credit-notices")
            self._notifying.add(task)
            task.add_done_callback(self._notifying.discard)
        await self._tell(generation)

    async def resume(self, *, reason: str) -> bool:
        """End a pause for credits (the balance is back, or an admin said so)."""
        if not await self._generations.release_credit_hold():
            return False
        self._told.clear()
        self._paused_noted = False
        log.info("the queue runs again: %s", reason)
        await self._note(f"▶️ The queue runs again: {reason}.")
        return True

    async def _tell_waiting(self) -> None:
        """One message per job card with a job waiting; cards of later jobs as they come."""
        try:
            for generation in await self._store.generations.unfinished():
                if not self.paused:
                    return
                await self._tell(generation)
        except Exception as exc:  # the operator's note already went out
            log.warning("could not tell every waiting job about the pause (%r)", exc)

    async def _tell(self, generation: Generation) -> None:
        key = (
            ("card", generation.card_message_id)
            if generation.card_message_id is not None
            else ("generation", generation.id)
        )
        if key in self._told or self._notices is None:
            return
        self._told.add(key)
        try:
            await self._notices.card_notice(generation, PAUSED_CARD)
        except Exception as exc:  # a card we cannot reach must not stop the others
            log.warning("generation %s: could not post the pause notice (%r)", generation.id, exc)

    async def _note(self, text: str, *, offer_resume: bool = False) -> None:
        if self._notices is None:
            return
        try:
            await self._notices.admin_note(text, offer_resume=offer_resume)
        except Exception as exc:  # the log line above already says it
            log.warning("could not post to the admin channel (%r)", exc)


def _usd(amount: Decimal) -> str:
    return format_usd(usd_to_nanos(amount))
