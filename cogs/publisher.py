"""The Discord side of the worker: posts results, failures and card updates with the bot token.

Nothing here uses the interaction token: a queued job can outlive it (15 min), so every later
message goes to the thread or channel through the channel endpoints.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import discord

from cogs import render
from cogs.buttons import card_view, result_view
from cogs.render import is_nsfw
from services.aimlapi import GenerationResult
from services.card_updates import CardUpdater
from services.images import EncodedFile, ImageRejected, fit_for_upload
from services.store import Generation, GenerationKind
from services.worker import DeliveryFailed, ReferenceUnavailable

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
REFERENCE_STEM = "reference"
TOO_LARGE_NOW = (
    "Discord refused the file as too large for this channel (its upload limit is lower than "
    "when you asked). Press Reroll to try again."
)


@contextlib.contextmanager
def uploads(items: Iterable[tuple[bytes, str, bool]]) -> Iterator[list[discord.File]]:
    """Files for one send, their buffers freed when it ends.

    aiohttp's idle pooled connections can keep their last request's body alive, and
    ``BytesIO.getbuffer`` makes the buffer a private copy: without closing it, a burst of
    uploads kept ~1.5 MB per request until each connection was reused (measured with memray).
    discord.py also closes the File after a send, so a retry needs new ones (made per call).
    """
    buffers: list[io.BytesIO] = []
    files = []
    for data, filename, spoiler in items:
        buffers.append(io.BytesIO(data))
        files.append(discord.File(buffers[-1], filename=filename, spoiler=spoiler))
    try:
        yield files
    finally:
        for buffer in buffers:
            # discord.File stubs out ``close`` on the object, so call the class's own; a view
            # still exported elsewhere keeps the buffer, which only costs memory.
            with contextlib.suppress(BufferError):
                io.BytesIO.close(buffer)


class DiscordPublisher:
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.cards = CardUpdater(self._edit_card)

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
        return is_nsfw(channel)

    # -- cards ----------------------------------------------------------------------------

    async def _edit_card(self, card_message_id: int) -> None:
        generation = await self.bot.store.generations.latest_for_card(card_message_id)
        if generation is None or generation.card_channel_id is None:
            return
        ahead = self.bot.queue.jobs_ahead(generation.id)
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

    # -- ResultPublisher ------------------------------------------------------------------

    async def fresh_reference_url(self, generation: Generation) -> str:
        """The card's reference URL, fetched again unless it was attached a moment ago.

        Signed CDN URLs expire after about a day, so any later job (reroll, remix, resumed
        job) asks Discord for the card again, which also notices a deleted card.
        """
        if generation.kind == GenerationKind.IMAGINE and generation.attempts <= 1:
            return generation.reference_url
        if generation.card_message_id is None or generation.card_channel_id is None:
            raise ReferenceUnavailable
        channel = self._messageable(generation.card_channel_id, generation.guild_id)
        try:
            card = await channel.fetch_message(generation.card_message_id)
        except discord.NotFound:
            raise ReferenceUnavailable from None
        url = next((a.url for a in card.attachments if a.filename.startswith(REFERENCE_STEM)), None)
        if url is None:
            raise ReferenceUnavailable
        await self.bot.store.generations.set_reference_url(generation.id, url)
        return url

    async def job_started(self, generation: Generation) -> None:
        self._request_card(generation)

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
        for index, (data, flagged) in enumerate(shown, start=1):
            try:
                encoded = await self.bot.image_work(
                    fit_for_upload, data, limit=limit, stem=f"fluxbot-{generation.id}-{index}"
                )
            except ImageRejected as exc:
                log.warning("generation %s: image %s not uploadable", generation.id, index)
                await self._send_text(generation, render.failure_text(exc.user_message))
                continue
            files.append((encoded, flagged))
        try:
            message_ids = await self._send_results(generation, result, files, limit)
        except discord.Forbidden as exc:
            raise DeliveryFailed(render.MISSING_PERMISSION) from exc
        if withheld:
            notice = (
                f"🔞 {withheld} image(s) were withheld: the safety checker flagged them, "
                "and this channel is not marked NSFW."
            )
            message_ids.append(await self._send_text(generation, notice))
        self._request_card(generation)
        return message_ids

    async def job_failed(self, generation: Generation, reason: str) -> None:
        try:
            await self._send_text(
                generation, render.failure_text(reason), view=result_view(generation)
            )
        except discord.HTTPException as exc:
            log.warning("generation %s: could not report failure (%s)", generation.id, exc.status)
        self._request_card(generation)

    # -- sending --------------------------------------------------------------------------

    def _request_card(self, generation: Generation) -> None:
        if generation.card_message_id is not None:
            self.cards.request(generation.card_message_id)

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
    ) -> list[int]:
        """Send files in as few messages as the upload limit allows; the first carries the embed."""
        batches: list[list[tuple[EncodedFile, bool]]] = []
        size = 0
        for item in encoded:
            length = len(item[0].data)
            if not batches or size + length > limit or len(batches[-1]) >= 10:
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += length
        view = result_view(generation)
        shown = encoded[0][0].filename if encoded and not encoded[0][1] else None
        embed = render.result_embed(generation, result, image_filename=shown)
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
