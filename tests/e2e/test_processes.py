"""The bot as operators run it: separate processes (tests/botprocess.py) on one database.

Each bot here is a child process against this process's fakes, stopped by SIGTERM or killed by
SIGKILL. Tests marked xfail need the database queue and shards (DESIGN §9, issue 12); they run
anyway, so they show when those land.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import text

from services.store import SCHEMA_VERSION, Store
from tests.botprocess import BotProcess, BotProcesses
from tests.fakes.aimlapi import FakeAimlApi
from tests.world import COMMAND_REPLIES, World

postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
#: A job's one log line once it ended (services/metrics.py).
JOB_DONE = re.compile(r"^job id=(\d+) outcome=done ")


def assert_api_concurrency(api: FakeAimlApi, cap: int) -> None:
    """The API never had more than ``cap`` generation calls at once, and was used at all."""
    assert api.max_in_flight >= 1, "no generation call reached the API"
    assert api.max_in_flight <= cap, (
        f"{api.max_in_flight} generation calls at once, over MAX_CONCURRENT_JOBS={cap}"
    )


def results_in(world: World, thread_id: int) -> list[dict[str, Any]]:
    """Every result message (with files) the bot posted in a job's thread."""
    return [
        m
        for m in world.discord.messages(thread_id)
        if m["attachments"] and m["type"] not in COMMAND_REPLIES
    ]


async def test_a_bot_process_serves_imagine_and_stops_on_sigterm(
    fakes: World, bot_processes: BotProcesses
):
    bot = await bot_processes.start()
    card_id = await fakes.card_of(await fakes.imagine("a lighthouse, from another process"))
    result = await fakes.result_in(card_id)

    assert result["attachments"], result["content"]
    done = await bot.wait_for_log(JOB_DONE)
    assert await bot.stop() == 0
    await bot.wait_for_log("^fluxbot stopping:", after=bot.logs.index(done), timeout=1)
    assert fakes.api.calls == 1


async def test_sigterm_mid_job_then_a_new_process_posts_the_image_once(
    fakes: World, bot_processes: BotProcesses
):
    settings = {"max_concurrent_jobs": 1, "shutdown_grace_seconds": 0.2}
    first = await bot_processes.start(**settings)
    fakes.api.latency = 30  # the call is still running at the stop
    card_id = await fakes.card_of(await fakes.imagine("interrupted by a restart"))
    await fakes.api.wait_for_calls(1, timeout=15)

    assert await first.stop() == 0
    await first.wait_for_log(r"still running after 0\.2s; interrupted")
    fakes.api.latency = 0.01
    second = await bot_processes.start(**settings)
    await second.wait_for_log(JOB_DONE)
    assert await second.stop() == 0

    assert len(results_in(fakes, card_id)) == 1
    assert not [line for line in first.logs if JOB_DONE.match(line.message)]
    assert fakes.api.calls == 2


async def test_sigkill_mid_job_then_a_new_process_posts_the_image_once(
    fakes: World, bot_processes: BotProcesses
):
    first = await bot_processes.start(max_concurrent_jobs=1, job_lease_seconds=2)
    fakes.api.latency = 30
    card_id = await fakes.card_of(await fakes.imagine("the process dies under it"))
    await fakes.api.wait_for_calls(1, timeout=15)

    assert await first.kill() == -9
    fakes.api.latency = 0.01
    second = await bot_processes.start(max_concurrent_jobs=1, job_lease_seconds=2)
    # Once the dead process's lease has run out (2 s), not before: it might only be slow.
    await second.wait_for_log(r"generations were interrupted mid-call")
    await second.wait_for_log(JOB_DONE)
    assert await second.stop() == 0

    assert len(results_in(fakes, card_id)) == 1
    assert fakes.api.calls == 2


@postgresql_only
async def test_two_processes_start_at_once_on_an_empty_database_and_each_serves(
    fakes: World, bot_processes: BotProcesses
):
    """Both migrate the same empty database at the same moment; each then works on it."""
    first, second = await asyncio.gather(bot_processes.start(), bot_processes.start())
    async with await Store.open(fakes.database_url) as store, store.engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version FROM schema_version"))).all()
    assert versions == [(SCHEMA_VERSION,)]
    steps = [
        int(step[1])
        for bot in (first, second)
        for line in bot.logs
        if (step := re.match(r"database schema (\d+) -> \d+:", line.message))
    ]
    assert sorted(steps) == list(range(SCHEMA_VERSION)), "each step applied once, by either"

    # Until shards split the interactions, one gateway at a time may answer them.
    assert await second.stop() == 0
    card_id = await fakes.card_of(await fakes.imagine("made by the first"))
    result = await fakes.result_in(card_id)
    assert await first.stop() == 0
    third = await bot_processes.start()
    reroll = await fakes.discord.click(
        card_id, int(result["id"]), _button(result, "reroll"), user_id=fakes.alice
    )
    rerolled = await fakes.result_in(card_id, after=int(result["id"]))

    assert rerolled["attachments"] and reroll.ack_latency is not None
    assert JOB_DONE.match((await first.wait_for_log(JOB_DONE)).message)
    assert JOB_DONE.match((await third.wait_for_log(JOB_DONE)).message)
    assert not [line for line in second.logs if JOB_DONE.match(line.message)]


