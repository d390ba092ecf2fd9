"""``/fluxbot-settings``: a guild's content policy and models, for members with Manage Server.

``default_permissions`` only hides the command; a guild can grant it to anyone under Server
Settings -> Integrations, and a client can send any interaction, so the callback checks the
member's permissions again before reading or changing anything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs._replies import reply
from services.config import Settings
from services.model_access import ModelsRejected, allowed_models, model_label, parse_models
from services.safety import GuildSettings, TermsRejected, describe_terms, parse_terms

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

NOT_ALLOWED = "Only members with the Manage Server permission can change fluxbot's settings."
CLEAR = frozenset({"none", "-", "clear"})


def describe_models(settings: GuildSettings, bot_settings: Settings) -> str:
    """Which models members may use here, and which does what."""
    enabled = bot_settings.enabled_models
    allowed = allowed_models(settings, enabled)
    names = ", ".join(f"{model_label(m)} (`{m}`)" for m in allowed) or "none"
    scope = "all this bot offers" if not settings.allowed_models else "only"
    uses = (
        f"/imagine and Vary: {model_label(bot_settings.aimlapi_model)}; "
        f"/edit and Edit: {model_label(bot_settings.edit_model)}; "
        f"Upscale: {model_label(bot_settings.upscale_model)}"
    )
    return f"• Models: {scope}: {names}\n  ({uses})"


def describe(settings: GuildSettings, bot_settings: Settings) -> str:
    checker = (
        "off in channels marked NSFW, on everywhere else"
        if settings.unfiltered_in_nsfw
        else "always on"
    )
    rerolls = "anyone" if settings.open_rerolls else "the member who asked, and moderators"
    terms = discord.utils.escape_markdown(describe_terms(settings.blocked_terms))
    return (
        "**fluxbot settings for this server**\n"
        f"• Safety checker: {checker}\n"
        f"• Reroll, Remix, Info, Vary, Upscale, Edit and Use as input: {rerolls} (Delete: the "
        "member who asked, and moderators)\n"
        f"• Blocked words: {terms}\n"
        f"{describe_models(settings, bot_settings)}"
    )


class AdminCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot

    @app_commands.command(name="fluxbot-settings")
    @app_commands.guild_only()
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(
        unfiltered_in_nsfw="Turn the safety checker off in channels marked NSFW (default: no)",
        open_rerolls="Let anyone press Reroll, Remix, Vary and Info on any image (default: no)",
        blocked_words="Words or phrases to refuse in prompts, comma-separated; 'none' clears them",
        models="Models members may use, comma-separated ids or names; 'all' allows every one",
    )
    async def settings(
        self,
        interaction: discord.Interaction[FluxBot],
        unfiltered_in_nsfw: bool | None = None,
        open_rerolls: bool | None = None,
        blocked_words: app_commands.Range[str, 1, 2000] | None = None,
        models: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        """Show or change fluxbot's content settings for this server (Manage Server)."""
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            log.info("settings refused for %s in %s", interaction.user.id, interaction.guild_id)
            await reply(interaction, NOT_ALLOWED)
            return
        current = await self.bot.store.guild_settings.get(interaction.guild_id)
        changes: dict[str, object] = {}
        if unfiltered_in_nsfw is not None:
            changes["unfiltered_in_nsfw"] = unfiltered_in_nsfw
        if open_rerolls is not None:
            changes["open_rerolls"] = open_rerolls
        if blocked_words is not None:
            try:
                terms = () if blocked_words.strip().lower() in CLEAR else parse_terms(blocked_words)
            except TermsRejected as exc:
                await reply(interaction, f"{exc.user_message} Nothing was changed.")
                return
            changes["blocked_terms"] = terms
        if models is not None:
            try:
                changes["allowed_models"] = parse_models(models, self.bot.settings.enabled_models)
            except ModelsRejected as exc:
                await reply(interaction, f"{exc.user_message} Nothing was changed.")
                return
        if changes:
            current = current.model_copy(update=changes)
            await self.bot.store.guild_settings.save(current, updated_by=interaction.user.id)
            log.info(
                "guild %s: settings changed by %s (%s)",
                interaction.guild_id,
                interaction.user.id,
                ", ".join(sorted(changes)),
            )
        await reply(interaction, describe(current, self.bot.settings))


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(AdminCog(bot))
