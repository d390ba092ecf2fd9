"""What a member asks for and what the API gives back, independent of Discord and HTTP."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROMPT_MAX = 4000
SEED_MAX = 4_294_967_295

Strength = Annotated[float, Field(ge=0.01, le=1.0)]
Seed = Annotated[int, Field(ge=1, le=SEED_MAX)]
Steps = Annotated[int, Field(ge=1, le=50)]
Guidance = Annotated[float, Field(ge=1.0, le=20.0)]
Count = Annotated[int, Field(ge=1, le=4)]


def clean_prompt(text: str) -> str:
    """Drop control and invisible format characters a client can smuggle in; keep newlines."""
    kept = (
        ch
        for ch in text
        if ch in "\n\t" or unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co", "Cn"}
    )
    return "".join(kept).strip()


class GenerationParameters(BaseModel):
    """The knobs of one generation; validated again here because a client can send anything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(min_length=1, max_length=PROMPT_MAX)
    strength: Strength = 0.95
    seed: Seed | None = None
    steps: Steps = 28
    guidance: Guidance = 3.5
    count: Count = 1
    safety_checker: bool = True

    @field_validator("prompt", mode="before")
    @classmethod
    def _clean(cls, value: object) -> object:
        return clean_prompt(value) if isinstance(value, str) else value


class GenerationRequest(BaseModel):
    """Parameters plus the reference image the API fetches."""

    model_config = ConfigDict(frozen=True)

    parameters: GenerationParameters
    image_url: str = Field(min_length=1)


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


_FIELD_LABELS = {
    "prompt": "Prompt",
    "strength": "Strength",
    "seed": "Seed",
    "steps": "Steps",
    "guidance": "Guidance",
    "count": "Count",
}


def describe_invalid(exc: ValidationError) -> str:
    """The first problem pydantic found, in words a member can act on."""
    error = exc.errors(include_url=False, include_input=False)[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    label = _FIELD_LABELS.get(field, field or "A value")
    context = error.get("ctx") or {}
    match error["type"]:
        case "string_too_short" | "missing":
            return f"{label} can't be empty."
        case "string_too_long":
            return f"{label} is too long: at most {context.get('max_length')} characters."
        case "greater_than_equal" | "less_than_equal":
            low, high = _RANGES.get(field, ("?", "?"))
            return f"{label} must be between {low} and {high}."
        case "int_parsing" | "int_from_float" | "int_type":
            return f"{label} must be a whole number."
        case "float_parsing" | "float_type":
            return f"{label} must be a number."
        case _:
            return f"{label} is not valid: {error['msg']}."


_RANGES = {
    "strength": ("0.01", "1.0"),
    "seed": ("1", str(SEED_MAX)),
    "steps": ("1", "50"),
    "guidance": ("1", "20"),
    "count": ("1", "4"),
}
