"""AimlApiClient against FakeAimlApi over loopback, with injected sleep/clock/random."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from services.aimlapi import (
    AimlApiClient,
    AimlApiError,
    ApiConnectionError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    GeneratedImage,
    GenerationResult,
    GenerationTimeoutError,
    MalformedResponseError,
    OutOfCreditsError,
    RateLimitedError,
    ServerError,
    parse_retry_after,
    sanitise_message,
)
from services.model_registry import model_entry
from services.parameters import GenerationParameters
from tests.fakes.aimlapi import DEFAULT_MODEL, FakeAimlApi

KEY = "test-key-s3cr3t-value"
REF_SIZE = (48, 32)


class FakeTime:
    """A clock that only moves when the client sleeps, recording every wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def png(size: tuple[int, int] = REF_SIZE) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def api() -> AsyncIterator[FakeAimlApi]:
    async with FakeAimlApi(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as shared:
        yield shared


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def reference(api: FakeAimlApi) -> str:
    return api.add_file(png())


@pytest.fixture
def make_client(
    session: aiohttp.ClientSession, api: FakeAimlApi, fake_time: FakeTime
) -> Callable[..., AimlApiClient]:
    def build(**overrides: Any) -> AimlApiClient:
        options: dict[str, Any] = {
            "base_url": api.base_url,
            "api_key": SecretStr(KEY),
            "attempt_timeout": 5.0,
            "sleep": fake_time.sleep,
            "clock": fake_time.clock,
            "random": lambda: 1.0,
        }
        options.update(overrides)
        return AimlApiClient(session, **options)

    return build


@pytest.fixture
def client(make_client: Callable[..., AimlApiClient]) -> AimlApiClient:
    return make_client()


def ask(image_url: str, *, model: str = DEFAULT_MODEL, **params: Any) -> dict[str, Any]:
    params.setdefault("prompt", "a red fox, watercolour")
    body = model_entry(DEFAULT_MODEL).request_body(GenerationParameters(**params), image_url)
    return body | {"model": model}


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


@pytest.mark.parametrize("shape", ["data", "data_b64"])
async def test_data_shapes_download_to_png_of_reference_size(
    client: AimlApiClient, api: FakeAimlApi, reference: str, shape: Any
) -> None:
    api.response_shape = shape
    result = await client.generate(ask(reference, count=2))

    assert len(result.images) == 2
    data = await client.download(result.images[1], max_bytes=1_000_000)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("PNG", REF_SIZE)


async def test_nsfw_flags_follow_has_nsfw_concepts(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.nsfw = lambda _body, index: index == 1
    result = await client.generate(ask(reference, count=3))
    assert [i.nsfw for i in result.images] == [False, True, False]


async def test_different_seeds_give_different_images(client: AimlApiClient, reference: str) -> None:
    first = await client.generate(ask(reference, seed=1))
    second = await client.generate(ask(reference, seed=2))
    a = await client.download(first.images[0], max_bytes=100_000)
    b = await client.download(second.images[0], max_bytes=100_000)
    assert a != b


# --------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, OutOfCreditsError),
        (404, BadRequestError),
        (422, BadRequestError),
        (429, RateLimitedError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, GenerationTimeoutError),
    ],
)
async def test_status_maps_to_error_type(
    make_client: Callable[..., AimlApiClient],
    api: FakeAimlApi,
    reference: str,
    status: int,
    error: type[AimlApiError],
) -> None:
    api.fail_next(status, times=5)
    with pytest.raises(error) as caught:
        await make_client(max_attempts=1).generate(ask(reference))

    assert caught.value.status == status
    assert caught.value.request_id  # from the documented body's requestId
    assert caught.value.user_message and "{" not in caught.value.user_message


