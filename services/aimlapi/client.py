"""Client for the AI/ML API image-to-image endpoint: one call, typed errors, bounded retries.

The API is slow (seconds to minutes), billed per call, and sometimes busy, so the client retries
only what is safe to retry (429, 5xx, timeouts, connection errors), within a number of attempts and
an overall deadline, and turns every failure into an :class:`AimlApiError` whose ``user_message``
can be shown to a Discord member as is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import ipaddress
import json
import logging
import random as _random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from yarl import URL

from services.aimlapi.types import GeneratedImage, GenerationResult
from services.backoff import equal_jitter
from services.errors import UserFacingError
from services.images import sniff_image_type

log = logging.getLogger(__name__)

GENERATIONS_PATH = "/v1/images/generations"
#: A server's Retry-After is honoured up to this many seconds; beyond it we would rather fail.
RETRY_AFTER_CAP = 60.0
#: Success bodies can carry several base64 images; anything larger is not a plausible answer.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: The API's own error text shown to members is cut to this length.
MESSAGE_CAP = 300
_CHUNK = 64 * 1024

Sleep = Callable[[float], Awaitable[object]]


# --------------------------------------------------------------------------- errors


class AimlApiError(UserFacingError):
    """Base of every client failure.

    ``str()`` is for operators' logs (no secrets, no body dumps); ``user_message`` is for members.
    """

    default_user_message: ClassVar[str] = "The image service ran into a problem. Try again later."
    #: Whether :meth:`AimlApiClient.generate` may try the same call again after this error.
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        user_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.request_id = request_id
        self.user_message = user_message or self.default_user_message
        self.retry_after = retry_after

    def __str__(self) -> str:
        extras = [f"status={self.status}"] if self.status is not None else []
        if self.request_id:
            extras.append(f"request_id={self.request_id}")
        return f"{self.detail} ({', '.join(extras)})" if extras else self.detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class BadRequestError(AimlApiError):
    """400/404/422: the API refused this request; sending it again will not help."""

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
    """500/502/503 and other 5xx: a transient fault on the API's side."""

    default_user_message = "The image service is having trouble. Try again in a few minutes."
    retryable = True


class GenerationTimeoutError(AimlApiError):
    """504 or our own timeout: the generation took too long and may already have been billed."""

    default_user_message = "The image took too long to generate. Try again."
    retryable = True


class ApiConnectionError(AimlApiError):
    """The API could not be reached at all (DNS, refused, reset, connect timeout)."""

    default_user_message = "The image service could not be reached. Try again in a few minutes."
    retryable = True


class MalformedResponseError(AimlApiError):
    """A success status with a body we cannot use (bad JSON, unknown shape, no images)."""

    default_user_message = "The image service sent back something unusable. Try again."


class DownloadError(AimlApiError):
    """The generated image could not be fetched, was too large, or was not an image."""

    default_user_message = "The generated image could not be downloaded. Try again."


# --------------------------------------------------------------------------- wire models


class _Lenient(BaseModel):
    """Ignore fields the API adds later rather than fail on them."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class _WireImage(_Lenient):
    url: str | None = None
    b64_json: str | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> _WireImage:
        if not self.url and not self.b64_json:
            raise ValueError("image has neither url nor b64_json")
        return self


class _Timings(_Lenient):
    inference: float | None = None


class _ImagesShape(_Lenient):
    images: list[_WireImage] = Field(min_length=1)
    timings: _Timings | None = None
    seed: int | None = None
    has_nsfw_concepts: list[bool] | None = None
    request_id: str | None = Field(default=None, alias="requestId")


class _DataShape(_Lenient):
    data: list[_WireImage] = Field(min_length=1)
    meta: dict[str, Any] | None = None
    request_id: str | None = Field(default=None, alias="requestId")


class _ErrorBody(_Lenient):
    message: str | list[Any] | None = None
    request_id: str | None = Field(default=None, alias="requestId")
    status_code: int | str | None = Field(default=None, alias="statusCode")


# --------------------------------------------------------------------------- helpers


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


def redact_url(url: str) -> str:
    """A URL fit for a log line: scheme, host and path, never the (signed) query string."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "<unparseable url>"
    return str(parsed.with_query(None).with_fragment(None).with_user(None))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _status_error(status: int) -> type[AimlApiError]:
    if status in (400, 404, 422):
        return BadRequestError
    known: dict[int, type[AimlApiError]] = {
        401: AuthenticationError,
        403: OutOfCreditsError,
        429: RateLimitedError,
        504: GenerationTimeoutError,
    }
    if status in known:
        return known[status]
    if 500 <= status < 600:
        return ServerError
    if 400 <= status < 500:
        return BadRequestError
    return MalformedResponseError


