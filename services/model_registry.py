"""The models fluxbot can call, one entry each: all the rest of the bot knows of a model.

An entry says what kind of work the model does and how to turn our parameters into its request
body. The API client only carries bodies; nothing outside this module branches on a model id, so
adding a model is one entry (with its body type) plus its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.parameters import GenerationParameters

DEFAULT_MODEL = "flux/dev/image-to-image"


class ModelKind(StrEnum):
    IMG2IMG = "img2img"
    EDIT = "edit"
    UPSCALE = "upscale"


class UnknownModel(LookupError):
    def __init__(self, model_id: str) -> None:
        super().__init__(f"unknown model {model_id!r}; known: {', '.join(sorted(REGISTRY))}")
        self.model_id = model_id


class _Body(BaseModel):
    """A request body; ``extra="forbid"`` makes a typo fail in our tests, not at the API."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class FluxImageToImageBody(_Body):
    """``flux/dev/image-to-image`` (DESIGN §4): steps always sent, as the API's default is 50."""

    model: str
    prompt: str
    image_url: str
    strength: float
    guidance_scale: float
    num_inference_steps: int
    num_images: int
    seed: int | None = None
    enable_safety_checker: bool


def _flux_image_to_image(model_id: str, parameters: GenerationParameters, image_url: str) -> _Body:
    return FluxImageToImageBody(
        model=model_id,
        prompt=parameters.prompt,
        image_url=image_url,
        strength=parameters.strength,
        guidance_scale=parameters.guidance,
        num_inference_steps=parameters.steps,
        num_images=parameters.count,
        seed=parameters.seed,
        enable_safety_checker=parameters.safety_checker,
    )


BodyBuilder = Callable[[str, GenerationParameters, str], _Body]


@dataclass(frozen=True)
class ModelEntry:
    id: str
    kind: ModelKind
    build: BodyBuilder
    #: Our estimate of one output image at up to 1 megapixel, in USD; admission reserves it
    #: against budgets until the API reports the real cost (``MODEL_PRICES_USD`` overrides it).
    price_usd: Decimal

    def request_body(self, parameters: GenerationParameters, image_url: str) -> dict[str, Any]:
        """The JSON body for one call; fields we leave empty are left out for the API's default."""
        return self.build(self.id, parameters, image_url).model_dump(exclude_none=True)


REGISTRY: dict[str, ModelEntry] = {
    entry.id: entry
    for entry in (
        ModelEntry(
            DEFAULT_MODEL, ModelKind.IMG2IMG, _flux_image_to_image, price_usd=Decimal("0.025")
        ),
    )
}


def model_entry(model_id: str) -> ModelEntry:
    try:
        return REGISTRY[model_id]
    except KeyError:
        raise UnknownModel(model_id) from None
