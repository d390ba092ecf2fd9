"""/edit and the Edit button end to end, per editing model: references as each model expects
them, re-fetched from the card for later jobs; plain refusals before any call; a 400 told plainly.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from services.model_registry import FLUX2_EDIT, KONTEXT_MAX, KONTEXT_PRO, model_entry
from tests import images
from tests.fakes.discord import FakeInteraction, rules
from tests.world import World

EDIT_MODELS = [KONTEXT_PRO, KONTEXT_MAX, FLUX2_EDIT]
#: Three pictures of different shapes (on FLUX's 16-pixel grid, so kept as they are).
SIZES = [(128, 96), (96, 128), (64, 64)]


def fields(message: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message["embeds"][0].get("fields", [])}


def ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


def custom_id(message: dict[str, Any], action: str) -> str:
    return next(i for i in ids(message) if i.startswith(f"fluxbot:{action}:"))


def attachment_id(url: str) -> str:
    return url.split("/attachments/", 1)[1].split("/")[1]


def picture_size(world: World, url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(world.discord.attachment_bytes(url))).size


def form_inputs(form: dict[str, Any]) -> list[str]:
    """A modal's text inputs by custom id, whether in action rows or label components."""
    found = []
    for row in form["components"]:
        for child in row.get("components") or [row["component"]]:
            found.append(child["custom_id"])
    return found


def references_of(body: dict[str, Any]) -> list[str]:
    """The reference URLs of a body, whichever way its model takes them."""
    value = body.get("image_urls", body.get("image_url"))
    return value if isinstance(value, list) else [value]


async def edit(
    world: World,
    prompt: str = "make it night",
    *,
    sizes: list[tuple[int, int]] | None = None,
    user: int | None = None,
    **options: Any,
) -> FakeInteraction:
    uploads = [world.upload(images.png(w, h)) for w, h in sizes or SIZES[:1]]
    names = ["image", "image2", "image3"]
    values = {name: upload["id"] for name, upload in zip(names, uploads, strict=False)}
    return await world.discord.invoke_command(
        "edit",
        {**values, "prompt": prompt, **options},
        user_id=user or world.alice,
        channel_id=world.channel,
        attachments=uploads,
    )


async def press(world: World, message: dict[str, Any], action: str, *, user: int | None = None):
    return await world.discord.click(
        int(message["channel_id"]),
        int(message["id"]),
        custom_id(message, action),
        user_id=user or world.alice,
    )


@pytest.mark.parametrize("model", EDIT_MODELS)
async def test_edit_of_one_picture_goes_as_the_model_takes_it(world: World, model: str):
    await world.restart_bot(edit_model=model)
    card_id = await world.card_of(await edit(world, seed=5))
    result = await world.result_in(card_id)

    [body] = world.api.requests
    assert body["model"] == model and body["prompt"] == "make it night" and body["seed"] == 5
    assert "strength" not in body
    [url] = references_of(body)
    assert picture_size(world, url) == (128, 96)
    if model == FLUX2_EDIT:
        assert isinstance(body["image_urls"], list)
        assert body["enable_prompt_expansion"] is False  # the API's default is on
        size = body["image_size"]
        assert abs(size["width"] / size["height"] - 4 / 3) < 0.05
    else:
        assert isinstance(body["image_url"], str)
        assert body["aspect_ratio"] == "4:3"  # the picture's, never the API's 16:9
        assert body["safety_tolerance"] == "2"  # strict outside NSFW channels
    shown = fields(result)
    assert shown["Model"] == model_entry(model).label and "Strength" not in shown
    card = await world.card_status(card_id, "✅ Done")
    assert [a["filename"] for a in card["attachments"]] == ["reference.png"]
    assert world.bot is not None
    stored = await world.bot.store.generations.get(1)
    assert stored is not None and (stored.kind, stored.model) == ("edit", model)
    assert world.discord.rejections == []


