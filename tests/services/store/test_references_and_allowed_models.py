"""v0006: a job's further references and fitted copy, and the models a guild allows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from services.model_registry import DEFAULT_MODEL, DREAMINA_UPSCALE, KONTEXT_PRO
from services.safety import GuildSettings
from services.store import GenerationKind, Store, make_engine, migrate
from tests.services.store.records import new

URLS = tuple(f"https://cdn.discordapp.com/attachments/1/{n}/reference-{n}.png" for n in (2, 3))


async def test_a_v5_database_gains_the_columns_and_keeps_its_rows(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine, target=5) == 5
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO generations (kind, user_id, channel_id, parameters, "
                    "reference_url, status, created_at) VALUES ('imagine', 1, 2, "
                    "'{\"prompt\": \"old\"}', 'u', 'done', '2025-01-01 00:00:00.000000')"
                )
            )
            await conn.execute(
                text("INSERT INTO guild_settings (guild_id, blocked_terms) VALUES (7, '[]')")
            )
        assert await migrate(engine, target=6) == 6
    finally:
        await engine.dispose()
    async with await Store.open(db_url) as store:
        old = await store.generations.get(1)
        assert old is not None and old.references == ("u",)
        assert (old.reference_channel_id, old.reference_message_id) == (None, None)
        assert (await store.guild_settings.get(7)).allowed_models == ()


async def test_further_references_are_stored_and_refreshed_together(store: Store) -> None:
    job = await store.generations.create(new(model=KONTEXT_PRO, extra_reference_urls=URLS))
    assert job.references == (job.reference_url, *URLS)
    fresh = ("https://a/1.png", "https://a/2.png", "https://a/3.png")
    moved = await store.generations.set_reference_urls(job.id, fresh)
    assert moved is not None and moved.references == fresh
    stored = await store.generations.get(job.id)
    assert stored is not None and stored.references == fresh


async def test_a_reroll_keeps_every_reference_and_an_image_action_starts_afresh(
    store: Store,
) -> None:
    edit = await store.generations.create(
        new(model=KONTEXT_PRO, kind=GenerationKind.EDIT, extra_reference_urls=URLS)
    )
    parameters = edit.parameters
    reroll = edit.follow_up(kind=GenerationKind.REROLL, user_id=7, parameters=parameters)
    assert (reroll.model, reroll.extra_reference_urls) == (KONTEXT_PRO, URLS)
    upscale = edit.follow_up(
        kind=GenerationKind.UPSCALE,
        user_id=7,
        parameters=parameters,
        image=1,
        model=DREAMINA_UPSCALE,
    )
    assert (upscale.model, upscale.extra_reference_urls) == (DREAMINA_UPSCALE, ())
    assert (upscale.source_id, upscale.source_image) == (edit.id, 1)


async def test_a_fitted_copy_is_where_its_rerolls_find_the_reference(store: Store) -> None:
    upscale = await store.generations.create(
        new(model=DREAMINA_UPSCALE, kind=GenerationKind.UPSCALE, source_id=1, source_image=0)
    )
    moved = await store.generations.set_reference_message(
        upscale.id, channel_id=11, message_id=12, url="https://cdn/reference.jpg"
    )
    assert moved is not None
    assert (moved.reference_channel_id, moved.reference_message_id) == (11, 12)
    reroll = await store.generations.create(
        moved.follow_up(kind=GenerationKind.REROLL, user_id=7, parameters=moved.parameters)
    )
    assert (reroll.reference_channel_id, reroll.reference_message_id) == (11, 12)
    assert reroll.reference_url == "https://cdn/reference.jpg"
    vary = moved.follow_up(
        kind=GenerationKind.VARY, user_id=7, parameters=moved.parameters, image=0
    )
    assert (vary.reference_channel_id, vary.reference_message_id) == (None, None)


async def test_a_guilds_models_round_trip(store: Store) -> None:
    chosen = GuildSettings(guild_id=7, allowed_models=(DEFAULT_MODEL, KONTEXT_PRO))
    await store.guild_settings.save(chosen, updated_by=1)
    assert await store.guild_settings.get(7) == chosen
    await store.guild_settings.save(GuildSettings(guild_id=7), updated_by=1)
    assert (await store.guild_settings.get(7)).allowed_models == ()


def test_at_most_three_further_references() -> None:
    with pytest.raises(ValidationError, match="extra_reference_urls"):
        new(extra_reference_urls=("https://x/1",) * 4)
