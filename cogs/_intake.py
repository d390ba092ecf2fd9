"""Taking a new picture in: the job card, its thread, the reference re-hosted on it, the queue.

``/imagine`` and "Remix with fluxbot" share this path after their own checks: answer with the
job card, then (after the answer, so the 3 s never wait on image work) read and check the
picture, open the thread, put the reference on the card and submit the job. One :class:`Intake`
per bot (:func:`intake_for`), so both commands share its concurrency limit.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import discord

from cogs import _render as render
from cogs._replies import reply
from cogs._uploads import uploads
from services.errors import UserFacingError
from services.images import ImageRejected, PreparedImage, fit_for_upload, normalise_reference
from services.jobs import QUEUED_FOR_RESTART
from services.model_access import check_model
from services.model_registry import model_entry
from services.parameters import GenerationParameters
from services.safety import check_prompt, safety_checker_enabled
from services.store import Generation, GenerationKind, NewGeneration

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]

log = logging.getLogger(__name__)

#: Largest reference attachment we download; it is scaled down to MAX_INPUT_MEGAPIXELS anyway.
MAX_REFERENCE_BYTES = 20 * 1024 * 1024
INTAKE_CONCURRENCY = 4
THREADABLE = (discord.TextChannel,)


class ImageSource(Protocol):
    """A picture to take in: a member's attachment, or an image found in a message."""

    @property
    def id(self) -> int: ...

    async def read(self) -> bytes: ...


_INTAKES: weakref.WeakKeyDictionary[FluxBot, Intake] = weakref.WeakKeyDictionary()


def intake_for(bot: FluxBot) -> Intake:
    """The bot's one intake, made on first use (it outlives any one extension's reload)."""
    intake = _INTAKES.get(bot)
    if intake is None:
        intake = _INTAKES[bot] = Intake(bot)
    return intake


