"""Hostile attachments, prompts and modal values: each ends in a plain answer, no API call for
bad input, no unhandled exception (an ERROR log fails the test)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from services.store import GenerationStatus
from tests import images
from tests.cogs.test_buttons import first_result, press
from tests.world import World


def status(card: dict[str, Any]) -> str:
    return next(f["value"] for f in card["embeds"][0]["fields"] if f["name"] == "Status")


# -- attachments whose bytes lie: the public card turns into a plain refusal ---------------------


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "words"),
    [
        (images.pdf_named_png, "cat.png", "image/png", "isn't a picture I can read"),
        (images.zip_bytes, "cat.png", "image/png", "isn't a picture I can read"),
        (images.text_file, "cat.png", None, "isn't a picture I can read"),
        (images.truncated_png, "cat.png", "image/png", "damaged or incomplete"),
        (images.truncated_jpeg, "cat.jpg", "image/jpeg", "damaged or incomplete"),
        (images.decompression_bomb_png, "bomb.png", "image/png", "the most I take is 50"),
        (images.huge_dimensions_png, "big.png", "image/png", "8000×8000"),
        (lambda: images.patched_size_png(100_000, 100_000), "liar.png", "image/png", "megapixels"),
    ],
    ids=["pdf", "zip", "text-no-type", "truncated-png", "truncated-jpeg", "bomb", "64MP", "header"],
)
async def test_a_file_that_lies_becomes_a_plain_refusal_on_the_card(
    world: World, data, filename, content_type, words
):
    attachment = world.upload(data(), filename=filename, content_type=content_type)
    interaction = await world.imagine(attachment=attachment)
    await interaction.response()
    card = await world.card_status(int(interaction.original_message["id"]), "❌")

    assert words in status(card)
    assert world.api.calls == 0 and world.discord.threads == {}
    assert world.discord.rejections == []
    # Stored before the card was posted, and failed with the card's words: never run, and
    # not counted against the member's quota or cap.
    assert world.bot is not None
    stored = await world.bot.store.generations.latest_for_card(int(card["id"]))
    assert stored is not None and stored.status is GenerationStatus.FAILED
    assert stored.error is not None and words in stored.error


@pytest.mark.parametrize(
    "data",
    [images.png_with_broken_deflate, lambda: images.patched_size_png(512, 512)],
    ids=["broken-deflate", "rows-missing"],
)
async def test_pixels_broken_behind_valid_checksums_are_refused_by_the_api_unbilled(
    world: World, data
):
    # A whole container is all the bot checks before re-hosting a plain PNG as it is: such a
    # file is only ever made on purpose, and the API refuses it (a 400, not billed).
    crafted = data()
    interaction = await world.imagine(attachment=world.upload(crafted))
    card_id = await world.card_of(interaction)
    notice = await world.result_in(card_id)
    card = await world.card_status(card_id, "❌ Failed")

    refusal = "The image service refused the request: The file at image_url is not a supported"
    assert notice["content"].startswith(f"❌ This image could not be made: {refusal}")
    assert "fluxbot:reroll:" in str(notice["components"])  # its buttons stay
    assert world.discord.attachment_bytes(card["attachments"][0]) == crafted  # as it was
    assert world.api.calls == 1 and world.api.spent == 0  # a 400: not retried, not billed
    assert world.bot is not None
    stored = await world.bot.store.generations.latest_for_card(card_id)
    assert stored is not None and stored.status is GenerationStatus.FAILED
    assert stored.error is not None and refusal in stored.error
    attempts = await world.bot.store.api_attempts.for_generation(stored.id)
    assert [(a.status, a.usd_nanos) for a in attempts] == [(400, 0)]


# -- what the interaction itself declares: a private answer before any card ----------------------


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "words"),
    [
        (b"", "empty.png", "image/png", "empty"),
        (images.zip_bytes(), "cat.zip", "application/zip", "isn't a picture"),
        (b"<svg/>", "cat.svg", "image/svg+xml", "can't use SVG+XML pictures"),
        (images.pdf_named_png(), "cat.pdf", "application/pdf", "isn't a picture"),
    ],
    ids=["0-bytes", "zip", "svg", "pdf"],
)
async def test_a_declared_non_picture_is_refused_privately(
    world: World, data, filename, content_type, words
):
    attachment = world.upload(data, filename=filename, content_type=content_type)
    interaction = await world.imagine(attachment=attachment)
    response = await interaction.response()

    assert interaction.ephemeral and words in response["data"]["content"]
    assert world.api.calls == 0


async def test_an_animated_gif_is_remixed_from_its_first_frame(world: World):
    gif = images.animated_gif((images.RED, images.GREEN, images.BLUE), 48, 32)
    attachment = world.upload(gif, filename="dance.gif", content_type="image/gif")
    interaction = await world.imagine(attachment=attachment)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    result = await world.result_in(card_id)
    card = await world.card_status(card_id, "✅ Done")

    assert result["attachments"]
    reference = world.discord.attachment_bytes(card["attachments"][0])
    with Image.open(io.BytesIO(reference)) as picture:
        assert getattr(picture, "n_frames", 1) == 1
        red, green, blue = picture.convert("RGB").getpixel((0, 0))
    assert red > 200 and green < 60 and blue < 60


# -- prompts --------------------------------------------------------------------------------------


async def test_control_and_invisible_characters_are_dropped_before_the_api(world: World):
    interaction = await world.imagine("a\x00 cat\u200b in a\x1b[31m hat\u202e\ufeff")
    await interaction.response()
    await world.result_in(int(interaction.original_message["id"]))

    assert world.api.requests[0]["prompt"] == "a cat in a[31m hat"


async def test_a_prompt_of_only_invisible_characters_is_refused_privately(world: World):
    interaction = await world.imagine("\u200b\u200d\x00\u2060")
    response = await interaction.response()

    assert interaction.ephemeral and "Prompt can't be empty" in response["data"]["content"]
    assert world.api.calls == 0


@pytest.mark.parametrize(
    "prompt",
    [
        "😀" * 4000,
        "👩\u200d👩\u200d👧" * 800,
        ("**bold ||spoiler `code ~~strike> quote # heading [link](http://x) \\" * 60)[:4000],
        "\n" * 100 + "x",
    ],
    ids=["4000-emoji", "zwj-families", "markdown", "newlines"],
)
async def test_prompts_that_could_break_an_embed_or_thread_name_do_not(world: World, prompt: str):
    interaction = await world.imagine(prompt)
    await interaction.response()
    card_id = int(interaction.original_message["id"])
    result = await world.result_in(card_id)
    await world.card_status(card_id, "✅ Done")

    assert result["attachments"]
    assert 1 <= len(world.discord.threads[card_id]["name"]) <= 100
    assert world.discord.rejections == []


# -- modal values no form should send -------------------------------------------------------------


async def test_absurd_modal_numbers_are_refused_privately(world: World):
    _, result = await first_result(world)
    cases = {
        "strength": ["nan", "inf", "-0", "1e400", "0x10"],
        "steps": ["-5", "0", "٣٠"],
        "guidance": ["NaN", "20.0000001"],
        "seed": ["-1", "0", "4294967296", "1.5"],
    }
    for field, values in cases.items():
        for value in values:
            opened = await press(world, result, "remix")
            await opened.response()
            submitted = await world.discord.submit_modal(opened, {field: value})
            response = await submitted.response()
            assert submitted.ephemeral, (field, value)
            assert response["data"]["content"].startswith(field.capitalize()), (field, value)
    assert world.api.calls == 1


# -- result URLs ----------------------------------------------------------------------------------


async def test_a_result_that_is_not_an_image_is_reported_plainly(world: World):
    world.api.break_result_url_next("not_image")
    interaction = await world.imagine()
    await interaction.response()
    failure = await world.result_in(int(interaction.original_message["id"]))

    assert failure["content"].startswith("❌") and "could not be downloaded" in failure["content"]
    assert failure["components"], "Reroll stays available"
