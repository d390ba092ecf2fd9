"""``/fluxbot-settings``: a guild's content policy, models and budgets, for Manage Server.

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
from services.costs import format_usd, parse_usd, usd_to_nanos
from services.model_access import ModelsRejected, allowed_models, model_label, parse_models
from services.safety import GuildSettings, TermsRejected, describe_terms, parse_terms
from services.store import Budgets

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

NOT_ALLOWED = "Only members with the Manage Server permission can change fluxbot's settings."
CLEAR = frozenset({"none", "-", "clear"})
#: A member's own budget is removed (the server's member budget applies again) with these.
DEFAULT = frozenset({"default", "none", "-", "clear"})


class BudgetRejected(ValueError):
    """A budget option an admin cannot save; the message says why."""


def budget_nanos(text: str, *, option: str, clear: frozenset[str] = CLEAR) -> int | None:
    """An amount in USD as nano-dollars; None for "no limit" (``none``)."""
    if text.strip().lower() in clear:
        return None
    try:
        return usd_to_nanos(parse_usd(text))
    except ValueError as exc:
        raise BudgetRejected(f"{option}: {exc}. Nothing was changed.") from None


def describe_budgets(budgets: Budgets) -> str:
    def amount(nanos: int | None) -> str:
        return "no limit" if nanos is None else f"{format_usd(nanos)} a day"

    own = ", ".join(f"<@{u}> {format_usd(n)}" for u, n in sorted(budgets.members.items()))
    return (
        f"• Daily budget for the server: {amount(budgets.daily_usd_nanos)}\n"
        f"• Daily budget for each member: {amount(budgets.member_daily_usd_nanos)}"
        + (f" (their own: {own})" if own else "")
    )


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
        daily_budget="USD this server may spend on images per UTC day, e.g. 5; 'none' for no limit",
        member_daily_budget="USD each member may spend per UTC day, e.g. 0.5; 'none' for no limit",
        member="A member to give a budget of their own (with member_budget)",
        member_budget="That member's USD per UTC day; 'default' gives them the member budget again",
        models="Models members may use, comma-separated ids or names; 'all' allows every one",
    )
    async def settings(
        self,
        interaction: discord.Interaction[FluxBot],
        unfiltered_in_nsfw: bool | None = None,
        open_rerolls: bool | None = None,
        blocked_words: app_commands.Range[str, 1, 2000] | None = None,
        models: app_commands.Range[str, 1, 1000] | None = None,
        daily_budget: app_commands.Range[str, 1, 20] | None = None,
        member_daily_budget: app_commands.Range[str, 1, 20] | None = None,
        member: discord.Member | None = None,
        member_budget: app_commands.Range[str, 1, 20] | None = None,
    ) -> None:
        """Show or change fluxbot's content settings and budgets for this server."""
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
        if (member is None) != (member_budget is None):
            await reply(interaction, "Give both member and member_budget. Nothing was changed.")
            return
        try:
            budgets = await self._change_budgets(
                interaction, daily_budget, member_daily_budget, member, member_budget
            )
        except BudgetRejected as exc:
            await reply(interaction, str(exc))
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
        text = f"{describe(current, self.bot.settings)}\n{describe_budgets(budgets)}"
        await reply(interaction, text)

    async def _change_budgets(
        self,
        interaction: discord.Interaction[FluxBot],
        daily: str | None,
        member_daily: str | None,
        member: discord.Member | None,
        member_budget: str | None,
    ) -> Budgets:
        """Save what was given (all checked first, so a bad value changes nothing)."""
        assert interaction.guild_id is not None
        guild_id, by = interaction.guild_id, interaction.user.id
        store = self.bot.store.budgets
        current = await store.get(guild_id)
        new_daily = current.daily_usd_nanos
        new_member_daily = current.member_daily_usd_nanos
        if daily is not None:
            new_daily = budget_nanos(daily, option="daily_budget")
        if member_daily is not None:
            new_member_daily = budget_nanos(member_daily, option="member_daily_budget")
        own: int | None = None
        if member is not None and member_budget is not None:
            own = budget_nanos(member_budget, option="member_budget", clear=DEFAULT)
        if daily is not None or member_daily is not None:
            await store.save_guild(
                guild_id,
                daily_usd_nanos=new_daily,
                member_daily_usd_nanos=new_member_daily,
                updated_by=by,
            )
        if member is not None:
            await store.save_member(guild_id, member.id, own, updated_by=by)
        if daily is not None or member_daily is not None or member is not None:
            log.info("guild %s: budgets changed by %s", guild_id, by)
            return await store.get(guild_id)
        return current


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(AdminCog(bot))
