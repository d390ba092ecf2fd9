"""What FakeAimlApi itself does (its concurrency limit, seed-dependent images)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from services.aimlapi import AimlApiClient, RateLimitedError
from services.model_registry import model_entry
from services.parameters import GenerationParameters
from tests.fakes.aimlapi import DEFAULT_MODEL, FakeAimlApi

KEY = "test-key-s3cr3t-value"


def png(size: tuple[int, int] = (48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def api() -> AsyncIterator[FakeAimlApi]:
    async with FakeAimlApi(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def client(api: FakeAimlApi) -> AsyncIterator[AimlApiClient]:
    async def no_wait(_seconds: float) -> None:
        return None

    async with aiohttp.ClientSession() as session:
        yield AimlApiClient(session, base_url=api.base_url, api_key=SecretStr(KEY), sleep=no_wait)


@pytest.fixture
def reference(api: FakeAimlApi) -> str:
    return api.add_file(png())


def ask(image_url: str, **params: Any) -> dict[str, Any]:
    params.setdefault("prompt", "a red fox, watercolour")
    return model_entry(DEFAULT_MODEL).request_body(GenerationParameters(**params), [image_url])


async def test_different_seeds_give_different_images(client: AimlApiClient, reference: str) -> None:
    first = await client.generate(ask(reference, seed=1))
    second = await client.generate(ask(reference, seed=2))
    a = await client.download(first.images[0], max_bytes=100_000)
    b = await client.download(second.images[0], max_bytes=100_000)
    assert a != b


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
