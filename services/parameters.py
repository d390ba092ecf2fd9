"""Generation parameters, defined once.

Each knob a member can turn is one :class:`NumberSpec` (or the :data:`PROMPT` text spec): its name,
label, range, default and help text. The slash command's ``Range``s and descriptions, the Remix
modal's labels, the validation messages and the pydantic model below are all derived from these,
so changing a range or a default is one edit. The API's field names are not here: each model's
request builder (``services.model_registry``) maps these parameters onto its own body.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.errors import UserFacingError

SEED_MAX = 4_294_967_295


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class TextSpec:
    name: str
    label: str
    help: str
    min_length: int
    max_length: int

    def field(self) -> Any:
        return Field(min_length=self.min_length, max_length=self.max_length, title=self.label)


@dataclass(frozen=True)
class NumberSpec:
    """A numeric knob; ``default=None`` means the API picks (a random seed)."""

    name: str
    label: str
    help: str
    kind: type[int] | type[float]
    minimum: float
    maximum: float
    default: float | None
    #: How an empty value reads in help texts ("random if empty").
    empty_means: str = ""

    @property
    def range_text(self) -> str:
        return f"{_number(self.minimum)}–{_number(self.maximum)}"

    @property
    def description(self) -> str:
        """The slash-command option's description (Discord allows 100 characters)."""
        default = self.empty_means if self.default is None else _number(self.default)
        return f"{self.help} ({default})"

    def show(self, value: float | None) -> str:
        """A value as a member would type it back (the Remix form pre-fills with this).

        Empty when out of range: a seed the API invented may be one no member could type.
        """
        if value is None or not self.minimum <= value <= self.maximum:
            return ""
        return str(int(value)) if self.kind is int else _number(value)

    def field(self) -> Any:
        return Field(default=self.default, ge=self.minimum, le=self.maximum, title=self.label)


PROMPT = TextSpec("prompt", "Prompt", "What the new image should show", 1, 4000)
STRENGTH = NumberSpec(
    "strength",
    "Strength",
    "How far to move away from your picture: 0.01 keeps it, 1.0 ignores it",
    float,
    0.01,
    1.0,
    0.95,
)
SEED = NumberSpec(
    "seed",
    "Seed",
    "Same seed + same settings = same image",
    int,
    1,
    SEED_MAX,
    None,
    empty_means="random if empty",
)
STEPS = NumberSpec("steps", "Steps", "More steps: finer detail, slower", int, 1, 50, 28)
GUIDANCE = NumberSpec(
    "guidance", "Guidance", "How closely to follow the prompt", float, 1.0, 20.0, 3.5
)
COUNT = NumberSpec("count", "Count", "How many images to make", int, 1, 4, 1)

#: Every numeric knob, in the order members see them.
NUMBERS: tuple[NumberSpec, ...] = (STRENGTH, SEED, STEPS, GUIDANCE, COUNT)
_ALL: tuple[TextSpec | NumberSpec, ...] = (PROMPT, *NUMBERS)
SPECS: dict[str, TextSpec | NumberSpec] = {spec.name: spec for spec in _ALL}
PROMPT_MAX = PROMPT.max_length


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

    prompt: str = PROMPT.field()
    strength: float = STRENGTH.field()
    seed: int | None = SEED.field()
    steps: int = STEPS.field()
    guidance: float = GUIDANCE.field()
    count: int = COUNT.field()
    #: Not a member's choice: the guild policy and the channel decide (services.safety).
    safety_checker: bool = True

    @field_validator("prompt", mode="before")
    @classmethod
    def _clean(cls, value: object) -> object:
        return clean_prompt(value) if isinstance(value, str) else value


def describe_invalid(exc: ValidationError) -> str:
    """The first problem pydantic found, in words a member can act on."""
    error = exc.errors(include_url=False, include_input=False)[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    spec = SPECS.get(name)
    label = spec.label if spec else (name or "A value")
    context = error.get("ctx") or {}
    match error["type"]:
        case "string_too_short" | "missing":
            return f"{label} can't be empty."
        case "string_too_long":
            return f"{label} is too long: at most {context.get('max_length')} characters."
        case "greater_than_equal" | "less_than_equal" if isinstance(spec, NumberSpec):
            return f"{label} must be between {_number(spec.minimum)} and {_number(spec.maximum)}."
        case "int_parsing" | "int_from_float" | "int_type":
            return f"{label} must be a whole number."
        case "float_parsing" | "float_type":
            return f"{label} must be a number."
        case _:
            return f"{label} is not valid: {error['msg']}."


class InvalidParameters(UserFacingError):
    """Values a member typed that no generation accepts; the message names the first problem."""


def parse_parameters(**values: object) -> GenerationParameters:
    """Parameters from a command or a form; raises :class:`InvalidParameters` in plain words."""
    try:
        return GenerationParameters.model_validate(values)
    except ValidationError as exc:
        raise InvalidParameters(describe_invalid(exc)) from None
