"""FakeAimlApi checks each model's body by that model's documented schema and answers in its
documented shape; and what our registry builds passes it through the real client."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from services.aimlapi import AimlApiClient
from services.model_registry import (
    DEFAULT_MODEL,
    DREAMINA_UPSCALE,
    ENTRIES,
    FLUX2_EDIT,
    KONTEXT_MAX,
    KONTEXT_PRO,
    ModelEntry,
    ReferenceInfo,
    model_entry,
)
from services.parameters import GenerationParameters
from tests import images
from tests.fakes.aimlapi import PATH, FakeAimlApi

KEY = "test-key-models"


@pytest.fixture
async def api() -> AsyncIterator[FakeAimlApi]:
    async with FakeAimlApi(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
def client(api: FakeAimlApi, session: aiohttp.ClientSession) -> AimlApiClient:
    async def no_wait(_seconds: float) -> None:
        return None

    return AimlApiClient(session, base_url=api.base_url, api_key=SecretStr(KEY), sleep=no_wait)


async def post(
    session: aiohttp.ClientSession, api: FakeAimlApi, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with session.post(f"{api.base_url}{PATH}", json=body, headers=headers) as response:
        return response.status, await response.json()


def assert_documented_error(status: int, answer: dict[str, Any], *expected: str) -> None:
    assert status == 400
    assert set(answer) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert (answer["statusCode"], answer["path"]) == (400, PATH)
    assert isinstance(answer["message"], list)
    for message in expected:
        assert message in answer["message"], answer["message"]


def size_of(data: bytes) -> tuple[int, int, str]:
    with Image.open(io.BytesIO(data)) as image:
        return image.width, image.height, image.format or ""


# --------------------------------------------------------------------------- refusals


async def test_a_kontext_body_with_strength_is_a_400(
    api: FakeAimlApi, session: aiohttp.ClientSession
) -> None:
    reference = api.add_file(images.png(64, 48))
    body = {"model": KONTEXT_PRO, "prompt": "a hat", "image_url": reference, "strength": 0.5}
    status, answer = await post(session, api, body | {"num_inference_steps": 28})
    assert_documented_error(
        status,
        answer,
        "property strength should not exist",
        "property num_inference_steps should not exist",
    )
    assert api.file_requests == 0  # refused before any reference is fetched


async def test_a_flux2_body_without_image_urls_is_a_400(
    api: FakeAimlApi, session: aiohttp.ClientSession
) -> None:
    reference = api.add_file(images.png(64, 48))
    status, answer = await post(
        session, api, {"model": FLUX2_EDIT, "prompt": "a hat", "image_url": reference}
    )
    assert_documented_error(
        status, answer, "property image_url should not exist", "image_urls should not be empty"
    )


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (KONTEXT_MAX, {"aspect_ratio": "5:4"}, "aspect_ratio must be one of the following values"),
        (KONTEXT_PRO, {"safety_tolerance": 2}, "safety_tolerance must be one of the following"),
        (FLUX2_EDIT, {"num_inference_steps": 3}, "num_inference_steps must be an integer"),
        (FLUX2_EDIT, {"image_size": {"width": 1000, "height": 768}}, "multiple of 32"),
        (DREAMINA_UPSCALE, {"prompt": "sharper"}, "property prompt should not exist"),
        (DREAMINA_UPSCALE, {"resolution": "8k"}, "resolution must be one of the following"),
        (DEFAULT_MODEL, {"aspect_ratio": "1:1"}, "property aspect_ratio should not exist"),
        ("flux/nope", {}, "model must be one of the following values"),
    ],
)
async def test_each_model_is_held_to_its_own_schema(
    api: FakeAimlApi,
    session: aiohttp.ClientSession,
    model: str,
    fields: dict[str, Any],
    message: str,
) -> None:
    reference = api.add_file(images.png(64, 48))
    base: dict[str, Any] = {"model": model, "prompt": "a hat"}
    if model == FLUX2_EDIT:
        base["image_urls"] = [reference]
    else:
        base["image_url"] = reference
    if model == DREAMINA_UPSCALE:
        del base["prompt"]
    status, answer = await post(session, api, base | fields)
    assert status == 400
    assert any(message in line for line in answer["message"]), answer["message"]


async def test_the_upscaler_refuses_files_over_its_documented_limits(
    api: FakeAimlApi, session: aiohttp.ClientSession
) -> None:
    for data in (images.webp(64, 48), images.png(4100, 16)):
        body = {"model": DREAMINA_UPSCALE, "image_url": api.add_file(data)}
        status, answer = await post(session, api, body)
        assert status == 400 and answer["statusCode"] == 400, answer


async def test_every_reference_is_fetched(api: FakeAimlApi, session: aiohttp.ClientSession) -> None:
    first = api.add_file(images.png(64, 48))
    gone = f"{api.base_url}/files/missing.png"
    status, answer = await post(
        session, api, {"model": FLUX2_EDIT, "prompt": "merge", "image_urls": [first, gone]}
    )
    assert status == 400 and "Could not fetch" in answer["message"]
    assert api.file_requests == 2


# --------------------------------------------------------------------------- answers


def request(entry: ModelEntry, reference: str, size: tuple[int, int], **knobs: Any) -> dict:
    parameters = GenerationParameters(prompt="add a small red hat", **knobs)
    measured = ReferenceInfo(*size)
    return entry.request_body(parameters, [reference], reference=measured)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.id)
async def test_what_the_registry_builds_the_fake_accepts(
    entry: ModelEntry, api: FakeAimlApi, client: AimlApiClient
) -> None:
    reference = api.add_file(images.png(96, 54))
    result = await client.generate(request(entry, reference, (96, 54), seed=5))
    assert api.requests[0]["model"] == entry.id
    assert len(result.images) == 1
    data = await client.download(result.images[0], max_bytes=50_000_000)
    assert size_of(data)[0] > 0


async def test_kontext_answers_images_at_its_aspect_ratio(
    api: FakeAimlApi, client: AimlApiClient, session: aiohttp.ClientSession
) -> None:
    entry_body = request(
        model_entry(KONTEXT_PRO),
        api.add_file(images.png(96, 54)),
        (96, 54),
        seed=11,
        count=2,
    )
    assert entry_body["aspect_ratio"] == "16:9"
    result = await client.generate(entry_body)
    assert result.seed == 11 and len(result.images) == 2
    first = result.images[0]
    assert (first.width, first.height, first.content_type) == (1360, 768, "image/png")
    # Without output_format the documented default is JPEG.
    status, answer = await post(
        session,
        api,
        {"model": KONTEXT_PRO, "prompt": "hat", "image_url": api.add_file(images.png(8, 8))},
    )
    assert status == 201 and answer["images"][0]["content_type"] == "image/jpeg"
    assert set(answer) == {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}


async def test_flux2_answers_data_with_usage_at_the_asked_size(
    api: FakeAimlApi, session: aiohttp.ClientSession
) -> None:
    body = {
        "model": FLUX2_EDIT,
        "prompt": "hat",
        "image_urls": [api.add_file(images.png(64, 48)), api.add_file(images.jpeg(32, 32))],
        "image_size": {"width": 640, "height": 512},
        "num_images": 2,
    }
    status, answer = await post(session, api, body)
    assert status == 201
    assert set(answer) == {"data", "meta"} and len(answer["data"]) == 2
    assert set(answer["meta"]["usage"]) == {"credits_used"}
    async with session.get(answer["data"][0]["url"]) as response:
        assert size_of(await response.read()) == (640, 512, "PNG")


async def test_dreamina_answers_data_with_credits_and_dollars(
    api: FakeAimlApi, session: aiohttp.ClientSession, client: AimlApiClient
) -> None:
    body = {"model": DREAMINA_UPSCALE, "image_url": api.add_file(images.jpeg(300, 200))}
    status, answer = await post(session, api, body)
    assert status == 201 and set(answer) == {"data", "meta"}
    assert answer["meta"]["usage"] == {"credits_used": 120000, "usd_spent": 0.06}
    async with session.get(answer["data"][0]["url"]) as response:
        assert size_of(await response.read()) == (2048, 1365, "PNG")
    # The client reads this shape like any other.
    result = await client.generate(body)
    assert len(result.images) == 1 and result.seed is None


async def test_a_forced_shape_still_applies_to_every_model(
    api: FakeAimlApi, client: AimlApiClient
) -> None:
    api.response_shape = "data_b64"
    reference = api.add_file(images.png(64, 48))
    entry = model_entry(KONTEXT_MAX)
    result = await client.generate(request(entry, reference, (64, 48)))
    assert result.images[0].b64_json and result.images[0].url is None
