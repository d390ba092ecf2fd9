"""Suite-wide: an ERROR logged anywhere fails the test (discord.py logs, not raises); ``world``.

Databases: ``postgres`` is the session's throwaway PostgreSQL server (tests/postgres.py);
``database_url`` gives each test a fresh database on each engine, and ``world`` runs the whole
bot on both.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.botprocess import BotProcesses
from tests.fakes.aimlapi import FakeAimlApi
from tests.fakes.discord import FakeDiscord
from tests.postgres import PostgresServer, PostgresUnavailable
from tests.world import API_KEY, TOKEN, World

#: Every engine the bot supports; ``database_url`` (and so ``world``) runs a test on each.
ENGINES = ["sqlite", "postgresql"]


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Started on first use, so a run of SQLite-only tests never waits for it."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=ENGINES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a new SQLite file, or a new database on the session's server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fluxbot.sqlite3"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    async with server.database() as url:
        yield url


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with FakeAimlApi(api_key=API_KEY) as api, FakeDiscord(token=TOKEN) as discord:
        with discord.patch_discord_py():
            world = World(discord, api, database_url)
            await world.start_bot()
            try:
                yield world
            finally:
                await world.stop_bot()


@pytest.fixture
async def fakes(database_url: str) -> AsyncIterator[World]:
    """Both fakes and a database, and no bot in this process: for bots in child processes."""
    async with FakeAimlApi(api_key=API_KEY) as api, FakeDiscord(token=TOKEN) as discord:
        yield World(discord, api, database_url)


@pytest.fixture
async def bot_processes(
    request: pytest.FixtureRequest, fakes: World, tmp_path: Path
) -> AsyncIterator[BotProcesses]:
    """Starts bots in child processes (tests/botprocess.py) on ``fakes``; an ERROR one of them
    logs fails the test, as one logged here does. An xfail test checks that itself (a failure
    here would be an error, not the expected failure)."""
    processes = BotProcesses(fakes, tmp_path)
    try:
        yield processes
    finally:
        errors = await processes.close()
    if errors and request.node.get_closest_marker("xfail") is None:
        pytest.fail("ERROR logged by a bot process:\n" + "\n".join(errors), pytrace=False)
