"""Small key/value facts the bot keeps about itself (e.g. the hash of the synced command tree)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.store.engine import Writer, upsert
from services.store.schema import meta


class MetaRepository:
    """The ``meta`` table."""

    def __init__(self, engine: AsyncEngine, *, write: Writer) -> None:
        self._engine = engine
        self._write = write

    async def get(self, key: str) -> str | None:
        async with self._engine.connect() as conn:
            result = await conn.execute(select(meta.c.value).where(meta.c.key == key))
            return result.scalar_one_or_none()

    async def set(self, key: str, value: str) -> None:
        """Insert or replace."""
        statement = upsert(self._engine, meta).values(key=key, value=value)
        statement = statement.on_conflict_do_update(
            index_elements=[meta.c.key], set_={"value": statement.excluded.value}
        )
        async with self._write() as conn:
            await conn.execute(statement)
