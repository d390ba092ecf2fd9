"""The job queue end to end: many members at once, caps, quotas, 429 storms, restarts, cancel."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.jobs import QUEUED_FOR_RESTART
from tests.world import World


class LogSignal(logging.Handler):
    """Sets ``event`` when a record from ``logger`` starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.INFO)
        self.prefix = prefix
        self.event = asyncio.Event()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.prefix):
            self.seen.append(message)
            self.event.set()


def card_button(world: World, card_id: int, action: str) -> str | None:
    message = world.discord._render(world.discord._messages[card_id])
    ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
    return next((i for i in ids if i.startswith(f"fluxbot:{action}:")), None)


async def test_thirty_commands_from_ten_members_are_all_answered_and_delivered(world: World):
    await world.restart_bot(max_concurrent_jobs=4, max_queued_per_user=3)
    world.api.latency = 0.05
    members = [world.discord.add_member(world.guild, f"member{n}") for n in range(10)]
    # Six channels: Discord's per-channel budgets (5 threads and 5 edits per 5 s) would
    # otherwise set the pace; tests/e2e/test_busy_channel.py covers one busy channel.
    channels = [world.channel, *(world.discord.add_text_channel(world.guild, c) for c in "uvwxy")]
    interactions = await asyncio.gather(
        *(
            world.imagine(f"job {i}", user=members[i % 10], channel=channels[i % 6])
            for i in range(30)
        )
    )
    cards = [await world.card_of(interaction) for interaction in interactions]

    assert max(i.ack_latency for i in interactions) < 3.0
    for card_id in cards:
        result = await world.result_in(card_id)
        assert result["attachments"], result["content"]
    assert world.api.calls == 30
    assert 1 < world.api.max_in_flight <= 4
    assert sorted(r["prompt"] for r in world.api.requests) == sorted(f"job {i}" for i in range(30))


async def test_over_the_per_member_cap_is_refused_privately_and_never_stored(world: World):
    await world.restart_bot(
        max_concurrent_jobs=1, max_queued_per_user=2, shutdown_grace_seconds=0.05
    )
    world.api.latency = 30  # nothing finishes while we look
    await world.card_of(await world.imagine("one"))
    await world.api.wait_for_calls(1)
    await world.card_status(
        await world.card_of(await world.imagine("two")), "⏳ Queued — you're next"
    )
    third = await world.imagine("three")
    response = await third.response()

    assert third.ephemeral
    assert "You have 2 images in progress" in response["data"]["content"]
    assert third.original_message is None
    other = await world.card_of(
        await world.imagine("bob's", user=world.bob)
    )  # the cap is per member
    await world.card_status(other, "⏳ Queued — you're next")  # bob was not served yet
    assert world.bot is not None and (await world.bot.generations.depth())[1] == 2


async def test_a_daily_quota_refuses_commands_and_buttons_and_says_when_it_resets(world: World):
    await world.restart_bot(user_daily_limit=1)
    card_id = await world.card_of(await world.imagine("today's only one"))
    result = await world.result_in(card_id)
    again = await world.imagine("one more")
    response = await again.response()

    assert again.ephemeral
    assert "resets <t:" in response["data"]["content"]
    reroll_id = next(
        c["custom_id"]
        for row in result["components"]
        for c in row["components"]
        if c["custom_id"].startswith("fluxbot:reroll:")
    )
    reroll = await world.discord.click(card_id, int(result["id"]), reroll_id, user_id=world.alice)
    pressed = await reroll.response()
    assert reroll.ephemeral and ":R>" in pressed["data"]["content"]
    assert world.api.calls == 1
    await world.card_of(await world.imagine("bob is fine", user=world.bob))


