"""/imagine end to end: real bot, real discord.py, real SQLite, fake Discord and fake AI/ML API."""

from __future__ import annotations

import io
from typing import Any

import discord
import pytest
from PIL import Image

from tests import images
from tests.fakes.discord import rules
from tests.world import API_KEY, World


def embed_fields(message: dict) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message["embeds"][0].get("fields", [])}


async def test_happy_path_card_thread_image_and_request(world: World):
    interaction = await world.imagine("a cat wearing a tiny hat")
    response = await interaction.response()

    assert interaction.ack_latency < 3.0
    assert response["type"] == 4 and not interaction.ephemeral
    card_id = int(interaction.original_message["id"])
    result = await world.result_in(card_id)  # the thread id is the card's id
    assert world.discord.threads[card_id]["name"] == "a cat wearing a tiny hat"

    body = world.api.requests[0]
    assert body["model"] == "flux/dev/image-to-image"
    assert body["prompt"] == "a cat wearing a tiny hat"
    assert body["image_url"].startswith(world.discord.url + "/attachments/")
    assert (body["strength"], body["num_inference_steps"], body["guidance_scale"]) == (
        0.95,
        28,
        3.5,
    )
    assert body["num_images"] == 1 and body["enable_safety_checker"] is True
    assert "seed" not in body

    [attachment] = result["attachments"]
    picture = Image.open(io.BytesIO(world.discord.attachment_bytes(attachment)))
    assert picture.size == (64, 48)  # the reference's size
    fields = embed_fields(result)
    assert fields["Seed"] != "random" and int(fields["Seed"]) >= 1
    assert (fields["Strength"], fields["Steps"], fields["Guidance"]) == ("0.95", "28", "3.5")
    assert f"/{attachment['filename']}?" in result["embeds"][0]["image"]["url"]

    card = await world.card_status(card_id, "✅ Done")
    assert card["attachments"][0]["filename"].startswith("reference")
    card_fields = {f["name"]: f["value"] for f in card["embeds"][0]["fields"]}
    assert card_fields["Cost (estimate)"] == "$0.0250"  # flux/dev's price, one image
    assert world.discord.rejections == []


async def test_options_reach_the_api_and_every_image_is_posted(world: World):
    interaction = await world.imagine(
        "two foxes", seed=42, steps=10, strength=0.5, guidance=7.0, count=2
    )
    await interaction.response()
    result = await world.result_in(int(interaction.original_message["id"]))

    body = world.api.requests[0]
    assert (body["seed"], body["num_inference_steps"], body["strength"]) == (42, 10, 0.5)
    assert (body["guidance_scale"], body["num_images"]) == (7.0, 2)
    assert len(result["attachments"]) == 2
    assert embed_fields(result)["Seed"] == "42"
    assert world.discord.rejections == []


async def test_large_reference_is_scaled_down_before_the_api_sees_it(world: World):
    attachment = world.upload(images.png(2000, 1500))
    interaction = await world.imagine(attachment=attachment)
    await interaction.response()
    result = await world.result_in(int(interaction.original_message["id"]))
    picture = Image.open(io.BytesIO(world.discord.attachment_bytes(result["attachments"][0])))
    assert picture.width * picture.height <= 1_000_000
    assert abs(picture.width / picture.height - 4 / 3) < 0.02


# -- bad input: a short private message, no card, no API call ---------------------------------


@pytest.mark.parametrize(
    ("options", "upload", "expected"),
    [
        ({"prompt": "   "}, {}, "Prompt can't be empty"),
        ({"prompt": "x" * 4001}, {}, "Prompt is too long"),
        ({"strength": 7.0}, {}, "Strength must be between 0.01 and 1."),
        ({"steps": 0}, {}, "Steps must be between 1 and 50"),
        ({"guidance": 25.0}, {}, "Guidance must be between 1 and 20"),
        ({"count": 5}, {}, "Count must be between 1 and 4"),
        ({"seed": 0}, {}, "Seed must be between 1 and"),
        ({}, {"data": b"hello", "filename": "notes.txt", "content_type": "text/plain"}, "PNG"),
        ({}, {"data": b"", "filename": "empty.png"}, "empty"),
        ({}, {"data": b"\0" * (21 * 1024 * 1024), "filename": "huge.png"}, "MB"),
    ],
    ids=["blank", "4001", "strength", "steps", "guidance", "count", "seed", "text", "0b", "21MB"],
)
async def test_bad_input_is_refused_privately_without_an_api_call(
    world: World, options, upload, expected
):
    attachment = world.upload(**upload) if upload else None
    interaction = await world.imagine(attachment=attachment, validate=False, **options)
    response = await interaction.response()

    assert interaction.ephemeral
    assert expected.lower() in response["data"]["content"].lower()
    assert world.api.calls == 0
    assert world.discord.threads == {}


