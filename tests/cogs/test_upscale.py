"""Upscale on a result image end to end: the upscaler's own body, a fitted copy of a picture over
its 4.7 MB input limit (re-hosted, reused by a reroll), and a result re-encoded to fit a channel."""

from __future__ import annotations

import io
import re
from typing import Any

from PIL import Image

from services.model_registry import DREAMINA_UPSCALE
from tests import images
from tests.world import World

MIB = 1024 * 1024


def fields(message: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message["embeds"][0].get("fields", [])}


def custom_id(message: dict[str, Any], action: str) -> str:
    ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
    return next(i for i in ids if i.startswith(f"fluxbot:{action}:"))


def attachment_id(url: str) -> str:
    return url.split("/attachments/", 1)[1].split("/")[1]


def with_embed(message: dict[str, Any]) -> bool:
    return bool(message["embeds"])


def size_of(world: World, attachment: dict[str, Any]) -> tuple[int, int]:
    return Image.open(io.BytesIO(world.discord.attachment_bytes(attachment))).size


async def press(world: World, message: dict[str, Any], action: str, *, user: int | None = None):
    return await world.discord.click(
        int(message["channel_id"]),
        int(message["id"]),
        custom_id(message, action),
        user_id=user or world.alice,
    )


async def upscaled(world: World, thread: int, message: dict[str, Any]) -> dict[str, Any]:
    """Press Upscale on ``message``; the next result in the thread."""
    pressed = await press(world, message, "upscale")
    await pressed.response()
    await world.discord.wait_for(lambda _: pressed.followup_ids)
    assert pressed.followups[0]["content"].startswith("🔍 On it")
    return await world.result_in(thread, after=int(message["id"]), predicate=with_embed)


async def test_upscale_of_a_result_sends_the_upscalers_body(world: World):
    card_id = await world.card_of(await world.imagine("a cat in a hat"))
    result = await world.result_in(card_id)
    job = custom_id(result, "reroll").rsplit(":", 1)[1]
    bigger = await upscaled(world, card_id, result)

    body = world.api.requests[1]
    assert body == {
        "model": DREAMINA_UPSCALE,
        "image_url": body["image_url"],
        "resolution": "2k",
        "scale": 50,
    }
    assert attachment_id(body["image_url"]) == result["attachments"][0]["id"]
    assert size_of(world, bigger["attachments"][0]) == (2048, 1536)  # 64×48 to 2K
    shown = fields(bigger)
    assert shown["Model"] == "Dreamina upscale"
    assert (shown["Resolution"], shown["Detail"]) == ("2k", "50")
    assert "Strength" not in shown and "Seed" not in shown and "Note" not in shown
    assert shown["From"].startswith(f"[image 1 of job {job}](")
    # An upscale is a result like any other: Info names its model, and it can be varied.
    info = await (await press(world, bigger, "info")).response()
    info_fields = {f["name"]: f["value"] for f in info["data"]["embeds"][0]["fields"]}
    assert info_fields["Model"] == DREAMINA_UPSCALE
    await (await press(world, bigger, "vary-subtle")).response()
    varied_result = await world.result_in(card_id, after=int(bigger["id"]), predicate=with_embed)
    varied = world.api.requests[2]
    assert varied["model"] == "flux/dev/image-to-image" and varied["prompt"] == "a cat in a hat"
    assert attachment_id(varied["image_url"]) == bigger["attachments"][0]["id"]
    # Its Remix form asks for what the upscaler reads, and runs the upscaler again.
    remix = await press(world, bigger, "remix")
    form = (await remix.response())["data"]
    inputs = [c["custom_id"] for row in form["components"] for c in row.get("components", [])]
    inputs += [row["component"]["custom_id"] for row in form["components"] if "component" in row]
    assert inputs == ["resolution", "detail"]
    submitted = await world.discord.submit_modal(remix, {"resolution": "4k", "detail": "20"})
    await submitted.response()
    await world.result_in(card_id, after=int(varied_result["id"]), predicate=with_embed)
    again = world.api.requests[3]
    assert (again["model"], again["resolution"], again["scale"]) == (DREAMINA_UPSCALE, "4k", 20)
    assert attachment_id(again["image_url"]) == result["attachments"][0]["id"]
    assert world.discord.rejections == []


async def test_an_upscales_input_over_the_limit_is_fitted_and_rehosted(world: World):
    world.api.noisy_results = True  # random pixels: the 2K result is a ~9.4 MB PNG
    card_id = await world.card_of(await world.imagine())
    result = await world.result_in(card_id)
    first = await upscaled(world, card_id, result)
    [big] = first["attachments"]
    assert big["size"] > 4_700_000 and big["filename"].endswith(".png")
    assert "Note" not in fields(first)  # it fits the channel's 10 MB as it is

    second = await upscaled(world, card_id, first)

    [copy] = [
        m
        for m in world.discord.messages(card_id)
        if int(first["id"]) < int(m["id"]) < int(second["id"])
    ]
    [fitted] = copy["attachments"]
    assert copy["content"].startswith("🔍 Image 1 is 9.4 MB; Dreamina upscale takes PNG or JPEG")
    assert fitted["filename"] == "reference.jpg" and fitted["size"] <= 4_700_000
    body = world.api.requests[2]
    assert attachment_id(body["image_url"]) == fitted["id"]  # and the fake API accepted it
    assert second["attachments"] and size_of(world, second["attachments"][0])[0] == 2048

    # A reroll of that upscale, once every URL has expired, uses the same copy again.
    world.discord.advance_clock(2 * 24 * 3600)
    await (await press(world, second, "reroll")).response()
    await world.result_in(card_id, after=int(second["id"]), predicate=with_embed)
    rerolled = world.api.requests[3]
    assert attachment_id(rerolled["image_url"]) == fitted["id"]
    assert rerolled["image_url"] != body["image_url"]  # signed again
    assert sum(m["content"].startswith("🔍") for m in world.discord.messages(card_id)) == 1
    assert world.discord.rejections == []


async def test_an_upscale_over_the_channels_upload_limit_is_reencoded_with_a_note(world: World):
    # The bot's own limit is the guild's boost tier (10 MiB at tier 0), never a member's; a
    # square picture upscales to 2048 x 2048 of noise, about 12 MB as PNG.
    world.api.noisy_results = True
    small = world.discord.add_guild("Small Server")
    channel = world.discord.add_text_channel(small, "art")
    carol = world.discord.add_member(small, "carol")
    square = world.upload(images.png(64, 64), channel=channel)
    card_id = await world.card_of(
        await world.imagine(user=carol, channel=channel, attachment=square)
    )
    result = await world.result_in(card_id)

    pressed = await world.discord.click(
        card_id, int(result["id"]), custom_id(result, "upscale"), user_id=carol
    )
    await pressed.response()
    bigger = await world.result_in(card_id, after=int(result["id"]), predicate=with_embed)

    [attachment] = bigger["attachments"]
    assert attachment["size"] <= 10 * MIB and not attachment["filename"].endswith(".png")
    note = fields(bigger)["Note"]
    assert note.startswith("Image 1 was re-encoded as ")
    assert re.search(
        r"the original was 1[1-3](\.\d)? MB\) to fit this channel's 10 MB upload limit\.$", note
    ), note
    assert world.discord.rejections == []
