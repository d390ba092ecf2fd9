"""Work a command leaves running once its API call has started, and what waits for it.

In a busy channel every Discord write shares the channel's budget (about 5 per 5 s each for
sends, edits and thread creation), so ``/imagine`` makes none before its API call when the
member's file can be used as it is (DESIGN §5). The results thread is opened, and the reference
re-hosted on the card, while the API works; a result waits for its thread here, and a reroll for
the card's copy of the reference, instead of the API call waiting for either.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import discord

from cogs import _render as render
from cogs._components import card_view
from services.store import Generation
from services.store.queue_reads import WAITING

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

T = TypeVar("T")
#: How long a result waits for its thread, or a reroll for the card's reference, at most: a
#: busy channel's thread budget can hold a thread back for tens of seconds.
WAIT_SECONDS = 120.0


class CardWork:
    """Threads being opened and references being re-hosted, by card id, for one bot."""

    def __init__(self) -> None:
        self._queues: dict[tuple[int, str], asyncio.Lock] = {}
        self._openings: set[asyncio.Task[bool]] = set()
        self._threads: dict[int, asyncio.Future[bool]] = {}
        self._references: dict[int, asyncio.Future[str | None]] = {}

    def one_at_a_time(self, channel_id: int, kind: str) -> asyncio.Lock:
        """Writes of one kind (card edits, threads) in one channel go one after another.

        The channel's budget sets the pace either way; requests sent together instead would
        reach Discord across a window's reset, and discord.py's bucket then lets one too many
        through (a 429 it retries five seconds later).
        """
        return self._queues.setdefault((channel_id, kind), asyncio.Lock())

    def open_thread(self, card_id: int, opening: Coroutine[Any, Any, bool]) -> None:
        """Run ``opening`` (True once the thread exists) while the job runs."""
        ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._threads[card_id] = ready
        ready.add_done_callback(lambda _: self._forget(self._threads, card_id, ready))
        task = asyncio.create_task(opening, name=f"thread-{card_id}")
        self._openings.add(task)

        def opened(task: asyncio.Task[bool]) -> None:
            self._openings.discard(task)
            if not ready.done():
                ready.set_result(
                    not task.cancelled() and task.exception() is None and task.result()
                )

        task.add_done_callback(opened)

    def thread_created(self, thread_id: int) -> None:
        """The gateway announced the thread: it exists, whenever discord.py hands back the reply.

        discord.py holds the reply to the request that used up a bucket until the bucket resets
        (up to 5 s for threads), so the gateway's THREAD_CREATE is the earlier news.
        """
        ready = self._threads.get(thread_id)
        if ready is not None and not ready.done():
            ready.set_result(True)

    async def thread_ready(self, thread_id: int) -> bool:
        """Wait for a thread still being opened; False if it could not be (post in the channel)."""
        ready = self._threads.get(thread_id)
        return True if ready is None else await _bounded(ready, default=False)

    def rehosting(self, card_id: int) -> asyncio.Future[str | None]:
        """A future the re-host resolves with the card's reference URL (``None``: it failed)."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._references[card_id] = future
        future.add_done_callback(lambda _: self._forget(self._references, card_id, future))
        return future

    async def reference(self, card_id: int) -> str | None:
        """The card's reference URL if a re-host is under way (waiting for it), else ``None``."""
        future = self._references.get(card_id)
        return None if future is None else await _bounded(future, default=None)

    async def close(self) -> None:
        for task in list(self._openings):
            task.cancel()
        await asyncio.gather(*self._openings, return_exceptions=True)

    @staticmethod
    def _forget(pending: dict[int, Any], card_id: int, item: object) -> None:
        if pending.get(card_id) is item:
            del pending[card_id]


async def _bounded(awaitable: asyncio.Future[T], *, default: T) -> T:
    try:
        return await asyncio.wait_for(asyncio.shield(awaitable), WAIT_SECONDS)
    except TimeoutError:
        log.warning("gave up waiting %gs for a card's thread or reference", WAIT_SECONDS)
        return default
    except asyncio.CancelledError:
        if awaitable.cancelled():  # the bot is closing: the work was cancelled, not this wait
            return default
        raise


_BY_BOT: weakref.WeakKeyDictionary[discord.Client, CardWork] = weakref.WeakKeyDictionary()


def card_work(bot: discord.Client) -> CardWork:
    """The bot's one :class:`CardWork`, shared by the command and the delivery extension."""
    work = _BY_BOT.get(bot)
    if work is None:
        work = _BY_BOT[bot] = CardWork()
    return work


async def card_fields(bot: FluxBot, generation: Generation) -> dict[str, Any]:
    """What a card edit sends: the latest job's status, and Cancel while it waits."""
    waiting = generation.status in WAITING
    ahead = await bot.generations.jobs_ahead(generation.id) if waiting else None
    return {
        "embed": render.card_embed(generation, ahead=ahead),
        "view": card_view(generation),
        "allowed_mentions": render.NO_MENTIONS,
    }
