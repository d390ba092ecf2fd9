"""Column types: what Python sees is what the rest of the bot uses, whatever the database stores."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, Text
from sqlalchemy.types import TypeDecorator

from services.parameters import GenerationParameters

#: Generation ids appear in button custom ids: BIGINT on PostgreSQL, and on SQLite an INTEGER
#: PRIMARY KEY with AUTOINCREMENT so a deleted newest row's id is never handed out again.
Id = BigInteger().with_variant(Integer(), "sqlite")


def as_utc(value: datetime) -> datetime:
    """Refuse naive datetimes: a wrong offset would silently shift quotas and timeouts."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python; SQLite stores fixed-width ISO text (sorts correctly), PG timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class IdList(TypeDecorator[tuple[int, ...]]):
    """A list of snowflakes as JSON text; empty is NULL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Sequence[int] | None, dialect: Dialect) -> str | None:
        return json.dumps([int(v) for v in value]) if value else None

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[int, ...]:
        return tuple(int(v) for v in json.loads(value)) if value else ()


class TextList(TypeDecorator[tuple[str, ...]]):
    """A list of strings (URLs, model ids) as JSON text; empty is NULL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Sequence[str] | None, dialect: Dialect) -> str | None:
        return json.dumps([str(v) for v in value], ensure_ascii=False) if value else None

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[str, ...]:
        return tuple(str(v) for v in json.loads(value)) if value else ()


def parameters_json(parameters: dict[str, Any]) -> str:
    """How a parameters object is written: compact JSON of ``model_dump(mode="json")``."""
    return json.dumps(parameters, ensure_ascii=False, separators=(",", ":"))


class ParametersJSON(TypeDecorator[GenerationParameters]):
    """:class:`GenerationParameters` as JSON text.

    Read back without validation (``model_construct``): a stored job must stay readable after a
    limit is tightened, and a name missing from an old row takes today's default.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(
        self, value: GenerationParameters | None, dialect: Dialect
    ) -> str | None:
        return None if value is None else parameters_json(value.model_dump(mode="json"))

    def process_result_value(
        self, value: str | None, dialect: Dialect
    ) -> GenerationParameters | None:
        return None if value is None else _stored_parameters(value)


@functools.lru_cache(maxsize=1024)
def _stored_parameters(text: str) -> GenerationParameters:
    """One frozen instance per stored text: a job's row is read about eight times (issue 10)."""
    return GenerationParameters.model_construct(**json.loads(text))