@pytest.mark.parametrize("model", EDIT_MODELS)
async def test_three_pictures_go_in_order_and_a_reroll_fetches_them_again(world: World, model: str):
    await world.restart_bot(edit_model=model)
    card_id = await world.card_of(
        await edit(world, "put the cat from the second in the first", sizes=SIZES)
    )
    first = await world.result_in(card_id)
    card = await world.card_status(card_id, "✅ Done")
    assert [a["filename"] for a in card["attachments"]] == [
        "reference.png",
        "reference-2.png",
        "reference-3.png",
    ]
    world.discord.advance_clock(2 * 24 * 3600)  # every URL signed so far has expired

    await (await press(world, first, "reroll")).response()
    again = await world.result_in(card_id, after=int(first["id"]))

    made, rerolled = world.api.requests
    assert rerolled["model"] == model and rerolled["prompt"] == made["prompt"]
    for body in (made, rerolled):
        urls = references_of(body)
        assert [picture_size(world, url) for url in urls] == SIZES
        assert [attachment_id(u) for u in urls] == [a["id"] for a in card["attachments"]]
    assert references_of(made) != references_of(rerolled)  # signed again
    assert again["attachments"] and "pictures on the job card" in fields(again)["From"]
    assert world.discord.rejections == []


async def test_a_chosen_aspect_ratio_and_count_are_sent(world: World):
    card_id = await world.card_of(await edit(world, aspect_ratio="9:16", count=2))
    result = await world.result_in(card_id)
    body = world.api.requests[0]
    assert (body["aspect_ratio"], body["num_images"]) == ("9:16", 2)
    assert len(result["attachments"]) == 2
    assert fields(result)["Aspect ratio"] == "9:16"


async def test_the_edit_button_runs_the_edit_model_on_that_image(world: World):
    card_id = await world.card_of(await world.imagine("two foxes", count=2))
    result = await world.result_in(card_id)
    job = custom_id(result, "reroll").rsplit(":", 1)[1]

    opened = await world.discord.choose(
        card_id, int(result["id"]), f"fluxbot:image:{job}:1", ["edit"], user_id=world.alice
    )
    modal = (await opened.response())["data"]
    assert modal["title"] == "Edit image 2"
    submitted = await world.discord.submit_modal(opened, {"prompt": "make the second fox white"})
    await submitted.response()
    edited = await world.result_in(card_id, after=int(result["id"]))

    body = world.api.requests[1]
    assert body["model"] == KONTEXT_PRO and body["prompt"] == "make the second fox white"
    assert attachment_id(body["image_url"]) == result["attachments"][1]["id"]
    assert body["aspect_ratio"] == "4:3" and body["num_images"] == 1
    assert "strength" not in body and "num_inference_steps" not in body
    assert fields(edited)["From"].startswith(f"[image 2 of job {job}](")
    assert fields(edited)["Model"] == "FLUX.1 Kontext [pro]"
    assert submitted.followups[0]["content"].startswith("✨ On it")

    # Reroll and Remix of the edit keep its model (and its picture).
    await (await press(world, edited, "reroll")).response()
    rerolled = await world.result_in(card_id, after=int(edited["id"]))
    remix = await press(world, edited, "remix")
    form = (await remix.response())["data"]
    inputs = form_inputs(form)
    assert inputs == ["prompt", "seed", "guidance", "aspect_ratio"]  # what Kontext reads
    remixed = await world.discord.submit_modal(
        remix, {"prompt": "make it white and snowy", "aspect_ratio": "1:1"}
    )
    await remixed.response()
    await world.result_in(card_id, after=int(rerolled["id"]))
    for body in world.api.requests[2:]:
        assert body["model"] == KONTEXT_PRO
        assert attachment_id(body["image_url"]) == result["attachments"][1]["id"]
    assert world.api.requests[3]["aspect_ratio"] == "1:1"
    assert world.discord.rejections == []


async def test_an_edit_form_opened_before_a_restart_still_works_after_it(world: World):
    card_id = await world.card_of(await world.imagine())
    result = await world.result_in(card_id)
    opened = await press(world, result, "edit")
    await opened.response()
    await world.restart_bot()

    submitted = await world.discord.submit_modal(opened, {"prompt": "after the restart"})
    await submitted.response()
    edited = await world.result_in(card_id, after=int(result["id"]))
    assert edited["attachments"] and world.api.requests[1]["prompt"] == "after the restart"


