"""``blackforestlabs/flux-2-edit``: FLUX.2 editing of one to three references.

The API's default size is ``landscape_4_3`` whatever the references look like, so we always
send ``image_size``: the member's aspect ratio, or the first reference's own shape, at about the
reference's pixel count (at most one megapixel: FLUX.2 is priced per megapixel).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.models.entry import (
    BodyInput,
    ModelEntry,
    ModelKind,
    ReferenceNotMeasured,
    RequestBody,
)
from services.models.geometry import fitted_size, ratio_value
from services.models.kontext import needs_source_shape
from services.parameters import ASPECT_RATIO, InvalidParameters

FLUX2_EDIT = "blackforestlabs/flux-2-edit"
MAX_REFERENCES = 3
MIN_STEPS, MAX_STEPS = 4, 50
SIDE_MIN, SIDE_MAX, SIDE_STEP = 512, 2048, 32
#: The pixel count we aim at when the reference does not say (and the most we ask for).
AREA = 1024 * 1024


class ImageSize(RequestBody):
    width: int = Field(ge=SIDE_MIN, le=SIDE_MAX, multiple_of=SIDE_STEP)
    height: int = Field(ge=SIDE_MIN, le=SIDE_MAX, multiple_of=SIDE_STEP)


class Flux2EditBody(RequestBody):
    model: str
    prompt: str = Field(min_length=1, max_length=4000)
    image_urls: list[str] = Field(min_length=1, max_length=MAX_REFERENCES)
    image_size: ImageSize
    #: The API's default is true (the prompt is rewritten); only when the member asks.
    enable_prompt_expansion: bool
    num_inference_steps: int = Field(ge=MIN_STEPS, le=MAX_STEPS)
    guidance_scale: float = Field(ge=0, le=20)
    num_images: int = Field(ge=1, le=4)
    seed: int | None = Field(default=None, ge=1)
    enable_safety_checker: bool
    output_format: Literal["jpeg", "png", "webp"]


def _enough_steps(job: BodyInput) -> None:
    steps = job.parameters.steps
    if steps < MIN_STEPS:
        raise InvalidParameters(f"{job.label} needs at least {MIN_STEPS} steps; you chose {steps}.")


def output_size(job: BodyInput) -> ImageSize:
    """The member's ratio (or the reference's shape) at about the reference's pixel count."""
    reference = job.reference
    if job.parameters.aspect_ratio != ASPECT_RATIO.default:
        ratio = ratio_value(job.parameters.aspect_ratio)
    elif reference is None:
        raise ReferenceNotMeasured(job.model)
    else:
        ratio = reference.width / reference.height
    area = min(AREA, reference.width * reference.height) if reference else AREA
    width, height = fitted_size(ratio, area, minimum=SIDE_MIN, maximum=SIDE_MAX, step=SIDE_STEP)
    return ImageSize(width=width, height=height)


def _build(job: BodyInput) -> Flux2EditBody:
    parameters = job.parameters
    return Flux2EditBody(
        model=job.model,
        prompt=parameters.prompt,
        image_urls=list(job.references),
        image_size=output_size(job),
        enable_prompt_expansion=parameters.prompt_expansion,
        num_inference_steps=parameters.steps,
        guidance_scale=parameters.guidance,
        num_images=parameters.count,
        seed=parameters.seed,
        enable_safety_checker=parameters.safety_checker,
        output_format="png",
    )


FLUX2_EDIT_ENTRY = ModelEntry(
    id=FLUX2_EDIT,
    label="FLUX.2 edit",
    kind=ModelKind.EDIT,
    body_type=Flux2EditBody,
    build=_build,
    # No documented AI/ML API price; FLUX.2 editing elsewhere is billed per megapixel of input
    # and output (fal: $0.008/MP for its turbo edit): a generous figure for 1 MP out and up to
    # three references in.
    usd_per_image=0.05,
    max_references=MAX_REFERENCES,
    rules=(_enough_steps,),
    needs_reference=needs_source_shape,
    reads=("prompt", "seed", "steps", "guidance", "aspect_ratio", "count", "prompt_expansion"),
)
