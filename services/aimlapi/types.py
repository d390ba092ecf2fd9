"""What the API gives back, normalised: the rest of the bot never sees either wire shape."""

from __future__ import annotations

from pydantic import BaseModel


class GeneratedImage(BaseModel):
    """One output image: where to fetch it (``url``) or its bytes inline (``b64_json``)."""

    url: str | None = None
    b64_json: str | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    nsfw: bool = False


class GenerationResult(BaseModel):
    images: list[GeneratedImage]
    seed: int | None = None
    inference_seconds: float | None = None
    request_id: str | None = None
