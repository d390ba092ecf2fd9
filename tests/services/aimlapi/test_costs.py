"""Request tracing and cost (DESIGN §10): our id on every attempt, each attempt's cost reported,
and the account balance from ``GET /v2/billing``."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from multidict import CIMultiDict
from pydantic import SecretStr

from services.aimlapi import (
    AimlApiClient,
    ApiAttempt,
    ApiTimeoutError,
    AuthenticationError,
    OutOfCreditsError,
)
from services.aimlapi.wire import usage_from_headers, usage_from_meta
from services.model_registry import DREAMINA_UPSCALE
from tests import images
from tests.fakes.aimlapi import FakeAimlApi
from tests.services.aimlapi.conftest import ask


class Attempts(list[ApiAttempt]):
    async def __call__(self, attempt: ApiAttempt) -> None:
        self.append(attempt)


async def test_each_attempt_is_sent_with_its_own_id_and_reported_with_its_cost(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.fail_next(500)
    attempts = Attempts()

    result = await client.generate(
        ask(reference, count=2), client_request_id="fluxbot:42:1", on_attempt=attempts
    )

    assert [r.client_request_id for r in api.requests] == ["fluxbot:42:1:1", "fluxbot:42:1:2"]
    failed, ok = attempts
    assert (failed.attempt, failed.status, failed.outcome) == (1, 500, "ServerError")
    assert failed.usage.usd == 0 and not failed.may_be_billed  # failed requests cost nothing
    assert failed.usage.inference_id  # every answer names its inference
    assert (ok.attempt, ok.status, ok.outcome, ok.may_be_billed) == (2, 201, "ok", True)
    assert ok.usage.usd == Decimal("0.05") and ok.usage.credits == 100_000
    assert ok.usage.inference_id and ok.usage.inference_id != failed.usage.inference_id
    assert result.usage == ok.usage
    assert api.spent == Decimal("0.05")


async def test_without_cost_headers_the_body_meta_usage_is_used(
    client: AimlApiClient, api: FakeAimlApi
) -> None:
    api.cost_headers = False  # Dreamina's body documents meta.usage in credits and dollars
    body = {"model": DREAMINA_UPSCALE, "image_url": api.add_file(images.jpeg(300, 200))}
    attempts = Attempts()

    result = await client.generate(body, on_attempt=attempts)

    assert result.usage is not None and result.usage.usd == Decimal("0.06")
    assert result.usage.credits == 120_000 and result.usage.inference_id
    assert attempts[0].client_request_id is None and api.requests[0].client_request_id is None


async def test_an_answer_that_never_came_may_have_been_billed(
    make_client: Callable[..., AimlApiClient], api: FakeAimlApi, reference: str
) -> None:
    api.delay_next(30, times=2)
    attempts = Attempts()

    with pytest.raises(ApiTimeoutError):
        await make_client(attempt_timeout=0.2).generate(
            ask(reference), client_request_id="job-7", on_attempt=attempts
        )

    assert [(a.attempt, a.status, a.may_be_billed) for a in attempts] == [
        (1, None, True),
        (2, None, True),
    ]
    assert all(a.usage.usd is None for a in attempts)


async def test_out_of_credits_is_reported_and_not_retried(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    api.balance = Decimal(0)
    attempts = Attempts()

    with pytest.raises(OutOfCreditsError):
        await client.generate(ask(reference), on_attempt=attempts)

    assert [(a.status, a.outcome, a.may_be_billed) for a in attempts] == [
        (403, "OutOfCreditsError", False)
    ]


async def test_an_id_the_api_would_silently_drop_is_refused_before_sending(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    for bad in ("has space", "x" * 127, "é"):
        with pytest.raises(ValueError, match="client request id"):
            await client.generate(ask(reference), client_request_id=bad)
    assert api.calls == 0


async def test_balance_reads_the_billing_endpoint(
    client: AimlApiClient, make_client: Callable[..., AimlApiClient], api: FakeAimlApi
) -> None:
    api.balance = Decimal("12.5")
    balance = await client.balance()
    assert balance.current_balance == Decimal("12.5") and balance.currency == "USD"

    with pytest.raises(AuthenticationError):
        await make_client(api_key=SecretStr("wrong")).balance()
    assert api.billing_requests == 2


def test_cost_headers_that_do_not_parse_are_left_unknown() -> None:
    headers = CIMultiDict(
        {"X-Inference-Id": "V1St", "x-aimlapi-credits-used": "2.5", "x-aimlapi-usd-spent": "NaN"}
    )
    usage = usage_from_headers(headers)
    assert (usage.inference_id, usage.credits, usage.usd) == ("V1St", None, None)
    usage = usage_from_headers(
        CIMultiDict({"x-aimlapi-credits-used": "2480", "x-aimlapi-usd-spent": "0.001240000"})
    )
    assert (usage.inference_id, usage.credits, usage.usd) == (None, 2480, Decimal("0.00124"))
    assert usage_from_meta({"usage": {"credits_used": -1, "usd_spent": "0.5"}}) == type(usage)(
        credits=None, usd=Decimal("0.5")
    )
    assert usage_from_meta({}) is None
