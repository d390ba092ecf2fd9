"""Settings for the models: one per kind of work, and the ones guilds may use, checked at start."""

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
    for name in ("AIMLAPI_MODEL", "EDIT_MODEL", "UPSCALE_MODEL", "ENABLED_MODELS"):
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
