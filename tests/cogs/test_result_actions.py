"""Vary, Use as input, Info and Delete end to end: references, lineage, refusals, restarts."""

from __future__ import annotations

from typing import Any

from services.safety import GuildSettings
from tests.fakes.discord import rules
from tests.world import World


def fields(message: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message["embeds"][0].get("fields", [])}


def rows(message: dict[str, Any]) -> list[list[str]]:
    return [[c["custom_id"] for c in row["components"]] for row in message["components"]]


def custom_id(message: dict[str, Any], action: str) -> str:
    ids = [i for row in rows(message) for i in row]
    return next(i for i in ids if i.startswith(f"fluxbot:{action}:"))


def job_of(message: dict[str, Any]) -> int:
    return int(custom_id(message, "reroll").rsplit(":", 1)[1])


async def first_result(world: World, prompt: str = "a cat wearing a tiny hat", **options: Any):
    """The first result, once its job is done: its message ids are stored by then."""
    card_id = await world.card_of(await world.imagine(prompt, **options))
    result = await world.result_in(card_id)
    await world.card_status(card_id, "✅ Done")
    return card_id, result


async def press(world: World, message: dict[str, Any], action: str, *, user: int | None = None):
    return await world.discord.click(
        int(message["channel_id"]),
        int(message["id"]),
        custom_id(message, action),
        user_id=user or world.alice,
    )


async def finished(world: World, interaction: Any) -> dict[str, Any]:
    """The first private followup: what the bot said once it was done with a press."""
    await world.discord.wait_for(lambda _: interaction.followup_ids)
    return interaction.followups[0]


async def next_result(world: World, card_id: int, after: dict[str, Any]) -> dict[str, Any]:
    return await world.result_in(card_id, after=int(after["id"]))


def attachment_id(url: str) -> str:
    return url.split("/attachments/", 1)[1].split("/")[1]


async def test_a_result_of_one_image_has_each_action_as_a_button(world: World):
    card_id, result = await first_result(world)
    job = job_of(result)

    assert rows(result) == [
        [f"fluxbot:{a}:{job}" for a in ("reroll", "remix", "info", "delete")],
        [f"fluxbot:{a}:{job}:0" for a in ("vary-subtle", "vary-strong", "upscale", "edit", "use")],
    ]
    card_link = f"https://discord.com/channels/{world.guild}/{world.channel}/{card_id}"
    assert fields(result)["From"] == f"[the picture on the job card]({card_link})"


async def test_vary_subtle_and_strong_start_from_the_result_image(world: World):
    card_id, result = await first_result(world, seed=7, strength=0.9, steps=12)
    image = result["attachments"][0]

    subtle = await press(world, result, "vary-subtle")
    await subtle.response()
    varied = await next_result(world, card_id, result)
    strong = await press(world, result, "vary-strong")
    await strong.response()
    await next_result(world, card_id, varied)

    first, second, third = world.api.requests
    for body, strength in ((second, 0.35), (third, 0.7)):
        assert body["strength"] == strength
        assert body["prompt"] == first["prompt"] and body["num_inference_steps"] == 12
        assert "seed" not in body  # a new one
        assert attachment_id(body["image_url"]) == image["id"]
    assert subtle.followups[0]["content"].startswith("🌱 On it")
    link = f"https://discord.com/channels/{world.guild}/{card_id}/{result['id']}"
    assert fields(varied)["From"] == f"[image 1 of job {job_of(result)}]({link})"
    assert world.discord.rejections == []


async def test_vary_on_image_3_of_4_uses_image_3(world: World):
    card_id, result = await first_result(world, count=4)
    job = job_of(result)
    assert len(result["attachments"]) == 4
    assert rows(result)[1:] == [[f"fluxbot:image:{job}:{n}"] for n in range(4)]

    chosen = await world.discord.choose(
        card_id, int(result["id"]), f"fluxbot:image:{job}:2", ["vary-subtle"], user_id=world.alice
    )
    await chosen.response()
    varied = await next_result(world, card_id, result)

    body = world.api.requests[1]
    third = result["attachments"][2]
    assert attachment_id(body["image_url"]) == third["id"]
    assert third["filename"] == f"fluxbot-{job}-3.png"
    assert body["strength"] == 0.35 and body["num_images"] == 4
    assert "image 3 of job" in fields(varied)["From"]


