"""The models fluxbot can call, one entry each: all the rest of the bot knows of a model.

An entry (:class:`ModelEntry`) says what kind of work the model does, how to turn our parameters
into its request body, what it refuses and what a call costs. The API client only carries bodies;
nothing outside the registry branches on a model id. The entries live in ``services/models/``,
one module per model family (:mod:`services.models.entry` says what an entry is), so adding a
model is one module with its body type and entry, listed in :data:`ENTRIES` here, plus its tests.
"""

from __future__ import annotations

from services.models.dreamina import DREAMINA_UPSCALE, DREAMINA_UPSCALE_ENTRY
from services.models.entry import (
    BodyInput,
    InputLimits,
    ModelEntry,
    ModelKind,
    ReferenceInfo,
    ReferenceNotMeasured,
    RequestBody,
)
from services.models.flux2_edit import FLUX2_EDIT, FLUX2_EDIT_ENTRY
from services.models.flux_dev import DEFAULT_MODEL, FLUX_DEV, FluxImageToImageBody
from services.models.geometry import ASPECT_RATIOS, nearest_aspect_ratio
from services.models.kontext import (
    KONTEXT_MAX,
    KONTEXT_MAX_ENTRY,
    KONTEXT_PRO,
    KONTEXT_PRO_ENTRY,
)

DEFAULT_EDIT_MODEL = KONTEXT_PRO
DEFAULT_UPSCALE_MODEL = DREAMINA_UPSCALE

ENTRIES: tuple[ModelEntry, ...] = (
    FLUX_DEV,
    KONTEXT_PRO_ENTRY,
    KONTEXT_MAX_ENTRY,
    FLUX2_EDIT_ENTRY,
    DREAMINA_UPSCALE_ENTRY,
)
REGISTRY: dict[str, ModelEntry] = {entry.id: entry for entry in ENTRIES}


class UnknownModel(LookupError):
    def __init__(self, model_id: str) -> None:
        super().__init__(f"unknown model {model_id!r}; known: {', '.join(sorted(REGISTRY))}")
        self.model_id = model_id


def model_entry(model_id: str) -> ModelEntry:
    try:
        return REGISTRY[model_id]
    except KeyError:
        raise UnknownModel(model_id) from None


def models_of_kind(kind: ModelKind) -> tuple[str, ...]:
    return tuple(entry.id for entry in ENTRIES if entry.kind is kind)


__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_EDIT_MODEL",
    "DEFAULT_MODEL",
    "DEFAULT_UPSCALE_MODEL",
    "DREAMINA_UPSCALE",
    "ENTRIES",
    "FLUX2_EDIT",
    "KONTEXT_MAX",
    "KONTEXT_PRO",
    "REGISTRY",
    "BodyInput",
    "FluxImageToImageBody",
    "InputLimits",
    "ModelEntry",
    "ModelKind",
    "ReferenceInfo",
    "ReferenceNotMeasured",
    "RequestBody",
    "UnknownModel",
    "model_entry",
    "models_of_kind",
    "nearest_aspect_ratio",
]
