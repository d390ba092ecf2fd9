"""The client: one POST per attempt, bounded retries, every failure a typed error.

The API is slow (seconds to minutes), billed per call, and sometimes busy, so the client retries
only what is safe to retry (429, 5xx, timeouts, connection errors), within a number of attempts and
an overall deadline, and turns every failure into an :class:`AimlApiError` whose ``user_message``
can be shown to a Discord member as is. A failure after which the call may have been billed (a
504, or our own timeout once the request was sent) is retried at most once in total.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random as _random
import time
from collections.abc import Callable, Mapping
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
from services.aimlapi.types import GeneratedImage, GenerationResult
from services.aimlapi.wire import parse_error_body, parse_generation, sanitise_message
from services.backoff import equal_jitter

log = logging.getLogger(__name__)

GENERATIONS_PATH = "/v1/images/generations"
#: The account's balance (DESIGN §10): the cheapest authenticated call, used by ``--check``.
BILLING_PATH = "/v2/billing"
BILLING_TIMEOUT = 10.0
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
        self._base = base_url.rstrip("/")
        self._endpoint = self._base + GENERATIONS_PATH
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
        maybe_billed = 0
        while True:
            attempt += 1
            try:
                remaining = deadline_at - self._clock()
                if remaining <= 0:  # a wait overslept; final, as no wait fits either
                    raise ApiTimeoutError(detail=f"deadline passed before attempt {attempt}")
                status, result = await self._post(
                    body,
                    budget=min(self._attempt_timeout, remaining),
                    deadline_bound=remaining < self._attempt_timeout,
                )
            except AimlApiError as exc:
                maybe_billed += exc.may_be_billed
                delay = self._retry_delay(exc, attempt, maybe_billed, retry_rate_limited)
                if delay is None or self._clock() + delay >= deadline_at:
                    self._log_outcome(exc.status, attempt, started, exc.request_id, exc)
                    raise
                log.warning("aimlapi attempt %d failed (%r); retry in %.2fs", attempt, exc, delay)
                await self._sleep(delay)
                continue
            self._log_outcome(status, attempt, started, result.request_id, None)
            return result

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
    ) -> None:
        log.info(
            "aimlapi generation %s status=%s attempts=%d elapsed=%.2fs request_id=%s",
            "ok" if error is None else f"failed ({type(error).__name__})",
            status,
            attempts,
            self._clock() - started,
            request_id or "-",
        )

    # ------------------------------------------------------------------ balance

    async def balance(self) -> float | None:
        """The account's balance from ``GET /v2/billing``: proves the key works, costs nothing.

        One attempt, no retries (an operator is waiting). None when the answer names no
        balance we recognise (``current_balance``, or ``balance`` as the older endpoint had it).
        """
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Accept": "application/json",
        }
        try:
            async with self._session.get(
                self._base + BILLING_PATH,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=BILLING_TIMEOUT),
                allow_redirects=False,
            ) as response:
                raw = await read_capped(response, MAX_RESPONSE_BYTES)
                status, resp_headers = response.status, response.headers
        except TimeoutError as exc:
            raise ApiTimeoutError(detail=f"no answer within {BILLING_TIMEOUT:.0f}s") from exc
        except aiohttp.ClientError as exc:
            raise ApiConnectionError(detail=f"connection failed: {type(exc).__name__}") from exc
        except BodyTooLarge as exc:
            raise MalformedResponseError(detail=str(exc)) from None
        if status != 200:
            raise self._error_from(status, raw, resp_headers)
        try:
            body = json.loads(raw)
        except ValueError:
            raise MalformedResponseError(detail="the billing answer is not JSON") from None
        for key in ("current_balance", "balance"):
            value = body.get(key) if isinstance(body, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return None

    # ------------------------------------------------------------------ one attempt

    async def _post(
        self, body: dict[str, Any], *, budget: float, deadline_bound: bool
    ) -> tuple[int, GenerationResult]:
        """One HTTP attempt of at most ``budget`` seconds, every failure mapped to a typed error."""
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Accept": "application/json",
        }
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
        if status in (200, 201):
            result = parse_generation(raw)
            if result.request_id is None:
                result = result.model_copy(update={"request_id": _header_request_id(resp_headers)})
            return status, result
        raise self._error_from(status, raw, resp_headers)

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
