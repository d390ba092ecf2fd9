"""Delivery end to end against Discord's own rules: the bot's upload limit (its guild's boost tier,
never a member's Nitro), hour-old cards, archived and locked threads."""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest

from tests import images
from tests.fakes.aimlapi import responses
from tests.fakes.discord import rules
from tests.world import World

MIB = 1024 * 1024
#: Big enough that a result at this size is over 10 MiB as PNG (random pixels don't compress).
SIDE = 2000


@functools.cache
def _noise(width: int, height: int) -> bytes:
    return images.noise_png(width, height)


def _noise_pngs(width: int, height: int, seed: int, count: int) -> list[bytes]:
    return [_noise(width, height)] * count


@pytest.fixture
def big_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake API answers with incompressible pictures: over 10 MiB as PNG at 2000²."""
    monkeypatch.setattr(responses, "solid_pngs", _noise_pngs)


def button(message: dict[str, Any], action: str) -> str:
    ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
    return next(i for i in ids if i.startswith(f"fluxbot:{action}:"))


async def press(world: World, message: dict[str, Any], action: str, *, user: int) -> Any:
    interaction = await world.discord.click(
        int(message["channel_id"]), int(message["id"]), button(message, action), user_id=user
    )
    await interaction.response()
    return interaction


def card_edits(world: World, card_id: int) -> list[Any]:
    return [
        r
        for r in world.discord.requests
        if r.method == "PATCH" and r.path.endswith(f"/messages/{card_id}")
    ]


# -- the bot's own upload limit ----------------------------------------------------------------


async def test_a_nitro_members_big_result_is_fitted_to_the_guilds_limit_for_every_reroll(
    world: World, big_results: None
):
    await world.restart_bot(max_input_megapixels=4.0)
    nitro = world.discord.add_member(world.guild, "nitro", premium_type=2)
    attachment = world.upload(images.png(SIDE, SIDE))
    interaction = await world.imagine(user=nitro, attachment=attachment)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    first = await world.result_in(card_id)

    assert world.bot is not None
    stored = await world.bot.store.generations.latest_for_card(card_id)
    assert stored is not None and stored.upload_limit == 10 * MIB  # not the member's 500 MiB
    assert len(_noise(SIDE, SIDE)) > 10 * MIB
    [file] = first["attachments"]
    assert file["size"] <= 10 * MIB and not file["filename"].endswith(".png")

    await press(world, first, "reroll", user=world.moderator)  # another member: same limit
    second = await world.result_in(card_id, after=int(first["id"]))
    assert second["attachments"][0]["size"] <= 10 * MIB
    assert world.discord.rejections == []


async def test_a_boost_that_ended_unannounced_is_explained_in_the_thread(
    world: World, big_results: None
):
    await world.restart_bot(max_input_megapixels=4.0)
    guild = world.discord.add_guild("Boosted", premium_tier=2)
    channel = world.discord.add_text_channel(guild, "art")
    member = world.discord.add_member(guild, "z")

    def boost_ends(params: dict[str, Any], index: int) -> bool:
        world.discord.set_premium_tier(guild, 0, announce=False)  # while the job runs
        return False

    world.api.nsfw = boost_ends
    attachment = world.upload(images.png(SIDE, SIDE), channel=channel)
    interaction = await world.imagine(user=member, channel=channel, attachment=attachment)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    failure = await world.result_in(card_id)

    assert failure["content"].startswith("❌") and "too large" in failure["content"]
    assert failure["components"], "Reroll stays available"
    assert [r["status"] for r in world.discord.rejections] == [413]


async def test_a_boost_that_ended_while_the_job_waited_shrinks_the_fit(
    world: World, big_results: None
):
    await world.restart_bot(max_input_megapixels=4.0)
    guild = world.discord.add_guild("Boosted", premium_tier=2)
    channel = world.discord.add_text_channel(guild, "art")
    member = world.discord.add_member(guild, "z")

    def boost_ends(params: dict[str, Any], index: int) -> bool:
        world.discord.set_premium_tier(guild, 0)  # Discord tells the bot (GUILD_UPDATE)
        return False

    world.api.nsfw = boost_ends
    attachment = world.upload(images.png(SIDE, SIDE), channel=channel)
    interaction = await world.imagine(user=member, channel=channel, attachment=attachment)
    await interaction.response()
    result = await world.result_in(int(interaction.original_message["id"]))

    assert result["attachments"][0]["size"] <= 10 * MIB
    assert world.discord.rejections == []


# -- hour-old cards --------------------------------------------------------------------------


async def test_a_reroll_on_an_hour_old_card_edits_it_once_with_the_final_state(world: World):
    interaction = await world.imagine("a lighthouse at dusk")
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    first = await world.result_in(card_id)
    await world.card_status(card_id, "✅ Done")
    assert world.bot is not None
    await world.bot.generations.cards.flush()
    world.discord.advance_clock(2 * 3600)
    before = len(card_edits(world, card_id))

    await press(world, first, "reroll", user=world.alice)
    second = await world.result_in(card_id, after=int(first["id"]))
    reroll_job = re.search(r"job (\d+)", second["embeds"][0]["footer"]["text"])
    assert reroll_job is not None

    def shows_reroll(message: dict[str, Any]) -> bool:
        footer = (message["embeds"] or [{}])[0].get("footer", {}).get("text", "")
        return int(message["id"]) == card_id and footer.endswith(f"job {reroll_job[1]}")

    card = await world.discord.wait_for_message(shows_reroll, timeout=15)
    assert "✅ Done" in str(card["embeds"][0]["fields"])
    assert len(card_edits(world, card_id)) - before == 1
    assert world.discord.old_message_edits == 1
    assert world.discord.rejections == []  # no 30046


# -- archived and locked threads -------------------------------------------------------------


async def test_a_reroll_in_an_archived_thread_unarchives_it_with_the_result(world: World):
    interaction = await world.imagine()
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    first = await world.result_in(card_id)
    world.discord.archive_thread(card_id)  # a day without activity

    await press(world, first, "reroll", user=world.alice)
    second = await world.result_in(card_id, after=int(first["id"]))

    assert second["attachments"]
    assert not world.discord.threads[card_id]["archived"]
    assert world.discord.rejections == []


async def test_a_card_inside_an_archived_thread_shows_the_reroll_once_it_is_unarchived(
    world: World,
):
    thread = world.discord.add_thread(world.channel, "cats")
    interaction = await world.imagine(channel=thread)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    first = await world.result_in(thread)
    await world.card_status(card_id, "✅ Done")
    world.discord.archive_thread(thread)

    await press(world, first, "reroll", user=world.alice)
    second = await world.result_in(thread, after=int(first["id"]))
    job = re.search(r"job \d+", second["embeds"][0]["footer"]["text"])
    assert job is not None

    await world.discord.wait_for_message(
        lambda m: int(m["id"]) == card_id and m["embeds"][0]["footer"]["text"].endswith(job[0])
    )
    assert [r["code"] for r in world.discord.rejections] == []  # no 50083: it waited


async def test_a_locked_thread_gets_its_results_in_the_channel_above(world: World):
    interaction = await world.imagine("a harbour")
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    first = await world.result_in(card_id)
    world.discord.lock_thread(card_id)  # a moderator: only Manage Threads may post now

    await press(world, first, "reroll", user=world.alice)
    second = await world.result_in(
        world.channel, predicate=lambda m: bool(m["attachments"]) and int(m["id"]) != card_id
    )

    assert second["embeds"][0]["description"] == "a harbour"
    assert world.discord.rejections == []  # the gateway said it was locked: no 160005


async def test_a_thread_locked_while_the_job_ran_still_gets_its_results(world: World):
    def locks_quietly(params: dict[str, Any], index: int) -> bool:
        world.discord.threads[card_id]["locked"] = True  # no THREAD_UPDATE reached the bot yet
        return False

    interaction = await world.imagine("a harbour")
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    first = await world.result_in(card_id)
    world.api.nsfw = locks_quietly

    await press(world, first, "reroll", user=world.alice)
    await world.result_in(
        world.channel, predicate=lambda m: bool(m["attachments"]) and int(m["id"]) != card_id
    )

    assert [r["code"] for r in world.discord.rejections] == [160005]


async def test_imagine_in_a_locked_thread_is_refused_privately(world: World):
    thread = world.discord.add_thread(world.channel, "closed")
    world.discord.lock_thread(thread)
    interaction = await world.imagine(channel=thread)
    response = await interaction.response()

    assert interaction.ephemeral and "locked" in response["data"]["content"]
    assert world.api.calls == 0


async def test_with_manage_threads_the_bot_posts_in_a_locked_thread(world: World):
    perms = rules.DEFAULT_BOT_PERMISSIONS | rules.MANAGE_THREADS
    channel = world.discord.add_text_channel(world.guild, "modded", bot_permissions=perms)
    interaction = await world.imagine(channel=channel, user=world.alice)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    first = await world.result_in(card_id)
    world.discord.lock_thread(card_id)

    await press(world, first, "reroll", user=world.alice)
    second = await world.result_in(card_id, after=int(first["id"]))
    assert second["attachments"] and world.discord.rejections == []