async def test_a_file_that_lies_about_being_a_picture_turns_the_card_into_a_plain_message(
    world: World,
):
    attachment = world.upload(images.pdf_named_png(), filename="cat.png")
    interaction = await world.imagine(attachment=attachment)
    await interaction.response()
    card = await world.card_status(int(interaction.original_message["id"]), "❌")

    assert "picture" in embed_fields(card)["Status"]
    assert world.api.calls == 0


async def test_a_member_over_the_per_user_cap_is_told_privately(world: World):
    await world.restart_bot(max_queued_per_user=1, shutdown_grace_seconds=0)
    world.api.latency = 30  # the first job stays in flight
    first = await world.imagine("first")
    await first.response()
    await world.api.wait_for_calls(1)
    second = await world.imagine("second")
    response = await second.response()

    assert second.ephemeral
    assert "You have 1 images in progress" in response["data"]["content"]
    world.api.latency = 0


# -- API faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_api_errors_are_retried_until_an_image_arrives(world: World, status):
    world.api.fail_next(status, times=2, retry_after=0.01)
    interaction = await world.imagine()
    await interaction.response()
    result = await world.result_in(int(interaction.original_message["id"]))

    assert result["attachments"]
    assert world.api.calls == 3


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"status": 401}, "API key"),
        ({"status": 500, "times": 4}, "try again"),  # every attempt of one job
        ({"bad_json": True}, "unusable"),
    ],
    ids=["401", "500-persistent", "bad-json"],  # 403 pauses the queue: tests/e2e/test_costs.py
)
async def test_fatal_api_errors_are_told_plainly_and_the_bot_keeps_serving(
    world: World, fault, words
):
    if fault.get("bad_json"):
        world.api.send_bad_json_next()
    else:
        world.api.fail_next(fault["status"], times=fault.get("times", 1), retry_after=0.01)
    await world.restart_bot(api_deadline_seconds=5)
    interaction = await world.imagine("first try")
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    failure = await world.result_in(card_id)
    card = await world.card_status(card_id, "❌ Failed")

    for text in (failure["content"], embed_fields(card)["Status"]):
        assert words.lower() in text.lower()
        assert "Traceback" not in text and API_KEY not in text
    assert failure["components"], "a failed job keeps its Reroll button"

    again = await world.imagine("second try")
    await again.response()
    result = await world.result_in(int(again.original_message["id"]))
    assert result["attachments"]


# -- where results go -------------------------------------------------------------------------


async def test_in_a_dm_results_are_posted_in_the_dm(world: World):
    user = world.discord.add_user("carol")
    dm = world.discord.add_dm(user)
    interaction = await world.imagine(user=user, channel=dm)
    await interaction.response()
    result = await world.result_in(dm)

    assert result["attachments"] and world.discord.threads == {}


async def test_inside_a_thread_results_go_to_that_thread(world: World):
    thread = world.discord.add_thread(world.channel, "cats")
    interaction = await world.imagine(channel=thread)
    await interaction.response()
    # The card is in the thread too, with the reference on it: wait for the result itself.
    result = await world.result_in(
        thread,
        predicate=lambda m: any(
            not a["filename"].startswith("reference") for a in m["attachments"]
        ),
    )

    assert result["attachments"]
    assert set(world.discord.threads) == {thread}


