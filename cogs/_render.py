"""Embeds and names shown to members. Pure functions: no I/O, easy to test against limits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import discord

from services.aimlapi import GenerationResult
from services.costs import format_usd
from services.store import ApiAttemptRecord, Generation, GenerationKind, GenerationStatus

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
    failed = generation.status is GenerationStatus.FAILED
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


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def card_url(generation: Generation) -> str | None:
    if generation.card_channel_id is None or generation.card_message_id is None:
        return None
    return jump_url(generation.guild_id, generation.card_channel_id, generation.card_message_id)


def result_url(generation: Generation) -> str | None:
    """Where the generation's result was posted (its first message), if it was."""
    if not generation.result_message_ids:
        return None
    channel_id = generation.thread_id or generation.channel_id
    return jump_url(generation.guild_id, channel_id, generation.result_message_ids[0])


def lineage(generation: Generation, source: Generation | None) -> str | None:
    """The picture a generation started from, as a link: a result image, or the job card's.

    ``source`` is the generation named by ``generation.source_id`` (``None`` if unknown).
    """
    if generation.source_id is None or generation.source_image is None:
        card = card_url(generation)
        return f"[the picture on the job card]({card})" if card else None
    text = f"image {generation.source_image + 1} of job {generation.source_id}"
    link = result_url(source) if source is not None and source.deleted_at is None else None
    return f"[{text}]({link})" if link else f"{text} (deleted)"


def result_embed(
    generation: Generation,
    result: GenerationResult,
    *,
    image_filename: str | None,
    source: Generation | None = None,
) -> discord.Embed:
    """``source``: the generation whose result image this one started from, for the link."""
    embed = discord.Embed(description=display_prompt(generation.parameters.prompt), colour=COLOUR)
    parameter_fields(embed, generation, seed=result.seed)
    if result.inference_seconds is not None:
        embed.add_field(name="Time", value=f"{result.inference_seconds:.1f} s")
    embed.add_field(name="Asked by", value=f"<@{generation.user_id}>")
    came_from = lineage(generation, source)
    if came_from:
        embed.add_field(name="From", value=came_from, inline=False)
    if image_filename:
        embed.set_image(url=f"attachment://{image_filename}")
    embed.set_footer(text=f"fluxbot · job {generation.id}")
    return embed


def failure_text(reason: str) -> str:
    return shorten(f"❌ This image could not be made: {reason}", 2000)


KIND_NAMES = {
    GenerationKind.IMAGINE: "/imagine",
    GenerationKind.REROLL: "Reroll",
    GenerationKind.REMIX: "Remix",
    GenerationKind.VARY: "Vary",
    GenerationKind.USE: "Use as input",
    GenerationKind.MESSAGE: "Remix with fluxbot",
}


def took(generation: Generation) -> str | None:
    """Time taken: the API's own inference time and ours from start to posted result."""
    parts = []
    if generation.inference_seconds is not None:
        parts.append(f"{generation.inference_seconds:.1f} s generating")
    if generation.finished_at and generation.started_at:
        total = (generation.finished_at - generation.started_at).total_seconds()
        parts.append(f"{total:.1f} s in all")
    return ", ".join(parts) or None


def info_embed(
    generation: Generation, source: Generation | None, *, cost: str | None = None
) -> discord.Embed:
    """Everything about how a result was made (the Info button), shown only to who asked;
    ``cost`` is what its API calls cost (``cost_text``)."""
    parameters = generation.parameters
    embed = discord.Embed(
        title=f"Job {generation.id} · {KIND_NAMES.get(generation.kind, str(generation.kind))}",
        description=display_prompt(parameters.prompt),
        colour=COLOUR,
    )
    embed.add_field(name="Model", value=shorten(generation.model, 200), inline=False)
    parameter_fields(embed, generation, seed=generation.seed or parameters.seed)
    embed.add_field(name="Safety checker", value="on" if parameters.safety_checker else "off")
    taken = took(generation)
    if taken:
        embed.add_field(name="Time", value=taken)
    if cost:
        embed.add_field(name="Cost", value=cost)
    embed.add_field(name="Asked by", value=f"<@{generation.user_id}>")
    embed.add_field(name="Made", value=timestamp(generation.created_at))
    came_from = lineage(generation, source)
    if came_from:
        embed.add_field(name="From", value=came_from, inline=False)
    if generation.parent_id is not None and generation.kind is not GenerationKind.IMAGINE:
        embed.add_field(name="Pressed on", value=f"job {generation.parent_id}")
    card = card_url(generation)
    if card:
        embed.add_field(name="Job card", value=f"[jump to the card]({card})")
    embed.add_field(name="Status", value=status_line(generation), inline=False)
    return embed


def cost_text(attempts: Sequence[ApiAttemptRecord]) -> str | None:
    """``$0.0250``, or ``about $0.0250 (2 API calls)`` when a cost was estimated or retried."""
    if not attempts:
        return None
    total = format_usd(sum(a.usd_nanos for a in attempts))
    about = "about " if any(a.usd_estimated for a in attempts) else ""
    calls = f" ({len(attempts)} API calls)" if len(attempts) > 1 else ""
    return f"{about}{total}{calls}"
