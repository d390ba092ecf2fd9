"""Result download: inline and URL results, size caps, retries, and the HTTPS-only URL rule."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr
from yarl import URL

from services.aimlapi import (
    AimlApiClient,
    DownloadError,
    GeneratedImage,
    redact_url,
    result_url_allowed,
)
from tests.fakes.aimlapi import FakeAimlApi
from tests.services.aimlapi.conftest import REF_SIZE, ask, png


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


async def test_data_uri_result_is_decoded(client: AimlApiClient) -> None:
    uri = "data:image/png;base64," + base64.b64encode(png()).decode()
    assert await client.download(GeneratedImage(url=uri), max_bytes=100_000) == png()


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        (GeneratedImage(b64_json="not base64!"), "not valid base64"),
        (GeneratedImage(b64_json=base64.b64encode(b"plain text").decode()), "not a PNG"),
        (GeneratedImage(), "neither url nor b64_json"),
    ],
)
async def test_unusable_inline_result(
    client: AimlApiClient, image: GeneratedImage, problem: str
) -> None:
    with pytest.raises(DownloadError, match=problem) as caught:
        await client.download(image, max_bytes=100_000)
    assert caught.value.user_message == DownloadError.default_user_message


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


def test_redact_url_drops_query_fragment_and_credentials() -> None:
    assert (
        redact_url("https://user:pw@cdn.example.com/a.png?signature=abc#frag")
        == "https://cdn.example.com/a.png"
    )


# --------------------------------------------------------------------------- URL policy
# HTTPS only, except the configured API host and loopback (the test fakes).


@pytest.fixture
async def internal_api_client() -> AsyncIterator[AimlApiClient]:
    async with aiohttp.ClientSession() as session:
        yield AimlApiClient(
            session,
            base_url="http://api.internal:8080",
            api_key=SecretStr("k" * 20),
            download_attempts=1,
        )


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://cdn.example.com/a.png", True),
        ("http://cdn.example.com/a.png", False),
        ("http://api.internal:8080/files/a.png", True),  # the operator's own (http) API host
        ("http://api.internal.evil.com/a.png", False),
        ("http://127.0.0.1:5000/a.png", True),
        ("http://[::1]:5000/a.png", True),
        ("http://localhost/a.png", True),
        ("http://10.0.0.5/a.png", False),
        ("ftp://cdn.example.com/a.png", False),
    ],
)
def test_result_url_rule(url: str, allowed: bool) -> None:
    assert result_url_allowed(URL(url), api_host="api.internal") is allowed


def test_client_applies_the_rule_with_its_own_api_host(
    internal_api_client: AimlApiClient,
) -> None:
    assert internal_api_client.downloader.url_allowed(URL("http://api.internal/a.png"))
    assert not internal_api_client.downloader.url_allowed(URL("http://other.internal/a.png"))


async def test_plain_http_result_is_refused_before_any_request(
    internal_api_client: AimlApiClient,
) -> None:
    # An unroutable host: if the client tried to connect, the error would be a connection one.
    image = GeneratedImage(url="http://cdn.example.invalid/result.png")
    with pytest.raises(DownloadError, match="plain-http") as caught:
        await internal_api_client.download(image, max_bytes=1000)
    assert caught.value.user_message == DownloadError.default_user_message
