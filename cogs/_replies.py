"""Private answers to a member, whatever state the interaction is in."""

from __future__ import annotations

from typing import Any

import discord

from cogs._render import NO_MENTIONS

#: For bugs and outages: the member learns nothing they could act on, the log gets the rest.
UNEXPECTED = "Something went wrong on my side. Please try again in a minute."


async def reply(interaction: discord.Interaction[Any], text: str) -> None:
    """Answer ephemerally whether or not the interaction was acknowledged already."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    else:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
