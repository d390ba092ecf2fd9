"""Guild settings: defaults until saved, one row per guild, read once per process."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from services.safety import GuildSettings
from services.store import Store
from services.store.schema import guild_settings
from tests.services.store.records import T0, FakeClock


async def test_guild_settings_round_trip(store: Store) -> None:
    assert await store.guild_settings.get(7) == GuildSettings(guild_id=7)
    chosen = GuildSettings(
        guild_id=7, unfiltered_in_nsfw=True, open_rerolls=True, blocked_terms=("gore", "gor*")
    )
    await store.guild_settings.save(chosen, updated_by=42)
    assert await store.guild_settings.get(7) == chosen
    await store.guild_settings.save(GuildSettings(guild_id=7), updated_by=42)
    assert await store.guild_settings.get(7) == GuildSettings(guild_id=7)
    assert await store.guild_settings.get(8) == GuildSettings(guild_id=8)


async def test_saved_settings_survive_a_restart_with_who_and_when(
    db_url: str, clock: FakeClock
) -> None:
    chosen = GuildSettings(guild_id=7, open_rerolls=True, blocked_terms=("dark magic",))
    async with await Store.open(db_url, clock=clock) as store:
        await store.guild_settings.save(chosen, updated_by=42)
        await store.guild_settings.save(chosen, updated_by=43, updated_at=T0 + timedelta(minutes=1))
    async with await Store.open(db_url) as store:
        assert await store.guild_settings.get(7) == chosen
        async with store.engine.connect() as conn:
            row = (await conn.execute(select(guild_settings))).one()
        assert (row.updated_by, row.updated_at) == (43, T0 + timedelta(minutes=1))


async def test_settings_are_read_from_the_database_once(store: Store) -> None:
    assert await store.guild_settings.get(7) == GuildSettings(guild_id=7)
    async with store.engine.begin() as conn:  # behind the cache's back
        await conn.execute(
            guild_settings.insert().values(guild_id=7, open_rerolls=True, blocked_terms="[]")
        )
    assert await store.guild_settings.get(7) == GuildSettings(guild_id=7)
