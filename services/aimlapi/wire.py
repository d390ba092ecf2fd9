"""What the API sends, parsed leniently: both documented success shapes and the error body.

The models ignore fields the API adds later rather than fail on them; the rest of the bot only
ever sees :class:`~services.aimlapi.types.GenerationResult`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.aimlapi.errors import MalformedResponseError
from services.aimlapi.types import Balance, GeneratedImage, GenerationResult, Usage

#: The API's own error text shown to members is cut to this length.
MESSAGE_CAP = 300


class _Lenient(BaseModel):
    """Ignore fields the API adds later rather than fail on them."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class WireImage(_Lenient):
    url: str | None = None
    b64_json: str | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> WireImage:
        if not self.url and not self.b64_json:
            raise ValueError("image has neither url nor b64_json")
        return self


class Timings(_Lenient):
    inference: float | None = None


class ImagesShape(_Lenient):
    """``{"images": [...], "timings": {...}, "seed": …, "has_nsfw_concepts": [...]}``."""

    images: list[WireImage] = Field(min_length=1)
    timings: Timings | None = None
    seed: int | None = None
    has_nsfw_concepts: list[bool] | None = None
    request_id: str | None = Field(default=None, alias="requestId")


class DataShape(_Lenient):
    """``{"data": [{"url" | "b64_json"}], "meta": {...}}``."""

    data: list[WireImage] = Field(min_length=1)
    meta: dict[str, Any] | None = None
    request_id: str | None = Field(default=None, alias="requestId")


class BillingBody(_Lenient):
    """``GET /v2/billing``: ``{"current_balance": 123.45, "currency": "USD"}``."""

    current_balance: Decimal
    currency: str = "USD"


class ErrorBody(_Lenient):
    """``{"message", "path", "requestId", "statusCode", "timestamp"}``; statusCode may be text."""

    message: str | list[Any] | None = None
    request_id: str | None = Field(default=None, alias="requestId")
    status_code: int | str | None = Field(default=None, alias="statusCode")


# --------------------------------------------------------------------------- parsing


def parse_generation(raw: bytes) -> GenerationResult:
    """A success body, normalised; :class:`MalformedResponseError` when it is unusable."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponseError(detail="success response is not JSON") from None
    try:
        return result_from(payload)
    except (ValidationError, ValueError) as exc:
        count = exc.error_count() if isinstance(exc, ValidationError) else 1
        raise MalformedResponseError(
            detail=f"success response has an unexpected shape ({count} problems)"
        ) from None


def parse_error_body(raw: bytes) -> ErrorBody:
    """The documented error body, or an empty one when the body is anything else."""
    try:
        return ErrorBody.model_validate(json.loads(raw))
    except (ValueError, UnicodeDecodeError, ValidationError):
        return ErrorBody()


def result_from(payload: object) -> GenerationResult:
    """Either documented success shape, normalised to a :class:`GenerationResult`."""
    if not isinstance(payload, dict):
        raise ValueError("success body is not an object")
    if "images" in payload:
        shape = ImagesShape.model_validate(payload)
        flags = shape.has_nsfw_concepts or []
        inference = shape.timings.inference if shape.timings else None
        return _result(shape.images, flags, shape.seed, inference, shape.request_id)
    if "data" in payload:
        data = DataShape.model_validate(payload)
        meta = data.meta or {}
        nsfw: object = meta.get("has_nsfw_concepts")
        seed = meta.get("seed")
        result = _result(
            data.data,
            nsfw if isinstance(nsfw, list) else [],
            seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            None,
            data.request_id,
        )
        return result.model_copy(update={"usage": usage_from_meta(meta)})
    raise ValueError("success body has neither images nor data")


def _result(
    images: list[WireImage],
    nsfw_flags: list[Any],
    seed: int | None,
    inference: float | None,
    request_id: str | None,
) -> GenerationResult:
    return GenerationResult(
        images=[
            GeneratedImage(
                url=image.url,
                b64_json=image.b64_json,
                width=image.width,
                height=image.height,
                content_type=image.content_type,
                nsfw=bool(nsfw_flags[index]) if index < len(nsfw_flags) else False,
            )
            for index, image in enumerate(images)
        ],
        seed=seed,
        inference_seconds=inference,
        request_id=request_id,
    )


def parse_balance(raw: bytes) -> Balance:
    """The billing answer; :class:`MalformedResponseError` when it is not the documented one."""
    try:
        body = BillingBody.model_validate(json.loads(raw))
    except (ValueError, UnicodeDecodeError, ValidationError):
        raise MalformedResponseError(detail="billing response has an unexpected shape") from None
    return Balance(current_balance=body.current_balance, currency=body.currency)


# --------------------------------------------------------------------------- cost


def usage_from_headers(headers: Mapping[str, str]) -> Usage:
    """``x-inference-id``, ``x-aimlapi-credits-used`` (an integer) and ``x-aimlapi-usd-spent``.

    A value that does not parse is left unknown rather than guessed.
    """
    return Usage(
        inference_id=headers.get("x-inference-id") or None,
        credits=_integer(headers.get("x-aimlapi-credits-used")),
        usd=_amount(headers.get("x-aimlapi-usd-spent")),
    )


def usage_from_meta(meta: Mapping[str, Any]) -> Usage | None:
    """``meta.usage.{credits_used, usd_spent}``, which some bodies carry (upscale, streams)."""
    usage = meta.get("usage")
    if not isinstance(usage, Mapping):
        return None
    return Usage(credits=_integer(usage.get("credits_used")), usd=_amount(usage.get("usd_spent")))


def _integer(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _amount(value: object) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


# --------------------------------------------------------------------------- messages


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f]+")
_URL_QUERY = re.compile(r"(https?://[^\s?#]+)[?#][^\s;]*", re.IGNORECASE)


def sanitise_message(message: object, *, secret: str = "", cap: int = MESSAGE_CAP) -> str:
    """Make the API's ``message`` (a string or a list) safe and short enough to show a member."""
    if isinstance(message, list):
        text = "; ".join(str(part) for part in message)
    else:
        text = "" if message is None else str(message)
    if secret:
        text = text.replace(secret, "[redacted]")
    text = _URL_QUERY.sub(r"\1", text)  # signed URLs: the query is the secret part
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= cap else text[: cap - 1].rstrip() + "…"
