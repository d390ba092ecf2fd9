"""The call itself: request, retries within attempts and the deadline, timeouts, Retry-After."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import SecretStr

from services.aimlapi import (
    AimlApiClient,
    AimlApiError,
    ApiConnectionError,
    ApiTimeoutError,
    AuthenticationError,
    GenerationTimeoutError,
    RateLimitedError,
    ServerError,
    parse_retry_after,
)
from tests.fakes.aimlapi import DEFAULT_MODEL, FakeAimlApi
from tests.services.aimlapi.conftest import KEY, REF_SIZE, FakeTime, ask

# --------------------------------------------------------------------------- success


async def test_sends_every_field_and_parses_images_shape(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    result = await client.generate(
        ask(reference, strength=0.6, seed=1234, steps=20, guidance=7.5, count=2)
    )

    assert api.requests == [
        {
            "model": DEFAULT_MODEL,
            "prompt": "a red fox, watercolour",
            "image_url": reference,
            "strength": 0.6,
            "guidance_scale": 7.5,
            "num_inference_steps": 20,
            "num_images": 2,
            "seed": 1234,
            "enable_safety_checker": True,
        }
    ]
    assert api.requests[0].authorization == "present"
    assert result.seed == 1234
    assert result.inference_seconds is not None
    assert [(i.width, i.height, i.content_type) for i in result.images] == [
        (*REF_SIZE, "image/png")
    ] * 2
    assert all(i.url and not i.nsfw for i in result.images)


async def test_seed_omitted_when_not_given(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    result = await client.generate(ask(reference))

    assert "seed" not in api.requests[0]
    assert result.seed is not None and 1 <= result.seed <= 2**32 - 1


@pytest.mark.parametrize("status", [200, 201])
async def test_accepts_200_and_201(
    client: AimlApiClient, api: FakeAimlApi, reference: str, status: int
) -> None:
    api.success_status = status
    assert len((await client.generate(ask(reference))).images) == 1


# --------------------------------------------------------------------------- retries


async def test_429_then_503_then_success(
    client: AimlApiClient, api: FakeAimlApi, reference: str, fake_time: FakeTime
) -> None:
    api.fail_next(429)
    api.fail_next(503)
    result = await client.generate(ask(reference))

    assert result.images and api.calls == 3
    assert fake_time.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retried(
    client: AimlApiClient, api: FakeAimlApi, reference: str, fake_time: FakeTime, status: int
) -> None:
    api.fail_next(status, times=3)
    with pytest.raises(AimlApiError):
        await client.generate(ask(reference))
    assert api.calls == 1 and fake_time.sleeps == []


async def test_wrong_key_is_refused_by_fake(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await make_client(api_key=SecretStr("other")).generate(ask(reference))
    assert "other" not in str(caught.value) and api.calls == 1


async def test_retry_after_seconds_honoured(
    client: AimlApiClient, api: FakeAimlApi, reference: str, fake_time: FakeTime
) -> None:
    api.fail_next(429, retry_after=7)
    api.fail_next(503, retry_after=3600)
    await client.generate(ask(reference))
    assert fake_time.sleeps == [7.0, 60.0]


def test_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=12), usegmt=True)
    assert parse_retry_after(header, now=now) == 12.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(format_datetime(now - timedelta(days=1), usegmt=True), now=now) == 0


async def test_retry_after_http_date_end_to_end(
    client: AimlApiClient, api: FakeAimlApi, reference: str, fake_time: FakeTime
) -> None:
    api.fail_next(429, retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=30)))
    await client.generate(ask(reference))
    assert 25 <= fake_time.sleeps[0] <= 30


@pytest.mark.parametrize(
    ("jitter", "expected"), [(1.0, [1, 2, 2.5, 2.5]), (0.0, [0.5, 1, 1.25, 1.25])]
)
async def test_backoff_grows_within_cap(
    make_client: Callable[..., AimlApiClient],
    api: FakeAimlApi,
    reference: str,
    fake_time: FakeTime,
    jitter: float,
    expected: list[float],
) -> None:
    client = make_client(max_attempts=5, backoff_base=1.0, backoff_cap=2.5, random=lambda: jitter)
    api.fail_next(502, times=4)
    await client.generate(ask(reference))

    assert fake_time.sleeps == expected
    assert all(wait <= 2.5 for wait in fake_time.sleeps)
    assert fake_time.sleeps == sorted(fake_time.sleeps)


async def test_attempts_are_bounded(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(500, times=10)
    with pytest.raises(ServerError):
        await make_client(max_attempts=3).generate(ask(reference))
    assert api.calls == 3


async def test_no_wait_starts_past_the_deadline(
    make_client: Callable[..., AimlApiClient],
    api: FakeAimlApi,
    reference: str,
    fake_time: FakeTime,
) -> None:
    client = make_client(deadline=1.0, backoff_base=0.4, max_attempts=10)
    api.fail_next(503, times=10)
    with pytest.raises(ServerError):
        await client.generate(ask(reference))

    assert fake_time.sleeps == [0.4]  # the next wait (0.8) would end at 1.2 > 1.0
    assert api.calls == 2


async def test_no_attempt_starts_past_the_deadline_after_an_oversleep(
    make_client: Callable[..., AimlApiClient],
    api: FakeAimlApi,
    reference: str,
    fake_time: FakeTime,
) -> None:
    async def oversleep(seconds: float) -> None:
        await fake_time.sleep(seconds + 1.0)  # a loaded event loop wakes late

    api.fail_next(503)
    with pytest.raises(ApiTimeoutError, match="deadline passed before attempt 2"):
        await make_client(deadline=1.0, sleep=oversleep).generate(ask(reference))
    assert api.calls == 1


async def test_retry_after_past_the_deadline_raises_at_once(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(429, retry_after=30)
    with pytest.raises(RateLimitedError) as caught:
        await make_client(deadline=10.0).generate(ask(reference))
    assert caught.value.retry_after == 30 and api.calls == 1


async def test_rate_limit_raised_at_once_when_asked(
    client: AimlApiClient, api: FakeAimlApi, reference: str, fake_time: FakeTime
) -> None:
    api.fail_next(429, retry_after=2)
    with pytest.raises(RateLimitedError) as caught:
        await client.generate(ask(reference), retry_rate_limited=False)
    assert caught.value.retry_after == 2.0
    assert api.calls == 1 and fake_time.sleeps == []


async def test_connection_refused_is_retried_then_raised(
    make_client: Callable[..., AimlApiClient], reference: str, fake_time: FakeTime
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{closed_port}", max_attempts=3)
    with pytest.raises(ApiConnectionError):
        await client.generate(ask(reference))
    assert len(fake_time.sleeps) == 2  # never sent, never billed: not limited to one retry


# --------------------------------------------------------------------------- timeouts
# A 504 (the API gave up) and our own timeout (we stopped waiting) are different errors, but both
# may have been billed, so together they are retried at most once (DESIGN §4).


async def test_504_is_retried_at_most_once(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(504, times=3)
    with pytest.raises(GenerationTimeoutError) as caught:
        await client.generate(ask(reference))
    assert api.calls == 2
    assert caught.value.status == 504
    assert caught.value.user_message == GenerationTimeoutError.default_user_message


async def test_client_timeout_retried_once_then_raised(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.delay_next(30, times=3)
    with pytest.raises(ApiTimeoutError, match="attempt timeout") as caught:
        await make_client(attempt_timeout=0.2).generate(ask(reference))
    assert api.calls == 2
    assert caught.value.status is None
    assert caught.value.user_message == ApiTimeoutError.default_user_message


async def test_client_timeout_then_success(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.delay_next(30)
    result = await make_client(attempt_timeout=0.2).generate(ask(reference))
    assert result.images and api.calls == 2


async def test_504_then_success(client: AimlApiClient, api: FakeAimlApi, reference: str) -> None:
    api.fail_next(504)
    result = await client.generate(ask(reference))
    assert result.images and api.calls == 2


async def test_504_then_our_timeout_is_not_retried_again(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(504)
    api.delay_next(30, times=2)
    with pytest.raises(ApiTimeoutError):
        await make_client(attempt_timeout=0.2).generate(ask(reference))
    assert api.calls == 2


async def test_our_timeout_then_504_is_not_retried_again(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.delay_next(30)
    api.fail_next(504, times=2)
    with pytest.raises(GenerationTimeoutError):
        await make_client(attempt_timeout=0.2).generate(ask(reference))
    assert api.calls == 2


async def test_other_failures_between_timeouts_do_not_reset_the_limit(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(504)
    api.fail_next(503)  # not billed: retried as usual
    api.fail_next(504, times=2)
    with pytest.raises(GenerationTimeoutError):
        await client.generate(ask(reference))
    assert api.calls == 3


async def test_overall_deadline_cuts_an_attempt_short(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.delay_next(30)
    with pytest.raises(ApiTimeoutError, match="overall deadline"):
        await make_client(deadline=0.2, attempt_timeout=5.0).generate(ask(reference))
    assert api.calls == 1  # no time left to retry


# --------------------------------------------------------------------------- logs


async def test_logs_one_info_line_and_warnings_without_secrets(
    client: AimlApiClient,
    api: FakeAimlApi,
    reference: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.fail_next(503)
    with caplog.at_level(logging.INFO, logger="services.aimlapi"):
        result = await client.generate(ask(reference))
        api.fail_next_download(500)
        await client.download(result.images[0], max_bytes=100_000)

    # not the fake's access log
    ours = [r for r in caplog.records if r.name.startswith("services.aimlapi.")]
    infos = [r for r in ours if r.levelno == logging.INFO]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert len(infos) == 1 and "attempts=2" in infos[0].getMessage()
    assert len(warnings) == 2
    text = "\n".join(r.getMessage() for r in ours)
    assert KEY not in text and "signature=" not in text
