"""Settings checked at start: the models (one per kind of work, the ones guilds may use) and
the process's role (shards, worker only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import Settings, SettingsError, load_settings
from services.model_registry import (
    DEFAULT_MODEL,
    DREAMINA_UPSCALE,
    FLUX2_EDIT,
    KONTEXT_MAX,
    KONTEXT_PRO,
    REGISTRY,
    ModelKind,
)

SECRETS = {"DISCORD_TOKEN": "t0ken", "AIMLAPI_KEY": "sk-key"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No .env and none of our variables from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "AIMLAPI_MODEL",
        "EDIT_MODEL",
        "UPSCALE_MODEL",
        "ENABLED_MODELS",
        "SHARD_COUNT",
        "SHARD_IDS",
        "WORKER_ONLY",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def refused(monkeypatch: pytest.MonkeyPatch, **environment: str) -> str:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


def test_defaults_enable_every_model_with_one_per_kind() -> None:
    settings = load_settings()
    assert settings.enabled_models == tuple(REGISTRY)
    assert settings.model_for == {
        ModelKind.IMG2IMG: DEFAULT_MODEL,
        ModelKind.EDIT: KONTEXT_PRO,
        ModelKind.UPSCALE: DREAMINA_UPSCALE,
    }


def test_enabled_models_is_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ENABLED_MODELS", f" {DEFAULT_MODEL}, {KONTEXT_MAX},{DREAMINA_UPSCALE},{KONTEXT_MAX}, "
    )
    monkeypatch.setenv("EDIT_MODEL", KONTEXT_MAX)
    settings = load_settings()
    assert settings.enabled_models == (DEFAULT_MODEL, KONTEXT_MAX, DREAMINA_UPSCALE)
    assert settings.edit_model == KONTEXT_MAX


def test_an_unknown_enabled_model_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, ENABLED_MODELS=f"{DEFAULT_MODEL},flux/nope")
    assert "ENABLED_MODELS: flux/nope is not a model fluxbot knows; known: " in message
    assert FLUX2_EDIT in message and "Value error" not in message


def test_a_model_of_the_wrong_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, UPSCALE_MODEL=FLUX2_EDIT)
    assert (
        f"UPSCALE_MODEL: must be one of the upscale models fluxbot knows: {DREAMINA_UPSCALE}"
        in message
    )


def test_each_kinds_model_must_be_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(
        monkeypatch,
        ENABLED_MODELS=f"{DEFAULT_MODEL},{FLUX2_EDIT},{DREAMINA_UPSCALE}",
    )
    assert (
        f"EDIT_MODEL: {KONTEXT_PRO} is not in ENABLED_MODELS; add it there or pick another"
        in message
    )
    assert "AIMLAPI_MODEL" not in message and "UPSCALE_MODEL" not in message


def test_settings_built_in_code_take_a_list() -> None:
    enabled = [FLUX2_EDIT, DEFAULT_MODEL, DREAMINA_UPSCALE]
    settings = Settings(
        discord_token="t", aimlapi_key="k", enabled_models=enabled, edit_model=FLUX2_EDIT
    )
    assert settings.enabled_models == (FLUX2_EDIT, DEFAULT_MODEL, DREAMINA_UPSCALE)


def test_no_shard_settings_mean_one_unsharded_gateway_process() -> None:
    settings = load_settings()
    assert (settings.shard_count, settings.shard_ids, settings.worker_only) == (None, None, False)


def test_shard_ids_are_a_comma_list_of_shards_of_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHARD_COUNT", "4")
    monkeypatch.setenv("SHARD_IDS", " 2, 0,2 ")
    settings = load_settings()
    assert (settings.shard_count, settings.shard_ids) == (4, (2, 0))


def test_blank_shard_settings_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARD_COUNT", "")
    monkeypatch.setenv("SHARD_IDS", "")
    settings = load_settings()
    assert (settings.shard_count, settings.shard_ids) == (None, None)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"SHARD_IDS": "0,1"}, "SHARD_IDS: needs SHARD_COUNT"),
        (
            {"SHARD_COUNT": "2", "SHARD_IDS": "1,2,3"},
            "SHARD_IDS: 2, 3 are not a shard of SHARD_COUNT=2; shards are numbered 0 to 1",
        ),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "-1"}, "SHARD_IDS: -1 is not a shard of"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "zero"}, "SHARD_IDS: must be shard numbers"),
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT: Input should be greater than or equal to 1"),
        ({"WORKER_ONLY": "yes please"}, "WORKER_ONLY:"),
        ({"WORKER_ONLY": "true", "SHARD_COUNT": "2"}, "WORKER_ONLY: a worker connects to no"),
    ],
)
def test_invalid_shard_and_role_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: str
) -> None:
    message = refused(monkeypatch, **environment)
    assert message.startswith("fluxbot cannot start")
    assert expected in message


def test_a_bad_shard_count_is_not_blamed_on_the_shard_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, SHARD_COUNT="0", SHARD_IDS="0")
    assert "SHARD_COUNT" in message and "SHARD_IDS" not in message


def test_a_worker_runs_without_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_ONLY", "true")
    assert load_settings().worker_only
