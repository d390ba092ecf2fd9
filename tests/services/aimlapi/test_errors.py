"""The error hierarchy: status mapping, member messages, and what logs may show."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import services.aimlapi as aimlapi
from services.aimlapi import (
    AimlApiClient,
    AimlApiError,
    ApiConnectionError,
    ApiTimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    GenerationTimeoutError,
    MalformedResponseError,
    OutOfCreditsError,
    RateLimitedError,
    ServerError,
    sanitise_message,
)
from services.aimlapi.errors import error_for_status
from services.errors import UserFacingError
from tests.fakes.aimlapi import FakeAimlApi
from tests.services.aimlapi.conftest import KEY, ask

ALL_ERRORS = [
    getattr(aimlapi, name)
    for name in aimlapi.__all__
    if isinstance(getattr(aimlapi, name), type) and issubclass(getattr(aimlapi, name), AimlApiError)
]


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

    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.request_id  # from the documented body's requestId
    assert caught.value.user_message and "{" not in caught.value.user_message


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (409, BadRequestError),
        (418, BadRequestError),
        (599, ServerError),
        (302, MalformedResponseError),
    ],
)
def test_undocumented_statuses_fall_into_their_class(
    status: int, error: type[AimlApiError]
) -> None:
    assert error_for_status(status) is error


def test_every_error_is_user_facing_with_a_plain_default_message() -> None:
    assert len(ALL_ERRORS) == 11
    for cls in ALL_ERRORS:
        assert issubclass(cls, UserFacingError)
        error = cls()
        assert error.user_message == cls.default_user_message
        assert error.user_message.endswith(".") and "{" not in error.user_message
        assert error.status is None and error.request_id is None and error.retry_after is None


def test_which_errors_are_retried_and_which_may_be_billed() -> None:
    retryable = {cls for cls in ALL_ERRORS if cls.retryable}
    billed = {cls for cls in ALL_ERRORS if cls.may_be_billed}
    assert retryable == {
        RateLimitedError,
        ServerError,
        GenerationTimeoutError,
        ApiTimeoutError,
        ApiConnectionError,
    }
    assert billed == {GenerationTimeoutError, ApiTimeoutError}


def test_api_timeout_and_our_timeout_tell_members_different_things() -> None:
    theirs = GenerationTimeoutError().user_message
    ours = ApiTimeoutError().user_message
    assert theirs != ours
    assert "ran out of time" in theirs  # the API gave up on the generation
    assert "did not answer in time" in ours  # we stopped waiting
    assert not issubclass(ApiTimeoutError, GenerationTimeoutError | ApiConnectionError)
    assert not issubclass(GenerationTimeoutError, ApiTimeoutError | ServerError)


def test_positional_argument_is_the_member_message_and_detail_goes_to_logs() -> None:
    error = RateLimitedError(
        "Slow down.", detail="API answered HTTP 429", status=429, request_id="r-1", retry_after=2
    )
    assert error.user_message == "Slow down."
    assert str(error) == "API answered HTTP 429 (status=429, request_id=r-1)"
    assert repr(error) == "RateLimitedError('API answered HTTP 429 (status=429, request_id=r-1)')"
    assert error.retry_after == 2
    bare = DownloadError(detail="download timed out")
    assert bare.user_message == DownloadError.default_user_message
    assert str(bare) == "download timed out"


async def test_real_validation_400_shows_list_message(
    client: AimlApiClient, api: FakeAimlApi, reference: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.generate(ask(reference, model="flux/unknown"))

    assert api.calls == 1
    assert "model must be one of the following values" in caught.value.user_message


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