async def test_a_models_400_is_told_plainly_and_reroll_stays(world: World):
    world.api.fail_next(
        400,
        body={
            "message": ["image_url could not be processed by this model"],
            "path": "/v1/images/generations",
            "statusCode": 400,
        },
    )
    card_id = await world.card_of(await edit(world))
    notice = await world.result_in(card_id)

    assert notice["content"] == (
        "❌ This image could not be made: The image service refused the request: "
        "image_url could not be processed by this model"
    )
    assert "fluxbot:reroll:" in custom_id(notice, "reroll")
    await world.card_status(card_id, "❌ Failed")
    assert world.api.calls == 1  # a 400 is never retried


async def test_what_a_model_refuses_is_told_before_any_call(world: World):
    await world.restart_bot(edit_model=FLUX2_EDIT)
    card_id = await world.card_of(await edit(world))
    result = await world.result_in(card_id)
    remix = await press(world, result, "remix")
    form = (await remix.response())["data"]
    inputs = form_inputs(form)
    assert inputs == ["prompt", "seed", "steps", "guidance", "aspect_ratio"]

    refused = await world.discord.submit_modal(remix, {"steps": "2"})
    response = await refused.response()
    assert refused.ephemeral
    assert response["data"]["content"] == "FLUX.2 edit needs at least 4 steps; you chose 2."
    assert world.api.calls == 1


async def test_a_file_that_is_no_picture_is_refused_privately(world: World):
    good = world.upload()
    bad = world.upload(b"%PDF-1.4", filename="notes.pdf", content_type="application/pdf")
    interaction = await world.discord.invoke_command(
        "edit",
        {"image": good["id"], "image2": bad["id"], "prompt": "combine them"},
        user_id=world.alice,
        channel_id=world.channel,
        attachments=[good, bad],
    )
    response = await interaction.response()
    assert interaction.ephemeral and response["data"]["content"].startswith("image2: ")
    assert world.api.calls == 0 and world.discord.threads == {}


async def test_a_channel_missing_a_permission_is_refused_privately_naming_it(world: World):
    perms = rules.DEFAULT_BOT_PERMISSIONS & ~rules.ATTACH_FILES
    channel = world.discord.add_text_channel(world.guild, "no-files", bot_permissions=perms)
    upload = world.upload(images.png(64, 64), channel=channel)
    interaction = await world.discord.invoke_command(
        "edit",
        {"image": upload["id"], "prompt": "make it night"},
        user_id=world.alice,
        channel_id=channel,
        attachments=[upload],
    )
    response = await interaction.response()

    assert interaction.ephemeral
    assert "**Attach Files**" in response["data"]["content"]
    assert f"<#{channel}>" in response["data"]["content"]
    assert world.api.calls == 0 and world.discord.threads == {}
    assert world.discord.rejections == []


async def test_one_picture_goes_as_sent_and_several_are_put_on_the_card_first(world: World):
    # One picture that needs no change: the API reads the member's own file (no Discord write
    # before the call); several are re-hosted on the card in one edit before it, as before.
    upload = world.upload(images.png(64, 64))
    interaction = await world.discord.invoke_command(
        "edit",
        {"image": upload["id"], "prompt": "make it night"},
        user_id=world.alice,
        channel_id=world.channel,
        attachments=[upload],
    )
    one = await world.card_of(interaction)
    await world.result_in(one)
    [url] = references_of(world.api.requests[0])
    assert attachment_id(url) == upload["id"]
    card = await world.card_status(one, "✅ Done")
    assert card["attachments"][0]["filename"].startswith("reference")  # kept for rerolls

    three = await world.card_of(await edit(world, sizes=SIZES))
    await world.result_in(three)
    card = await world.card_status(three, "✅ Done")
    on_card = [attachment_id(a["url"]) for a in card["attachments"]]
    assert [attachment_id(u) for u in references_of(world.api.requests[1])] == on_card
    assert world.discord.rejections == []
