"""Parsing what the API sends: both success shapes, unusable bodies, error bodies, messages."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.aimlapi import (
    AimlApiClient,
    BadRequestError,
    GeneratedImage,
    GenerationResult,
    MalformedResponseError,
    sanitise_message,
)
from services.aimlapi.wire import parse_error_body, parse_generation
from tests.fakes.aimlapi import FakeAimlApi
from tests.services.aimlapi.conftest import KEY, ask


async def test_nsfw_flags_follow_has_nsfw_concepts(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.nsfw = lambda _body, index: index == 1
    result = await client.generate(ask(reference, count=3))
    assert [i.nsfw for i in result.images] == [False, True, False]


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
    assert result.model_copy(update={"usage": None}) == GenerationResult(
        images=[GeneratedImage(url="https://cdn.example/a.png")], seed=5, request_id="abc"
    )
    assert result.usage is not None and result.usage.inference_id  # from the headers


def test_images_shape_normalised() -> None:
    raw = (
        b'{"images": [{"url": "https://cdn.example/a.png", "width": 8, "height": 4,'
        b' "content_type": "image/png"}, {"url": "https://cdn.example/b.png"}],'
        b' "timings": {"inference": 2.54}, "seed": 9, "has_nsfw_concepts": [true]}'
    )
    result = parse_generation(raw)
    assert result.seed == 9 and result.inference_seconds == 2.54
    assert [(i.url, i.width, i.height, i.nsfw) for i in result.images] == [
        ("https://cdn.example/a.png", 8, 4, True),
        ("https://cdn.example/b.png", None, None, False),  # fewer flags than images
    ]


def test_data_shape_normalised_and_odd_meta_ignored() -> None:
    raw = b'{"data": [{"b64_json": "AAAA"}], "meta": {"seed": true, "has_nsfw_concepts": "no"}}'
    result = parse_generation(raw)
    assert result == GenerationResult(images=[GeneratedImage(b64_json="AAAA")])
    with_meta = parse_generation(
        b'{"data": [{"url": "https://x/a.png"}], "meta": {"seed": 3, "has_nsfw_concepts": [1]}}'
    )
    assert with_meta.seed == 3 and with_meta.images[0].nsfw


@pytest.mark.parametrize(
    ("raw", "message", "status_code"),
    [
        (b'{"message": "bad", "statusCode": "400", "requestId": "r"}', "bad", "400"),
        (b'{"message": ["a", "b"], "statusCode": 400}', ["a", "b"], 400),
        (b"<html>Bad Gateway</html>", None, None),
        (b'["not", "an", "object"]', None, None),
        (b"\xff\xfe", None, None),
    ],
)
def test_error_body_parsed_or_empty(raw: bytes, message: object, status_code: object) -> None:
    body = parse_error_body(raw)
    assert (body.message, body.status_code) == (message, status_code)


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


def test_sanitise_message_strips_invisible_characters_and_caps() -> None:
    assert sanitise_message(None) == ""
    assert sanitise_message("a\u200bb\u202ec\n\td") == "a b c d"
    capped = sanitise_message("word " * 100, cap=20)
    assert len(capped) <= 20 and capped.endswith("…")
