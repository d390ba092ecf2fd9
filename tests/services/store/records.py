"""Test data for anything that stores generations (the store's tests, the worker's, quotas')."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData, update

from services.parameters import GenerationParameters
from services.store import (
    Generation,
    GenerationKind,
    GenerationStatus,
    NewApiAttempt,
    NewGeneration,
    Store,
    schema,
)
from services.store.generations import record
from services.store.migrations.v0001_initial import generations_v1
from services.store.queue_reads import WAITING

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SNOWFLAKE = 1_234_567_890_123_456_789  # 19 digits
BIG_SNOWFLAKE = 9_223_372_036_854_775_807  # the largest a BIGINT holds
PARAMETER_NAMES = tuple(GenerationParameters.model_fields)


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


#: ``generations`` as release 1 made it, to fill a database built with ``migrate(target=...)``.
V1_GENERATIONS = generations_v1(MetaData())


def v1_row(parameters: GenerationParameters, **columns: Any) -> dict[str, Any]:
    """A generation as release 1 stored it (naive UTC, as SQLite keeps it)."""
    return {
        "kind": "imagine",
        "user_id": BIG_SNOWFLAKE,
        "channel_id": 5,
        "prompt": parameters.prompt,
        "strength": parameters.strength,
        "seed_requested": parameters.seed,
        "steps": parameters.steps,
        "guidance": parameters.guidance,
        "count": parameters.count,
        "safety_checker": parameters.safety_checker,
        "reference_url": "https://x/ref.png",
        "status": "queued",
        "created_at": datetime(2024, 12, 31, 23, 59, 59, 1),
    } | columns


async def mark_running(
    store: Store, generation_id: int, started_at: datetime | None = None
) -> Generation | None:
    """Put one job in ``running`` as a claim would (tests that need a job in that state
    without going through the queue's fairness pick). ``None`` if it was not waiting."""
    values = {
        "status": GenerationStatus.RUNNING,
        "started_at": store._now(started_at),
        "attempts": schema.generations.c.attempts + 1,
        "error": None,
        "claimed_by": "tests",
    }
    statement = (
        update(schema.generations)
        .where(
            schema.generations.c.id == generation_id,
            schema.generations.c.status.in_([str(s) for s in WAITING]),
        )
        .values(values)
        .returning(*schema.generations.c)
    )
    async with store.engine.begin() as conn:
        row = (await conn.execute(statement)).first()
    return None if row is None else record(row)


def attempt(generation: Generation, number: int = 1, **fields: object) -> NewApiAttempt:
    values: dict[str, object] = {
        "generation_id": generation.id,
        "run": 1,
        "attempt": number,
        "user_id": generation.user_id,
        "guild_id": generation.guild_id,
        "model": generation.model,
        "client_request_id": f"fluxbot:{generation.id}:1:{number}",
        "inference_id": f"inf-{generation.id}-{number}",
        "status": 201,
        "outcome": "ok",
        "credits": 50_000,
        "usd_nanos": 25_000_000,
    }
    return NewApiAttempt.model_validate(values | fields)
