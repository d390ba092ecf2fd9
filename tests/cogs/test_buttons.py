"""Reroll and Remix end to end: stored state, fresh reference URLs, restarts, refusals."""

from __future__ import annotations

from random import Random
from types import SimpleNamespace
from typing import Any

import pytest

from services.safety import GuildSettings
from tests.fakes.aimlapi import server as fake_api_server
from tests.world import World


def fields(message: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message["embeds"][0].get("fields", [])}


def button(message: dict[str, Any], action: str) -> str:
    ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
    return next(i for i in ids if i.startswith(f"fluxbot:{action}:"))


async def first_result(world: World, prompt: str = "a cat wearing a tiny hat", **options):
    interaction = await world.imagine(prompt, **options)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    return card_id, await world.result_in(card_id)


async def press(world: World, message: dict[str, Any], action: str, *, user: int | None = None):
    return await world.discord.click(
        int(message["channel_id"]),
        int(message["id"]),
        button(message, action),
        user_id=user or world.alice,
    )


async def test_reroll_posts_a_new_seed_with_the_same_prompt_in_the_same_thread(world: World):
    card_id, result = await first_result(world)
    reroll = await press(world, result, "reroll")
    await reroll.response()
    second = await world.result_in(card_id, after=int(result["id"]))

    assert reroll.ack_latency < 3.0
    assert [r["prompt"] for r in world.api.requests] == ["a cat wearing a tiny hat"] * 2
    assert "seed" not in world.api.requests[1]
    assert fields(second)["Seed"] != fields(result)["Seed"]
    assert second["attachments"]
    assert reroll.followups and reroll.followups[0]["flags"] & 64  # a private "on it"
    await world.card_status(card_id, "✅ Done")
    assert world.discord.rejections == []
    assert world.bot is not None
    # Only dynamic items are sent, so discord.py keeps nothing per message (no leak over months).
    views = world.bot._connection._view_store  # no public view of per-message views
    assert not any(views.is_message_tracked(int(m["id"])) for m in (result, second))
    assert not set(views._views) & {int(result["id"]), int(second["id"])}


async def test_remix_keeping_the_seed_changes_only_the_prompt(world: World):
    card_id, result = await first_result(world)
    opened = await press(world, result, "remix")
    modal = await opened.response()
    assert modal["type"] == 9
    submitted = await world.discord.submit_modal(opened, {"prompt": "a dog wearing a tiny hat"})
    await submitted.response()
    second = await world.result_in(card_id, after=int(result["id"]))

    body = world.api.requests[1]
    assert body["prompt"] == "a dog wearing a tiny hat"
    assert body["seed"] == int(fields(result)["Seed"])
    assert fields(second)["Seed"] == fields(result)["Seed"]


async def test_remix_with_the_seed_cleared_draws_a_new_one(world: World):
    card_id, result = await first_result(world, seed=1234)
    opened = await press(world, result, "remix")
    await opened.response()
    submitted = await world.discord.submit_modal(opened, {"seed": "", "strength": "0.6"})
    await submitted.response()
    await world.result_in(card_id, after=int(result["id"]))

    body = world.api.requests[1]
    assert "seed" not in body and body["strength"] == 0.6


async def test_an_old_button_works_after_a_restart(world: World):
    card_id, result = await first_result(world)
    await world.card_status(card_id, "✅ Done")
    await world.restart_bot()
    world.discord.advance_clock(3600)  # URLs are signed anew: a fresh one differs

    reroll = await press(world, result, "reroll")
    await reroll.response()
    second = await world.result_in(card_id, after=int(result["id"]))
    assert second["attachments"]
    # The new bot called the API again, with the card's freshly fetched reference.
    assert world.api.calls == 2
    first_call, second_call = world.api.requests
    assert second_call["prompt"] == first_call["prompt"] and "seed" not in second_call
    assert second_call["image_url"] != first_call["image_url"]


async def test_reroll_works_when_every_earlier_url_has_expired(world: World):
    attachment = world.upload()
    card_id, result = await first_result(world, attachment=attachment)
    # The card settles first: edits pending when two days pass at once would be edits of a
    # two-day-old message, which Discord limits separately (30046).
    await world.card_status(card_id, "✅ Done")
    assert world.bot is not None
    await world.bot.generations.cards.flush()
    world.discord.revoke_attachment(attachment["id"])  # the member's own upload vanished
    world.discord.advance_clock(2 * 24 * 3600)  # and every URL signed so far expired

    reroll = await press(world, result, "reroll")
    await reroll.response()
    second = await world.result_in(card_id, after=int(result["id"]))

    assert second["attachments"]
    assert world.api.requests[1]["image_url"] != world.api.requests[0]["image_url"]


