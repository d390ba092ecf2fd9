"""Client for the AI/ML API: one call, typed errors, bounded retries, result download.

Laid out like openai-python's client: ``errors`` (the hierarchy and the status mapping), ``wire``
(what the API sends, parsed), ``transport`` (:class:`AimlApiClient`: the call and its retries),
``download`` (fetching results), ``types`` (what the rest of the bot sees).
"""

from services.aimlapi.download import ResultDownloader, redact_url, result_url_allowed
from services.aimlapi.errors import (
    AimlApiError,
    ApiConnectionError,
    ApiTimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    GenerationTimeoutError,
    MalformedResponseError,
    OutOfCreditsError,
    RateLimitedError,
    ServerError,
)
from services.aimlapi.transport import AimlApiClient, AttemptHook, parse_retry_after
from services.aimlapi.types import (
    ApiAttempt,
    Balance,
    GeneratedImage,
    GenerationResult,
    Usage,
)
from services.aimlapi.wire import sanitise_message

__all__ = [
    "AimlApiClient",
    "AimlApiError",
    "ApiAttempt",
    "ApiConnectionError",
    "ApiTimeoutError",
    "AttemptHook",
    "AuthenticationError",
    "BadRequestError",
    "Balance",
    "DownloadError",
    "GeneratedImage",
    "GenerationResult",
    "GenerationTimeoutError",
    "MalformedResponseError",
    "OutOfCreditsError",
    "RateLimitedError",
    "ResultDownloader",
    "ServerError",
    "Usage",
    "parse_retry_after",
    "redact_url",
    "result_url_allowed",
    "sanitise_message",
]