async def test_use_as_input_opens_the_remix_form_for_that_image(world: World):
    card_id, result = await first_result(world, seed=99)
    opened = await press(world, result, "use")
    modal = (await opened.response())["data"]
    assert modal["title"] == "Remix with image 1"
    submitted = await world.discord.submit_modal(opened, {"prompt": "the same cat, in space"})
    await submitted.response()
    used = await next_result(world, card_id, result)

    body = world.api.requests[1]
    assert body["prompt"] == "the same cat, in space" and body["seed"] == 99
    assert attachment_id(body["image_url"]) == result["attachments"][0]["id"]
    assert "image 1 of job" in fields(used)["From"]
    assert submitted.followups[0]["content"].startswith("🖼️ On it")


async def test_a_chain_of_variations_links_back_step_by_step(world: World):
    card_id, first = await first_result(world)
    await (await press(world, first, "vary-strong")).response()
    second = await next_result(world, card_id, first)
    await (await press(world, second, "vary-subtle")).response()
    third = await next_result(world, card_id, second)
    # A reroll of a variation varies the same image again.
    await (await press(world, third, "reroll")).response()
    fourth = await next_result(world, card_id, third)

    def link(message: dict[str, Any]) -> str:
        return f"(https://discord.com/channels/{world.guild}/{card_id}/{message['id']})"

    assert fields(second)["From"].endswith(link(first))
    assert fields(third)["From"].endswith(link(second))
    assert fields(fourth)["From"].endswith(link(second))
    image_urls = [attachment_id(body["image_url"]) for body in world.api.requests[1:]]
    assert image_urls == [m["attachments"][0]["id"] for m in (first, second, second)]


async def test_info_shows_how_it_was_made_even_after_a_restart(world: World):
    card_id, result = await first_result(world, seed=4242, steps=9, guidance=6.5)
    await world.card_status(card_id, "✅ Done")
    await world.restart_bot()

    info = await press(world, result, "info")
    response = await info.response()
    assert info.ephemeral
    embed = response["data"]["embeds"][0]
    shown = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["title"] == f"Job {job_of(result)} · /imagine"
    assert embed["description"] == "a cat wearing a tiny hat"
    assert shown["Model"] == "flux/dev/image-to-image"
    assert (shown["Seed"], shown["Steps"], shown["Guidance"]) == ("4242", "9", "6.5")
    assert (shown["Strength"], shown["Safety checker"]) == ("0.95", "on")
    assert "s generating" in shown["Time"] and "s in all" in shown["Time"]
    assert shown["Made"].startswith("<t:") and shown["Made"].endswith(":R>")
    card_link = f"https://discord.com/channels/{world.guild}/{world.channel}/{card_id}"
    assert shown["Job card"] == f"[jump to the card]({card_link})"
    assert "the picture on the job card" in shown["From"]
    assert world.api.calls == 1


async def test_info_of_a_variation_names_the_image_it_came_from(world: World):
    card_id, result = await first_result(world)
    await (await press(world, result, "vary-subtle")).response()
    varied = await next_result(world, card_id, result)
    response = await (await press(world, varied, "info")).response()
    shown = {f["name"]: f["value"] for f in response["data"]["embeds"][0]["fields"]}
    assert response["data"]["embeds"][0]["title"].endswith("· Vary")
    assert shown["From"].startswith(f"[image 1 of job {job_of(result)}](")
    assert shown["Strength"] == "0.35"


