"""A busy channel under Discord's own per-channel limits (5 sends, 5 edits, 5 threads per 5 s):
nothing Discord-side stands between a command and its API call, and each job costs the channel
few writes."""

from __future__ import annotations

import asyncio
import re

from tests.world import World

THREADS = r"^/channels/\d+/messages/\d+/threads$"
CHANNEL_WRITE = re.compile(r"^/channels/(\d+)/(messages|threads)")


def parent_writes(world: World) -> list[str]:
    """Successful writes (sends, edits, threads) in the test's channel, its threads excluded."""
    return [
        f"{r.method} {r.path}"
        for r in world.discord.requests
        if r.method in ("POST", "PATCH")
        and 200 <= r.status < 300
        and (m := CHANNEL_WRITE.match(r.path))
        and int(m[1]) == world.channel
    ]


async def test_the_api_call_waits_for_neither_the_thread_nor_the_card(world: World):
    # The channel's thread budget is spent: the thread comes 2 s late.
    world.discord.rate_limit_next("POST", THREADS, retry_after=2.0)
    attachment = world.upload()
    interaction = await world.imagine("a lighthouse", attachment=attachment)
    card_id = await world.card_of(interaction)
    await world.api.wait_for_calls(1)

    assert card_id not in world.discord.threads  # the API call did not wait for it
    sent = world.api.requests[0]["image_url"]
    assert f"/{attachment['id']}/" in sent  # the member's own file: no re-host first

    result = await world.result_in(card_id)  # posted once the thread exists
    assert result["attachments"]
    card = await world.card_status(card_id, "✅ Done")
    assert card["attachments"][0]["filename"].startswith("reference")  # kept for rerolls
    assert world.discord.rejections == []


async def test_a_file_that_needs_changing_is_rehosted_before_the_call(world: World):
    from tests import images

    # EXIF orientation: it must be turned upright and stripped before anyone sees it.
    attachment = world.upload(
        images.jpeg_with_exif_orientation(64, 48), filename="cat.jpg", content_type="image/jpeg"
    )
    interaction = await world.imagine("a lighthouse", attachment=attachment)
    card_id = await world.card_of(interaction)
    await world.result_in(card_id)

    sent = world.api.requests[0]["image_url"]
    assert f"/attachments/{world.channel}/" in sent and f"/{attachment['id']}/" not in sent
    assert world.discord.rejections == []


async def test_six_commands_in_one_channel_reach_the_api_before_its_thread_budget_allows(
    world: World,
):
    members = [world.discord.add_member(world.guild, f"member{n}") for n in range(6)]
    interactions = await asyncio.gather(
        *(world.imagine(f"job {n}", user=member) for n, member in enumerate(members))
    )
    cards = [await world.card_of(interaction) for interaction in interactions]
    await world.api.wait_for_calls(6)

    assert len(world.discord.threads) <= 5  # the sixth thread must wait about 5 s; the API didn't
    for card_id in cards:
        assert (await world.result_in(card_id))["attachments"]
    assert world.bot is not None
    await world.bot.generations.cards.flush()

    writes = parent_writes(world)
    assert sum("/threads" in w for w in writes) == 6
    assert len(writes) <= 3 * len(cards)  # a thread and at most two card edits per job
    assert world.discord.rejections == []