async def test_without_thread_permissions_results_go_to_the_channel(world: World):
    no_threads = rules.DEFAULT_BOT_PERMISSIONS & ~rules.CREATE_PUBLIC_THREADS
    channel = world.discord.add_text_channel(world.guild, "quiet", bot_permissions=no_threads)
    interaction = await world.imagine(channel=channel)
    await interaction.response()
    await world.result_in(
        channel,
        predicate=lambda m: (
            bool(m["attachments"]) and bool(m["embeds"]) and "image" in m["embeds"][0]
        ),
    )

    assert world.discord.threads == {}
    assert world.discord.rejections == []


# -- user text stays inert and inside Discord's limits --------------------------------------------


async def test_a_prompt_of_everyone_pings_no_one(world: World):
    interaction = await world.imagine("@everyone @here <@&123> look at this")
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    await world.result_in(card_id)
    await world.card_status(card_id, "✅ Done")

    sent = world.bot_messages()
    assert len(sent) >= 3  # the card, its edit (status and reference), the result
    assert [m for m in sent if m.get("allowed_mentions") != {"parse": []}] == []
    for message in world.discord.messages(world.channel) + world.discord.messages(card_id):
        assert not message["mention_everyone"] and message["mentions"] == []
        assert message["mention_roles"] == []


async def test_a_4000_character_prompt_fits_every_discord_limit(world: World):
    prompt = ("a *very* long_prompt with `code` and > quotes " * 100)[:4000]
    interaction = await world.imagine(prompt)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    result = await world.result_in(card_id)
    await world.card_status(card_id, "✅ Done")

    assert len(world.discord.threads[card_id]["name"]) <= 100
    assert result["attachments"]
    assert world.api.requests[0]["prompt"] == prompt.strip()
    assert world.discord.rejections == []


async def test_a_result_whose_thread_was_deleted_lands_in_the_channel(world: World):
    world.api.latency = 0.5
    interaction = await world.imagine("a lighthouse")
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    await world.api.wait_for_calls(1)
    world.discord.delete_thread(card_id)  # a moderator tidies up while the image is made
    result = await world.result_in(
        world.channel, predicate=lambda m: bool(m["attachments"]) and int(m["id"]) != card_id
    )

    assert result["embeds"][0]["description"] == "a lighthouse"
    await world.card_status(card_id, "✅ Done")


@pytest.mark.parametrize(
    ("taken", "named"),
    [
        (rules.VIEW_CHANNEL, "View Channel"),
        (rules.ATTACH_FILES, "Attach Files"),
        (rules.EMBED_LINKS, "Embed Links"),
        (rules.READ_MESSAGE_HISTORY, "Read Message History"),
        (rules.SEND_MESSAGES | rules.CREATE_PUBLIC_THREADS, "Send Messages"),
    ],
    ids=["view", "files", "embeds", "history", "send-and-no-threads"],
)
async def test_a_channel_missing_a_permission_is_refused_privately_naming_it(
    world: World, taken: int, named: str
):
    channel = world.discord.add_text_channel(
        world.guild, "locked-down", bot_permissions=rules.DEFAULT_BOT_PERMISSIONS & ~taken
    )
    interaction = await world.imagine(channel=channel)
    response = await interaction.response()

    assert interaction.ephemeral
    assert f"**{named}**" in response["data"]["content"]
    assert f"<#{channel}>" in response["data"]["content"]
    assert world.api.calls == 0 and world.discord.threads == {}
    assert world.discord.rejections == []  # nothing was tried that Discord would refuse


async def test_without_thread_permissions_only_send_messages_is_needed(world: World):
    perms = rules.DEFAULT_BOT_PERMISSIONS & ~rules.SEND_MESSAGES_IN_THREADS
    channel = world.discord.add_text_channel(world.guild, "no-threads", bot_permissions=perms)
    interaction = await world.imagine(channel=channel)
    await world.card_of(interaction)
    await world.result_in(
        channel, predicate=lambda m: bool(m["embeds"]) and "image" in m["embeds"][0]
    )

    assert world.discord.threads == {} and world.discord.rejections == []


