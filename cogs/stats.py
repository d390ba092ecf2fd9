"""``/fluxbot-stats`` (Manage Server): what this server spent, against its budgets, with a chart.

Also the Discord side of the balance watch (``services/credits.py``): operator notes in
``ADMIN_CHANNEL_ID`` (low balance; out of credits, with a Resume button) and the one pause notice
per affected job card. Like ``/fluxbot-settings``, the command is hidden from members without
Manage Server and checks that permission again on every use.
"""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs._render import NO_MENTIONS
from cogs._replies import reply
from cogs.delivery import DiscordPublisher
from services.charts import spend_chart_png
from services.costs import SpendReport, format_usd, nanos_to_usd, spend_report
from services.job_stats import JobStats, job_stats
from services.store import Generation, GenerationStatus
from services.worker import NoPublisher

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

NOT_ALLOWED = "Only members with the Manage Server permission can see fluxbot's spending."
RESUME_NOT_ALLOWED = "Only members with the Manage Server permission can resume the queue."
#: Members listed by name in the stats; the chart and totals cover everyone.
TOP_MEMBERS = 5


def describe_report(report: SpendReport, *, paused: bool) -> str:
    """The stats as text (the chart carries the days). Mentions render, but never ping."""
    today = report.today
    lines = [f"**fluxbot spend in this server**, last {len(report.days)} days (UTC)"]
    line = f"• Today: {format_usd(today.spent)} spent"
    if today.reserved:
        line += f", {format_usd(today.reserved)} reserved by waiting jobs"
    if today.limit is not None:
        line += f" · budget {format_usd(today.limit)} a day ({format_usd(today.left() or 0)} left)"
    else:
        line += " · no daily budget"
    lines.append(line)
    if report.member_default is not None or report.member_budgets:
        each = (
            f"{format_usd(report.member_default)} a day each"
            if report.member_default is not None
            else "no limit each"
        )
        own = ", ".join(
            f"<@{user}> {format_usd(nanos)}"
            for user, nanos in sorted(report.member_budgets.items())
        )
        lines.append(f"• Members: {each}" + (f"; their own: {own}" if own else ""))
    lines.append(
        f"• {len(report.days)} days: {format_usd(report.total)} on {report.answers} API calls"
    )
    if report.by_model:
        models = ", ".join(f"{model} {format_usd(spent)}" for model, spent, _ in report.by_model)
        lines.append(f"• By model: {models}")
    if report.by_member:
        top = " · ".join(
            f"<@{user}> {format_usd(spent)}" for user, spent, _ in report.by_member[:TOP_MEMBERS]
        )
        lines.append(f"• Top members: {top}")
    if paused:
        lines.append("⏸️ The queue is paused: the bot's image service account is out of credits.")
    return "\n".join(lines)


#: The windows the job figures are given for, besides the chart's days.
JOB_WINDOWS = (("Today", 0), ("Last 7 days", 6))
OUTCOME_WORDS = {
    GenerationStatus.DONE: "done",
    GenerationStatus.FAILED: "failed",
    GenerationStatus.CANCELLED: "cancelled",
    GenerationStatus.INTAKE: "waiting",
    GenerationStatus.QUEUED: "waiting",
    GenerationStatus.INTERRUPTED: "waiting",
    GenerationStatus.RUNNING: "running",
}


def describe_jobs(label: str, stats: JobStats) -> str:
    """One line: jobs by outcome and model, and the time from command to result."""
    if not stats.total:
        return f"• {label}: no jobs"
    outcomes: dict[str, int] = {}
    for status, count in stats.by_outcome.items():
        word = OUTCOME_WORDS[status]
        outcomes[word] = outcomes.get(word, 0) + count
    parts = [", ".join(f"{count} {word}" for word, count in sorted(outcomes.items()))]
    parts.append(", ".join(f"{model} {count}" for model, count in stats.by_model.most_common()))
    if stats.p50_seconds is not None and stats.p95_seconds is not None:
        parts.append(
            f"command → result p50 {stats.p50_seconds:.1f} s, p95 {stats.p95_seconds:.1f} s"
        )
    return f"• {label}: {stats.total} jobs ({'; '.join(parts)})"


