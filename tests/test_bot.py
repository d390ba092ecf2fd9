"""The command line: starting without configuration explains itself instead of printing a
traceback; ``--check`` prints one line per check and exits 0 or 1. And the bot's class: plain,
or sharded with IDENTIFYs paced as Discord requires."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot import IDENTIFY_WINDOW, FluxBot, ShardedFluxBot, check, create_bot
from services.config import Settings
from services.store import SCHEMA_VERSION, Store
from tests.fakes.aimlapi import FakeAimlApi
from tests.fakes.discord import FakeDiscord
from tests.world import API_KEY, TOKEN

BOT = Path(__file__).resolve().parents[1] / "bot.py"


def run_bot(cwd: Path, env_file: str | None = None) -> subprocess.CompletedProcess[str]:
    if env_file is not None:
        (cwd / ".env").write_text(env_file)
    env = {k: v for k, v in os.environ.items() if k not in {"DISCORD_TOKEN", "AIMLAPI_KEY"}}
    return subprocess.run(
        [sys.executable, str(BOT)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_without_env_it_names_what_is_missing_and_where_to_get_it(tmp_path):
    result = run_bot(tmp_path)

    assert result.returncode == 2
    assert "DISCORD_TOKEN is missing" in result.stderr
    assert "discord.com/developers/applications" in result.stderr
    assert "AIMLAPI_KEY is missing" in result.stderr
    assert "aimlapi.com" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_value_is_named_without_echoing_secrets(tmp_path):
    result = run_bot(
        tmp_path, "DISCORD_TOKEN=\nAIMLAPI_KEY=sk-secret-value-123\nMAX_CONCURRENT_JOBS=lots\n"
    )

    assert result.returncode == 2
    assert "DISCORD_TOKEN is missing" in result.stderr
    assert "MAX_CONCURRENT_JOBS" in result.stderr
    assert "sk-secret-value-123" not in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_model_names_the_known_ones(tmp_path):
    result = run_bot(
        tmp_path, "DISCORD_TOKEN=t0ken-value-abc\nAIMLAPI_KEY=sk-key\nAIMLAPI_MODEL=flux/nope\n"
    )

    assert result.returncode == 2
    assert "AIMLAPI_MODEL" in result.stderr and "flux/dev/image-to-image" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_example_with_its_secrets_filled_in_is_a_valid_configuration(tmp_path):
    from services.config import Settings

    example = (BOT.parent / ".env.example").read_text()
    filled = example.replace("DISCORD_TOKEN=\n", "DISCORD_TOKEN=t\n").replace(
        "AIMLAPI_KEY=\n", "AIMLAPI_KEY=k\n"
    )
    (tmp_path / ".env").write_text(filled)
    settings = Settings(_env_file=tmp_path / ".env")  # type: ignore[call-arg]
    assert settings.bot_daily_budget_usd is None and settings.admin_channel_id is None
    assert settings.model_prices == {} and settings.low_balance_usd == 5
    documented = {
        line.partition("=")[0] for line in example.splitlines() if line and line[0] != "#"
    }
    assert {name.upper() for name in Settings.model_fields} <= documented


def test_check_without_env_fails_on_the_config_and_exits_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DISCORD_TOKEN", "AIMLAPI_KEY"}}
    result = subprocess.run(
        [sys.executable, str(BOT), "--check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FAIL  config") and "DISCORD_TOKEN is missing" in lines[0]
    assert [line.split()[1] for line in lines[-3:]] == ["discord", "aimlapi", "database"]
    assert "Traceback" not in result.stderr + result.stdout


async def test_check_prints_a_line_per_check_and_exits_0_only_when_all_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env: the environment is the whole configuration
    database = f"sqlite:///{tmp_path}/fluxbot.sqlite3"
    async with await Store.open(database):
        pass
    async with FakeAimlApi(api_key=API_KEY) as api, FakeDiscord(token=TOKEN) as discord:
        environment = {
            "DISCORD_TOKEN": TOKEN,
            "AIMLAPI_KEY": API_KEY,
            "AIMLAPI_BASE_URL": api.base_url,
            "DATABASE_URL": database,
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        with discord.patch_discord_py():  # --check logs in wherever discord.py is pointed
            passed = await check()
            report = capsys.readouterr().out
            api.balance = 0
            failed = await check()
            failed_report = capsys.readouterr().out

    assert passed == 0 and failed == 1
    assert [line.split()[:2] for line in report.splitlines()] == [
        ["ok", "config"],
        ["ok", "discord"],
        ["ok", "aimlapi"],
        ["ok", "database"],
    ]
    assert [line.split()[:2] for line in failed_report.splitlines()][2] == ["FAIL", "aimlapi"]
    assert TOKEN not in report + failed_report and API_KEY not in report + failed_report


def test_migrate_creates_or_upgrades_the_database_and_exits(tmp_path: Path) -> None:
    path = tmp_path / "data" / "fluxbot.sqlite3"
    env = os.environ | {
        "DISCORD_TOKEN": "t0ken-value-abc",
        "AIMLAPI_KEY": "sk-key-value",
        "DATABASE_URL": f"sqlite:///{path}",
    }
    result = subprocess.run(
        [sys.executable, str(BOT), "--migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert f"database is at schema version {SCHEMA_VERSION}" in result.stderr


def bot_settings(**values: object) -> Settings:
    values |= {"discord_token": TOKEN, "aimlapi_key": API_KEY}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_without_a_shard_count_the_bot_is_plain_and_never_asks_for_one() -> None:
    bot = create_bot(bot_settings())
    bot.images.close()
    assert type(bot) is FluxBot and bot.shard_count is None


def test_with_a_shard_count_the_bot_runs_those_shards() -> None:
    bot = create_bot(bot_settings(shard_count=4, shard_ids="1,3"))
    every = create_bot(bot_settings(shard_count=2))
    bot.images.close()
    every.images.close()
    assert isinstance(bot, ShardedFluxBot)
    assert (bot.shard_count, bot.shard_ids) == (4, [1, 3])
    assert isinstance(every, ShardedFluxBot) and every.shard_ids is None  # all of them


def test_identifies_wait_only_within_a_rate_limit_bucket() -> None:
    bot = create_bot(bot_settings(shard_count=4))
    bot.images.close()
    assert isinstance(bot, ShardedFluxBot)
    bot._max_concurrency = 2  # buckets: shards 0 and 2, shards 1 and 3
    assert bot.identify_delay(0, now=100.0) == 0
    assert bot.identify_delay(1, now=100.0) == 0, "another bucket: at once"
    assert bot.identify_delay(2, now=101.0) == IDENTIFY_WINDOW - 1
    assert bot.identify_delay(0, now=101.0) == 2 * IDENTIFY_WINDOW - 1, "after shard 2's turn"
    assert bot.identify_delay(3, now=200.0) == 0, "long after: at once"
