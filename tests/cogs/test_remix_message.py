"""Remix with fluxbot (message context menu) end to end: any picture, then the /imagine path."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from yarl import URL

from cogs.remix_message import media_url_allowed
from tests import images
from tests.fakes.discord import rules
from tests.world import World

MENU = "Remix with fluxbot"


def fields(message: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message["embeds"][0].get("fields", [])}


async def open_menu(world: World, message: dict[str, Any], *, user: int | None = None):
    return await world.discord.invoke_message_command(
        MENU, int(message["channel_id"]), int(message["id"]), user_id=user or world.alice
    )


async def remix(world: World, opened: Any, values: dict[str, str]) -> int:
    """Submit the form; the id of the job card it answered with."""
    assert (await opened.response())["type"] == 9
    submitted = await world.discord.submit_modal(opened, values)
    return await world.card_of(submitted)


def picture_size(world: World, url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(world.discord.attachment_bytes(url))).size


async def test_a_message_without_an_image_is_told_so_privately(world: World):
    posted = world.discord.post_message(world.channel, world.bob, "just words, no picture")
    opened = await open_menu(world, posted)
    response = await opened.response()
    assert opened.ephemeral and "no image in that message" in response["data"]["content"]
    assert world.api.calls == 0 and world.discord.threads == {}


async def test_an_attached_picture_goes_the_imagine_way(world: World):
    posted = world.discord.post_message(
        world.channel, world.bob, "my cat", files=[("cat.png", images.png(80, 64))]
    )
    opened = await open_menu(world, posted)
    modal = (await opened.response())["data"]
    assert modal["title"] == MENU
    card_id = await remix(world, opened, {"prompt": "the cat as a knight", "strength": "0.6"})
    result = await world.result_in(card_id)  # in the thread on the new card

    body = world.api.requests[0]
    assert body["prompt"] == "the cat as a knight" and body["strength"] == 0.6
    assert picture_size(world, body["image_url"]) == (80, 64)
    card = await world.card_status(card_id, "✅ Done")
    assert card["attachments"][0]["filename"].startswith("reference")
    assert world.discord.threads[card_id]["name"] == "the cat as a knight"
    assert "the picture on the job card" in fields(result)["From"]
    assert world.bot is not None
    stored = await world.bot.store.generations.get(1)
    assert stored is not None and stored.kind == "message" and stored.user_id == world.alice


async def test_an_image_embed_is_read_through_discords_proxy(world: World):
    embed = world.discord.image_embed(images.png(48, 32))
    posted = world.discord.post_message(
        world.channel, world.bob, "https://images.example/cat.png", embeds=[embed]
    )
    card_id = await remix(world, await open_menu(world, posted), {"prompt": "in watercolour"})
    result = await world.result_in(card_id)

    assert result["attachments"]
    body = world.api.requests[0]
    assert body["strength"] == 0.95  # the form's default
    assert picture_size(world, body["image_url"]) == (48, 32)


async def test_one_of_the_bots_own_results_becomes_the_source(world: World):
    first_card = await world.card_of(await world.imagine("two foxes", count=2))
    result = await world.result_in(first_card)
    opened = await open_menu(world, result)
    picker = await opened.response()
    assert opened.ephemeral
    [row] = picker["data"]["components"]
    [menu] = row["components"]
    assert [o["label"] for o in menu["options"]] == [a["filename"] for a in result["attachments"]]
    await world.restart_bot()  # the picker still works after a restart

    picked = await world.discord.choose(
        first_card,
        int(opened.original_message_id or 0),
        menu["custom_id"],
        ["1"],
        user_id=world.alice,
    )
    card_id = await remix(world, picked, {"prompt": "the second fox, in the snow"})
    # Used inside the thread, like /imagine there: the card and its results go to the thread.
    second = await world.result_in(first_card, after=card_id)

    link = f"https://discord.com/channels/{world.guild}/{first_card}/{result['id']}"
    assert fields(second)["From"] == f"[image 2 of job 1]({link})"
    # A reroll of it starts from that result image again, fetched fresh from its message.
    reroll = await world.discord.click(
        int(second["channel_id"]),
        int(second["id"]),
        next(
            c["custom_id"]
            for r in second["components"]
            for c in r["components"]
            if c["custom_id"].startswith("fluxbot:reroll:")
        ),
        user_id=world.alice,
    )
    await reroll.response()
    await world.result_in(int(second["channel_id"]), after=int(second["id"]))
    third_call = world.api.requests[2]
    assert f"/{result['attachments'][1]['id']}/" in third_call["image_url"]


async def test_a_message_deleted_before_the_form_is_sent_costs_nothing(world: World):
    posted = world.discord.post_message(
        world.channel, world.bob, files=[("cat.png", images.png(20, 20))]
    )
    opened = await open_menu(world, posted)
    await opened.response()
    world.discord.delete_message(world.channel, int(posted["id"]))

    submitted = await world.discord.submit_modal(opened, {"prompt": "too late"})
    response = await submitted.response()
    assert submitted.ephemeral and "can't find that message" in response["data"]["content"]
    assert world.api.calls == 0


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://media.discordapp.net/external/abc/cat.png", True),
        ("https://images-ext-1.discordapp.net/external/x/y.png", True),
        ("https://cdn.discordapp.com/attachments/1/2/cat.png", True),
        ("http://media.discordapp.net/external/abc/cat.png", False),
        ("https://evil.example/cat.png", False),
        ("https://discordapp.net.evil.example/cat.png", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://127.0.0.1:9/cat.png", True),
    ],
)
def test_embedded_images_are_fetched_only_from_discords_proxy(url: str, allowed: bool):
    assert media_url_allowed(URL(url)) is allowed


async def test_an_attached_picture_goes_to_the_api_as_sent(world: World):
    # The file needs no change, so the API reads the member's own attachment: no Discord write
    # between the form and the API call; the card keeps its copy for later jobs.
    posted = world.discord.post_message(
        world.channel, world.bob, "my cat", files=[("cat.png", images.png(64, 48))]
    )
    card_id = await remix(world, await open_menu(world, posted), {"prompt": "a knight"})
    await world.result_in(card_id)

    [own] = posted["attachments"]
    assert f"/{own['id']}/" in world.api.requests[0]["image_url"]
    card = await world.card_status(card_id, "✅ Done")
    assert card["attachments"][0]["filename"].startswith("reference")
    assert world.discord.rejections == []


async def test_a_channel_missing_a_permission_is_refused_privately_naming_it(world: World):
    perms = rules.DEFAULT_BOT_PERMISSIONS & ~rules.EMBED_LINKS
    channel = world.discord.add_text_channel(world.guild, "no-embeds", bot_permissions=perms)
    posted = world.discord.post_message(
        channel, world.bob, "my cat", files=[("cat.png", images.png(64, 48))]
    )
    opened = await open_menu(world, posted)
    response = await opened.response()

    assert opened.ephemeral and response["type"] == 4  # no form to fill in for nothing
    assert "**Embed Links**" in response["data"]["content"]
    assert f"<#{channel}>" in response["data"]["content"]
    assert world.api.calls == 0 and world.discord.threads == {}
    assert world.discord.rejections == []
