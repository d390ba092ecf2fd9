"""Generation parameters, defined once.

Each knob a member can turn is one spec (:class:`NumberSpec`, :class:`ChoiceSpec`,
:class:`FlagSpec`, or the :data:`PROMPT` text spec): its name, label, range or choices, default
and help text. The slash command's ``Range``s and descriptions, the Remix modal's labels, the
validation messages and the pydantic model below are all derived from these, so changing a range
or a default is one edit. The API's field names are not here: each model's
request builder (``services.model_registry``) maps these parameters onto its own body.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

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


@dataclass(frozen=True)
class ChoiceSpec:
    """A knob with a fixed set of values, offered as slash-command choices."""

    name: str
    label: str
    help: str
    choices: tuple[str, ...]
    default: str

    @property
    def description(self) -> str:
        return f"{self.help} ({self.default})"

    @property
    def choices_text(self) -> str:
        return ", ".join(self.choices)

    def check(self, value: str) -> str:
        if value not in self.choices:
            raise ValueError(f"must be one of {self.choices_text}")
        return value

    def field(self) -> Any:
        return Field(default=self.default, title=self.label)


@dataclass(frozen=True)
class FlagSpec:
    """An on/off knob."""

    name: str
    label: str
    help: str
    default: bool

    @property
    def description(self) -> str:
        return f"{self.help} ({'on' if self.default else 'off'})"

    def field(self) -> Any:
        return Field(default=self.default, title=self.label)


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
#: Upscaling only: the API's ``scale`` (0 keeps the picture, 100 invents the most).
DETAIL = NumberSpec("detail", "Detail", "How much new detail upscaling may invent", int, 0, 100, 50)
#: Editing models: "source" means the nearest ratio to the (first) reference picture.
ASPECT_RATIO = ChoiceSpec(
    "aspect_ratio",
    "Aspect ratio",
    "Shape of the result; source keeps your picture's",
    ("source", "21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"),
    "source",
)
RESOLUTION = ChoiceSpec(
    "resolution", "Resolution", "Size of the upscaled image", ("2k", "4k"), "2k"
)
#: FLUX.2 edit rewrites the prompt with more detail when asked; off unless a member asks.
PROMPT_EXPANSION = FlagSpec(
    "prompt_expansion", "Prompt expansion", "Let the model add detail to your prompt", False
)

#: Every numeric knob, in the order members see them.
NUMBERS: tuple[NumberSpec, ...] = (STRENGTH, SEED, STEPS, GUIDANCE, COUNT, DETAIL)
CHOICES: tuple[ChoiceSpec, ...] = (ASPECT_RATIO, RESOLUTION)
Spec = TextSpec | NumberSpec | ChoiceSpec | FlagSpec
_ALL: tuple[Spec, ...] = (PROMPT, *NUMBERS, *CHOICES, PROMPT_EXPANSION)
SPECS: dict[str, Spec] = {spec.name: spec for spec in _ALL}
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
    # Knobs some models only read; their defaults keep JSON stored before they existed valid.
    aspect_ratio: Annotated[str, AfterValidator(ASPECT_RATIO.check)] = ASPECT_RATIO.field()
    resolution: Annotated[str, AfterValidator(RESOLUTION.check)] = RESOLUTION.field()
    detail: int = DETAIL.field()
    prompt_expansion: bool = PROMPT_EXPANSION.field()
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
        case "value_error" if isinstance(spec, ChoiceSpec):
            return f"{label} must be one of {spec.choices_text}."
        case "bool_parsing" | "bool_type":
            return f"{label} must be on or off."
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
