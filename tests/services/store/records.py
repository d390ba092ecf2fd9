"""Test data for anything that stores generations (the store's tests, the worker's, quotas')."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.parameters import GenerationParameters
from services.store import GenerationKind, NewGeneration

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SNOWFLAKE = 1_234_567_890_123_456_789  # 19 digits
BIG_SNOWFLAKE = 9_223_372_036_854_775_807  # the largest a BIGINT holds
PARAMETER_NAMES = ("prompt", "strength", "seed", "steps", "guidance", "count", "safety_checker")


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def new(**overrides: Any) -> NewGeneration:
    """A valid job; parameter names (``prompt=``, ``seed=``...) go into its parameters."""
    fields: dict[str, Any] = {
        "kind": GenerationKind.IMAGINE,
        "user_id": SNOWFLAKE,
        "guild_id": SNOWFLAKE + 1,
        "channel_id": SNOWFLAKE + 2,
        "reference_url": "https://cdn.discordapp.com/attachments/1/2/ref.png?ex=1&is=2&hm=3",
    }
    knobs: dict[str, Any] = {"prompt": "a cat in a hat", "strength": 0.8, "count": 2}
    for name in PARAMETER_NAMES:
        if name in overrides:
            knobs[name] = overrides.pop(name)
    parameters = GenerationParameters(**knobs)
    return NewGeneration(**(fields | overrides), parameters=parameters)
