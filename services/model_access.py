"""Which models a member may use here: the operator's ``ENABLED_MODELS``, narrowed by the guild.

A guild's admins pick among the enabled models with ``/fluxbot-settings models:``; an empty
choice means every enabled one. Every job passes :func:`check_model` before it is answered (a
command, a button, a form), so a refusal is private, plain, and costs no API call. A model the
operator disabled later stays refused for old buttons too, and a guild's stored choice that
names such a model simply no longer allows it.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.errors import UserFacingError
from services.model_registry import REGISTRY
from services.safety import GuildSettings

#: What an admin types to allow every enabled model again.
ALL = frozenset({"all", "any", "none", "-", "clear"})


def model_label(model_id: str) -> str:
    """A model's name as members know it; its id when the registry no longer lists it."""
    entry = REGISTRY.get(model_id)
    return entry.label if entry is not None else model_id


class ModelNotAllowed(UserFacingError):
    """A job on a model this guild (or this bot) does not allow."""


class ModelsRejected(UserFacingError):
    """An admin's list of models that cannot be saved; ``user_message`` says why."""


def allowed_models(settings: GuildSettings | None, enabled: Sequence[str]) -> tuple[str, ...]:
    """The models a member may use here, in the operator's order."""
    chosen = settings.allowed_models if settings is not None else ()
    return tuple(model for model in enabled if not chosen or model in chosen)


def check_model(model_id: str, settings: GuildSettings | None, enabled: Sequence[str]) -> None:
    """Raise :class:`ModelNotAllowed` unless ``model_id`` may be used here."""
    if model_id not in enabled:
        raise ModelNotAllowed(f"{model_label(model_id)} is not available on this bot any more.")
    allowed = allowed_models(settings, enabled)
    if model_id not in allowed:
        names = ", ".join(model_label(model) for model in allowed) or "none"
        raise ModelNotAllowed(
            f"This server doesn't allow {model_label(model_id)}. Its admins allow: {names}."
        )


def parse_models(text: str, enabled: Sequence[str]) -> tuple[str, ...]:
    """Models from an admin's comma-separated list of ids or names; ``()`` for "all"."""
    if text.strip().lower() in ALL:
        return ()
    by_name = {model.lower(): model for model in enabled}
    by_name |= {model_label(model).lower(): model for model in enabled}
    chosen: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        model = by_name.get(name.lower())
        if model is None:
            listed = ", ".join(enabled)
            raise ModelsRejected(f"“{name[:100]}” is not one of this bot's models: {listed}.")
        if model not in chosen:
            chosen.append(model)
    if not chosen:
        raise ModelsRejected("Name at least one model, or “all”.")
    return tuple(chosen)