class Intake:
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        #: Commands whose image work (download, decode, re-host) runs at once; a burst waits its
        #: turn after its card is up, so answering interactions never competes with image work.
        self.intake = asyncio.Semaphore(INTAKE_CONCURRENCY)

    async def answer_with_card(
        self,
        interaction: Interaction,
        parameters: GenerationParameters,
        image: ImageSource,
        *,
        kind: GenerationKind = GenerationKind.IMAGINE,
        source: tuple[int, int] | None = None,
        model: str | None = None,
        more_images: Sequence[ImageSource] = (),
    ) -> None:
        """Post the public job card as the answer, then take the picture in and queue the job.

        ``source``: the generation and image index the picture is a result of, for lineage.
        ``model``: the model to run (default ``AIMLAPI_MODEL``); ``more_images``: further
        references (``/edit``), re-hosted on the card after the first.
        """
        callback = await interaction.response.send_message(
            embed=render.pending_card_embed(parameters.prompt, interaction.user.id),
            allowed_mentions=render.NO_MENTIONS,
        )
        if callback.message_id is None:  # Discord always returns it for a message response
            log.warning("interaction %s: no card id in callback", interaction.id)
            return
        card = self._card(interaction, callback.message_id)
        try:
            async with self.intake:
                generation = await self._start(
                    interaction,
                    card,
                    parameters,
                    image,
                    kind=kind,
                    source=source,
                    model=model,
                    more_images=more_images,
                )
        except UserFacingError as exc:
            await self._turn_card_down(
                card, parameters.prompt, interaction.user.id, exc.user_message
            )
            return
        except discord.Forbidden:
            log.warning("card %s: a permission is missing in channel %s", card.id, card.channel.id)
            await self._turn_card_down(
                card, parameters.prompt, interaction.user.id, render.MISSING_PERMISSION
            )
            return
        log.info(
            "generation %s: %s by %s", generation.id, render.KIND_NAMES[kind], interaction.user.id
        )
        if self.bot.generations.stopping:
            await reply(interaction, QUEUED_FOR_RESTART)

    async def _turn_card_down(
        self, card: discord.PartialMessage, prompt: str, user_id: int, reason: str
    ) -> None:
        """The card becomes a plain refusal; nothing was queued and no API call was made."""
        embed = render.rejected_card_embed(prompt, user_id, reason)
        try:
            await card.edit(embed=embed, allowed_mentions=render.NO_MENTIONS)
        except discord.HTTPException as exc:
            log.info("card %s: could not show the refusal (%s)", card.id, exc.status)

    async def _start(
        self,
        interaction: Interaction,
        card: discord.PartialMessage,
        parameters: GenerationParameters,
        image: ImageSource,
        *,
        kind: GenerationKind,
        source: tuple[int, int] | None,
        model: str | None = None,
        more_images: Sequence[ImageSource] = (),
    ) -> Generation:
        """After the card is up: the checks that need the bytes, the thread, then the queue."""
        reference = await self._prepare_reference(image)
        if len(reference.data) > interaction.filesize_limit:
            reference = await self.bot.images.run(
                fit_reference, reference, limit=interaction.filesize_limit
            )
        more = [await self._more_reference(interaction, extra) for extra in more_images]
        thread_id = await self._results_thread(interaction, card, parameters.prompt)
        reference_url, *extra_urls = await self._rehost(
            card, [reference, *more], parameters.prompt, interaction.user.id
        )
        new = NewGeneration(
            parameters=parameters,
            kind=kind,
            model=model or self.bot.settings.aimlapi_model,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=card.channel.id,
            thread_id=thread_id,
            card_channel_id=card.channel.id,
            card_message_id=card.id,
            reference_url=reference_url,
            extra_reference_urls=tuple(extra_urls),
            upload_limit=interaction.filesize_limit,
            source_id=source[0] if source else None,
            source_image=source[1] if source else None,
        )
        return (await self.bot.generations.submit(new)).generation

    async def apply_policy(
        self,
        interaction: Interaction,
        parameters: GenerationParameters,
        *,
        model: str | None = None,
        references: Sequence[str] = ("",),
    ) -> GenerationParameters:
        """The guild's blocked terms, and the safety checker: on unless allowed off right here.

        Also whether the guild allows ``model`` (default ``AIMLAPI_MODEL``), and whether that
        model takes these parameters and this many ``references`` (only counted here), so what
        it refuses is said in plain words before answering and before any call.
        """
        guild_id = interaction.guild_id
        settings = await self.bot.store.guild_settings.get(guild_id) if guild_id else None
        model = model or self.bot.settings.aimlapi_model
        check_model(model, settings, self.bot.settings.enabled_models)
        model_entry(model).validate(parameters, references)
        check_prompt(parameters.prompt, settings)
        checker = safety_checker_enabled(settings, channel_nsfw=render.is_nsfw(interaction.channel))
        return parameters.model_copy(update={"safety_checker": checker})

    def _card(self, interaction: Interaction, card_id: int) -> discord.PartialMessage:
        """The card as a message we edit with the bot token, not the 15-minute interaction one."""
        channel_id = interaction.channel_id or 0
        messageable = self.bot.get_partial_messageable(channel_id, guild_id=interaction.guild_id)
        return messageable.get_partial_message(card_id)

    async def _more_reference(self, interaction: Interaction, image: ImageSource) -> PreparedImage:
        """A further picture (``/edit``), checked and prepared like the first."""
        reference = await self._prepare_reference(image)
        if len(reference.data) > interaction.filesize_limit:
            reference = await self.bot.images.run(
                fit_reference, reference, limit=interaction.filesize_limit
            )
        return reference

    async def _prepare_reference(self, image: ImageSource) -> PreparedImage:
        try:
            data = await image.read()
        except discord.HTTPException as exc:
            log.info("attachment %s: download failed (%s)", image.id, exc.status)
            raise ImageRejected(
                "I couldn't download your image. Attach it again.", reason="download_failed"
            ) from None
        return await self.bot.images.run(
            normalise_reference, data, max_megapixels=self.bot.settings.max_input_megapixels
        )

    async def _rehost(
        self,
        card: discord.PartialMessage,
        references: Sequence[PreparedImage],
        prompt: str,
        user_id: int,
    ) -> list[str]:
        """Put the normalised references on the card, in one edit: their URLs can be refreshed
        for months (``reference.png``, then ``reference-2.png``...)."""
        embed = render.pending_card_embed(prompt, user_id, status="⏳ Queued")
        names = [
            f"{render.reference_stem(index)}.{reference.filename.rpartition('.')[2]}"
            for index, reference in enumerate(references)
        ]
        items = [(ref.data, name, False) for ref, name in zip(references, names, strict=True)]
        with uploads(items) as files:
            edited = await card.edit(
                embed=embed, attachments=files, allowed_mentions=render.NO_MENTIONS
            )
        self.bot.generations.cards.note_edited(card.id)
        by_name = {attachment.filename: attachment.url for attachment in edited.attachments}
        return [by_name[name] for name in names]

    async def _results_thread(
        self, interaction: Interaction, card: discord.PartialMessage, prompt: str
    ) -> int | None:
        """A new thread on the card where Discord allows one; None means reply in the channel."""
        channel = interaction.channel
        if isinstance(channel, discord.Thread):
            return channel.id
        permissions = interaction.app_permissions
        if not (
            isinstance(channel, THREADABLE)
            and permissions.create_public_threads
            and permissions.send_messages_in_threads
        ):
            return None
        try:
            thread = await channel.get_partial_message(card.id).create_thread(
                name=render.thread_name(prompt), auto_archive_duration=1440
            )
        except discord.HTTPException as exc:
            log.info(
                "card %s: no thread (%s %s), replying in channel", card.id, exc.status, exc.code
            )
            return None
        return thread.id


def fit_reference(reference: PreparedImage, *, limit: int) -> PreparedImage:
    """The reference re-encoded to fit the channel's upload limit, so it can live on the card."""
    fitted = fit_for_upload(reference.data, limit=limit, stem="reference")
    return PreparedImage(
        data=fitted.data,
        width=fitted.width,
        height=fitted.height,
        content_type=fitted.content_type,
        filename=fitted.filename,
    )
