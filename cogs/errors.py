"""The one error handler for the command tree: members get a short ephemeral line, logs the rest."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs import _render as render
from cogs._replies import UNEXPECTED, reply
from services.errors import UserFacingError

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)


def user_message_for(error: app_commands.AppCommandError) -> str | None:
    """Words for errors a member caused or can fix; None for bugs and outages."""
    original = getattr(error, "original", error)
    if isinstance(original, discord.Forbidden):
        return render.MISSING_PERMISSION
    if isinstance(original, UserFacingError):
        return original.user_message
    if isinstance(error, app_commands.TransformerError):
        return "One of the options has a value I can't use. Check it and try again."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    return None


class ErrorsCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error

    async def cog_load(self) -> None:
        self.bot.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous  # type: ignore[method-assign]

    async def on_app_command_error(
        self, interaction: discord.Interaction[FluxBot], error: app_commands.AppCommandError
    ) -> None:
        text = user_message_for(error)
        if text is None:
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error("command %s failed", command, exc_info=error)
            text = UNEXPECTED
        try:
            await reply(interaction, text)
        except discord.HTTPException as exc:
            log.warning("could not tell the member about an error (%s)", exc.status)


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(ErrorsCog(bot))