def chart(report: SpendReport) -> bytes:
    """The PNG; runs on the image pool."""
    budget = None if report.today.limit is None else nanos_to_usd(report.today.limit)
    return spend_chart_png(
        report.days, [nanos_to_usd(nanos) for nanos in report.daily], budget_usd=budget
    )


class ResumeQueueButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"fluxbot:resume-queue"
):
    """On the out-of-credits note: start the queue again now (an admin topped up, say)."""

    def __init__(self) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id="fluxbot:resume-queue",
                label="Resume",
                emoji="▶️",
                style=discord.ButtonStyle.success,
            )
        )

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: Any,
        /,
    ) -> ResumeQueueButton:
        return cls()

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            await reply(interaction, RESUME_NOT_ALLOWED)
            return False
        return True

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxBot = interaction.client
        resumed = await bot.credits.resume(reason=f"<@{interaction.user.id}> pressed Resume")
        log.info("resume pressed by %s (queue was paused: %s)", interaction.user.id, resumed)
        await reply(
            interaction,
            "▶️ The queue runs again." if resumed else "The queue was not paused.",
        )


class DiscordCostNotices:
    """``services.credits.CostNotices`` with the bot token (no interaction is involved)."""

    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot

    async def admin_note(self, text: str, *, offer_resume: bool = False) -> None:
        channel_id = self.bot.settings.admin_channel_id
        if channel_id is None:
            return
        view = discord.ui.View(timeout=None)
        if offer_resume:
            view.add_item(ResumeQueueButton())
        channel = self.bot.get_partial_messageable(channel_id)
        await channel.send(text, view=view, allowed_mentions=NO_MENTIONS)

    async def card_notice(self, generation: Generation, text: str) -> None:
        # As results are posted: the job's thread may still be opening, or be gone.
        publisher = self.bot.generations.publisher()
        if not isinstance(publisher, DiscordPublisher):
            raise NoPublisher(detail="no Discord delivery is attached")
        await publisher.post_text(generation, text)


class StatsCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot

    @app_commands.command(name="fluxbot-stats")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(days="How many days back to show, today included (default 14)")
    async def stats(
        self, interaction: discord.Interaction[FluxBot], days: app_commands.Range[int, 1, 90] = 30
    ) -> None:
        """What this server spent on images, against its budgets (Manage Server)."""
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            log.info("stats refused for %s in %s", interaction.user.id, interaction.guild_id)
            await reply(interaction, NOT_ALLOWED)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        guard = self.bot.generations.budgets
        report = await spend_report(guard, self.bot.store, interaction.guild_id, days)
        png = await self.bot.images.run(chart, report)
        start, _ = guard.today()
        rows = await self.bot.store.generations.outcomes(
            guild_id=interaction.guild_id, since=start - timedelta(days=JOB_WINDOWS[-1][1])
        )
        running, waiting = await self.bot.generations.depth()
        lines = [describe_report(report, paused=self.bot.generations.credit_hold)]
        lines += [
            describe_jobs(label, job_stats(rows, since=start - timedelta(days=back)))
            for label, back in JOB_WINDOWS
        ]
        lines.append(f"• Queue now (whole bot): {running} running, {waiting} waiting")
        await interaction.followup.send(
            "\n".join(lines),
            file=discord.File(io.BytesIO(png), filename="fluxbot-spend.png"),
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )


async def setup(bot: FluxBot) -> None:
    bot.add_dynamic_items(ResumeQueueButton)
    bot.credits.attach(DiscordCostNotices(bot))
    await bot.add_cog(StatsCog(bot))


async def teardown(bot: FluxBot) -> None:
    bot.credits.detach()
    bot.remove_dynamic_items(ResumeQueueButton)
