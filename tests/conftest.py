"""Suite-wide: an ERROR logged anywhere fails the test (discord.py logs, not raises); ``world``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes.aimlapi import FakeAimlApi
from tests.fakes.discord import FakeDiscord
from tests.world import API_KEY, TOKEN, World


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_error_logs(request: pytest.FixtureRequest) -> Iterator[ErrorRecords]:
    """Tests that provoke an ERROR on purpose take this fixture and clear what they expected."""
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    if handler.records:
        lines = [f"{r.name}: {r.getMessage()}" for r in handler.records]
        pytest.fail("ERROR logged during the test:\n" + "\n".join(lines), pytrace=False)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeAimlApi(api_key=API_KEY) as api, FakeDiscord(token=TOKEN) as discord:
        with discord.patch_discord_py():
            world = World(discord, api, tmp_path / "fluxbot.sqlite3")
            await world.start_bot()
            try:
                yield world
            finally:
                await world.stop_bot()
