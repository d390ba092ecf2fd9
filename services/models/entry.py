"""What a registry entry is: a model's id, kind, body type, builder, rules and price.

An entry validates before it builds, so a body that reaches the API client has passed the
model's own rules, and whatever a member did wrong is said in plain words
(:class:`~services.parameters.InvalidParameters`) without an API call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.images.formats import header_size, sniff_image_type
from services.parameters import PROMPT_MAX, GenerationParameters, InvalidParameters


class ModelKind(StrEnum):
    IMG2IMG = "img2img"
    EDIT = "edit"
    UPSCALE = "upscale"


class RequestBody(BaseModel):
    """A request body; ``extra="forbid"`` makes a typo fail in our tests, not at the API."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


@dataclass(frozen=True)
class ReferenceInfo:
    """What is known of the first reference picture: its size, and its file when measured."""

    width: int
    height: int
    byte_size: int | None = None
    #: The content type its magic bytes prove (``image/png``...), when measured.
    content_type: str | None = None

    @classmethod
    def measure(cls, data: bytes) -> ReferenceInfo | None:
        """From the file's header alone; None when it is no picture we can read."""
        kind = sniff_image_type(data)
        size = header_size(data)
        if kind is None or size is None:
            return None
        return cls(size[0], size[1], byte_size=len(data), content_type=kind)


@dataclass(frozen=True)
class BodyInput:
    """Everything a builder or a model's own rule may read."""

    model: str
    label: str
    parameters: GenerationParameters
    references: tuple[str, ...]
    reference: ReferenceInfo | None


Builder = Callable[[BodyInput], RequestBody]
Rule = Callable[[BodyInput], None]


@dataclass(frozen=True)
class InputLimits:
    """The files a model takes as its (first) reference: types, bytes, longest side.

    The Discord side fits a picture over them into them before the job runs (a smaller copy,
    re-hosted); the rule below is the last word, told in plain words before any call.
    """

    max_bytes: int
    max_side: int
    #: Content types it takes, with the names a member knows them by.
    types: Mapping[str, str]

    def allows(
        self,
        *,
        byte_size: int | None,
        width: int | None,
        height: int | None,
        content_type: str | None,
    ) -> bool:
        """True only when every fact is known and within the limits."""
        return (
            byte_size is not None
            and width is not None
            and height is not None
            and byte_size <= self.max_bytes
            and max(width, height) <= self.max_side
            and content_type in self.types
        )

    def problem(self, label: str, reference: ReferenceInfo) -> str | None:
        """What is wrong with ``reference`` for the model called ``label``, in plain words."""
        kind = reference.content_type
        if kind is not None and kind not in self.types:
            accepted = " or ".join(self.types.values())
            shown = kind.removeprefix("image/").upper()
            return f"{label} takes {accepted} pictures; this one is {shown}."
        if reference.byte_size is not None and reference.byte_size > self.max_bytes:
            return (
                f"{label} takes files of at most {_megabytes(self.max_bytes)}; "
                f"this one is {_megabytes(reference.byte_size)}."
            )
        if max(reference.width, reference.height) > self.max_side:
            return (
                f"{label} takes pictures of at most {self.max_side}×{self.max_side} pixels; "
                f"this one is {reference.width}×{reference.height}."
            )
        return None


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _never(_: GenerationParameters) -> bool:
    return False


def _reference_images(count: int) -> str:
    return "one reference image" if count == 1 else f"at most {count} reference images"


@dataclass(frozen=True)
class ModelEntry:
    """One model. ``rules`` raise :class:`InvalidParameters` for what only this model refuses;
    ``needs_reference(parameters)`` says when the builder or a rule must see the first
    reference's :class:`ReferenceInfo` (its size for an aspect ratio, its file for limits).
    ``reads`` names the parameters it uses (``services.parameters``): what the card, Info and
    the Remix form show for its jobs."""

    id: str
    label: str
    kind: ModelKind
    body_type: type[RequestBody]
    build: Builder
    #: Estimated price of one output image (one call for an upscale), in USD.
    usd_per_image: float
    max_references: int = 1
    #: The longest prompt the model takes; 0 when it takes none.
    prompt_max: int = PROMPT_MAX
    rules: tuple[Rule, ...] = ()
    needs_reference: Callable[[GenerationParameters], bool] = _never
    reads: tuple[str, ...] = ("prompt", "seed", "count")
    #: The files it takes as its reference, when it documents limits.
    input_limits: InputLimits | None = None

    def validate(
        self,
        parameters: GenerationParameters,
        references: Sequence[str],
        *,
        reference: ReferenceInfo | None = None,
    ) -> None:
        """Raise :class:`InvalidParameters` in plain words if this model can't take the job."""
        if isinstance(references, str):
            raise TypeError("references is a sequence of URLs, not one URL")
        given = len(references)
        if given == 0:
            raise InvalidParameters(f"{self.label} needs a picture to work on.")
        if given > self.max_references:
            raise InvalidParameters(
                f"{self.label} takes {_reference_images(self.max_references)}; you gave {given}."
            )
        if self.prompt_max:
            if not parameters.prompt.strip():
                raise InvalidParameters(f"{self.label} needs a prompt: say what you want.")
            if len(parameters.prompt) > self.prompt_max:
                raise InvalidParameters(
                    f"{self.label} takes prompts of at most {self.prompt_max} characters; "
                    f"yours has {len(parameters.prompt)}."
                )
        if self.input_limits is not None and reference is not None:
            problem = self.input_limits.problem(self.label, reference)
            if problem is not None:
                raise InvalidParameters(problem)
        job = self._input(parameters, references, reference)
        for rule in self.rules:
            rule(job)

    def request_body(
        self,
        parameters: GenerationParameters,
        references: Sequence[str],
        *,
        reference: ReferenceInfo | None = None,
    ) -> dict[str, Any]:
        """The JSON body for one call, validated first; empty fields are left to the API."""
        self.validate(parameters, references, reference=reference)
        body = self.build(self._input(parameters, references, reference))
        return body.model_dump(mode="json", exclude_none=True)

    def estimate_usd(self, parameters: GenerationParameters) -> float:
        """What one job is expected to cost, before the API says what it did cost."""
        images = 1 if self.kind is ModelKind.UPSCALE else parameters.count
        return self.usd_per_image * images

    def _input(
        self,
        parameters: GenerationParameters,
        references: Sequence[str],
        reference: ReferenceInfo | None,
    ) -> BodyInput:
        return BodyInput(self.id, self.label, parameters, tuple(references), reference)


class ReferenceNotMeasured(ValueError):
    """A builder needed the reference's size and was not given it (a caller's mistake)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"{model} needs the first reference's size to build its body")
