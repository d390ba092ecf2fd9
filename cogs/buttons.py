"""Reroll, Remix and Cancel: stateless buttons whose custom id names a stored generation.

A custom id is ``fluxbot:<action>:<generation_id>``; the classes are registered with
``add_dynamic_items`` at start-up, so a button from any earlier run still finds its
generation in the store. The Remix modal is answered from ``on_interaction`` by custom id,
so a modal opened before a restart still works after it.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands
from pydantic import ValidationError

from cogs import render
from cogs.errors import UNEXPECTED, reply
from services.jobs import QUEUED_FOR_RESTART, QueueRefused
from services.parameters import GenerationParameters, describe_invalid
from services.safety import GuildSettings, PromptBlocked, check_prompt
from services.store import Generation, GenerationKind, GenerationStatus

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

MODAL_PREFIX = "fluxbot:remix-modal:"
MODAL_ID = re.compile(r"fluxbot:remix-modal:(?P<id>[0-9]{1,20}):[0-9a-f]{8}")
GONE = "I can't find this image in my records any more. Start again with /imagine."


async def guild_settings(bot: FluxBot, interaction: discord.Interaction) -> GuildSettings | None:
    return (
        await bot.store.guild_settings.get(interaction.guild_id) if interaction.guild_id else None
    )


def may_control(
    interaction: discord.Interaction, generation: Generation, *, open_to_all: bool = False
) -> bool:
    """The member who asked, a member who may manage messages here, or anyone if opened."""
    if interaction.user.id == generation.user_id:
        return True
    if interaction.guild is None:
        return False
    return open_to_all or interaction.permissions.manage_messages


class GenerationButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)"):
    """Shared parsing and the author check; subclasses set ``action`` and ``callback``."""

    action = ""
    refusal = "Only the member who asked for this image can use its buttons."

    label = ""
    emoji = ""
    style = discord.ButtonStyle.secondary
    #: Whether the guild's "open rerolls" setting lets anyone press it (never for Cancel).
    opens_with_guild = True

    def __init__(self, generation_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id=f"fluxbot:{self.action}:{generation_id}",
                label=self.label,
                emoji=self.emoji,
                style=self.style,
            )
        )
        self.generation_id = generation_id
        self.generation: Generation | None = None

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> GenerationButton:
        return cls(int(match["id"]))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        bot: FluxBot = interaction.client  # type: ignore[assignment]
        self.generation = await bot.store.generations.get(self.generation_id)
        if self.generation is None:
            await reply(interaction, GONE)
            return False
        settings = await guild_settings(bot, interaction) if self.opens_with_guild else None
        open_to_all = bool(settings and settings.open_rerolls)
        if not may_control(interaction, self.generation, open_to_all=open_to_all):
            await reply(interaction, self.refusal)
            return False
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        assert self.generation is not None  # set by interaction_check
        bot: FluxBot = interaction.client  # type: ignore[assignment]
        try:
            await self.press(bot, interaction, self.generation)
        except Exception:
            log.exception("button %s:%s failed", self.action, self.generation_id)
            await reply(interaction, UNEXPECTED)

    async def press(
        self, bot: FluxBot, interaction: discord.Interaction, generation: Generation
    ) -> None:
        raise NotImplementedError


class RerollButton(GenerationButton, template=r"fluxbot:reroll:(?P<id>[0-9]{1,20})"):
    action = "reroll"

    label = "Reroll"
    emoji = "🎲"
    style = discord.ButtonStyle.primary

    async def press(
        self, bot: FluxBot, interaction: discord.Interaction, source: Generation
    ) -> None:
        # A failed job is retried as it was; a finished one gets a fresh random seed.
        seed = source.parameters.seed if source.status == GenerationStatus.FAILED else None
        parameters = source.parameters.model_copy(update={"seed": seed})
        await start_follow_up(bot, interaction, source, parameters, kind=GenerationKind.REROLL)


class RemixButton(GenerationButton, template=r"fluxbot:remix:(?P<id>[0-9]{1,20})"):
    action = "remix"

    label = "Remix"
    emoji = "✏️"
    style = discord.ButtonStyle.secondary

    async def press(
        self, bot: FluxBot, interaction: discord.Interaction, generation: Generation
    ) -> None:
        await interaction.response.send_modal(RemixModal(generation))


class CancelButton(GenerationButton, template=r"fluxbot:cancel:(?P<id>[0-9]{1,20})"):
    action = "cancel"
    opens_with_guild = False
    refusal = "Only the member who asked for this image can cancel it."

    label = "Cancel"
    emoji = "❌"
    style = discord.ButtonStyle.danger

    async def press(
        self, bot: FluxBot, interaction: discord.Interaction, generation: Generation
    ) -> None:
        if not bot.queue.cancel(generation.id) or not await bot.store.generations.mark_cancelled(
            generation.id, cancelled_by=interaction.user.id
        ):
            await reply(interaction, "This image has already started, so it can't be cancelled.")
            return
        await interaction.response.defer()
        bot.publisher.cards.request(generation.card_message_id or 0)


class RemixModal(discord.ui.Modal):
    """Pre-filled with the generation's settings; answered in ``ButtonsCog.on_interaction``."""

    def __init__(self, generation: Generation) -> None:
        nonce = secrets.token_hex(4)
        super().__init__(
            title="Remix this image",
            custom_id=f"{MODAL_PREFIX}{generation.id}:{nonce}",
            timeout=15 * 60,
        )
        parameters = generation.parameters
        seed = generation.seed or parameters.seed
        fields = [
            ("prompt", "Prompt", parameters.prompt, discord.TextStyle.paragraph, 4000),
            ("strength", "Strength (0.01–1.0)", f"{parameters.strength:g}", None, 10),
            ("seed", "Seed (keep it, or clear for a random one)", str(seed or ""), None, 10),
            ("steps", "Steps (1–50)", str(parameters.steps), None, 2),
            ("guidance", "Guidance (1–20)", f"{parameters.guidance:g}", None, 10),
        ]
        for custom_id, label, value, style, max_length in fields:
            self.add_item(
                discord.ui.TextInput(
                    custom_id=custom_id,
                    label=label,
                    default=value,
                    style=style or discord.TextStyle.short,
                    required=custom_id in {"prompt", "strength", "steps", "guidance"},
                    max_length=max_length,
                )
            )


