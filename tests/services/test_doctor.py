"""``--check`` against the fakes: each failure mode gives its own line with a fix, and exit 1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from services import doctor
from services.config import Settings, SettingsError
from services.doctor import CheckResult
from services.store import SCHEMA_VERSION, Store, make_engine, migrate
from tests.fakes.aimlapi import FakeAimlApi
from tests.fakes.discord import FakeDiscord
from tests.postgres import PostgresServer
from tests.world import API_KEY, TOKEN

API = "/api/v10"


class Fakes:
    def __init__(self, discord: FakeDiscord, api: FakeAimlApi, database_url: str) -> None:
        self.discord = discord
        self.api = api
        self.database_url = database_url

    def settings(self, **overrides: Any) -> Callable[[], Settings]:
        values: dict[str, Any] = {
            "discord_token": TOKEN,
            "aimlapi_key": API_KEY,
            "aimlapi_base_url": self.api.base_url,
            "database_url": self.database_url,
        }
        values.update(overrides)
        # _env_file is pydantic-settings' init-only option, which the plugin does not know.
        return lambda: Settings(_env_file=None, **values)  # type: ignore[call-arg]

    async def check(self, **overrides: Any) -> dict[str, CheckResult]:
        results = await doctor.run_checks(
            self.settings(**overrides), discord_api=self.discord.url + API
        )
        assert [r.name for r in results] == ["config", "discord", "aimlapi", "database"]
        return {r.name: r for r in results}


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    """Both fakes and a SQLite database at the current schema."""
    database_url = f"sqlite:///{tmp_path}/fluxbot.sqlite3"
    async with await Store.open(database_url):
        pass
    async with FakeAimlApi(api_key=API_KEY) as api, FakeDiscord(token=TOKEN) as discord:
        yield Fakes(discord, api, database_url)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_fails(result: CheckResult, *words: str) -> None:
    assert not result.ok, result
    line = result.line()
    assert line.startswith(f"FAIL  {result.name}") and "fix: " in line, line
    for word in words:
        assert word in line, line
    assert TOKEN not in line and API_KEY not in line


async def test_everything_in_order_passes(fakes: Fakes, database_url: str) -> None:
    async with await Store.open(database_url):
        pass

    results = await fakes.check(database_url=database_url)

    assert all(r.ok for r in results.values()), results
    assert "logged in as" in results["discord"].line()
    assert "balance $1,000.00" in results["aimlapi"].line()
    assert f"schema version {SCHEMA_VERSION} (current)" in results["database"].line()
    assert fakes.api.billing_requests == 1 and fakes.api.calls == 0  # nothing was generated
    logins = [r for r in fakes.discord.requests if r.path == "/users/@me"]
    assert len(logins) == 1 and logins[0].status == 200


async def test_missing_settings_each_get_a_line_and_the_rest_is_not_checked(
    fakes: Fakes,
) -> None:
    def load() -> Settings:
        raise SettingsError("bad", ["DISCORD_TOKEN is missing. Get it at x", "AIMLAPI_KEY: y"])

    results = await doctor.run_checks(load, discord_api=fakes.discord.url + API)

    assert [(r.name, r.ok) for r in results] == [
        ("config", False),
        ("config", False),
        ("discord", False),
        ("aimlapi", False),
        ("database", False),
    ]
    assert "DISCORD_TOKEN is missing" in results[0].line()
    assert all("not checked" in r.detail for r in results[2:])
    assert fakes.discord.requests == [] and fakes.api.billing_requests == 0


async def test_a_token_discord_refuses(fakes: Fakes) -> None:
    results = await fakes.check(discord_token="MTIz.wrong.token-for-the-doctor-test")

    assert_fails(results["discord"], "Discord refused DISCORD_TOKEN", "Reset Token")
    assert results["aimlapi"].ok and results["database"].ok


async def test_discord_out_of_reach(fakes: Fakes) -> None:
    results = await doctor.run_checks(
        fakes.settings(), discord_api=f"http://127.0.0.1:{closed_port()}{API}"
    )

    assert_fails(results[1], "could not reach Discord", "network")


async def test_a_key_the_api_refuses(fakes: Fakes) -> None:
    results = await fakes.check(aimlapi_key="aiml-wrong-key-for-the-doctor")

    assert_fails(results["aimlapi"], "refused AIMLAPI_KEY", "aimlapi.com/app/keys")
    assert "aiml-wrong-key-for-the-doctor" not in results["aimlapi"].line()
    assert results["discord"].ok


async def test_an_account_without_credits(fakes: Fakes) -> None:
    fakes.api.balance = 0

    results = await fakes.check()

    assert_fails(results["aimlapi"], "balance is $0.00", "top up")


async def test_the_api_out_of_reach(fakes: Fakes) -> None:
    results = await fakes.check(aimlapi_base_url=f"http://127.0.0.1:{closed_port()}")

    assert_fails(results["aimlapi"], "could not reach", "AIMLAPI_BASE_URL")


async def test_a_base_url_that_is_not_the_api(fakes: Fakes) -> None:
    results = await fakes.check(aimlapi_base_url=f"{fakes.api.base_url}/not-the-api")

    assert_fails(results["aimlapi"], "HTTP 404", "AIMLAPI_BASE_URL")


async def test_pending_migrations_say_how_to_apply_them(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await migrate(engine, target=2)
    finally:
        await engine.dispose()

    result = await doctor.check_database(database_url)

    assert_fails(result, f"schema version 2; this fluxbot needs {SCHEMA_VERSION}", "--migrate")


async def test_a_database_newer_than_the_code(database_url: str) -> None:
    async with await Store.open(database_url) as store, store.engine.begin() as conn:
        await conn.execute(text("UPDATE schema_version SET version = 99"))

    result = await doctor.check_database(database_url)

    assert_fails(result, "schema version 99", "upgrade fluxbot")


async def test_a_missing_sqlite_file_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "data" / "fluxbot.sqlite3"

    result = await doctor.check_database(f"sqlite:///{path}")

    assert_fails(result, "no database at", "--migrate")
    assert not path.parent.exists()


async def test_a_postgresql_server_out_of_reach(tmp_path: Path) -> None:
    url = f"postgresql://fluxbot:s3cret-password@/fluxbot?host={tmp_path}/no-server-here"

    result = await doctor.check_database(url)

    assert_fails(result, "cannot use", "DATABASE_URL")
    assert "s3cret-password" not in result.line()


async def test_a_postgresql_database_that_does_not_exist(postgres: PostgresServer) -> None:
    result = await doctor.check_database(postgres.url("no_such_database"))

    assert_fails(result, "no_such_database", "does not exist")


async def test_an_unparseable_database_url(tmp_path: Path) -> None:
    result = await doctor.check_database("mysql://root:pw@localhost/db")

    assert_fails(result, "not supported", "postgresql://")
    assert "pw@" not in result.line()
