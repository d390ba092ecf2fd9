"""Every way a call to the AI/ML API can fail, and which HTTP status means which.

Each error is a :class:`~services.errors.UserFacingError`: ``user_message`` can be shown to a
member as is, ``str()`` and ``repr()`` are for operators' logs (no key, no signed URL, no body
dump). ``retryable`` says whether :meth:`AimlApiClient.generate` may send the same call again;
``may_be_billed`` marks failures after which the API may have charged for the call, which the
client retries at most once in total (DESIGN §4).
"""

from __future__ import annotations

from typing import ClassVar

from services.aimlapi.types import Usage
from services.errors import UserFacingError


class AimlApiError(UserFacingError):
    """Base of every client failure."""

    default_user_message = "The image service ran into a problem. Try again later."
    #: Whether the client may try the same call again after this error.
    retryable: ClassVar[bool] = False
    #: Whether the API may have charged for the call that failed this way.
    may_be_billed: ClassVar[bool] = False

    def __init__(
        self,
        user_message: str | None = None,
        *,
        detail: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(user_message, detail=detail)
        self.status = status
        self.request_id = request_id
        #: Seconds the server asked us to wait (its Retry-After header, capped), if it said.
        self.retry_after = retry_after
        #: What the answer's cost headers said, when there was an answer.
        self.usage: Usage | None = None

    def __str__(self) -> str:
        extras = [f"status={self.status}"] if self.status is not None else []
        if self.request_id:
            extras.append(f"request_id={self.request_id}")
        return f"{self.detail} ({', '.join(extras)})" if extras else self.detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class BadRequestError(AimlApiError):
    """400/404/422 and other 4xx: the API refused this request; sending it again will not help."""

    default_user_message = "The image service refused the request."


class AuthenticationError(AimlApiError):
    """401: the bot's key is wrong or revoked; an operator must act."""

    default_user_message = (
        "The bot's AI/ML API key was refused. An operator needs to fix the bot's configuration."
    )


class OutOfCreditsError(AimlApiError):
    """403: the account has no credits left; an operator must top it up."""

    default_user_message = (
        "The bot's image service account is out of credits. "
        "Try again once an operator has topped it up."
    )


class RateLimitedError(AimlApiError):
    """429: too many requests or too many at once; ``retry_after`` is the server's hint, if any."""

    default_user_message = "The image service is busy right now. Try again in a moment."
    retryable = True


class ServerError(AimlApiError):
    """500/502/503 and other 5xx but 504: a transient fault on the API's side."""

    default_user_message = "The image service is having trouble. Try again in a few minutes."
    retryable = True


class GenerationTimeoutError(AimlApiError):
    """504: the API's own generation ran out of time; the call may already have been billed."""

    default_user_message = (
        "The image service ran out of time while making this image. "
        "Try again, perhaps with fewer steps or images."
    )
    retryable = True
    may_be_billed = True


class ApiTimeoutError(AimlApiError):
    """Our own limit: no answer within the attempt timeout, or the overall deadline passed.

    The request had been sent, so the API may still be working on (and billing) it.
    """

    default_user_message = "The image service did not answer in time. Try again in a few minutes."
    retryable = True
    may_be_billed = True


class ApiConnectionError(AimlApiError):
    """The API could not be reached at all (DNS, refused, reset, connect timeout): not billed."""

    default_user_message = "The image service could not be reached. Try again in a few minutes."
    retryable = True


class MalformedResponseError(AimlApiError):
    """A success status with a body we cannot use (bad JSON, unknown shape, no images)."""

    default_user_message = "The image service sent back something unusable. Try again."


class DownloadError(AimlApiError):
    """The generated image could not be fetched, was too large, or was not an image."""

    default_user_message = "The generated image could not be downloaded. Try again."


_BY_STATUS: dict[int, type[AimlApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: OutOfCreditsError,
    404: BadRequestError,
    422: BadRequestError,
    429: RateLimitedError,
    504: GenerationTimeoutError,
}


def error_for_status(status: int) -> type[AimlApiError]:
    """The error type for a non-success HTTP status from the generations endpoint."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 500 <= status < 600:
        return ServerError
    if 400 <= status < 500:
        return BadRequestError
    return MalformedResponseError  # 1xx/3xx (redirects are not followed) or nonsense
