from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.store import Store
from tests.conftest import ENGINES
from tests.postgres import PostgresServer
from tests.services.store.records import FakeClock


@pytest.fixture(params=ENGINES)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Every store test runs on both engines, each from an empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/nested/dir/fluxbot.sqlite3"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    async with server.database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For what only SQLite has (PRAGMAs, its file, WAL)."""
    return f"sqlite:///{tmp_path}/nested/dir/fluxbot.sqlite3"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(db_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    async with await Store.open(db_url, clock=clock) as opened:
        yield opened
