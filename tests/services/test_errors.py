"""UserFacingError: one constructor shape for every error a member may read."""

from __future__ import annotations

from services.errors import UserFacingError


class Refused(UserFacingError):
    """A simple subclass, as services declare them: only a message."""


class Busy(UserFacingError):
    default_user_message = "Busy. Try again soon."


def test_positional_message_is_what_a_member_reads_and_what_str_gives() -> None:
    error = Refused("You already have 3 images waiting.")
    assert error.user_message == "You already have 3 images waiting."
    assert str(error) == error.detail == "You already have 3 images waiting."


def test_default_message_and_separate_detail() -> None:
    error = Busy(detail="queue at capacity (8/8)")
    assert error.user_message == "Busy. Try again soon."
    assert str(error) == "queue at capacity (8/8)"
    assert UserFacingError().user_message == UserFacingError.default_user_message
