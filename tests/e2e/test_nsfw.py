"""Content flagged by the API: withheld outside NSFW channels, a spoiler inside; the safety
checker stays on unless a guild's admins turned it off, and then only in NSFW channels."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord import rules
from tests.world import World

WITHHELD = "🔞"


async def settings_command(world: World, user: int, **options: Any) -> dict[str, Any]:
    interaction = await world.discord.invoke_command(
        "fluxbot-settings", options, user_id=user, channel_id=world.channel
    )
    response = await interaction.response()
    assert interaction.ephemeral
    return response


def admin(world: World) -> int:
    permissions = rules.DEFAULT_MEMBER_PERMISSIONS | (1 << 5)  # MANAGE_GUILD
    return world.discord.add_member(world.guild, "owner", permissions=permissions)


async def run(world: World, channel: int) -> list[dict[str, Any]]:
    """/imagine in ``channel``; returns every message in the card's thread once it is done."""
    interaction = await world.imagine(channel=channel)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    await world.card_status(card_id, "✅ Done")
    return world.discord.messages(card_id)


async def test_flagged_image_is_withheld_in_an_ordinary_channel(world: World):
    world.api.nsfw = True
    thread = await run(world, world.channel)

    assert world.api.requests[0]["enable_safety_checker"] is True
    assert not [m for m in thread if m["attachments"]]
    notice = next(m for m in thread if m["content"].startswith(WITHHELD))
    assert "withheld" in notice["content"] and "not marked NSFW" in notice["content"]
    assert world.discord.rejections == []


async def test_flagged_image_is_a_spoiler_in_an_nsfw_channel(world: World):
    world.api.nsfw = True
    after_dark = world.discord.add_text_channel(world.guild, "after-dark", nsfw=True)
    thread = await run(world, after_dark)

    assert world.api.requests[0]["enable_safety_checker"] is True  # still on by default
    [result] = [m for m in thread if m["attachments"]]
    assert all(a["filename"].startswith("SPOILER_") for a in result["attachments"])
    assert "image" not in result["embeds"][0]  # the embed must not show it unblurred
    assert not any(m["content"].startswith(WITHHELD) for m in thread)


async def test_flagged_image_is_withheld_in_a_dm(world: World):
    world.api.nsfw = True
    user = world.discord.add_user("carol")
    dm = world.discord.add_dm(user)
    interaction = await world.imagine(user=user, channel=dm)
    await interaction.response()
    notice = await world.result_in(dm, predicate=lambda m: m["content"].startswith(WITHHELD))

    assert "withheld" in notice["content"]
    results = [a for m in world.discord.messages(dm) for a in m["attachments"]]
    assert [a["filename"] for a in results if not a["filename"].startswith("reference")] == []
    assert world.api.requests[0]["enable_safety_checker"] is True


async def test_checker_off_applies_only_in_nsfw_channels(world: World):
    owner = admin(world)
    response = await settings_command(world, owner, unfiltered_in_nsfw=True)
    assert "off in channels marked NSFW" in response["data"]["content"]
    after_dark = world.discord.add_text_channel(world.guild, "after-dark", nsfw=True)
    thread = world.discord.add_thread(after_dark, "in a thread")

    await run(world, after_dark)
    await run(world, world.channel)
    interaction = await world.imagine(channel=thread)
    await interaction.response()
    await world.card_status(int(interaction.original_message["id"]), "✅ Done")

    flags = [r["enable_safety_checker"] for r in world.api.requests]
    assert flags == [False, True, False]  # NSFW channel, ordinary channel, NSFW channel's thread
