"""Costs end to end (DESIGN §10): every attempt stored with its ids and spend, budgets set by
admins refuse privately, and an account out of credits pauses the queue until credit is back."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from tests.cogs.test_result_actions import fields, first_result, press
from tests.e2e.test_nsfw import admin, settings_command
from tests.world import World

PAUSED = "⏸️"
THREADS = r"^/channels/\d+/messages/\d+/threads$"


def from_bot(world: World, channel_id: int, prefix: str) -> list[dict[str, Any]]:
    return [m for m in world.discord.messages(channel_id) if m["content"].startswith(prefix)]


async def test_each_attempt_is_stored_with_its_ids_and_cost(world: World):
    world.api.fail_next(500)
    card_id = await world.card_of(await world.imagine("a priced cat"))
    await world.card_status(card_id, "✅ Done")
    assert world.bot is not None
    generation = await world.bot.store.generations.latest_for_card(card_id)
    assert generation is not None

    attempts = await world.bot.store.api_attempts.for_generation(generation.id)

    assert [a.client_request_id for a in attempts] == [
        f"fluxbot:{generation.id}:1:1",
        f"fluxbot:{generation.id}:1:2",
    ]
    assert [r.client_request_id for r in world.api.requests] == [
        a.client_request_id for a in attempts
    ]
    assert [a.inference_id for a in attempts] == world.api.inference_ids
    assert [(a.status, a.outcome, a.usd_nanos) for a in attempts] == [
        (500, "ServerError", 0),
        (201, "ok", 25_000_000),
    ]
    assert attempts[1].credits == 50_000 and world.api.spent == Decimal("0.025")
    spend = world.bot.generations.metrics.registry.get_sample_value(
        "fluxbot_spend_usd_total", {"model": generation.model}
    )
    assert spend == 0.025  # METRICS_PORT's fluxbot_spend_usd_total
    assert (attempts[1].user_id, attempts[1].guild_id) == (world.alice, world.guild)


async def test_info_shows_what_a_result_cost(world: World):
    world.api.fail_next(503)  # a failed attempt costs nothing, but it is one more call
    card_id, result = await first_result(world, count=2)
    await world.card_status(card_id, "✅ Done")

    info = await press(world, result, "info")
    shown = fields((await info.response())["data"])

    assert shown["Cost"] == "$0.0500 (2 API calls)"


async def test_a_member_budget_refuses_privately_and_costs_nothing(world: World):
    owner = admin(world)
    response = await settings_command(world, owner, member_daily_budget="0.03")
    assert "each member: $0.0300 a day" in response["data"]["content"]

    card_id = await world.card_of(await world.imagine("within budget"))
    await world.card_status(card_id, "✅ Done")
    again = await world.imagine("one too many")
    refusal = await again.response()

    assert again.ephemeral
    assert "your image budget for today" in refusal["data"]["content"]
    assert world.api.calls == 1
    bobs = await world.card_of(await world.imagine("bob has his own", user=world.bob))
    await world.card_status(bobs, "✅ Done")

    # A member's own budget overrides the default; "default" gives it back.
    await settings_command(world, owner, member=world.alice, member_budget="1")
    await world.card_status(await world.card_of(await world.imagine("alice may again")), "✅ Done")
    response = await settings_command(world, owner, member=world.alice, member_budget="default")
    assert "their own" not in response["data"]["content"]


async def test_a_bad_budget_changes_nothing(world: World):
    owner = admin(world)
    response = await settings_command(world, owner, daily_budget="lots", open_rerolls=True)
    assert "daily_budget" in response["data"]["content"]
    response = await settings_command(world, owner, member=world.bob)
    assert "both member and member_budget" in response["data"]["content"]
    assert world.bot is not None
    assert not (await world.bot.store.guild_settings.get(world.guild)).open_rerolls


@pytest.fixture
async def ops(world: World) -> int:
    """An operator channel, configured as ADMIN_CHANNEL_ID."""
    channel = world.discord.add_text_channel(world.guild, "ops")
    await world.restart_bot(admin_channel_id=channel)
    return channel


async def test_out_of_credits_pauses_with_one_message_per_card_until_credit_is_back(
    world: World, ops: int
):
    world.api.balance = Decimal(0)
    first = await world.card_of(await world.imagine("first, refused for credits"))
    await world.discord.wait_for_message(
        lambda m: m["channel_id"] == str(first) and m["content"].startswith(PAUSED)
    )
    note = await world.discord.wait_for_message(
        lambda m: m["channel_id"] == str(ops) and "out of credits" in m["content"]
    )
    assert note["components"], "the operator can resume by hand"
    second = await world.card_of(await world.imagine("second, queued while paused"))
    await world.discord.wait_for_message(
        lambda m: m["channel_id"] == str(second) and m["content"].startswith(PAUSED)
    )
    await world.card_status(second, "⏳ Queued")
    assert world.api.calls == 1  # nothing else was sent to an empty account

    world.api.balance = Decimal(10)
    assert world.bot is not None
    await world.bot.credits.check()  # the watch does this every minute while paused

    for card_id in (first, second):
        result = await world.result_in(card_id)
        assert result["attachments"]
        assert len(from_bot(world, card_id, PAUSED)) == 1
    assert [m["content"][:2] for m in world.discord.messages(ops)] == ["⏸️", "▶️"]
    assert world.api.calls == 3


async def test_a_pause_notice_waits_for_a_thread_still_being_opened(world: World):
    """Told in its thread, as its results will be, though the thread comes late (the
    channel's thread budget is spent): not sent to a thread that does not exist yet."""
    world.api.balance = Decimal(0)
    first = await world.card_of(await world.imagine("first, refused for credits"))
    await world.discord.wait_for_message(
        lambda m: m["channel_id"] == str(first) and m["content"].startswith(PAUSED)
    )
    world.discord.rate_limit_next("POST", THREADS, retry_after=1.0)
    second = await world.card_of(await world.imagine("second, its thread late"))
    await world.discord.wait_for_message(
        lambda m: m["channel_id"] == str(second) and m["content"].startswith(PAUSED)
    )
    assert [r for r in world.discord.requests if r.status == 404] == []


async def test_an_admin_can_resume_by_hand_and_members_cannot(world: World, ops: int):
    world.api.balance = Decimal(0)
    card_id = await world.card_of(await world.imagine("waits for an admin"))
    note = await world.discord.wait_for_message(
        lambda m: m["channel_id"] == str(ops) and m["components"]
    )
    resume = note["components"][0]["components"][0]["custom_id"]
    assert resume == "fluxbot:resume-queue"

    refused = await world.discord.click(ops, int(note["id"]), resume, user_id=world.bob)
    assert "Manage Server" in (await refused.response())["data"]["content"]
    assert world.bot is not None and world.bot.generations.credit_hold

    world.api.balance = Decimal(5)  # topped up; the admin does not wait for the next check
    pressed = await world.discord.click(ops, int(note["id"]), resume, user_id=admin(world))
    assert "runs again" in (await pressed.response())["data"]["content"]
    assert (await world.result_in(card_id))["attachments"]


async def test_a_low_balance_is_logged_and_noted_once(
    world: World, ops: int, caplog: pytest.LogCaptureFixture
):
    world.api.balance = Decimal("2.5")
    assert world.bot is not None
    with caplog.at_level(logging.WARNING):
        await world.bot.credits.check()
        await world.bot.credits.check()
    warnings = [r for r in caplog.records if "below LOW_BALANCE_USD" in r.getMessage()]
    assert len(warnings) == 2 and "$2.50" in warnings[0].getMessage()
    notes = [m for m in world.discord.messages(ops) if "below LOW_BALANCE_USD" in m["content"]]
    assert len(notes) == 1 and "$5.00" in notes[0]["content"]
    assert world.bot.credits.last is not None
    assert world.bot.credits.last.current_balance == Decimal("2.5")
