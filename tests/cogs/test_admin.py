"""/fluxbot-settings: Manage Server only, checked on the server too; blocked words refuse a
prompt privately before any API call."""

from __future__ import annotations

from typing import Any

from tests.e2e.test_nsfw import admin, settings_command
from tests.world import World


async def test_blocked_words_refuse_a_prompt_privately_and_cost_nothing(world: World):
    owner = admin(world)
    response = await settings_command(world, owner, blocked_words="gore, dark magic, gor*")
    assert "gore, dark magic, gor\\*" in response["data"]["content"]

    for prompt in ("lots of GORE!", "a Dark  Magic ritual", "a gory scene"):
        interaction = await world.imagine(prompt)
        refusal = await interaction.response()
        assert interaction.ephemeral
        assert "This server doesn't allow prompts with" in refusal["data"]["content"]
    assert world.api.calls == 0 and world.discord.threads == {}

    allowed = await world.imagine("a goat in a garden")  # "gor*" matches word starts only
    await allowed.response()
    await world.result_in(int(allowed.original_message["id"]))
    assert world.api.calls == 1

    await settings_command(world, owner, blocked_words="none")
    again = await world.imagine("lots of gore")
    await again.response()
    assert not again.ephemeral


async def test_a_pattern_is_refused_and_nothing_changes(world: World):
    owner = admin(world)
    response = await settings_command(world, owner, blocked_words="(a+)+$")
    assert "looks like a pattern" in response["data"]["content"]
    assert world.bot is not None
    assert (await world.bot.store.guild_settings.get(world.guild)).blocked_terms == ()


async def test_members_without_manage_server_are_refused_even_if_the_command_is_shown(
    world: World,
):
    command = next(c for c in world.discord.commands if c["name"] == "fluxbot-settings")
    assert int(command["default_member_permissions"]) == 1 << 5  # hidden from members...
    command["default_member_permissions"] = None  # ...until a guild's admin shows it to all

    response = await settings_command(world, world.bob, unfiltered_in_nsfw=True, open_rerolls=True)

    assert "Manage Server" in response["data"]["content"]
    assert world.bot is not None
    settings = await world.bot.store.guild_settings.get(world.guild)
    assert not settings.unfiltered_in_nsfw and not settings.open_rerolls


async def test_settings_with_no_options_show_the_defaults(world: World):
    response = await settings_command(world, admin(world))
    content = response["data"]["content"]
    assert "Safety checker: always on" in content and "Blocked words: none" in content


def ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


async def press(world: World, message: dict[str, Any], action: str) -> Any:
    custom_id = next(i for i in ids(message) if i.startswith(f"fluxbot:{action}:"))
    return await world.discord.click(
        int(message["channel_id"]), int(message["id"]), custom_id, user_id=world.alice
    )


async def edit_command(world: World) -> Any:
    upload = world.upload()
    return await world.discord.invoke_command(
        "edit",
        {"image": upload["id"], "prompt": "make it night"},
        user_id=world.alice,
        channel_id=world.channel,
        attachments=[upload],
    )


async def test_a_guild_that_allows_only_one_model(world: World):
    owner = admin(world)
    edit_card = await world.card_of(await edit_command(world))  # allowed until restricted
    edited = await world.result_in(edit_card)

    response = await settings_command(world, owner, models="flux/dev/image-to-image")
    assert "Models: only: FLUX.1 [dev] (`flux/dev/image-to-image`)" in response["data"]["content"]

    refused = await edit_command(world)
    said = await refused.response()
    assert refused.ephemeral and said["data"]["content"] == (
        "This server doesn't allow FLUX.1 Kontext [pro]. Its admins allow: FLUX.1 [dev]."
    )
    card_id = await world.card_of(await world.imagine())
    result = await world.result_in(card_id)
    for message, action in ((result, "upscale"), (result, "edit"), (edited, "reroll")):
        pressed = await press(world, message, action)
        answer = await pressed.response()
        assert pressed.ephemeral and "doesn't allow" in answer["data"]["content"], action
    await (await press(world, result, "reroll")).response()  # its own model is allowed
    await world.result_in(card_id, after=int(result["id"]))
    assert [body["model"] for body in world.api.requests] == [
        "flux/kontext-pro/image-to-image",
        "flux/dev/image-to-image",
        "flux/dev/image-to-image",
    ]

    response = await settings_command(world, owner, models="all")
    assert "Models: all this bot offers" in response["data"]["content"]
    opened = await press(world, result, "edit")
    assert (await opened.response())["type"] == 9  # the instruction form


async def test_a_model_list_naming_an_unknown_model_changes_nothing(world: World):
    owner = admin(world)
    response = await settings_command(world, owner, models="FLUX.1 [dev], dall-e-3")
    assert response["data"]["content"].startswith("“dall-e-3” is not one of this bot's models")
    assert "Nothing was changed." in response["data"]["content"]
    assert world.bot is not None
    assert (await world.bot.store.guild_settings.get(world.guild)).allowed_models == ()

    response = await settings_command(world, owner, models="flux 1 kontext [PRO]")
    assert "“flux 1 kontext [PRO]” is not one" in response["data"]["content"]
    response = await settings_command(world, owner, models="FLUX.1 Kontext [pro], FLUX.1 [dev]")
    settings = await world.bot.store.guild_settings.get(world.guild)
    assert settings.allowed_models == (
        "flux/kontext-pro/image-to-image",
        "flux/dev/image-to-image",
    )


async def test_models_the_operator_did_not_enable_are_not_offered(world: World):
    await world.restart_bot(
        enabled_models="flux/dev/image-to-image,flux/kontext-pro/image-to-image,"
        "bytedance/dreamina-creative-upscale"
    )
    owner = admin(world)
    response = await settings_command(world, owner, models="blackforestlabs/flux-2-edit")
    assert "is not one of this bot's models" in response["data"]["content"]
    shown = (await settings_command(world, owner))["data"]["content"]
    assert "flux-2-edit" not in shown and "kontext-max" not in shown