def _header_request_id(headers: Any) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id")


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, streamed and capped: Content-Length can be missing or wrong."""
    if response.content_length is not None and response.content_length > max_bytes:
        raise _TooLarge(response.content_length)
    buffer = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        buffer.extend(chunk)
        if len(buffer) > max_bytes:
            raise _TooLarge(len(buffer))
    return bytes(buffer)


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"body larger than allowed ({size} bytes or more)")


# --------------------------------------------------------------------------- client


class AimlApiClient:
    """Calls ``POST /v1/images/generations`` and fetches results over a caller-owned session.

    ``sleep``, ``random`` and ``clock`` are injectable so tests check backoff without waiting.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: SecretStr,
        deadline: float = 180.0,
        attempt_timeout: float = 120.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        download_timeout: float = 60.0,
        download_attempts: int = 3,
        sleep: Sleep = asyncio.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1 or download_attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._session = session
        self._endpoint = base_url.rstrip("/") + GENERATIONS_PATH
        self._api_host = URL(base_url).host
        self._api_key = api_key
        self._deadline = deadline
        self._attempt_timeout = attempt_timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._download_timeout = download_timeout
        self._download_attempts = download_attempts
        self._sleep = sleep
        self._random = random
        self._clock = clock

    def __repr__(self) -> str:
        return f"AimlApiClient(endpoint={self._endpoint!r})"

    # ------------------------------------------------------------------ generate

    async def generate(
        self, body: dict[str, Any], *, retry_rate_limited: bool = True
    ) -> GenerationResult:
        """Run one generation, retrying transient failures within attempts and the deadline.

        With ``retry_rate_limited=False`` a 429 is raised at once so the job queue can slow
        down as a whole instead of each job hammering the API on its own.
        ``body`` comes from the model's registry entry (``services.model_registry``).
        """
        started = self._clock()
        deadline_at = started + self._deadline
        attempt = 0
        timeouts = 0
        while True:
            attempt += 1
            try:
                remaining = deadline_at - self._clock()
                status, result = await self._post(
                    body, budget=min(self._attempt_timeout, remaining)
                )
            except AimlApiError as exc:
                timeouts += isinstance(exc, GenerationTimeoutError)
                delay = self._retry_delay(exc, attempt, timeouts, retry_rate_limited)
                if delay is None or self._clock() + delay > deadline_at:
                    self._log_outcome(exc.status, attempt, started, exc.request_id, exc)
                    raise
                log.warning(
                    "aimlapi attempt %d failed (%s: %s); retrying in %.2fs",
                    attempt,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await self._sleep(delay)
                continue
            self._log_outcome(status, attempt, started, result.request_id, None)
            return result

    def _retry_delay(
        self, exc: AimlApiError, attempt: int, timeouts: int, retry_rate_limited: bool
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when this error is final."""
        if not exc.retryable or attempt >= self._max_attempts:
            return None
        if isinstance(exc, RateLimitedError) and not retry_rate_limited:
            return None
        if isinstance(exc, GenerationTimeoutError) and timeouts > 1:
            return None  # it may have been billed twice already
        if exc.retry_after is not None:
            return exc.retry_after
        return self.backoff(attempt - 1)

    def backoff(self, retry_index: int) -> float:
        """Equal-jitter exponential backoff: in ``[d/2, d]`` for ``d = min(cap, base * 2**n)``."""
        return equal_jitter(
            retry_index, base=self._backoff_base, cap=self._backoff_cap, random=self._random
        )

    def _log_outcome(
        self,
        status: int | None,
        attempts: int,
        started: float,
        request_id: str | None,
        error: AimlApiError | None,
    ) -> None:
        log.info(
            "aimlapi generation %s status=%s attempts=%d elapsed=%.2fs request_id=%s",
            "ok" if error is None else f"failed ({type(error).__name__})",
            status,
            attempts,
            self._clock() - started,
            request_id or "-",
        )

    async def _post(self, body: dict[str, Any], *, budget: float) -> tuple[int, GenerationResult]:
        """One HTTP attempt of at most ``budget`` seconds, every failure mapped to a typed error."""
        if budget <= 0:
            raise GenerationTimeoutError("no time left before the deadline")
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Accept": "application/json",
        }
        try:
            async with self._session.post(
                self._endpoint,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=budget),
                allow_redirects=False,
            ) as response:
                raw = await _read_capped(response, MAX_RESPONSE_BYTES)
                status, resp_headers = response.status, response.headers
        except aiohttp.ConnectionTimeoutError as exc:
            raise ApiConnectionError("timed out connecting to the API") from exc
        except TimeoutError as exc:
            raise GenerationTimeoutError(f"no answer within {budget:.1f}s") from exc
        except aiohttp.ClientError as exc:
            raise ApiConnectionError(f"connection failed: {type(exc).__name__}") from exc
        except _TooLarge as exc:
            raise MalformedResponseError(str(exc)) from None
        if status in (200, 201):
            return status, self._parse_success(raw, resp_headers)
        raise self._error_from(status, raw, resp_headers)

    def _parse_success(self, raw: bytes, headers: Any) -> GenerationResult:
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise MalformedResponseError("success response is not JSON") from None
        try:
            result = _result_from(payload)
        except (ValidationError, ValueError) as exc:
            count = exc.error_count() if isinstance(exc, ValidationError) else 1
            raise MalformedResponseError(
                f"success response has an unexpected shape ({count} problems)"
            ) from None
        if result.request_id is None:
            result = result.model_copy(update={"request_id": _header_request_id(headers)})
        return result

    def _error_from(self, status: int, raw: bytes, headers: Any) -> AimlApiError:
        """Map a non-success answer to its error type, with a member-safe message."""
        parsed = _parse_error_body(raw)
        request_id = parsed.request_id or _header_request_id(headers)
        cls = _status_error(status)
        secret = self._api_key.get_secret_value()
        message = sanitise_message(parsed.message, secret=secret)
        user_message = None
        if cls is BadRequestError:
            user_message = (
                f"The image service refused the request: {message}"
                if message
                else cls.default_user_message
            )
        detail = f"API answered HTTP {status}" + (f": {message}" if message else "")
        return cls(
            detail,
            status=status,
            request_id=request_id,
            user_message=user_message,
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )

    # ------------------------------------------------------------------ download

    async def download(self, image: GeneratedImage, *, max_bytes: int) -> bytes:
        """The image's bytes, from ``b64_json`` or its URL, size-capped and checked to be an image.

        Result URLs are CDN links that may expire, so callers upload these bytes, never the link.
        """
        if image.b64_json:
            data = _decode_b64(image.b64_json, max_bytes)
        elif image.url and image.url.startswith("data:"):
            data = _decode_b64(image.url, max_bytes)
        elif image.url:
            data = await self._download_url(image.url, max_bytes)
        else:
            raise DownloadError("image has neither url nor b64_json")
        if sniff_image_type(data) is None:
            raise DownloadError("downloaded content is not a PNG, JPEG, WebP or GIF image")
        return data

    async def _download_url(self, url: str, max_bytes: int) -> bytes:
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise DownloadError("result URL cannot be parsed") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise DownloadError(f"refusing a non-HTTP result URL ({parsed.scheme or 'no'} scheme)")
        if not self.result_url_allowed(parsed):
            raise DownloadError(f"refusing a plain-http result URL from {parsed.host}")
        for attempt in range(1, self._download_attempts + 1):
            try:
                return await self._fetch_once(url, max_bytes)
            except DownloadError as exc:
                if not exc.retryable or attempt >= self._download_attempts:
                    raise
                delay = self.backoff(attempt - 1)
                log.warning(
                    "download of %s failed (%s); retrying in %.2fs", redact_url(url), exc, delay
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def result_url_allowed(self, url: URL) -> bool:
        """HTTPS only, except from the configured API's own host or loopback.

        A result fetched in clear text could be swapped on the way; the exceptions are hosts the
        operator already trusts with the key (an http API base URL, such as a local proxy) and
        this machine (the test fakes), so production stays strict without a setting to forget.
        """
        if url.scheme == "https":
            return True
        if url.scheme != "http" or not url.host:
            return False
        if url.host == self._api_host or url.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(url.host).is_loopback
        except ValueError:
            return False

    async def _fetch_once(self, url: str, max_bytes: int) -> bytes:
        """One GET without our API key (the CDN is a third party)."""
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=self._download_timeout)
            ) as response:
                if not self.result_url_allowed(response.url):  # redirected to plain http
                    raise DownloadError(f"refusing a redirect to {response.url.scheme}")
                if not 200 <= response.status < 300:
                    raise _RetryableDownloadError.for_status(response.status)
                return await _read_capped(response, max_bytes)
        except _TooLarge:
            raise DownloadError(f"image is larger than {max_bytes} bytes") from None
        except TimeoutError:
            raise _RetryableDownloadError("download timed out") from None
        except aiohttp.ClientError as exc:
            raise _RetryableDownloadError(f"download failed: {type(exc).__name__}") from None


class _RetryableDownloadError(DownloadError):
    """A download failure worth another try (5xx, 429, timeout, connection)."""

    retryable = True

    @classmethod
    def for_status(cls, status: int) -> DownloadError:
        detail = f"result URL answered HTTP {status}"
        if status >= 500 or status == 429:
            return cls(detail, status=status)
        return DownloadError(detail, status=status)


def _decode_b64(value: str, max_bytes: int) -> bytes:
    """Decode base64 (optionally a ``data:`` URI) without building anything over the cap."""
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    value = "".join(value.split())
    if len(value) // 4 * 3 > max_bytes + 3:
        raise DownloadError(f"image is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DownloadError("inline image is not valid base64") from None
    if len(data) > max_bytes:
        raise DownloadError(f"image is larger than {max_bytes} bytes")
    return data


def _parse_error_body(raw: bytes) -> _ErrorBody:
    """The documented error body, or an empty one when the body is anything else."""
    try:
        payload = json.loads(raw)
        return _ErrorBody.model_validate(payload)
    except (ValueError, UnicodeDecodeError, ValidationError):
        return _ErrorBody()


def _result_from(payload: object) -> GenerationResult:
    """Either documented success shape, normalised to a :class:`GenerationResult`."""
    if not isinstance(payload, dict):
        raise ValueError("success body is not an object")
    if "images" in payload:
        shape = _ImagesShape.model_validate(payload)
        flags = shape.has_nsfw_concepts or []
        inference = shape.timings.inference if shape.timings else None
        return _result(shape.images, flags, shape.seed, inference, shape.request_id)
    if "data" in payload:
        data = _DataShape.model_validate(payload)
        meta = data.meta or {}
        flags = meta.get("has_nsfw_concepts")
        seed = meta.get("seed")
        return _result(
            data.data,
            flags if isinstance(flags, list) else [],
            seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            None,
            data.request_id,
        )
    raise ValueError("success body has neither images nor data")


def _result(
    images: list[_WireImage],
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
