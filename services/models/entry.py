"""What a registry entry is: a model's id, kind, body type, builder, rules and price.

An entry validates before it builds, so a body that reaches the API client has passed the
model's own rules, and whatever a member did wrong is said in plain words
(:class:`~services.parameters.InvalidParameters`) without an API call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def _never(_: GenerationParameters) -> bool:
    return False


def _reference_images(count: int) -> str:
    return "one reference image" if count == 1 else f"at most {count} reference images"


@dataclass(frozen=True)
class ModelEntry:
    """One model. ``rules`` raise :class:`InvalidParameters` for what only this model refuses;
    ``needs_reference(parameters)`` says when the builder or a rule must see the first
    reference's :class:`ReferenceInfo` (its size for an aspect ratio, its file for limits)."""

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
