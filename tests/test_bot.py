"""Starting without configuration explains itself instead of printing a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
