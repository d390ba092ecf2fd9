"""The one base class for everything a member may be told.

Cogs catch :class:`UserFacingError` and show ``user_message`` as it is; anything else is a bug or
an outage and gets a generic line plus a log record. Subclasses live beside the code that raises
them; what they share is only this contract.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error whose ``user_message`` is plain words a member can act on (no secrets, no ids).

    One constructor shape for every subclass: the positional argument, when given, is what a
    member reads (``QueueRefused("You already have 3 images waiting.")``); without it the class's
    ``default_user_message`` is used. ``detail`` is for operators' logs and is what ``str()``
    gives; it defaults to the member's message.
    """

    default_user_message = "Something went wrong. Try again in a minute."

    def __init__(self, user_message: str | None = None, *, detail: str | None = None) -> None:
        self.user_message = user_message or self.default_user_message
        self.detail = detail or self.user_message
        super().__init__(self.detail)