def _button(message: dict[str, Any], action: str) -> str:
    ids = [c.get("custom_id", "") for row in message["components"] for c in row["components"]]
    return next(i for i in ids if i.startswith(f"fluxbot:{action}:"))


async def _shards(
    fakes: World, processes: BotProcesses, **settings: Any
) -> tuple[list[BotProcess], list[tuple[int, int]]]:
    """Two bot processes, shards 0 and 1 of 2, and a (guild, channel) on each shard."""
    places = []
    for shard in (0, 1):
        place = fakes.guild_on_shard(shard, 2)
        places.append((place.guild, place.channel))
    bots = await asyncio.gather(
        *(
            processes.start(
                f"shard{shard}",
                shard_count=2,
                shard_ids=str(shard),
                shutdown_grace_seconds=1,
                **settings,
            )
            for shard in (0, 1)
        )
    )
    return list(bots), places


def _served(bot: BotProcess) -> set[str]:
    """The guilds whose jobs ``bot`` finished, from its job lines."""
    return {
        m[1]
        for line in bot.logs
        if JOB_DONE.match(line.message) and (m := re.search(r"\bguild=(\d+)", line.message))
    }


@postgresql_only
async def test_two_shards_in_two_processes_each_answer_their_own_guild(
    fakes: World, bot_processes: BotProcesses
):
    await _shards(fakes, bot_processes)
    places = [fakes.guild_on_shard(shard, 2) for shard in (0, 1)]
    interactions = [
        await fakes.imagine(f"on shard {shard}", user=place.member, channel=place.channel)
        for shard, place in enumerate(places)
    ]
    for interaction in interactions:
        assert (await fakes.result_in(await fakes.card_of(interaction)))["attachments"]

    # Each command reached its own shard's process only (either may run the job itself).
    assert [i.delivered_to for i in interactions] == [[(0, 2)], [(1, 2)]]
    assert fakes.api.calls == 2
    assert not await bot_processes.close()


@postgresql_only
async def test_two_processes_share_one_concurrency_cap(fakes: World, bot_processes: BotProcesses):
    cap = 2
    _, places = await _shards(fakes, bot_processes, max_concurrent_jobs=cap)
    fakes.api.latency = 0.3
    interactions = []
    for guild, _ in places:
        members = [fakes.discord.add_member(guild, f"m{n}") for n in range(3)]
        for n in range(6):  # a channel each: Discord's per-channel budget is not what is tested
            channel = fakes.discord.add_text_channel(guild, f"art-{n}")
            interactions.append(
                await fakes.imagine(f"job {n} in {guild}", user=members[n % 3], channel=channel)
            )
    cards = [await fakes.card_of(i) for i in interactions]
    for card_id in cards:
        assert (await fakes.result_in(card_id))["attachments"]

    assert fakes.api.calls == 12
    assert_api_concurrency(fakes.api, cap)
    assert not await bot_processes.close()


@postgresql_only
async def test_a_process_killed_with_jobs_claimed_the_other_posts_each_once(
    fakes: World, bot_processes: BotProcesses
):
    # A lease short enough to run out within result_in's wait.
    settings = {"shard_count": 2, "max_concurrent_jobs": 2, "job_lease_seconds": 2}
    victim = await bot_processes.start("victim", shard_ids="0", **settings)
    place = fakes.guild_on_shard(0, 2)
    guild = place.guild
    members = [fakes.discord.add_member(guild, f"m{n}") for n in range(3)]
    fakes.api.latency = 30
    cards = []
    for n in range(3):  # a channel each: Discord's per-channel budget is not what is tested
        channel = fakes.discord.add_text_channel(guild, f"art-{n}")
        imagined = await fakes.imagine(f"job {n}", user=members[n], channel=channel)
        cards.append(await fakes.card_of(imagined))
    await fakes.api.wait_for_calls(2, timeout=15)  # two claimed by the victim, one waiting
    survivor = await bot_processes.start("survivor", shard_ids="1", **settings)

    assert await victim.kill() == -9
    fakes.api.latency = 0.01
    for card_id in cards:
        result = await fakes.result_in(card_id)  # after the lease the victim held ran out
        assert result["attachments"], result["content"]

    assert [len(results_in(fakes, card_id)) for card_id in cards] == [1, 1, 1]
    assert _served(survivor) == {str(guild)}
    assert not await bot_processes.close()
