"""``bytedance/dreamina-creative-upscale``: one picture to 2K or 4K, no prompt.

It takes JPEG or PNG files of at most 4.7 MB and 4096×4096 pixels; the worker measures the
reference before every call so a file over those limits is refused in words, unbilled.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from services.models.entry import BodyInput, ModelEntry, ModelKind, RequestBody
from services.parameters import DETAIL, RESOLUTION, GenerationParameters, InvalidParameters

DREAMINA_UPSCALE = "bytedance/dreamina-creative-upscale"
MAX_BYTES = 4_700_000
MAX_SIDE = 4096
ACCEPTED_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}


class DreaminaUpscaleBody(RequestBody):
    model: str
    image_url: str
    resolution: Annotated[str, AfterValidator(RESOLUTION.check)]
    #: How much detail the upscaler invents: our ``detail`` knob.
    scale: int = Field(ge=int(DETAIL.minimum), le=int(DETAIL.maximum))


def _within_limits(job: BodyInput) -> None:
    reference = job.reference
    if reference is None:
        return
    kind = reference.content_type
    if kind is not None and kind not in ACCEPTED_TYPES:
        shown = kind.removeprefix("image/").upper()
        raise InvalidParameters(f"{job.label} takes PNG or JPEG pictures; this one is {shown}.")
    if reference.byte_size is not None and reference.byte_size > MAX_BYTES:
        raise InvalidParameters(
            f"{job.label} takes files of at most 4.7 MB; "
            f"this one is {reference.byte_size / 1_000_000:.1f} MB."
        )
    if max(reference.width, reference.height) > MAX_SIDE:
        raise InvalidParameters(
            f"{job.label} takes pictures of at most {MAX_SIDE}×{MAX_SIDE} pixels; "
            f"this one is {reference.width}×{reference.height}."
        )


def _always(_: GenerationParameters) -> bool:
    return True


def _build(job: BodyInput) -> DreaminaUpscaleBody:
    return DreaminaUpscaleBody(
        model=job.model,
        image_url=job.references[0],
        resolution=job.parameters.resolution,
        scale=job.parameters.detail,
    )


DREAMINA_UPSCALE_ENTRY = ModelEntry(
    id=DREAMINA_UPSCALE,
    label="Dreamina upscale",
    kind=ModelKind.UPSCALE,
    body_type=DreaminaUpscaleBody,
    build=_build,
    # The documented example answer for a 2K upscale reports usd_spent 0.06.
    usd_per_image=0.06,
    prompt_max=0,
    rules=(_within_limits,),
    needs_reference=_always,
)
