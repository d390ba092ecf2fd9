"""Which models a member may use: the operator's list, narrowed by the guild, told in words."""

from __future__ import annotations

import pytest

from services.model_access import (
    ModelNotAllowed,
    ModelsRejected,
    allowed_models,
    check_model,
    parse_models,
)
from services.model_registry import (
    DEFAULT_MODEL,
    DREAMINA_UPSCALE,
    FLUX2_EDIT,
    KONTEXT_MAX,
    KONTEXT_PRO,
    REGISTRY,
)
from services.safety import GuildSettings

ENABLED = tuple(REGISTRY)


def guild(*models: str) -> GuildSettings:
    return GuildSettings(guild_id=1, allowed_models=models)


def test_a_guild_without_a_choice_allows_every_enabled_model() -> None:
    assert allowed_models(guild(), ENABLED) == ENABLED
    assert allowed_models(None, ENABLED) == ENABLED  # a DM
    for model in ENABLED:
        check_model(model, guild(), ENABLED)


def test_a_guilds_choice_narrows_the_enabled_models_and_keeps_their_order() -> None:
    chosen = guild(KONTEXT_PRO, DEFAULT_MODEL)
    assert allowed_models(chosen, ENABLED) == (DEFAULT_MODEL, KONTEXT_PRO)
    with pytest.raises(ModelNotAllowed) as refused:
        check_model(DREAMINA_UPSCALE, chosen, ENABLED)
    assert refused.value.user_message == (
        "This server doesn't allow Dreamina upscale. "
        "Its admins allow: FLUX.1 [dev], FLUX.1 Kontext [pro]."
    )


def test_a_model_the_operator_disabled_is_refused_even_if_the_guild_chose_it() -> None:
    enabled = (DEFAULT_MODEL, KONTEXT_PRO, DREAMINA_UPSCALE)
    with pytest.raises(ModelNotAllowed) as refused:
        check_model(FLUX2_EDIT, guild(FLUX2_EDIT), enabled)
    assert refused.value.user_message == "FLUX.2 edit is not available on this bot any more."
    assert allowed_models(guild(FLUX2_EDIT), enabled) == ()
    with pytest.raises(ModelNotAllowed, match="allow: none"):
        check_model(DEFAULT_MODEL, guild(FLUX2_EDIT), enabled)
    with pytest.raises(ModelNotAllowed, match="flux/retired is not available"):
        check_model("flux/retired", None, enabled)


def test_admins_name_models_by_id_or_label_in_any_case() -> None:
    typed = f" {KONTEXT_MAX.upper()}, flux.1 [dev] ,, FLUX.1 [DEV]"
    assert parse_models(typed, ENABLED) == (KONTEXT_MAX, DEFAULT_MODEL)
    for everything in ("all", " ALL ", "none", "-"):
        assert parse_models(everything, ENABLED) == ()


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("dall-e-3", "“dall-e-3” is not one of this bot's models: "),
        (",, ,", "Name at least one model, or “all”."),
    ],
)
def test_an_unusable_list_is_refused_in_words(typed: str, message: str) -> None:
    with pytest.raises(ModelsRejected) as refused:
        parse_models(typed, ENABLED)
    assert refused.value.user_message.startswith(message)


def test_only_enabled_models_may_be_chosen() -> None:
    with pytest.raises(ModelsRejected):
        parse_models(FLUX2_EDIT, (DEFAULT_MODEL,))
