"""Every extension loads, unloads and loads again without an error; helpers are not extensions."""

from __future__ import annotations

import importlib
import pkgutil

import cogs
from bot import walk_extensions
from tests.world import World


def test_every_cogs_module_is_an_extension_or_a_private_helper():
    for module in pkgutil.iter_modules(cogs.__path__, "cogs."):
        imported = importlib.import_module(module.name)
        is_helper = module.name.rpartition(".")[2].startswith("_")
        assert hasattr(imported, "setup") != is_helper, module.name


async def test_the_bot_loaded_every_extension_and_each_reloads_cleanly(world: World):
    bot = world.bot
    assert bot is not None
    expected = set(walk_extensions())
    assert expected >= {"cogs.imagine", "cogs.buttons", "cogs.delivery", "cogs.admin"}
    assert expected >= {"cogs.history", "cogs.remix_message", "cogs.edit", "cogs.stats"}
    assert set(bot.extensions) == expected  # a failed load is logged and fails this test too
    assert {c.name for c in bot.tree.get_commands()} == {
        "imagine",
        "edit",
        "fluxbot-settings",
        "fluxbot-stats",
        "history",
        "Remix with fluxbot",
    }
    for name in sorted(expected):
        await bot.reload_extension(name)
    assert set(bot.extensions) == expected

    # After all that, a job still goes the whole way: delivery re-attached itself.
    result = await world.result_in(await world.card_of(await world.imagine("after the reloads")))
    assert result["attachments"]


async def test_without_delivery_jobs_wait_and_run_once_it_is_back(world: World):
    bot = world.bot
    assert bot is not None
    await bot.unload_extension("cogs.delivery")
    card_id = await world.card_of(await world.imagine("while delivery is away"))
    await world.card_status(card_id, "⏳ Queued")
    assert world.api.calls == 0

    await bot.load_extension("cogs.delivery")
    result = await world.result_in(card_id)
    assert result["attachments"] and world.api.calls == 1
