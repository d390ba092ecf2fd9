"""Registers the persistent buttons and menus and answers the Remix form, from any earlier run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import discord
from discord.ext import commands

from cogs._components import BUTTONS, MODAL_ID, handle_remix_submit
from cogs._replies import UNEXPECTED, reply
from cogs._result_actions import RESULT_ITEMS

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)


class RemixForms(commands.Cog):
    """Modals have no DynamicItem: a submitted Remix form is matched by its custom id here."""

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[FluxBot]) -> None:
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data = cast(dict[str, Any], interaction.data or {})
        match = MODAL_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return
        try:
            image = int(match["image"]) if match["image"] is not None else None
            await handle_remix_submit(interaction, int(match["id"]), image=image)
        except Exception:
            log.exception("remix form for %s failed", match["id"])
            await reply(interaction, UNEXPECTED)


async def setup(bot: FluxBot) -> None:
    bot.add_dynamic_items(*BUTTONS, *RESULT_ITEMS)
    await bot.add_cog(RemixForms())


async def teardown(bot: FluxBot) -> None:
    bot.remove_dynamic_items(*BUTTONS, *RESULT_ITEMS)