async def test_in_a_voice_channels_chat_results_and_rerolls_stay_in_the_chat(world: World):
    voice = world.discord.add_voice_channel(world.guild, "hangout")
    interaction = await world.imagine(channel=voice)
    card_id = await world.card_of(interaction)

    def result(message: dict) -> bool:
        return int(message["id"]) != card_id and bool(message["attachments"])

    first = await world.result_in(voice, predicate=result)
    reroll = next(
        c["custom_id"]
        for row in first["components"]
        for c in row["components"]
        if c["custom_id"].startswith("fluxbot:reroll:")
    )
    pressed = await world.discord.click(voice, int(first["id"]), reroll, user_id=world.alice)
    await pressed.response()
    await world.result_in(voice, after=int(first["id"]), predicate=result)

    assert world.discord.threads == {}
    assert world.api.calls == 2 and world.discord.rejections == []


async def test_a_voice_chat_without_connect_is_refused_since_rerolls_could_not_read_the_card(
    world: World,
):
    voice = world.discord.add_voice_channel(
        world.guild, "hangout", bot_permissions=rules.DEFAULT_BOT_PERMISSIONS
    )
    interaction = await world.imagine(channel=voice)
    response = await interaction.response()

    assert interaction.ephemeral and "**Connect**" in response["data"]["content"]
    assert world.api.calls == 0


async def test_read_message_history_taken_away_is_told_in_the_thread_at_the_reroll(world: World):
    interaction = await world.imagine("a quiet harbour")
    card_id = await world.card_of(interaction)
    first = await world.result_in(card_id)
    await world.card_status(card_id, "✅ Done")
    no_history = rules.DEFAULT_BOT_PERMISSIONS & ~rules.READ_MESSAGE_HISTORY
    world.discord.set_bot_permissions(world.channel, no_history)

    reroll = next(
        c["custom_id"]
        for row in first["components"]
        for c in row["components"]
        if c["custom_id"].startswith("fluxbot:reroll:")
    )
    pressed = await world.discord.click(card_id, int(first["id"]), reroll, user_id=world.alice)
    await pressed.response()
    failure = await world.result_in(card_id, after=int(first["id"]))

    assert "Read Message History" in failure["content"] and failure["components"]
    assert world.api.calls == 1


def synced(world: World, name: str) -> dict:
    return next(c for c in world.discord.commands if c["name"] == name)


async def test_commands_say_where_they_may_be_installed_and_used(world: World):
    imagine, settings = synced(world, "imagine"), synced(world, "fluxbot-settings")

    assert imagine["integration_types"] == [0]  # guild installs only, never user installs
    assert sorted(imagine["contexts"]) == [0, 1]  # servers and the bot's DMs
    assert settings["integration_types"] == [0] and settings["contexts"] == [0]


async def test_attach_files_taken_away_mid_job_is_told_in_the_thread(world: World):
    world.api.latency = 0.5
    interaction = await world.imagine("a quiet harbour")
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    await world.api.wait_for_calls(1)
    no_files = rules.DEFAULT_BOT_PERMISSIONS & ~rules.ATTACH_FILES
    world.discord.set_bot_permissions(world.channel, no_files)
    failure = await world.result_in(card_id)

    assert "Attach Files" in failure["content"] and failure["components"]
    await world.card_status(card_id, "❌ Failed")


async def test_a_file_used_as_sent_is_read_once_and_its_card_edited_at_most_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    """The card's copy of the reference is made from the bytes read at intake (no second
    download), in the card's first status edit; a second edit at most shows the result."""
    reads: list[str] = []
    read = discord.Attachment.read

    async def counted(self: discord.Attachment, **kwargs: Any) -> bytes:
        reads.append(self.filename)
        return await read(self, **kwargs)

    monkeypatch.setattr(discord.Attachment, "read", counted)
    sent = images.png(64, 48)
    interaction = await world.imagine(attachment=world.upload(sent))
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    await world.result_in(card_id)
    card = await world.card_status(card_id, "✅ Done")
    assert world.bot is not None
    await world.bot.generations.cards.flush()

    assert reads == ["cat.png"]
    [copy] = card["attachments"]
    assert world.discord.attachment_bytes(copy) == sent
    edits = [
        r
        for r in world.discord.requests
        if r.method == "PATCH" and r.path.endswith(f"/messages/{card_id}")
    ]
    # A fast API: the first edit (a second after the card) may already show the result.
    assert 1 <= len(edits) <= 2 and edits[0].files and not any(e.files for e in edits[1:])
