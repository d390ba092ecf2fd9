"""``flux/dev/image-to-image``: the default, img2img at the reference's own size (DESIGN §4)."""

from __future__ import annotations

from services.models.entry import BodyInput, ModelEntry, ModelKind, RequestBody

DEFAULT_MODEL = "flux/dev/image-to-image"


class FluxImageToImageBody(RequestBody):
    """Steps are always sent: the API's default is 50, ours 28."""

    model: str
    prompt: str
    image_url: str
    strength: float
    guidance_scale: float
    num_inference_steps: int
    num_images: int
    seed: int | None = None
    enable_safety_checker: bool


def _build(job: BodyInput) -> FluxImageToImageBody:
    parameters = job.parameters
    return FluxImageToImageBody(
        model=job.model,
        prompt=parameters.prompt,
        image_url=job.references[0],
        strength=parameters.strength,
        guidance_scale=parameters.guidance,
        num_inference_steps=parameters.steps,
        num_images=parameters.count,
        seed=parameters.seed,
        enable_safety_checker=parameters.safety_checker,
    )


FLUX_DEV = ModelEntry(
    id=DEFAULT_MODEL,
    label="FLUX.1 [dev]",
    kind=ModelKind.IMG2IMG,
    body_type=FluxImageToImageBody,
    build=_build,
    # About $0.025 per 1 MP image at Black Forest Labs' list price; references are scaled to
    # MAX_INPUT_MEGAPIXELS (1.0) and results come out at their size.
    usd_per_image=0.025,
    reads=("prompt", "strength", "seed", "steps", "guidance", "count"),
)
