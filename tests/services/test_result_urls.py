"""Result URLs: HTTPS only, except the configured API host and loopback (the test fakes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr
from yarl import URL

from services.aimlapi import AimlApiClient, DownloadError, GeneratedImage


@pytest.fixture
async def client() -> AsyncIterator[AimlApiClient]:
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
def test_result_url_rule(client: AimlApiClient, url: str, allowed: bool) -> None:
    assert client.result_url_allowed(URL(url)) is allowed


async def test_plain_http_result_is_refused_before_any_request(client: AimlApiClient) -> None:
    # An unroutable host: if the client tried to connect, the error would be a connection one.
    image = GeneratedImage(url="http://cdn.example.invalid/result.png")
    with pytest.raises(DownloadError, match="plain-http") as caught:
        await client.download(image, max_bytes=1000)
    assert caught.value.user_message == DownloadError.default_user_message
