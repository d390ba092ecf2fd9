"""Where a job's reference pictures are now: fresh signed URLs, fetched again for every run.

Signed CDN URLs expire after about a day, so every later job asks Discord again: for the job
card's copies, for the result message a result image came from, or for a copy fitted to a
model's input limits. A helper of the delivery extension (``cogs/delivery.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from cogs import _access as access
from cogs import _render as render
from cogs._cardwork import CardWork
from services.errors import UserFacingError
from services.images import EncodedFile, fit_for_upload
from services.model_registry import ReferenceInfo, model_entry
from services.store import Generation, GenerationKind
from services.worker import ReferenceUnavailable, ReferenceUnreadable

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

#: Jobs whose stored reference URLs were signed just before they were queued.
FRESH_ON_FIRST_RUN = frozenset(
    {GenerationKind.IMAGINE, GenerationKind.MESSAGE, GenerationKind.EDIT}
)
SOURCE_GONE = (
    "The image this was made from is gone (its message was deleted), so it can't be used "
    "again. Pick another image, or start again with /imagine."
)


class CardUnreadable(UserFacingError):
    """The card can't be read back (its reference is on it): a permission was taken away."""


PostFitted = Callable[[Generation, EncodedFile, str], Awaitable[discord.Message]]


class References:
    """Fresh reference URLs for the worker; ``post`` puts a fitted copy in the job's thread."""

    def __init__(self, bot: FluxBot, work: CardWork, *, post: PostFitted) -> None:
        self._bot = bot
        self._work = work
        self._post = post

    async def fresh_urls(self, generation: Generation) -> list[str]:
        """The job's references, each fetched again unless attached a moment ago.

        Signed CDN URLs expire after about a day, so any later job (reroll, remix, resumed
        job) asks Discord for the card again, which also notices a deleted card; ``/edit``'s
        further pictures are on the card after the first. A reference that is a result image
        (Vary, Use as input, Edit, Upscale) is fetched from its result message the same way,
        every time, and replaced by a fitted copy when the model's input limits refuse it.
        A first job whose copy is still being put on the card waits for it.
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
        await self._bot.store.generations.set_reference_urls(generation.id, urls)
        return urls

    async def _reference_files(
        self, channel_id: int, message_id: int, generation: Generation
    ) -> list[str]:
        """Fresh URLs of the reference files on a message (the card, or a fitted copy).

        A card whose copy of the member's file never arrived (that edit failed) gives the job's
        own URL instead, which lives about a day.
        """
        on_card = message_id == generation.card_message_id
        if (
            on_card
            and len(generation.references) == 1
            and (url := await self._work.reference(message_id))
        ):
            return [url]
        channel = self._bot.get_partial_messageable(channel_id, guild_id=generation.guild_id)
        try:
            message = await channel.fetch_message(message_id)
        except discord.NotFound:
            raise ReferenceUnavailable() from None
        except discord.Forbidden as exc:
            names = access.missing_now(self._bot.get_channel(channel_id))
            missing = ", ".join(names) if names else "View Channel or Read Message History"
            raise CardUnreadable(
                f"I can't read the job card any more (I'm missing {missing} there), so I can't "
                "fetch the original image. Ask an admin to check my permissions, then press "
                "Reroll.",
                detail=f"card fetch refused: {exc.status} {exc.code}",
            ) from None
        urls = []
        for index in range(len(generation.references)):
            stem = f"{render.reference_stem(index)}."
            url = next((a.url for a in message.attachments if a.filename.startswith(stem)), None)
            if url is None and on_card:
                url = generation.references[index]
            if url is None:
                raise ReferenceUnavailable()
            urls.append(url)
        return urls

    async def _result_image(self, generation_id: int, image: int) -> discord.Attachment:
        """Image ``image`` (from 0) of a generation's posted result, with a fresh URL."""
        source = await self._bot.store.generations.get(generation_id)
        if source is None or source.deleted_at is not None:
            raise ReferenceUnavailable(SOURCE_GONE)
        wanted = render.image_stem(source.id, image)
        channels = dict.fromkeys((source.thread_id or source.channel_id, source.channel_id))
        for message_id in source.result_message_ids:
            for channel_id in channels:  # results go to the channel if the thread was gone
                try:
                    message = await self._bot.get_partial_messageable(
                        channel_id, guild_id=source.guild_id
                    ).fetch_message(message_id)
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
        fitted = await self._bot.images.run(
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
        message = await self._post(generation, fitted, note)
        url = message.attachments[0].url
        await self._bot.store.generations.set_reference_message(
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
