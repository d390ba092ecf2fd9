"""What the API gives back, normalised: the rest of the bot never sees either wire shape."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict


class GeneratedImage(BaseModel):
    """One output image: where to fetch it (``url``) or its bytes inline (``b64_json``)."""

    url: str | None = None
    b64_json: str | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    nsfw: bool = False


class Usage(BaseModel):
    """What one answer says it cost: its ``x-aimlapi-*`` headers, else the body's ``meta.usage``."""

    model_config = ConfigDict(frozen=True)

    #: The id the API records the charge under (``x-inference-id``).
    inference_id: str | None = None
    credits: int | None = None
    usd: Decimal | None = None

    def merged(self, fallback: Usage | None) -> Usage:
        """Each field from here when known, else from ``fallback`` (headers before the body)."""
        if fallback is None:
            return self
        return Usage(
            inference_id=self.inference_id or fallback.inference_id,
            credits=self.credits if self.credits is not None else fallback.credits,
            usd=self.usd if self.usd is not None else fallback.usd,
        )


class GenerationResult(BaseModel):
    images: list[GeneratedImage]
    seed: int | None = None
    inference_seconds: float | None = None
    request_id: str | None = None
    #: The cost of the attempt that produced this result, as far as the API said.
    usage: Usage | None = None


class ApiAttempt(BaseModel):
    """One HTTP attempt of a generation, reported as it ends, whatever its outcome.

    Every attempt is reported so each one's spend and inference id can be stored with the job;
    failed requests are not charged (the API rolls their hold back), except that a 504 or our
    own timeout may have been (``may_be_billed``).
    """

    model_config = ConfigDict(frozen=True)

    #: 1 for the first HTTP attempt of this call, 2 for its first retry...
    attempt: int
    #: What we sent as ``X-Client-Request-Id``; the API's usage logs show it.
    client_request_id: str | None
    #: The HTTP status, or None when no answer came (timeout, connection error).
    status: int | None
    #: ``"ok"``, or the class name of the error this attempt ended with.
    outcome: str
    usage: Usage
    #: A success, or a failure after which the API may have charged (504, our timeout).
    may_be_billed: bool


class Balance(BaseModel):
    """``GET /v2/billing``: the account's balance, in USD."""

    current_balance: Decimal
    currency: str = "USD"