def modal_values(components: list[dict[str, Any]]) -> dict[str, str]:
    """Text input values by custom id, from action rows or label components alike."""
    values: dict[str, str] = {}
    for component in components:
        if "value" in component and "custom_id" in component:
            values[component["custom_id"]] = str(component["value"])
        children = component.get("components") or []
        if "component" in component:
            children = [*children, component["component"]]
        values.update(modal_values(children))
    return values


def parse_remix(values: dict[str, str], source: Generation) -> GenerationParameters:
    """Turn modal text into parameters; raises ValueError worded for the member."""
    numbers = {name: values.get(name, "").strip() for name in ("strength", "steps", "guidance")}
    seed = values.get("seed", "").strip()
    try:
        return GenerationParameters(
            prompt=values.get("prompt", ""),
            count=source.parameters.count,
            safety_checker=source.parameters.safety_checker,
            **numbers,
            **({"seed": seed} if seed else {}),
        )
    except ValidationError as exc:
        raise ValueError(describe_invalid(exc)) from None


async def start_follow_up(
    bot: FluxBot,
    interaction: discord.Interaction,
    source: Generation,
    parameters: GenerationParameters,
    *,
    kind: GenerationKind,
) -> None:
    """Queue a reroll or remix of ``source`` in the same thread and acknowledge the press."""
    try:
        await bot.admit(interaction.user.id, interaction.guild_id)
    except QueueRefused as exc:
        await reply(interaction, exc.user_message)
        return
    await interaction.response.defer()
    try:
        generation, ahead = await bot.enqueue(
            source.follow_up(kind=kind, user_id=interaction.user.id, parameters=parameters)
        )
    except QueueRefused as exc:  # another press got there first
        await reply(interaction, exc.user_message)
        return
    where = (
        "here"
        if interaction.channel_id == (source.thread_id or source.channel_id)
        else "in the thread"
    )
    queued = f", {ahead} ahead of you" if ahead else ""
    emoji = "🎲" if kind == GenerationKind.REROLL else "✏️"
    text = f"{emoji} On it{queued} — the result will appear {where}."
    if bot.queue.stopping:
        text = f"{QUEUED_FOR_RESTART} The result will appear {where}."
    await interaction.followup.send(
        text,
        ephemeral=True,
        allowed_mentions=render.NO_MENTIONS,
    )
    log.info("generation %s: %s of %s by %s", generation.id, kind, source.id, interaction.user.id)


def result_view(generation: Generation) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(generation.id))
    view.add_item(RemixButton(generation.id))
    return view


def card_view(generation: Generation) -> discord.ui.View | None:
    """Cancel is offered only while the job waits: a running job is already being paid for."""
    if generation.status != GenerationStatus.QUEUED:
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(generation.id))
    return view


class ButtonsCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        match = MODAL_ID.fullmatch(str((interaction.data or {}).get("custom_id", "")))
        if match is None:
            return
        try:
            await self._remix(interaction, int(match["id"]))
        except Exception:
            log.exception("remix modal for %s failed", match["id"])
            await reply(interaction, UNEXPECTED)

    async def _remix(self, interaction: discord.Interaction, generation_id: int) -> None:
        source = await self.bot.store.generations.get(generation_id)
        if source is None:
            await reply(interaction, GONE)
            return
        settings = await guild_settings(self.bot, interaction)
        if not may_control(
            interaction, source, open_to_all=bool(settings and settings.open_rerolls)
        ):
            await reply(interaction, GenerationButton.refusal)
            return
        try:
            parameters = parse_remix(
                modal_values(list((interaction.data or {}).get("components", []))), source
            )
            check_prompt(parameters.prompt, settings)
        except PromptBlocked as exc:
            await reply(interaction, exc.user_message)
            return
        except ValueError as exc:
            await reply(interaction, f"{exc} Press Remix to try again.")
            return
        await start_follow_up(self.bot, interaction, source, parameters, kind=GenerationKind.REMIX)


async def setup(bot: FluxBot) -> None:
    bot.add_dynamic_items(RerollButton, RemixButton, CancelButton)
    await bot.add_cog(ButtonsCog(bot))


async def teardown(bot: FluxBot) -> None:
    bot.remove_dynamic_items(RerollButton, RemixButton, CancelButton)
