"""/fluxbot-settings: Manage Server only, checked on the server too; blocked words refuse a
prompt privately before any API call."""

from __future__ import annotations

from tests.e2e.conftest import World
from tests.e2e.test_nsfw import admin, settings_command


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
