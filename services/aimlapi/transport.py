"""The client: one POST per attempt, bounded retries, every failure a typed error.

The API is slow (seconds to minutes), billed per call, and sometimes busy, so the client retries
only what is safe to retry (429, 5xx, timeouts, connection errors), within a number of attempts and
an overall deadline, and turns every failure into an :class:`AimlApiError` whose ``user_message``
can be shown to a Discord member as is. A failure after which the call may have been billed (a
504, or our own timeout once the request was sent) is retried at most once in total.

Each attempt can carry our own ``X-Client-Request-Id`` (the API's usage logs show it) and is
reported, with the cost the API's headers give, to an ``on_attempt`` hook (DESIGN §10).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random as _random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from services.aimlapi.download import BodyTooLarge, ResultDownloader, Sleep, read_capped
from services.aimlapi.errors import (
    AimlApiError,
    ApiConnectionError,
    ApiTimeoutError,
    BadRequestError,
    MalformedResponseError,
    RateLimitedError,
    error_for_status,
)
from services.aimlapi.types import ApiAttempt, Balance, GeneratedImage, GenerationResult, Usage
from services.aimlapi.wire import (
    parse_balance,
    parse_error_body,
    parse_generation,
    sanitise_message,
    usage_from_headers,
)
from services.backoff import equal_jitter

log = logging.getLogger(__name__)

GENERATIONS_PATH = "/v1/images/generations"
BILLING_PATH = "/v2/billing"
#: ``X-Client-Request-Id``: the API silently drops anything else, so we refuse to send it.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: The balance check is one quick GET; it never waits as long as a generation.
BILLING_TIMEOUT = 15.0
#: A server's Retry-After is honoured up to this many seconds; beyond it we would rather fail.
RETRY_AFTER_CAP = 60.0
#: Success bodies can carry several base64 images; anything larger is not a plausible answer.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: Connecting is never billed; a connect that hangs this long is a connection error, not a
#: timeout of a request the API may be working on.
CONNECT_TIMEOUT = 15.0


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


def _header_request_id(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id")


AttemptHook = Callable[[ApiAttempt], Awaitable[None]]


def attempt_request_id(base: str, attempt: int) -> str:
    """``base`` and the attempt number: each HTTP attempt is its own line in the usage logs."""
    value = f"{base}:{attempt}"
    if not CLIENT_REQUEST_ID.fullmatch(value):
        raise ValueError(f"client request id {value!r} is not 1-128 of A-Za-z0-9._:-")
    return value


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
        self._billing = base_url.rstrip("/") + BILLING_PATH
        self._api_key = api_key
        self._deadline = deadline
        self._attempt_timeout = attempt_timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self.downloader = ResultDownloader(
            session,
            api_host=URL(base_url).host,
            timeout=download_timeout,
            attempts=download_attempts,
            backoff=self.backoff,
            sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"AimlApiClient(endpoint={self._endpoint!r})"

    async def download(self, image: GeneratedImage, *, max_bytes: int) -> bytes:
        """The image's bytes, size-capped and checked (see :class:`ResultDownloader`)."""
        return await self.downloader.download(image, max_bytes=max_bytes)

    def backoff(self, retry_index: int) -> float:
        """Equal-jitter exponential backoff: in ``[d/2, d]`` for ``d = min(cap, base * 2**n)``."""
        return equal_jitter(
            retry_index, base=self._backoff_base, cap=self._backoff_cap, random=self._random
        )

    # ------------------------------------------------------------------ generate

    async def generate(
        self,
        body: dict[str, Any],
        *,
        retry_rate_limited: bool = True,
        client_request_id: str | None = None,
        on_attempt: AttemptHook | None = None,
    ) -> GenerationResult:
        """Run one generation, retrying transient failures within attempts and the deadline.

        With ``retry_rate_limited=False`` a 429 is raised at once so the job queue can slow
        down as a whole instead of each job hammering the API on its own.
        ``body`` comes from the model's registry entry (``services.model_registry``).
        With ``client_request_id``, attempt n is sent as ``X-Client-Request-Id: <id>:<n>``;
        ``on_attempt`` is awaited with every attempt's outcome and cost as it ends.
        """
        started = self._clock()
        deadline_at = started + self._deadline
        attempt = 0
        maybe_billed = 0
        while True:
            attempt += 1
            sent_id = None
            if client_request_id is not None:
                sent_id = attempt_request_id(client_request_id, attempt)
            try:
                remaining = deadline_at - self._clock()
                if remaining <= 0:  # a wait overslept; final, as no wait fits either
                    raise ApiTimeoutError(detail=f"deadline passed before attempt {attempt}")
                status, result = await self._post(
                    body,
                    budget=min(self._attempt_timeout, remaining),
                    deadline_bound=remaining < self._attempt_timeout,
                    client_request_id=sent_id,
                )
            except AimlApiError as exc:
                if on_attempt is not None:
                    await on_attempt(_failed_attempt(attempt, sent_id, exc))
                maybe_billed += exc.may_be_billed
                delay = self._retry_delay(exc, attempt, maybe_billed, retry_rate_limited)
                if delay is None or self._clock() + delay >= deadline_at:
                    self._log_outcome(exc.status, attempt, started, exc.request_id, exc, exc.usage)
                    raise
                log.warning("aimlapi attempt %d failed (%r); retry in %.2fs", attempt, exc, delay)
                await self._sleep(delay)
                continue
            if on_attempt is not None:
                await on_attempt(
                    ApiAttempt(
                        attempt=attempt,
                        client_request_id=sent_id,
                        status=status,
                        outcome="ok",
                        usage=result.usage or Usage(),
                        may_be_billed=True,
                    )
                )
            self._log_outcome(status, attempt, started, result.request_id, None, result.usage)
            return result

    async def balance(self) -> Balance:
        """``GET /v2/billing``: the account's balance in USD; one attempt, typed errors."""
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Accept": "application/json",
        }
        timeout = aiohttp.ClientTimeout(total=BILLING_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
        try:
            async with self._session.get(
                self._billing, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                raw = await read_capped(response, 1024 * 1024)
                status, resp_headers = response.status, response.headers
        except TimeoutError as exc:
            raise ApiTimeoutError(detail="the billing endpoint did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise ApiConnectionError(detail=f"connection failed: {type(exc).__name__}") from exc
        except BodyTooLarge as exc:
            raise MalformedResponseError(detail=str(exc)) from None
        if status == 200:
            return parse_balance(raw)
        raise self._error_from(status, raw, resp_headers)

    def _retry_delay(
        self, exc: AimlApiError, attempt: int, maybe_billed: int, retry_rate_limited: bool
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when this error is final."""
        if not exc.retryable or attempt >= self._max_attempts:
            return None
        if isinstance(exc, RateLimitedError) and not retry_rate_limited:
            return None
        if exc.may_be_billed and maybe_billed > 1:
            return None  # one retry of a possibly billed call already happened (DESIGN §4)
        if exc.retry_after is not None:
            return exc.retry_after
        return self.backoff(attempt - 1)

    def _log_outcome(
        self,
        status: int | None,
        attempts: int,
        started: float,
        request_id: str | None,
        error: AimlApiError | None,
        usage: Usage | None,
    ) -> None:
        usage = usage or Usage()
        log.info(
            "aimlapi generation %s status=%s attempts=%d elapsed=%.2fs request_id=%s "
            "inference_id=%s usd=%s",
            "ok" if error is None else f"failed ({type(error).__name__})",
            status,
            attempts,
            self._clock() - started,
            request_id or "-",
            usage.inference_id or "-",
            "-" if usage.usd is None else usage.usd,
        )

    # ------------------------------------------------------------------ one attempt

    async def _post(
        self,
        body: dict[str, Any],
        *,
        budget: float,
        deadline_bound: bool,
        client_request_id: str | None = None,
    ) -> tuple[int, GenerationResult]:
        """One HTTP attempt of at most ``budget`` seconds, every failure mapped to a typed error."""
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Accept": "application/json",
        }
        if client_request_id is not None:
            headers["X-Client-Request-Id"] = client_request_id
        timeout = aiohttp.ClientTimeout(total=budget, sock_connect=min(budget, CONNECT_TIMEOUT))
        try:
            async with self._session.post(
                self._endpoint, json=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                raw = await read_capped(response, MAX_RESPONSE_BYTES)
                status, resp_headers = response.status, response.headers
        except aiohttp.ConnectionTimeoutError as exc:
            raise ApiConnectionError(detail="timed out connecting to the API") from exc
        except TimeoutError as exc:
            limit = "the overall deadline" if deadline_bound else "the attempt timeout"
            raise ApiTimeoutError(detail=f"no answer within {budget:.1f}s ({limit})") from exc
        except aiohttp.ClientError as exc:
            raise ApiConnectionError(detail=f"connection failed: {type(exc).__name__}") from exc
        except BodyTooLarge as exc:
            raise MalformedResponseError(detail=str(exc)) from None
        usage = usage_from_headers(resp_headers)
        if status in (200, 201):
            try:
                result = parse_generation(raw)
            except MalformedResponseError as exc:
                exc.status, exc.usage = status, usage  # a 2xx is billed even when unreadable
                raise
            update: dict[str, Any] = {"usage": usage.merged(result.usage)}
            if result.request_id is None:
                update["request_id"] = _header_request_id(resp_headers)
            return status, result.model_copy(update=update)
        error = self._error_from(status, raw, resp_headers)
        error.usage = usage
        raise error

    def _error_from(self, status: int, raw: bytes, headers: Any) -> AimlApiError:
        """Map a non-success answer to its error type, with a member-safe message."""
        parsed = parse_error_body(raw)
        cls = error_for_status(status)
        message = sanitise_message(parsed.message, secret=self._api_key.get_secret_value())
        user_message = None
        if cls is BadRequestError and message:
            user_message = f"The image service refused the request: {message}"
        return cls(
            user_message,
            detail=f"API answered HTTP {status}" + (f": {message}" if message else ""),
            status=status,
            request_id=parsed.request_id or _header_request_id(headers),
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )


def _failed_attempt(attempt: int, sent_id: str | None, exc: AimlApiError) -> ApiAttempt:
    # A 2xx we could not read was still billed; other failures only when the error says so.
    billed = exc.may_be_billed or (exc.status is not None and 200 <= exc.status < 300)
    return ApiAttempt(
        attempt=attempt,
        client_request_id=sent_id,
        status=exc.status,
        outcome=type(exc).__name__,
        usage=exc.usage or Usage(),
        may_be_billed=billed,
    )
