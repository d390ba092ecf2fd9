"""Shared set-up: AimlApiClient against FakeAimlApi over loopback, with injected time."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from services.aimlapi import AimlApiClient
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


def ask(image_url: str, *, model: str = DEFAULT_MODEL, **params: Any) -> dict[str, Any]:
    """A request body as the worker builds it, from the model's registry entry."""
    params.setdefault("prompt", "a red fox, watercolour")
    body = model_entry(DEFAULT_MODEL).request_body(GenerationParameters(**params), [image_url])
    return body | {"model": model}


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
