"""Embeds and names shown to members. Pure functions: no I/O, easy to test against limits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import discord

from services.aimlapi import GenerationResult
from services.costs import format_usd
from services.images import EncodedFile
from services.model_registry import REGISTRY, InputLimits, ModelKind
from services.parameters import (
    ASPECT_RATIO,
    DETAIL,
    GUIDANCE,
    RESOLUTION,
    SEED,
    STEPS,
    STRENGTH,
    ChoiceSpec,
    NumberSpec,
)
from services.store import ApiAttemptRecord, Generation, GenerationKind, GenerationStatus

NO_MENTIONS = discord.AllowedMentions.none()
COLOUR = discord.Colour(0x7C3AED)
FAILED_COLOUR = discord.Colour(0xDC2626)
THREAD_NAME_MAX = 100
#: Room left for the prompt once titles and fields are counted against the 6000-char total.
PROMPT_DISPLAY_MAX = 4000
ELLIPSIS = "…"
#: What the job card's reference files are called: ``reference.png``, ``reference-2.png``...
REFERENCE_STEM = "reference"
#: The knobs an embed may show, in this order, each only for a model that reads it.
SHOWN: tuple[NumberSpec | ChoiceSpec, ...] = (
    SEED,
    STRENGTH,
    STEPS,
    GUIDANCE,
    ASPECT_RATIO,
    RESOLUTION,
    DETAIL,
)
#: What a model the registry no longer lists is assumed to read.
READS_UNKNOWN = ("prompt", "seed", "count")
#: A job whose intake broke off for a reason nobody could name (logged).
INTAKE_FAILED = "Something went wrong while reading your picture. Run the command again."
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


def reference_stem(index: int) -> str:
    """The file name (without extension) of a job's reference ``index`` on its card, from 0."""
    return REFERENCE_STEM if index == 0 else f"{REFERENCE_STEM}-{index + 1}"


def model_reads(model: str) -> tuple[str, ...]:
    """The parameters a model uses (from the registry): all that is worth showing of a job."""
    entry = REGISTRY.get(model)
    return entry.reads if entry is not None else READS_UNKNOWN


def parameter_fields(
    embed: discord.Embed, generation: Generation, *, seed: int | None, model: bool = True
) -> None:
    """The knobs the generation's model reads, as fields; the rest would only mislead.

    ``model``: name the model first, unless it is the image-to-image one every remix uses.
    """
    reads = model_reads(generation.model)
    entry = REGISTRY.get(generation.model)
    if model and entry is not None and entry.kind is not ModelKind.IMG2IMG:
        embed.add_field(name="Model", value=entry.label)
    values = generation.parameters.model_dump()
    for spec in SHOWN:
        if spec.name not in reads:
            continue
        if spec is SEED:
            embed.add_field(name=SEED.label, value=str(seed) if seed else "random")
        elif isinstance(spec, NumberSpec):
            value = values[spec.name]
            shown = str(int(value)) if spec.kind is int else _number(value)
            embed.add_field(name=spec.label, value=shown)
        else:
            embed.add_field(name=spec.label, value=str(values[spec.name]))
    if "count" in reads and generation.parameters.count > 1:
        embed.add_field(name="Images", value=str(generation.parameters.count))


def timestamp(moment: datetime) -> str:
    return discord.utils.format_dt(moment, "R")


def status_line(generation: Generation, *, ahead: int | None = None) -> str:
    """One line for the card, from the generation's stored state."""
    match generation.status:
        case GenerationStatus.INTAKE:
            return "📥 Reading your image…"
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
    if generation.estimate_usd_nanos is not None:  # before it runs; Info has the real spend
        embed.add_field(name="Cost (estimate)", value=format_usd(generation.estimate_usd_nanos))
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
        pictures = "pictures" if generation.extra_reference_urls else "picture"
        return f"[the {pictures} on the job card]({card})" if card else None
    text = f"image {generation.source_image + 1} of job {generation.source_id}"
    link = result_url(source) if source is not None and source.deleted_at is None else None
    return f"[{text}]({link})" if link else f"{text} (deleted)"


def result_embed(
    generation: Generation,
    result: GenerationResult,
    *,
    image_filename: str | None,
    source: Generation | None = None,
    notes: Sequence[str] = (),
) -> discord.Embed:
    """``source``: the generation whose result image this one started from, for the link;
    ``notes``: what a member should know about the files (re-encoded to fit)."""
    embed = discord.Embed(description=display_prompt(generation.parameters.prompt), colour=COLOUR)
    parameter_fields(embed, generation, seed=result.seed)
    if result.inference_seconds is not None:
        embed.add_field(name="Time", value=f"{result.inference_seconds:.1f} s")
    embed.add_field(name="Asked by", value=f"<@{generation.user_id}>")
    came_from = lineage(generation, source)
    if came_from:
        embed.add_field(name="From", value=came_from, inline=False)
    if notes:
        embed.add_field(name="Note", value=shorten("\n".join(notes), 1024), inline=False)
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
    GenerationKind.EDIT: "/edit",
    GenerationKind.EDIT_IMAGE: "Edit",
    GenerationKind.UPSCALE: "Upscale",
}


def _megabytes(size: int) -> str:
    """Sizes against a model's documented limits, which are decimal (4.7 MB)."""
    return f"{size / 1_000_000:.1f} MB"


def _format(content_type: str) -> str:
    return content_type.removeprefix("image/").upper()


def _mebibytes(size: int) -> str:
    """Sizes against Discord's upload limits, which are MiB (10 MiB reads as 10 MB)."""
    return f"{size / 1024 / 1024:.1f}".removesuffix(".0") + " MB"


def reencoded_note(number: int, original: int, encoded: EncodedFile, limit: int) -> str:
    """Why image ``number`` (from 1) is not the file the model made."""
    return (
        f"Image {number} was re-encoded as {_format(encoded.content_type)} "
        f"({encoded.width}×{encoded.height}, {_mebibytes(len(encoded.data))}; the original was "
        f"{_mebibytes(original)}) to fit this channel's {_mebibytes(limit)} upload limit."
    )


def fitted_reference_text(
    label: str, image: int, original: int, fitted: EncodedFile, limits: InputLimits
) -> str:
    """Posted with the fitted copy of a result image that a model takes only smaller."""
    accepted = " or ".join(limits.types.values())
    return (
        f"🔍 Image {image + 1} is {_megabytes(original)}; {label} takes {accepted} files of at "
        f"most {_megabytes(limits.max_bytes)} and {limits.max_side}×{limits.max_side} pixels, "
        f"so it gets this copy ({_format(fitted.content_type)}, {fitted.width}×{fitted.height}, "
        f"{_megabytes(len(fitted.data))})."
    )


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
    parameter_fields(embed, generation, seed=generation.seed or parameters.seed, model=False)
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


def image_stem(generation_id: int, image: int) -> str:
    """The file name (without extension) of a result's image ``image``, counted from 0."""
    return f"fluxbot-{generation_id}-{image + 1}"


def is_result_file(filename: str, generation_id: int) -> bool:
    """Whether ``filename`` is one of ``image_stem``'s for this generation."""
    stem, _, _ = filename.rpartition(".")
    prefix, _, number = stem.rpartition("-")
    return prefix == f"fluxbot-{generation_id}" and number.isdigit()