async def test_real_validation_400_shows_list_message(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.generate(ask(reference, model="flux/unknown"))

    assert api.calls == 1
    assert "model must be one of the following values" in caught.value.user_message


async def test_list_message_joined_sanitised_and_capped(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    body = {
        "message": [
            "prompt\x00 is bad",
            "see https://cdn.example/x.png?sig=abc123&ex=1",
            f"key {KEY} refused",
            "x" * 1000,
        ],
        "statusCode": "400",
        "requestId": "req-1",
    }
    api.fail_next(400, body=body)
    with pytest.raises(BadRequestError) as caught:
        await client.generate(ask(reference))

    message = caught.value.user_message
    assert "prompt is bad; see https://cdn.example/x.png;" in message
    assert "sig=" not in message and KEY not in message and "\x00" not in message
    assert len(message) < 400
    assert caught.value.request_id == "req-1"


async def test_unreachable_reference_is_a_bad_request(
    client: AimlApiClient, api: FakeAimlApi
) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.generate(ask(f"{api.base_url}/files/expired.png?ex=1"))
    assert "could not fetch the image" in caught.value.user_message.lower()


async def test_reference_that_is_not_an_image_is_a_bad_request(
    client: AimlApiClient, api: FakeAimlApi
) -> None:
    url = api.add_file(b"just text", content_type="text/plain")
    with pytest.raises(BadRequestError, match="not a supported image"):
        await client.generate(ask(url))


@pytest.mark.parametrize(
    "script",
    [
        lambda api: api.send_bad_json_next(),
        lambda api: api.fail_next(200, body={"images": []}),
        lambda api: api.fail_next(201, body={"result": "ok"}),
        lambda api: api.fail_next(201, body={"images": [{"width": 1}]}),
        lambda api: api.fail_next(201, body=["not", "an", "object"]),  # type: ignore[arg-type]
    ],
    ids=["bad-json", "zero-images", "unknown-shape", "image-without-url", "not-object"],
)
async def test_unusable_success_is_malformed(
    client: AimlApiClient,
    api: FakeAimlApi,
    reference: str,
    script: Callable[[FakeAimlApi], None],
) -> None:
    script(api)
    with pytest.raises(MalformedResponseError):
        await client.generate(ask(reference))
    assert api.calls == 1


async def test_unknown_fields_are_ignored(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    body = {
        "images": [{"url": "https://cdn.example/a.png", "future": {"x": 1}}],
        "seed": 5,
        "brand_new": True,
        "requestId": "abc",
    }
    api.fail_next(200, body=body)
    result = await client.generate(ask(reference))
    assert result == GenerationResult(
        images=[GeneratedImage(url="https://cdn.example/a.png")], seed=5, request_id="abc"
    )


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


async def test_retry_after_past_the_deadline_raises_at_once(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(429, retry_after=30)
    with pytest.raises(RateLimitedError) as caught:
        await make_client(deadline=10.0).generate(ask(reference))
    assert caught.value.retry_after == 30 and api.calls == 1


async def test_504_is_retried_at_most_once(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(504, times=3)
    with pytest.raises(GenerationTimeoutError):
        await client.generate(ask(reference))
    assert api.calls == 2


async def test_rate_limit_raised_at_once_when_asked(
    client: AimlApiClient, api: FakeAimlApi, reference: str, fake_time: FakeTime
) -> None:
    api.fail_next(429, retry_after=2)
    with pytest.raises(RateLimitedError) as caught:
        await client.generate(ask(reference), retry_rate_limited=False)
    assert caught.value.retry_after == 2.0
    assert api.calls == 1 and fake_time.sleeps == []


async def test_client_timeout_retried_once_then_raised(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.delay_next(30, times=3)
    with pytest.raises(GenerationTimeoutError):
        await make_client(attempt_timeout=0.2).generate(ask(reference))
    assert api.calls == 2


async def test_client_timeout_then_success(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.delay_next(30)
    result = await make_client(attempt_timeout=0.2).generate(ask(reference))
    assert result.images and api.calls == 2


async def test_connection_refused_is_retried_then_raised(
    make_client: Callable[..., AimlApiClient], reference: str, fake_time: FakeTime
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{closed_port}", max_attempts=3)
    with pytest.raises(ApiConnectionError):
        await client.generate(ask(reference))
    assert len(fake_time.sleeps) == 2


async def test_fake_concurrency_limit_answers_429(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.max_concurrency = 1
    api.delay_next(30)
    slow = asyncio.create_task(client.generate(ask(reference)))
    await api.wait_for_calls(1)
    with pytest.raises(RateLimitedError):
        await client.generate(ask(reference), retry_rate_limited=False)
    assert api.in_flight == 1 and api.max_in_flight == 1
    slow.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await slow


# --------------------------------------------------------------------------- download


async def test_download_respects_size_cap(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    image = (await client.generate(ask(reference))).images[0]
    size = len(await client.download(image, max_bytes=100_000))

    with pytest.raises(DownloadError, match="larger than"):
        await client.download(image, max_bytes=size - 1)  # Content-Length check
    api.chunked_files = True
    with pytest.raises(DownloadError, match="larger than"):
        await client.download(image, max_bytes=size - 1)  # streamed check


async def test_inline_download_respects_size_cap(client: AimlApiClient) -> None:
    image = GeneratedImage(b64_json=base64.b64encode(png((64, 64))).decode())
    with pytest.raises(DownloadError, match="larger than"):
        await client.download(image, max_bytes=50)


@pytest.mark.parametrize("mode", ["404", "not_image"])
async def test_broken_result_url(
    client: AimlApiClient, api: FakeAimlApi, reference: str, mode: Any
) -> None:
    api.break_result_url_next(mode)
    image = (await client.generate(ask(reference))).images[0]
    with pytest.raises(DownloadError):
        await client.download(image, max_bytes=100_000)
    assert api.file_requests == 1 + 1  # the reference fetch, then one download: no retry


async def test_download_retries_5xx(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    image = (await client.generate(ask(reference))).images[0]
    api.fail_next_download(503, times=2)
    assert (await client.download(image, max_bytes=100_000)).startswith(b"\x89PNG")
    api.fail_next_download(502, times=3)
    with pytest.raises(DownloadError):
        await client.download(image, max_bytes=100_000)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "nonsense"])
async def test_download_refuses_non_http_urls(client: AimlApiClient, url: str) -> None:
    with pytest.raises(DownloadError):
        await client.download(GeneratedImage(url=url), max_bytes=1000)


# --------------------------------------------------------------------------- secrets and logs


async def test_key_never_in_errors_or_client(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(401, body={"message": f"Invalid key {KEY}", "statusCode": 401})
    with pytest.raises(AuthenticationError) as caught:
        await client.generate(ask(reference))

    exc = caught.value
    for text in (str(exc), repr(exc), exc.user_message, repr(client)):
        assert KEY not in text
    assert KEY not in sanitise_message([KEY], secret=KEY)


async def test_wrong_key_is_refused_by_fake(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await make_client(api_key=SecretStr("other")).generate(ask(reference))
    assert "other" not in str(caught.value) and api.calls == 1


async def test_logs_one_info_line_and_warnings_without_secrets(
    client: AimlApiClient,
    api: FakeAimlApi,
    reference: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.fail_next(503)
    with caplog.at_level(logging.INFO, logger="services.aimlapi.client"):
        result = await client.generate(ask(reference))
        api.fail_next_download(500)
        await client.download(result.images[0], max_bytes=100_000)

    ours = [
        r for r in caplog.records if r.name == "services.aimlapi.client"
    ]  # not the fake's access log
    infos = [r for r in ours if r.levelno == logging.INFO]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert len(infos) == 1 and "attempts=2" in infos[0].getMessage()
    assert len(warnings) == 2
    text = "\n".join(r.getMessage() for r in ours)
    assert KEY not in text and "signature=" not in text
