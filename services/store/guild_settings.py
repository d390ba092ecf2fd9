"""Each guild's content policy, as its admins set it through ``/fluxbot-settings``."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.safety import GuildSettings
from services.store.engine import Writer, upsert
from services.store.schema import guild_settings


class GuildSettingsRepository:
    """The ``guild_settings`` table, behind a per-process cache.

    Settings are read before every command's answer and only change through ``save`` on this
    process, so a guild is read from the database once.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write: Writer,
        now: Callable[[datetime | None], datetime],
    ) -> None:
        self._engine = engine
        self._write = write
        self._now = now
        self._cache: dict[int, GuildSettings] = {}

    async def get(self, guild_id: int) -> GuildSettings:
        """A guild's settings; the safe defaults when its admins never changed any."""
        if (cached := self._cache.get(guild_id)) is not None:
            return cached
        settings = await self._read(guild_id)
        self._cache[guild_id] = settings
        return settings

    async def save(
        self, settings: GuildSettings, *, updated_by: int, updated_at: datetime | None = None
    ) -> GuildSettings:
        """Insert or replace a guild's settings, noting which admin changed them and when."""
        values = {
            "guild_id": settings.guild_id,
            "unfiltered_in_nsfw": settings.unfiltered_in_nsfw,
            "open_rerolls": settings.open_rerolls,
            "blocked_terms": json.dumps(list(settings.blocked_terms)),
            "allowed_models": settings.allowed_models,
            "updated_by": updated_by,
            "updated_at": self._now(updated_at),
        }
        statement = upsert(self._engine, guild_settings).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[guild_settings.c.guild_id],
            set_={k: statement.excluded[k] for k in values if k != "guild_id"},
        )
        async with self._write() as conn:
            await conn.execute(statement)
        self._cache[settings.guild_id] = settings
        return settings

    async def _read(self, guild_id: int) -> GuildSettings:
        query = select(guild_settings).where(guild_settings.c.guild_id == guild_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return GuildSettings(guild_id=guild_id)
        return GuildSettings(
            guild_id=guild_id,
            unfiltered_in_nsfw=bool(row.unfiltered_in_nsfw),
            open_rerolls=bool(row.open_rerolls),
            blocked_terms=json.loads(row.blocked_terms) if row.blocked_terms else (),
            allowed_models=row.allowed_models,
        )
