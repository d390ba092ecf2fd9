"""FLUX.1 Kontext [pro] and [max]: instruction editing of up to four references.

Their API takes no strength, no steps and no safety-checker switch; the result's shape is an
``aspect_ratio`` whose API default is 16:9, so the reference's nearest ratio is always sent
unless the member chose one. Safety is ``safety_tolerance`` instead, from the same guild policy
that turns the other models' safety checker off.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from services.models.entry import (
    BodyInput,
    ModelEntry,
    ModelKind,
    ReferenceNotMeasured,
    RequestBody,
)
from services.models.geometry import ASPECT_RATIOS, nearest_aspect_ratio
from services.parameters import ASPECT_RATIO, GenerationParameters

KONTEXT_PRO = "flux/kontext-pro/image-to-image"
KONTEXT_MAX = "flux/kontext-max/image-to-image"
MAX_REFERENCES = 4
#: The API's own default, used wherever the safety checker would be on.
STRICT_TOLERANCE = "2"
#: Where the guild allows unfiltered results (NSFW channels). The enum goes to "6", but the
#: documentation calls 5 "the most permissive", so we stay on what it describes.
PERMISSIVE_TOLERANCE = "5"


def _listed_ratio(value: str) -> str:
    if value not in ASPECT_RATIOS:
        raise ValueError(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}")
    return value


class KontextBody(RequestBody):
    model: str
    prompt: str = Field(min_length=1, max_length=4000)
    #: One URL as a string, several as a list (the API takes both).
    image_url: str | Annotated[list[str], Field(min_length=2, max_length=MAX_REFERENCES)]
    aspect_ratio: Annotated[str, AfterValidator(_listed_ratio)]
    safety_tolerance: Literal["1", "2", "3", "4", "5", "6"]
    output_format: Literal["jpeg", "png"]
    num_images: int = Field(ge=1, le=4)
    seed: int | None = Field(default=None, ge=1)
    guidance_scale: float = Field(ge=1, le=20)


def chosen_or_nearest_ratio(job: BodyInput) -> str:
    """The member's ratio, or the one nearest the first reference's shape for "source"."""
    if job.parameters.aspect_ratio != ASPECT_RATIO.default:
        return job.parameters.aspect_ratio
    if job.reference is None:
        raise ReferenceNotMeasured(job.model)
    return nearest_aspect_ratio(job.reference.width, job.reference.height)


def needs_source_shape(parameters: GenerationParameters) -> bool:
    return parameters.aspect_ratio == ASPECT_RATIO.default


def _build(job: BodyInput) -> KontextBody:
    parameters = job.parameters
    references = job.references
    return KontextBody(
        model=job.model,
        prompt=parameters.prompt,
        image_url=references[0] if len(references) == 1 else list(references),
        aspect_ratio=chosen_or_nearest_ratio(job),
        safety_tolerance=STRICT_TOLERANCE if parameters.safety_checker else PERMISSIVE_TOLERANCE,
        # PNG like every other model's results; uploads are re-encoded to fit anyway.
        output_format="png",
        num_images=parameters.count,
        seed=parameters.seed,
        guidance_scale=parameters.guidance,
    )


def _kontext(model_id: str, label: str, usd_per_image: float) -> ModelEntry:
    return ModelEntry(
        id=model_id,
        label=label,
        kind=ModelKind.EDIT,
        body_type=KontextBody,
        build=_build,
        usd_per_image=usd_per_image,
        max_references=MAX_REFERENCES,
        needs_reference=needs_source_shape,
        reads=("prompt", "seed", "guidance", "aspect_ratio", "count"),
    )


# Black Forest Labs' list prices per image: Kontext [pro] $0.04, [max] $0.08.
KONTEXT_PRO_ENTRY = _kontext(KONTEXT_PRO, "FLUX.1 Kontext [pro]", 0.04)
KONTEXT_MAX_ENTRY = _kontext(KONTEXT_MAX, "FLUX.1 Kontext [max]", 0.08)
