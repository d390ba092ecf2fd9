"""Delivery: posts results, failures and card updates with the bot token.

An extension that attaches its publisher to the generation service when it loads and detaches it
when it unloads. Nothing here uses the interaction token: a queued job can outlive it (15 min),
so every later message goes to the thread or channel through the channel endpoints.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord

from cogs import _render as render
from cogs._components import card_view
from cogs._result_actions import result_view
from cogs._uploads import uploads
from services.aimlapi import GenerationResult
from services.images import EncodedFile, ImageRejected, fit_for_upload
from services.model_registry import ReferenceInfo, model_entry
from services.store import Generation, GenerationKind
from services.worker import DeliveryFailed, ReferenceUnavailable, ReferenceUnreadable

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
#: Jobs whose stored reference URLs were signed just before they were queued.
FRESH_ON_FIRST_RUN = frozenset(
    {GenerationKind.IMAGINE, GenerationKind.MESSAGE, GenerationKind.EDIT}
)
SOURCE_GONE = (
    "The image this was made from is gone (its message was deleted), so it can't be used "
    "again. Pick another image, or start again with /imagine."
)
TOO_LARGE_NOW = (
    "Discord refused the file as too large for this channel (its upload limit is lower than "
    "when you asked). Press Reroll to try again."
)


class DiscordPublisher:
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot

    # -- where things go ----------------------------------------------------------------

    def _messageable(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(channel_id, guild_id=guild_id)

    def results_channel(self, generation: Generation) -> discord.PartialMessageable:
        return self._messageable(generation.thread_id or generation.channel_id, generation.guild_id)

    def upload_limit(self, generation: Generation) -> int:
        """The limit the job's interaction reported; discord.py's guild only knows boost tiers."""
        if generation.upload_limit:
            return generation.upload_limit
        guild = self.bot.get_guild(generation.guild_id) if generation.guild_id else None
        return guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT

    def allows_nsfw(self, generation: Generation) -> bool:
        """Only a channel Discord marks NSFW may show flagged images; unknown means no."""
        channel = self.bot.get_channel(generation.thread_id or generation.channel_id)
        if channel is None and generation.thread_id:
            channel = self.bot.get_channel(generation.channel_id)
        return render.is_nsfw(channel)

    # -- cards ----------------------------------------------------------------------------

    async def edit_card(self, card_message_id: int) -> None:
        generation = await self.bot.store.generations.latest_for_card(card_message_id)
        if generation is None or generation.card_channel_id is None:
            return
        ahead = self.bot.generations.jobs_ahead(generation.id)
        embed = render.card_embed(generation, ahead=ahead)
        card = self._messageable(generation.card_channel_id, generation.guild_id)
        message = card.get_partial_message(card_message_id)
        try:
            await message.edit(
                embed=embed,
                view=card_view(generation),
                allowed_mentions=render.NO_MENTIONS,
            )
        except (discord.NotFound, discord.Forbidden) as exc:
            log.info("card %s: not editable any more (%s)", card_message_id, exc.status)

    # -- results ------------------------------------------------------------------------

    async def fresh_reference_urls(self, generation: Generation) -> list[str]:
        """The job's references, each fetched again unless attached a moment ago.

        Signed CDN URLs expire after about a day, so any later job (reroll, remix, resumed
        job) asks Discord for the card again, which also notices a deleted card; ``/edit``'s
        further pictures are on the card after the first. A reference that is a result image
        (Vary, Use as input, Edit, Upscale) is fetched from its result message the same way,
        every time, and replaced by a fitted copy when the model's input limits refuse it.
        """
        if generation.kind in FRESH_ON_FIRST_RUN and generation.attempts <= 1:
            return list(generation.references)
        if (
            generation.reference_message_id is not None
            and generation.reference_channel_id is not None
        ):
            urls = await self._reference_files(
                generation.reference_channel_id, generation.reference_message_id, generation
            )
        elif generation.source_id is not None and generation.source_image is not None:
            attachment = await self._result_image(generation.source_id, generation.source_image)
            urls = [await self._within_input_limits(generation, attachment)]
        elif generation.card_message_id is not None and generation.card_channel_id is not None:
            urls = await self._reference_files(
                generation.card_channel_id, generation.card_message_id, generation
            )
        else:
            raise ReferenceUnavailable()
        await self.bot.store.generations.set_reference_urls(generation.id, urls)
        return urls

    async def _reference_files(
        self, channel_id: int, message_id: int, generation: Generation
    ) -> list[str]:
        """Fresh URLs of the reference files on a message (the card, or a fitted copy)."""
        channel = self._messageable(channel_id, generation.guild_id)
        try:
            message = await channel.fetch_message(message_id)
        except discord.NotFound:
            raise ReferenceUnavailable() from None
        urls = []
        for index in range(len(generation.references)):
            stem = f"{render.reference_stem(index)}."
            url = next((a.url for a in message.attachments if a.filename.startswith(stem)), None)
            if url is None:
                raise ReferenceUnavailable()
            urls.append(url)
        return urls

    async def _result_image(self, generation_id: int, image: int) -> discord.Attachment:
        """Image ``image`` (from 0) of a generation's posted result, with a fresh URL."""
        source = await self.bot.store.generations.get(generation_id)
        if source is None or source.deleted_at is not None:
            raise ReferenceUnavailable(SOURCE_GONE)
        wanted = image_stem(source.id, image)
        channels = dict.fromkeys((source.thread_id or source.channel_id, source.channel_id))
        for message_id in source.result_message_ids:
            for channel_id in channels:  # results go to the channel if the thread was gone
                try:
                    message = await self._messageable(channel_id, source.guild_id).fetch_message(
                        message_id
                    )
                except discord.NotFound:
                    continue
                for attachment in message.attachments:
                    if attachment.filename.removeprefix("SPOILER_").startswith(f"{wanted}."):
                        return attachment
                break
        raise ReferenceUnavailable(SOURCE_GONE)

    async def _within_input_limits(
        self, generation: Generation, attachment: discord.Attachment
    ) -> str:
        """The attachment's URL, or a copy fitted to the model's input limits, re-hosted.

        The copy is posted in the results thread (saying why) and recorded as the job's
        reference message, so a reroll of it fetches the same copy again.
        """
        entry = model_entry(generation.model)
        limits = entry.input_limits
        if limits is None or limits.allows(
            byte_size=attachment.size,
            width=attachment.width,
            height=attachment.height,
            content_type=attachment.content_type,
        ):
            return attachment.url
        try:
            data = await attachment.read()
        except discord.NotFound:
            raise ReferenceUnavailable(SOURCE_GONE) from None
        except discord.HTTPException as exc:
            raise ReferenceUnreadable(detail=f"result image download failed: {exc}") from None
        measured = ReferenceInfo.measure(data)
        if measured is not None and limits.problem(entry.label, measured) is None:
            return attachment.url  # Discord's facts were missing, not over
        fitted = await self.bot.images.run(
            fit_for_upload,
            data,
            limit=limits.max_bytes,
            max_side=limits.max_side,
            types=tuple(limits.types),
            stem=render.REFERENCE_STEM,
        )
        assert generation.source_image is not None  # a result image, so it has an index
        note = render.fitted_reference_text(
            entry.label, generation.source_image, len(data), fitted, limits
        )
        message = await self._send(generation, [(fitted, False)], content=note)
        url = message.attachments[0].url
        await self.bot.store.generations.set_reference_message(
            generation.id, channel_id=message.channel.id, message_id=message.id, url=url
        )
        log.info(
            "generation %s: input fitted to %s (%d -> %d bytes)",
            generation.id,
            entry.id,
            len(data),
            len(fitted.data),
        )
        return url

    async def job_succeeded(
        self, generation: Generation, result: GenerationResult, images: list[bytes]
    ) -> list[int]:
        allow_nsfw = self.allows_nsfw(generation)
        shown = [
            (data, image.nsfw)
            for data, image in zip(images, result.images, strict=True)
            if allow_nsfw or not image.nsfw
        ]
        withheld = len(images) - len(shown)
        limit = self.upload_limit(generation)
        files: list[tuple[EncodedFile, bool]] = []
        notes: list[str] = []
        for index, (data, flagged) in enumerate(shown, start=1):
            try:
                # Numbered as posted: the image buttons' index n is file n + 1.
                stem = image_stem(generation.id, len(files))
                encoded = await self.bot.images.run(fit_for_upload, data, limit=limit, stem=stem)
            except ImageRejected as exc:
                log.warning("generation %s: image %s not uploadable", generation.id, index)
                await self._send_text(generation, render.failure_text(exc.user_message))
                continue
            files.append((encoded, flagged))
            if encoded.reencoded:
                notes.append(render.reencoded_note(len(files), len(data), encoded, limit))
        try:
            message_ids = await self._send_results(generation, result, files, limit, notes)
        except discord.Forbidden as exc:
            raise DeliveryFailed(render.MISSING_PERMISSION) from exc
        if withheld:
            notice = (
                f"🔞 {withheld} image(s) were withheld: the safety checker flagged them, "
                "and this channel is not marked NSFW."
            )
            message_ids.append(await self._send_text(generation, notice))
        return message_ids

    async def job_failed(self, generation: Generation, reason: str) -> None:
        try:
            await self._send_text(
                generation, render.failure_text(reason), view=result_view(generation, images=0)
            )
        except discord.HTTPException as exc:
            log.warning("generation %s: could not report failure (%s)", generation.id, exc.status)

    # -- sending --------------------------------------------------------------------------

    async def _send(
        self, generation: Generation, encoded: list[tuple[EncodedFile, bool]], **fields: Any
    ) -> discord.Message:
        """Post in the results thread; if a moderator deleted it, in the card's channel instead."""
        fields["allowed_mentions"] = render.NO_MENTIONS
        try:
            with uploads((e.data, e.filename, flagged) for e, flagged in encoded) as files:
                return await self.results_channel(generation).send(files=files, **fields)
        except (discord.NotFound, discord.Forbidden) as exc:
            if not generation.thread_id or generation.thread_id == generation.channel_id:
                raise
            log.warning(
                "generation %s: thread %s unusable (%s %s); posting in its channel",
                generation.id,
                generation.thread_id,
                exc.status,
                exc.code,
            )
            channel = self._messageable(generation.channel_id, generation.guild_id)
            with uploads((e.data, e.filename, flagged) for e, flagged in encoded) as files:
                return await channel.send(files=files, **fields)

    async def _send_results(
        self,
        generation: Generation,
        result: GenerationResult,
        encoded: list[tuple[EncodedFile, bool]],
        limit: int,
        notes: list[str],
    ) -> list[int]:
        """Send files in as few messages as the upload limit allows; the first carries the embed
        (with ``notes``: which files had to be re-encoded to fit)."""
        batches: list[list[tuple[EncodedFile, bool]]] = []
        size = 0
        for item in encoded:
            length = len(item[0].data)
            if not batches or size + length > limit or len(batches[-1]) >= 10:
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += length
        view = result_view(generation, images=len(encoded))
        shown = encoded[0][0].filename if encoded and not encoded[0][1] else None
        source = None
        if generation.source_id is not None:
            source = await self.bot.store.generations.get(generation.source_id)
        embed = render.result_embed(
            generation, result, image_filename=shown, source=source, notes=notes
        )
        if not batches:
            return [(await self._send(generation, [], embed=embed, view=view)).id]
        ids = []
        for number, batch in enumerate(batches):
            extra: dict[str, Any] = {"embed": embed, "view": view} if number == 0 else {}
            try:
                message = await self._send(generation, batch, **extra)
            except discord.HTTPException as exc:
                if exc.status != 413:  # the limit shrank since the job began (a boost ended)
                    raise
                log.warning("generation %s: Discord refused the upload as too large", generation.id)
                extra.pop("embed", None)
                message = await self._send(
                    generation, [], content=render.failure_text(TOO_LARGE_NOW), **extra
                )
            ids.append(message.id)
        return ids

    async def _send_text(
        self, generation: Generation, text: str, *, view: discord.ui.View | None = None
    ) -> int:
        extra = {"view": view} if view is not None else {}
        return (await self._send(generation, [], content=text, **extra)).id


def image_stem(generation_id: int, image: int) -> str:
    """The file name (without extension) of a result's image ``image``, counted from 0."""
    return f"fluxbot-{generation_id}-{image + 1}"


async def setup(bot: FluxBot) -> None:
    bot.generations.attach(DiscordPublisher(bot))


async def teardown(bot: FluxBot) -> None:
    bot.generations.detach()
