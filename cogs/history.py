"""``/history``: a member's own generations, newest first, ten a page, shown only to them.

Deleted ones are left out. The page buttons are ``DynamicItem``s whose custom id carries the
member and the page (``fluxbot:history-older:<user id>:<page>``), so paging works after a
restart; each press reads the store again.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs import _render as render
from cogs._replies import UNEXPECTED, reply
from services.store import Generation, GenerationStatus

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]

log = logging.getLogger(__name__)

PAGE_SIZE = 10
PROMPT_SHOWN = 90
NOTHING_YET = "You haven't made any images yet. Start with /imagine."
NOT_YOURS = "This list belongs to someone else. Use /history to see yours."
MARKS = {
    GenerationStatus.INTAKE: "⏳ ",
    GenerationStatus.QUEUED: "⏳ ",
    GenerationStatus.INTERRUPTED: "⏳ ",
    GenerationStatus.RUNNING: "🎨 ",
    GenerationStatus.FAILED: "❌ ",
    GenerationStatus.CANCELLED: "🚫 ",
}


def history_line(generation: Generation) -> str:
    """One generation: prompt, seed, model, when, and a link to its result (or its card)."""
    seed = generation.seed or generation.parameters.seed
    prompt = render.display_prompt(generation.parameters.prompt, PROMPT_SHOWN)
    parts = [
        f"{MARKS.get(generation.status, '')}{prompt}",
        f"seed {seed}" if seed else "seed random",
        f"`{render.shorten(generation.model, 40)}`",
        render.timestamp(generation.created_at),
    ]
    link = render.result_url(generation) or render.card_url(generation)
    if link:
        parts.append(f"[jump]({link})")
    return " · ".join(parts)


def history_embed(generations: list[Generation], *, page: int, total: int) -> discord.Embed:
    first = page * PAGE_SIZE
    lines = [f"**{first + n}.** {history_line(g)}" for n, g in enumerate(generations, start=1)]
    embed = discord.Embed(title="Your images", description="\n".join(lines), colour=render.COLOUR)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    embed.set_footer(text=f"Page {page + 1} of {pages} · {total} in all, newest first")
    return embed


class PageButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"fluxbot:history-(?P<way>newer|older):(?P<user>[0-9]{1,20}):(?P<page>[0-9]{1,6})",
):
    """Shows page ``page`` of member ``user``'s history in place of the current one."""

    def __init__(self, way: str, user_id: int, page: int, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id=f"fluxbot:history-{way}:{user_id}:{page}",
                label="Newer" if way == "newer" else "Older",
                emoji="◀️" if way == "newer" else "▶️",
                style=discord.ButtonStyle.secondary,
                disabled=disabled,
            )
        )
        self.user_id, self.page = user_id, page

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> PageButton:
        return cls(match["way"], int(match["user"]), int(match["page"]))

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.user.id != self.user_id:
            await reply(interaction, NOT_YOURS)
            return False
        return True

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            page = await history_page(interaction, self.user_id, self.page)
            if page is None:
                await interaction.response.edit_message(content=NOTHING_YET, embed=None, view=None)
                return
            embed, view = page
            await interaction.response.edit_message(embed=embed, view=view)
        except Exception:
            log.exception("history page %s of %s failed", self.page, self.user_id)
            await reply(interaction, UNEXPECTED)


async def history_page(
    interaction: Interaction, user_id: int, page: int
) -> tuple[discord.Embed, discord.ui.View | None] | None:
    """Page ``page`` (from 0, clamped to the last) of a member's history; ``None`` if empty."""
    generations = interaction.client.store.generations
    total = await generations.count_history(user_id)
    if total == 0:
        return None
    pages = math.ceil(total / PAGE_SIZE)
    page = min(page, pages - 1)
    shown = await generations.history(user_id, offset=page * PAGE_SIZE, limit=PAGE_SIZE)
    embed = history_embed(shown, page=page, total=total)
    if pages == 1:
        return embed, None
    view = discord.ui.View(timeout=None)
    view.add_item(PageButton("newer", user_id, max(page - 1, 0), disabled=page == 0))
    view.add_item(PageButton("older", user_id, page + 1, disabled=page + 1 >= pages))
    return embed, view


class HistoryCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(PageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(PageButton)

    @app_commands.command(name="history")
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    async def history(self, interaction: Interaction) -> None:
        """Your own images, newest first, with their prompt, seed and a link (only you see it)."""
        page = await history_page(interaction, interaction.user.id, 0)
        if page is None:
            await reply(interaction, NOTHING_YET)
            return
        embed, view = page
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        await interaction.response.send_message(
            embed=embed, ephemeral=True, allowed_mentions=render.NO_MENTIONS, **extra
        )


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(HistoryCog(bot))