async def test_delete_removes_that_result_only_and_marks_it(world: World):
    card_id, first = await first_result(world)
    await (await press(world, first, "reroll")).response()
    second = await next_result(world, card_id, first)

    said = await finished(world, await press(world, first, "delete"))
    assert said["content"] == "🗑️ Deleted." and said["flags"] & rules.EPHEMERAL
    visible = [int(m["id"]) for m in world.discord.messages(card_id)]
    assert int(first["id"]) not in visible and int(second["id"]) in visible
    assert card_id in world.discord.threads
    assert [int(m["id"]) for m in world.discord.messages(world.channel)] == [card_id]
    assert world.bot is not None
    stored = await world.bot.store.generations.get(job_of(first))
    assert stored is not None and stored.deleted_by == world.alice
    assert world.api.calls == 2


async def test_a_moderator_may_delete_someone_elses_result(world: World):
    card_id, result = await first_result(world)
    said = await finished(world, await press(world, result, "delete", user=world.moderator))
    assert said["content"] == "🗑️ Deleted."
    assert world.discord.messages(card_id) == []
    assert world.bot is not None
    stored = await world.bot.store.generations.get(job_of(result))
    assert stored is not None and stored.deleted_by == world.moderator


async def test_another_member_is_refused_every_action_and_nothing_is_spent(world: World):
    card_id, result = await first_result(world, count=2)
    job = job_of(result)
    for action in ("info", "delete"):
        refused = await press(world, result, action, user=world.bob)
        response = await refused.response()
        assert refused.ephemeral and "Only the member who asked" in response["data"]["content"]
    for action in ("vary-subtle", "vary-strong", "use"):
        refused = await world.discord.choose(
            card_id, int(result["id"]), f"fluxbot:image:{job}:1", [action], user_id=world.bob
        )
        response = await refused.response()
        assert refused.ephemeral and "Only the member who asked" in response["data"]["content"]
    assert world.api.calls == 1
    assert [int(m["id"]) for m in world.discord.messages(card_id)] == [int(result["id"])]


async def test_open_rerolls_let_anyone_vary_but_never_delete(world: World):
    card_id, result = await first_result(world)
    assert world.bot is not None
    await world.bot.store.guild_settings.save(
        GuildSettings(guild_id=world.guild, open_rerolls=True), updated_by=world.moderator
    )
    varying = await press(world, result, "vary-strong", user=world.bob)
    await varying.response()
    await next_result(world, card_id, result)
    refused = await press(world, result, "delete", user=world.bob)
    response = await refused.response()
    assert "or a moderator, can delete it" in response["data"]["content"]
    assert world.api.calls == 2


async def test_a_deleted_result_used_as_input_is_told_plainly_without_an_api_call(world: World):
    card_id, first = await first_result(world)
    await (await press(world, first, "vary-subtle")).response()
    second = await next_result(world, card_id, first)
    await world.card_status(card_id, "✅ Done")
    world.discord.delete_message(card_id, int(first["id"]))  # a moderator removes it
    world.discord.advance_clock(2 * 24 * 3600)  # every URL signed so far has expired

    await (await press(world, second, "reroll")).response()
    notice = await next_result(world, card_id, second)

    assert notice["content"].startswith("❌") and "made from is gone" in notice["content"]
    assert world.api.calls == 2


async def test_a_use_form_submitted_after_its_image_was_deleted_is_refused(world: World):
    _, result = await first_result(world)
    opened = await press(world, result, "use")
    await opened.response()
    await finished(world, await press(world, result, "delete"))

    submitted = await world.discord.submit_modal(opened, {"prompt": "too late"})
    response = await submitted.response()
    assert submitted.ephemeral and "was deleted" in response["data"]["content"]
    assert world.api.calls == 1


async def test_vary_is_held_to_the_daily_quota(world: World):
    await world.restart_bot(user_daily_limit=1)
    _, result = await first_result(world)
    refused = await press(world, result, "vary-subtle")
    response = await refused.response()
    assert refused.ephemeral and "for today" in response["data"]["content"]
    assert world.api.calls == 1