async def test_a_deleted_reference_is_told_plainly(world: World):
    card_id, result = await first_result(world)
    await world.card_status(card_id, "✅ Done")
    world.discord.delete_message(world.channel, card_id)
    world.discord.advance_clock(2 * 24 * 3600)

    reroll = await press(world, result, "reroll")
    await reroll.response()
    notice = await world.result_in(card_id, after=int(result["id"]))

    assert "original image" in notice["content"] and "gone" in notice["content"]
    assert world.api.calls == 1


async def test_another_member_is_refused_and_nothing_is_spent(world: World):
    _, result = await first_result(world)
    for action in ("reroll", "remix"):
        refused = await press(world, result, action, user=world.bob)
        response = await refused.response()
        assert refused.ephemeral
        assert "Only the member who asked" in response["data"]["content"]
    assert world.api.calls == 1


async def test_a_moderator_may_reroll_someone_elses_image(world: World):
    card_id, result = await first_result(world)
    reroll = await press(world, result, "reroll", user=world.moderator)
    await reroll.response()
    second = await world.result_in(card_id, after=int(result["id"]))
    assert second["attachments"]


async def test_bad_modal_values_say_which_field_and_why(world: World):
    _, result = await first_result(world)
    cases = [
        ({"strength": "7"}, "Strength must be between 0.01 and 1."),
        ({"seed": "abc"}, "Seed must be a whole number"),
        ({"steps": "5x"}, "Steps must be a whole number"),
        ({"guidance": "lots"}, "Guidance must be a number"),
        ({"prompt": "   "}, "Prompt can't be empty"),
    ]
    for values, expected in cases:
        opened = await press(world, result, "remix")
        await opened.response()
        submitted = await world.discord.submit_modal(opened, values)
        response = await submitted.response()
        assert submitted.ephemeral
        assert expected in response["data"]["content"]
    assert world.api.calls == 1


async def test_a_remix_form_opened_before_a_restart_still_works_after_it(world: World):
    card_id, result = await first_result(world)
    opened = await press(world, result, "remix")
    await opened.response()
    await world.restart_bot()

    submitted = await world.discord.submit_modal(opened, {"prompt": "after the restart"})
    await submitted.response()
    second = await world.result_in(card_id, after=int(result["id"]))

    assert second["attachments"]
    assert world.api.requests[1]["prompt"] == "after the restart"


async def test_a_guild_that_opened_rerolls_lets_any_member_reroll(world: World):
    card_id, result = await first_result(world)
    assert world.bot is not None
    await world.bot.store.guild_settings.save(
        GuildSettings(guild_id=world.guild, open_rerolls=True), updated_by=world.moderator
    )
    reroll = await press(world, result, "reroll", user=world.bob)
    await reroll.response()
    second = await world.result_in(card_id, after=int(result["id"]))

    assert "On it" in reroll.followups[0]["content"]
    assert second["attachments"]


async def test_a_remix_prompt_is_checked_against_the_guilds_blocked_words(world: World):
    _, result = await first_result(world)
    assert world.bot is not None
    await world.bot.store.guild_settings.save(
        GuildSettings(guild_id=world.guild, blocked_terms=("gore",)), updated_by=world.moderator
    )
    opened = await press(world, result, "remix")
    await opened.response()
    submitted = await world.discord.submit_modal(opened, {"prompt": "lots of GORE please"})
    response = await submitted.response()

    assert submitted.ephemeral
    assert "doesn't allow prompts with “gore”" in response["data"]["content"]
    assert world.api.calls == 1


def seed_input(modal: dict[str, Any]) -> dict[str, Any]:
    inputs = [
        c for row in modal["components"] for c in row.get("components", [row.get("component")])
    ]
    return next(c for c in inputs if c and c.get("custom_id") == "seed")


@pytest.mark.parametrize(
    ("seed", "shown"),
    [(4_294_967_295, "4294967295"), (4_294_967_296, ""), (2**63, "")],
    ids=["largest-typeable", "one-over", "huge"],
)
async def test_remix_prefills_only_a_seed_a_member_could_type_back(
    world: World, monkeypatch: pytest.MonkeyPatch, seed: int, shown: str
):
    # The API may answer any seed it likes; the form must still open and be submittable.
    monkeypatch.setattr(
        fake_api_server, "random", SimpleNamespace(randint=lambda *_: seed, Random=Random)
    )
    _, result = await first_result(world)
    assert fields(result)["Seed"] == str(seed)

    opened = await press(world, result, "remix")
    modal = await opened.response()
    assert modal["type"] == 9
    assert (seed_input(modal["data"]).get("value") or "") == shown
    submitted = await world.discord.submit_modal(opened, {"prompt": "again"})
    await submitted.response()
    assert not submitted.ephemeral, (submitted.callback or {}).get("data")
