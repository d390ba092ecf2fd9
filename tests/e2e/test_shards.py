"""A process's role (DESIGN §9): the shards it connects (``SHARD_COUNT``, ``SHARD_IDS``), or
none at all (``WORKER_ONLY``), against a fake Discord that routes events by shard as Discord does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from discord.ext import commands

import bot as bot_module
from services.store import GenerationStatus
from tests.world import ReadySignal, World


async def test_one_process_on_both_shards_serves_imagine_in_a_guild_on_each(world: World):
    places = [world.guild_on_shard(0), world.guild_on_shard(1)]
    world.discord.max_concurrency = 2  # both shards may IDENTIFY at once: no 5 s wait
    identified = len(world.discord.identifies)
    bot = await world.restart_bot(shard_count=2, shard_ids=(0, 1))

    assert isinstance(bot, commands.AutoShardedBot)
    assert world.discord.identifies[identified:] == [(0, 2), (1, 2)]
    assert sorted(bot.shards) == [0, 1]
    for shard_id, place in enumerate(places):
        guild = bot.get_guild(place.guild)
        assert guild is not None and guild.shard_id == shard_id
        interaction = await world.imagine(
            f"on shard {shard_id}", user=place.member, channel=place.channel
        )
        assert interaction.delivered_to == [(shard_id, 2)]
        result = await world.result_in(await world.card_of(interaction))
        assert result["attachments"]


async def test_a_process_on_shard_0_gets_only_shard_0s_interactions(world: World):
    zero, one = world.guild_on_shard(0), world.guild_on_shard(1)
    identified = len(world.discord.identifies)
    bot = await world.restart_bot(shard_count=2, shard_ids=(0,))

    assert world.discord.identifies[identified:] == [(0, 2)]
    assert bot.get_guild(zero.guild) is not None and bot.get_guild(one.guild) is None
    elsewhere = await world.imagine("on shard 1", user=one.member, channel=one.channel)
    assert elsewhere.delivered_to == [], "no session of shard 1 is connected"
    here = await world.imagine("on shard 0", user=zero.member, channel=zero.channel)
    assert here.delivered_to == [(0, 2)]
    assert (await world.result_in(await world.card_of(here)))["attachments"]
    assert elsewhere.callback is None and world.api.calls == 1


async def stored_job(world: World, channel: int | None = None) -> int:
    """A job stored and left waiting by a gateway bot without delivery, which then stops: the
    card's id."""
    gateway_bot = world.bot
    assert gateway_bot is not None
    await gateway_bot.unload_extension("cogs.delivery")
    card_id = await world.card_of(await world.imagine("run by the worker", channel=channel))
    await world.card_status(card_id, "⏳ Queued")
    await world.stop_bot()
    return card_id


async def test_a_worker_only_process_posts_a_stored_job_without_a_gateway(world: World):
    card_id = await stored_job(world)
    identified = len(world.discord.identifies)

    worker = await world.start_bot(worker_only=True)
    result = await world.result_in(card_id)

    assert result["attachments"] and world.api.calls == 1
    await world.card_status(card_id, "✅ Done")
    generation = await worker.store.generations.latest_for_card(card_id)
    assert generation is not None and generation.status is GenerationStatus.DONE
    assert len(world.discord.identifies) == identified and not world.discord.connected
    assert set(worker.extensions) == bot_module.WORKER_EXTENSIONS
    assert world.discord.rejections == []


async def test_a_worker_asks_discord_whether_a_channel_is_nsfw(world: World):
    """No gateway, no cached channels: a flagged image in an NSFW channel is still a spoiler."""
    world.api.nsfw = True
    after_dark = world.discord.add_text_channel(world.guild, "after-dark", nsfw=True)
    card_id = await stored_job(world, after_dark)

    await world.start_bot(worker_only=True)
    result = await world.result_in(card_id)

    assert all(a["filename"].startswith("SPOILER_") for a in result["attachments"])


async def test_a_worker_only_process_stops_cleanly_on_sigterm(world: World, caplog):
    await world.stop_bot()
    worker = bot_module.create_bot(world.settings(worker_only=True))
    ready = ReadySignal()
    logging.getLogger("fluxbot").addHandler(ready)
    loop = asyncio.get_running_loop()
    running = asyncio.create_task(bot_module.run(worker))
    try:
        await asyncio.wait_for(ready.event.wait(), 15)
        os.kill(os.getpid(), signal.SIGTERM)  # run() turns it into bot.close(), as in production
        await asyncio.wait_for(running, 15)
    finally:
        logging.getLogger("fluxbot").removeHandler(ready)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    assert worker.is_closed()
    assert "fluxbot stopping:" in caplog.text and "worker only (no gateway)" in caplog.text
    assert not world.discord.connected
