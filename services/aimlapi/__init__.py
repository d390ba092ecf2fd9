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
from services.aimlapi.transport import AimlApiClient, parse_retry_after
from services.aimlapi.types import GeneratedImage, GenerationResult
from services.aimlapi.wire import sanitise_message

__all__ = [
    "AimlApiClient",
    "AimlApiError",
    "ApiConnectionError",
    "ApiTimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "GeneratedImage",
    "GenerationResult",
    "GenerationTimeoutError",
    "MalformedResponseError",
    "OutOfCreditsError",
    "RateLimitedError",
    "ResultDownloader",
    "ServerError",
    "parse_retry_after",
    "redact_url",
    "result_url_allowed",
    "sanitise_message",
]
