"""The card updater: coalesced edits, and an edit a caller supplies for a card's next edit."""

from __future__ import annotations

import asyncio

from services.card_updates import CardUpdater


class Editor:
    def __init__(self) -> None:
        self.edits: list[tuple[str, int]] = []

    async def __call__(self, card_id: int) -> None:
        self.edits.append(("usual", card_id))


async def test_requests_while_an_edit_is_pending_merge_into_it() -> None:
    editor = Editor()
    cards = CardUpdater(editor, min_interval=0.05)
    for _ in range(5):
        cards.request(7)
    await cards.flush()
    assert editor.edits == [("usual", 7)]


async def test_a_supplied_edit_replaces_the_next_edit_only() -> None:
    editor = Editor()
    cards = CardUpdater(editor, min_interval=0.01)
    cards.note_edited(7)  # the card was just posted: its first edit waits a little
    cards.request(7)
    supplied = asyncio.Event()

    async def with_reference() -> None:
        editor.edits.append(("supplied", 7))
        supplied.set()

    cards.request(7, edit=with_reference)  # merges with the request before it
    await cards.flush()
    assert editor.edits == [("supplied", 7)] and supplied.is_set()

    cards.request(7)
    await cards.flush()
    assert editor.edits == [("supplied", 7), ("usual", 7)]


async def test_a_failing_edit_is_logged_and_later_edits_still_run(fail_on_error_logs) -> None:
    editor = Editor()
    cards = CardUpdater(editor, min_interval=0.0)

    async def broken() -> None:
        raise RuntimeError("boom")

    cards.request(3, edit=broken)
    await cards.flush()
    cards.request(3)
    await cards.flush()

    assert editor.edits == [("usual", 3)]
    assert [r.getMessage() for r in fail_on_error_logs.records] == ["card 3: edit failed"]
    fail_on_error_logs.records.clear()
