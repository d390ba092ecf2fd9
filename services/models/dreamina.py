"""``bytedance/dreamina-creative-upscale``: one picture to 2K or 4K, no prompt.

It takes JPEG or PNG files of at most 4.7 MB and 4096×4096 pixels (:data:`LIMITS`): the
delivery side re-hosts a fitted copy of a result image over them, and the worker measures the
reference before every call so a file still over them is refused in words, unbilled.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from services.models.entry import BodyInput, InputLimits, ModelEntry, ModelKind, RequestBody
from services.parameters import DETAIL, RESOLUTION, GenerationParameters

DREAMINA_UPSCALE = "bytedance/dreamina-creative-upscale"
LIMITS = InputLimits(
    max_bytes=4_700_000, max_side=4096, types={"image/png": "PNG", "image/jpeg": "JPEG"}
)


class DreaminaUpscaleBody(RequestBody):
    model: str
    image_url: str
    resolution: Annotated[str, AfterValidator(RESOLUTION.check)]
    #: How much detail the upscaler invents: our ``detail`` knob.
    scale: int = Field(ge=int(DETAIL.minimum), le=int(DETAIL.maximum))


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
    needs_reference=_always,
    reads=("resolution", "detail"),
    input_limits=LIMITS,
)
