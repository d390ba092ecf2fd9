"""Job cards: every edit goes through one coalescing updater, so edits never race or flood.

A card shows the latest state of its newest generation, read from the store at the moment of
the edit; requests that arrive while an edit is pending merge into the next one, and one card
is edited at most once per ``min_interval`` seconds. A caller may supply the next edit of a card
(the one that also re-hosts its reference), so that work costs no edit of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

CardEditor = Callable[[int], Awaitable[None]]
#: An edit supplied for one card; like the editor it shows the state as read when it runs.
CardEdit = Callable[[], Awaitable[None]]


class CardUpdater:
    def __init__(self, editor: CardEditor, *, min_interval: float = 1.0) -> None:
        self._editor = editor
        self._min_interval = min_interval
        self._dirty: set[int] = set()
        self._next_edit: dict[int, CardEdit] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._last_edit: dict[int, float] = {}

    def request(self, card_id: int, *, edit: CardEdit | None = None) -> None:
        """Ask for the card to show the current state soon; cheap and never blocks.

        ``edit`` replaces the usual editor for the card's next edit.
        """
        if edit is not None:
            self._next_edit[card_id] = edit
        self._dirty.add(card_id)
        if card_id not in self._tasks:
            task = asyncio.create_task(self._drain(card_id), name=f"card-{card_id}")
            self._tasks[card_id] = task

    def note_edited(self, card_id: int) -> None:
        """Count an edit made elsewhere (the one that attaches the reference) against the rate."""
        self._last_edit[card_id] = time.monotonic()

    async def flush(self) -> None:
        """Wait until every requested edit has been made (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _drain(self, card_id: int) -> None:
        try:
            while card_id in self._dirty:
                wait = self._last_edit.get(card_id, -1e9) + self._min_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # rate limit, not synchronisation
                self._dirty.discard(card_id)
                edit = self._next_edit.pop(card_id, None)
                try:
                    await (edit() if edit is not None else self._editor(card_id))
                except Exception:
                    log.exception("card %s: edit failed", card_id)
                self._last_edit[card_id] = time.monotonic()
        finally:
            del self._tasks[card_id]
            if len(self._last_edit) > 10_000:
                self._forget_old()

    def _forget_old(self) -> None:
        horizon = time.monotonic() - self._min_interval
        for card_id, at in list(self._last_edit.items()):
            if at < horizon:
                del self._last_edit[card_id]