@pytest.mark.parametrize("storm", ["concurrency", "scripted"])
async def test_a_429_storm_slows_the_queue_and_every_image_is_delivered(world: World, storm):
    await world.restart_bot(max_concurrent_jobs=4, max_queued_per_user=3)
    assert world.bot is not None
    world.bot.generations.queue.backoff_base = (
        0.02  # the fake sends no Retry-After; keep the test quick
    )
    world.api.latency = 0.05
    if storm == "concurrency":
        world.api.max_concurrency = 2  # a plan smaller than MAX_CONCURRENT_JOBS
    else:
        world.api.fail_next(429, times=6, retry_after=0.01)
    members = [world.alice, world.bob, world.moderator]
    # A channel each: Discord's per-channel budgets are not what this test is about.
    channels = [world.channel, *(world.discord.add_text_channel(world.guild, c) for c in "xy")]
    interactions = await asyncio.gather(
        *(
            world.imagine(f"storm {i}", user=members[i % 3], channel=channels[i % 3])
            for i in range(9)
        )
    )
    cards = [await world.card_of(interaction) for interaction in interactions]
    for card_id in cards:
        result = await world.result_in(card_id)
        assert result["attachments"], result["content"]

    assert world.api.calls > 9, "some calls were turned away and tried again"
    assert world.api.max_in_flight <= 4
    failures = [m for m in world.bot_messages() if str(m.get("content")).startswith("❌")]
    assert failures == [], "a 429 never fails a job that is still young"


async def test_jobs_queued_at_a_restart_finish_after_it_in_their_order(world: World, caplog):
    settings = {"max_concurrent_jobs": 1, "shutdown_grace_seconds": 0.2}
    await world.restart_bot(**settings)
    world.api.latency = 30  # the first call is still running at the stop
    users = [world.alice, world.bob, world.moderator]
    cards = []
    for prompt, user in zip(("first", "second", "third"), users, strict=True):
        cards.append(await world.card_of(await world.imagine(prompt, user=user)))
    await world.api.wait_for_calls(1)

    await world.stop_bot()
    assert "generation 1: still running after 0.2s; interrupted" in caplog.text
    world.api.latency = 0.01
    await world.start_bot(**settings)
    for card_id in cards:
        result = await world.result_in(card_id)
        assert result["attachments"], result["content"]

    # Stored order is the order the jobs were accepted, which concurrent intake may swap.
    assert world.bot is not None
    stored = [await world.bot.store.generations.latest_for_card(card_id) for card_id in cards]
    accepted = [g.parameters.prompt for g in sorted(stored, key=lambda g: g.id)]  # type: ignore[union-attr]
    assert [r["prompt"] for r in world.api.requests] == [accepted[0], *accepted]


async def test_a_command_during_shutdown_is_stored_acknowledged_and_run_after_restart(
    world: World,
):
    settings = {"max_concurrent_jobs": 1, "shutdown_grace_seconds": 0.5}
    await world.restart_bot(**settings)
    world.api.latency = 30
    await world.card_of(await world.imagine("running at the stop"))
    await world.api.wait_for_calls(1)
    stopping = LogSignal("fluxbot stopping:")
    logging.getLogger("fluxbot").addHandler(stopping)
    try:
        stop = asyncio.create_task(world.stop_bot())
        await asyncio.wait_for(stopping.event.wait(), 5)
        late = await world.imagine("sent while restarting", user=world.bob)
        card_id = await world.card_of(late)
        await world.discord.wait_for(lambda _: late.followups)
        await stop
    finally:
        logging.getLogger("fluxbot").removeHandler(stopping)

    assert late.followups[0]["content"] == QUEUED_FOR_RESTART
    assert late.followups[0]["flags"] & 64
    assert world.api.calls == 1, "no new API call once stopping"
    world.api.latency = 0.01
    await world.start_bot(**settings)
    result = await world.result_in(card_id)
    assert result["attachments"]


async def test_the_author_can_cancel_a_waiting_job_and_another_member_cannot(world: World):
    await world.restart_bot(max_concurrent_jobs=1, shutdown_grace_seconds=0.05)
    world.api.latency = 30
    await world.card_of(await world.imagine("keeps the slot busy", user=world.bob))
    await world.api.wait_for_calls(1)
    card_id = await world.card_of(await world.imagine("changed my mind"))
    card = await world.card_status(card_id, "⏳ Queued — you're next")
    cancel_id = card_button(world, card_id, "cancel")
    assert cancel_id is not None

    refused = await world.discord.click(world.channel, card_id, cancel_id, user_id=world.bob)
    response = await refused.response()
    assert refused.ephemeral and "Only the member who asked" in response["data"]["content"]

    cancelled = await world.discord.click(world.channel, card_id, cancel_id, user_id=world.alice)
    await cancelled.response()
    card = await world.card_status(card_id, "🚫 Cancelled")
    assert not card["components"], "no Cancel button on a cancelled card"
    assert world.bot is not None and (await world.bot.generations.depth())[1] == 0
    assert [r["prompt"] for r in world.api.requests] == ["keeps the slot busy"]
