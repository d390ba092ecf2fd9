"""Client for the AI/ML API: one call, typed errors, bounded retries, result download."""

from services.aimlapi.client import (
    AimlApiClient,
    AimlApiError,
    ApiConnectionError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    GenerationTimeoutError,
    MalformedResponseError,
    OutOfCreditsError,
    RateLimitedError,
    ServerError,
    parse_retry_after,
    redact_url,
    sanitise_message,
)
from services.aimlapi.types import GeneratedImage, GenerationResult

__all__ = [
    "AimlApiClient",
    "AimlApiError",
    "ApiConnectionError",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "GeneratedImage",
    "GenerationResult",
    "GenerationTimeoutError",
    "MalformedResponseError",
    "OutOfCreditsError",
    "RateLimitedError",
    "ServerError",
    "parse_retry_after",
    "redact_url",
    "sanitise_message",
]
