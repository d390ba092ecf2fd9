"""Embeds and names shown to members. Pure functions: no I/O, easy to test against limits."""

from __future__ import annotations

import re
from datetime import datetime

import discord

from services.aimlapi import GenerationResult
from services.store import Generation, GenerationStatus

NO_MENTIONS = discord.AllowedMentions.none()
COLOUR = discord.Colour(0x7C3AED)
FAILED_COLOUR = discord.Colour(0xDC2626)
THREAD_NAME_MAX = 100
#: Room left for the prompt once titles and fields are counted against the 6000-char total.
PROMPT_DISPLAY_MAX = 4000
ELLIPSIS = "…"
MISSING_PERMISSION = (
    "I'm missing a permission here (Attach Files, Embed Links or Read Message History). "
    "Ask an admin to check my role, then try again."
)


def is_nsfw(channel: object) -> bool:
    """Whether Discord marks the channel (or a thread's parent) NSFW; DMs and unknowns are not."""
    check = getattr(channel, "is_nsfw", None)
    return bool(check and check())


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut, never leaving a dangling escape."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    trailing = len(cut) - len(cut.rstrip("\\"))
    if trailing % 2:
        cut = cut[:-1]
    return cut + ELLIPSIS


def display_prompt(prompt: str, limit: int = PROMPT_DISPLAY_MAX) -> str:
    """Prompt as literal text: markdown escaped so user text cannot restyle or break the embed."""
    return shorten(discord.utils.escape_markdown(prompt), limit)


def thread_name(prompt: str) -> str:
    name = re.sub(r"\s+", " ", prompt).strip()
    return shorten(name, THREAD_NAME_MAX) or "fluxbot image"


def _number(value: float) -> str:
    return f"{value:g}"


def parameter_fields(embed: discord.Embed, generation: Generation, *, seed: int | None) -> None:
    embed.add_field(name="Seed", value=str(seed) if seed else "random")
    parameters = generation.parameters
    embed.add_field(name="Strength", value=_number(parameters.strength))
    embed.add_field(name="Steps", value=str(parameters.steps))
    embed.add_field(name="Guidance", value=_number(parameters.guidance))
    if parameters.count > 1:
        embed.add_field(name="Images", value=str(parameters.count))


def timestamp(moment: datetime) -> str:
    return discord.utils.format_dt(moment, "R")


def status_line(generation: Generation, *, ahead: int | None = None) -> str:
    """One line for the card, from the generation's stored state."""
    match generation.status:
        case GenerationStatus.QUEUED | GenerationStatus.INTERRUPTED:
            if ahead:
                return f"⏳ Queued — {ahead} ahead of you"
            return "⏳ Queued — you're next"
        case GenerationStatus.RUNNING:
            started = generation.started_at or generation.created_at
            return f"🎨 Generating… started {timestamp(started)}"
        case GenerationStatus.DONE:
            took = ""
            if generation.finished_at and generation.started_at:
                seconds = (generation.finished_at - generation.started_at).total_seconds()
                took = f" in {seconds:.1f} s"
            return f"✅ Done{took}"
        case GenerationStatus.CANCELLED:
            by = f" by <@{generation.cancelled_by}>" if generation.cancelled_by else ""
            return f"🚫 Cancelled{by}"
        case _:
            return f"❌ Failed — {shorten(generation.error or 'unknown error', 900)}"


def card_embed(generation: Generation, *, ahead: int | None = None) -> discord.Embed:
    """The public job card: what was asked, by whom, and the latest job's status."""
    failed = generation.status == GenerationStatus.FAILED
    embed = discord.Embed(
        title="Image remix",
        description=display_prompt(generation.parameters.prompt),
        colour=FAILED_COLOUR if failed else COLOUR,
    )
    embed.add_field(name="Asked by", value=f"<@{generation.user_id}>")
    parameter_fields(embed, generation, seed=generation.seed or generation.parameters.seed)
    embed.add_field(name="Status", value=status_line(generation, ahead=ahead), inline=False)
    embed.set_footer(text=f"fluxbot · job {generation.id}")
    return embed


def pending_card_embed(
    prompt: str, user_id: int, *, status: str = "📥 Reading your image…"
) -> discord.Embed:
    """The card before its generation is stored: first posted, then with the reference."""
    embed = discord.Embed(title="Image remix", description=display_prompt(prompt), colour=COLOUR)
    embed.add_field(name="Asked by", value=f"<@{user_id}>")
    embed.add_field(name="Status", value=status, inline=False)
    return embed


def rejected_card_embed(prompt: str, user_id: int, reason: str) -> discord.Embed:
    embed = discord.Embed(
        title="Image remix", description=display_prompt(prompt), colour=FAILED_COLOUR
    )
    embed.add_field(name="Asked by", value=f"<@{user_id}>")
    embed.add_field(name="Status", value=f"❌ {shorten(reason, 1000)}", inline=False)
    return embed


def result_embed(
    generation: Generation, result: GenerationResult, *, image_filename: str | None
) -> discord.Embed:
    embed = discord.Embed(description=display_prompt(generation.parameters.prompt), colour=COLOUR)
    parameter_fields(embed, generation, seed=result.seed)
    if result.inference_seconds is not None:
        embed.add_field(name="Time", value=f"{result.inference_seconds:.1f} s")
    embed.add_field(name="Asked by", value=f"<@{generation.user_id}>")
    if image_filename:
        embed.set_image(url=f"attachment://{image_filename}")
    embed.set_footer(text=f"fluxbot · job {generation.id}")
    return embed


def failure_text(reason: str) -> str:
    return shorten(f"❌ This image could not be made: {reason}", 2000)
