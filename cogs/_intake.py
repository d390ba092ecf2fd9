"""Taking a new picture in: the job card, its thread, the reference re-hosted on it, the queue.

``/imagine`` and "Remix with fluxbot" share this path after their own checks: answer with the
job card, then (after the answer, so the 3 s never wait on image work) read and check the
picture, open the thread, put the reference on the card and submit the job. One :class:`Intake`
per bot (:func:`intake_for`), so both commands share its concurrency limit.

Between the answer and the API call there is no Discord write when the member's one file can be
used as it is: the job gets the attachment's own URL, and the results thread and the card's copy
of the reference (which later jobs need, as attachment URLs expire) are made while the API works
(``cogs/_cardwork.py``). In a busy channel those writes wait for the channel's budget; the API
call does not. Several pictures (``/edit``), an embedded image, or a file that had to be
normalised are re-hosted on the card before the call, in one edit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import discord

from cogs import _access as access
from cogs import _render as render
from cogs._cardwork import card_fields, card_work
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
#: Member's files kept in memory, at most, until the card's copy is made from them: a second
#: download of a 1.5 MB file costs about as much CPU as the upload itself (issue 10). Beyond it
#: (a burst whose card edits wait on a busy channel) the file is read again when its edit runs.
HELD_REFERENCE_BYTES = 16 * 1024 * 1024


def own_upload_limit(guild: discord.Guild | None) -> int:
    """What the bot may upload per file: the guild's boost tier, or 10 MiB in DMs.

    Never ``Interaction.filesize_limit``: that is the member's, Nitro included (DESIGN §5).
    """
    return (
        guild.filesize_limit if guild is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
    )


class ImageSource(Protocol):
    """A picture to take in: a member's attachment, or an image found in a message."""

    @property
    def id(self) -> int: ...

    @property
    def url(self) -> str:
        """Where the picture is now (the job's reference until the card keeps a copy)."""

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
        self.work = card_work(bot)
        #: Bytes of member's files held for their card's copy (``HELD_REFERENCE_BYTES``).
        self.held_bytes = 0

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
        """Store the job, post the public job card as the answer, then take the picture in
        and queue the job.

        The job is stored first (``intake``), so a process that dies after answering leaves a
        job that fails plainly on its card rather than a card that waits forever.
        ``source``: the generation and image index the picture is a result of, for lineage.
        ``model``: the model to run (default ``AIMLAPI_MODEL``); ``more_images``: further
        references (``/edit``), re-hosted on the card after the first.
        """
        accepting = NewGeneration(
            parameters=parameters,
            kind=kind,
            model=model or self.bot.settings.aimlapi_model,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id or 0,
            reference_url=image.url,
            source_id=source[0] if source else None,
            source_image=source[1] if source else None,
        )
        try:
            accepted = await self.bot.generations.accept(accepting)
        except UserFacingError as exc:  # over a cap, a quota or a budget: nothing was stored
            await reply(interaction, exc.user_message)
            return
        settled = False  # queued, or failed with its reason
        try:
            callback = await interaction.response.send_message(
                embed=render.pending_card_embed(parameters.prompt, interaction.user.id),
                allowed_mentions=render.NO_MENTIONS,
            )
            if callback.message_id is None:  # Discord always returns it for a message response
                log.warning("interaction %s: no card id in callback", interaction.id)
                return
            card = self._card(interaction, callback.message_id)
            # Posting the card counts as its first edit: status edits then coalesce for a second.
            self.bot.generations.cards.note_edited(card.id)
            await self.bot.generations.set_card(
                accepted.id, channel_id=card.channel.id, message_id=card.id
            )
            try:
                async with self.intake:
                    await self._start(interaction, card, accepting, accepted.id, image, more_images)
                settled = True
            except UserFacingError as exc:
                reason = exc.user_message
            except discord.Forbidden:
                log.warning(
                    "card %s: a permission is missing in channel %s", card.id, card.channel.id
                )
                names = access.missing_now(interaction.channel)
                reason = (
                    access.refusal(names, card.channel.id) if names else render.MISSING_PERMISSION
                )
            if not settled:  # the job fails with the card's words, then the card says them
                await self.bot.generations.reject_accepted(accepted.id, reason)
                settled = True
                await self._turn_card_down(card, parameters.prompt, interaction.user.id, reason)
                return
        finally:
            if not settled:  # cut off: the stored job ends here, never run
                await asyncio.shield(
                    self.bot.generations.reject_accepted(accepted.id, render.INTAKE_FAILED)
                )
        log.info(
            "generation %s: %s by %s", accepted.id, render.KIND_NAMES[kind], interaction.user.id
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
        accepting: NewGeneration,
        generation_id: int,
        image: ImageSource,
        more_images: Sequence[ImageSource] = (),
    ) -> Generation:
        """After the card is up: the checks that need the bytes, then the queue at once.

        ``as_sent``: one attachment whose bytes needed no change, so the API may read the
        member's own file and the card's copy is made with its first status edit.
        """
        parameters = accepting.parameters
        limit = own_upload_limit(interaction.guild)
        data = await self._download(image)
        reference = await self._prepare_reference(data, limit)
        more = [await self._prepare_reference(await self._download(x), limit) for x in more_images]
        thread_id = self._results_thread(interaction, card, parameters.prompt)
        as_sent = not more and isinstance(image, discord.Attachment) and reference.data == data
        if as_sent:
            assert isinstance(image, discord.Attachment)
            reference_url, extra_urls = image.url, []
        else:
            reference_url, *extra_urls = await self._rehost(
                card, [reference, *more], parameters.prompt, interaction.user.id
            )
        taken_in = accepting.model_copy(
            update={
                "channel_id": card.channel.id,
                "thread_id": thread_id,
                "card_channel_id": card.channel.id,
                "card_message_id": card.id,
                "reference_url": reference_url,
                "extra_reference_urls": tuple(extra_urls),
                "upload_limit": limit,
            }
        )
        generation = await self.bot.generations.submit_accepted(generation_id, taken_in)
        if as_sent:  # the card's first status edit also keeps the reference, for later jobs
            assert isinstance(image, discord.Attachment)
            rehosted = self.work.rehosting(card.id)
            filename = f"{render.reference_stem(0)}.{reference.filename.rpartition('.')[2]}"
            held = self._hold(data)
            edit = functools.partial(
                self._rehost_with_status, card, image, filename, rehosted, held
            )
            self.bot.generations.cards.request(card.id, edit=edit)
        return generation

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

    async def _download(self, image: ImageSource) -> bytes:
        try:
            return await image.read()
        except discord.HTTPException as exc:
            log.info("attachment %s: download failed (%s)", image.id, exc.status)
            raise ImageRejected(
                "I couldn't download your image. Attach it again.", reason="download_failed"
            ) from None

    async def _prepare_reference(self, data: bytes, limit: int) -> PreparedImage:
        """A picture normalised, and fitted to the bot's own upload limit so the card takes it."""
        reference = await self.bot.images.run(
            normalise_reference, data, max_megapixels=self.bot.settings.max_input_megapixels
        )
        if len(reference.data) > limit:
            reference = await self.bot.images.run(fit_reference, reference, limit=limit)
        return reference

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

    def _hold(self, data: bytes) -> HeldFile:
        """``data`` kept for the card's copy if within ``HELD_REFERENCE_BYTES``, else not."""
        if self.held_bytes + len(data) > HELD_REFERENCE_BYTES:
            return HeldFile(None)
        held = HeldFile(data)
        self.held_bytes += len(data)
        weakref.finalize(held, self._release, len(data))  # also if the edit is never run
        return held

    def _release(self, size: int) -> None:
        self.held_bytes -= size

    async def _rehost_with_status(
        self,
        card: discord.PartialMessage,
        image: discord.Attachment,
        filename: str,
        rehosted: asyncio.Future[str | None],
        held: HeldFile,
    ) -> None:
        """The card's first status edit, which also attaches the reference (one edit, not two).

        The reference is the member's file unchanged: the bytes read at intake when they were
        held (``_hold``), else read again here. If this fails, the job goes on with the
        member's own URL, and so do later jobs while that URL lives (about a day); the card
        still gets its status.
        """
        try:
            generation = await self.bot.store.generations.latest_for_card(card.id)
            if generation is None:
                return
            fields = await card_fields(self.bot, generation)
            async with self.work.one_at_a_time(card.channel.id, "edits"):
                data = held.data if held.data is not None else await image.read()
                held.data = None
                with uploads([(data, filename, False)]) as files:
                    edited = await card.edit(attachments=files, **fields)
            rehosted.set_result(edited.attachments[0].url)
        except discord.HTTPException as exc:
            log.warning(
                "card %s: could not keep the reference (%s %s)", card.id, exc.status, exc.code
            )
            self.bot.generations.cards.request(card.id)  # the status, at least, without it
        finally:
            if not rehosted.done():
                rehosted.set_result(None)

    def _results_thread(
        self, interaction: Interaction, card: discord.PartialMessage, prompt: str
    ) -> int | None:
        """Where results go: this thread, a new one on the card (opened meanwhile), or the channel.

        A thread started from a message has that message's id, so the job can name it before it
        exists; a result waits for it (``CardWork.thread_ready``), the API call does not.
        """
        channel = interaction.channel
        if isinstance(channel, discord.Thread):
            return channel.id
        if not isinstance(channel, discord.TextChannel) or not access.makes_thread(
            channel, interaction.app_permissions
        ):
            return None
        self.work.open_thread(card.id, self._open_thread(channel, card, prompt))
        return card.id

    async def _open_thread(
        self, channel: discord.TextChannel, card: discord.PartialMessage, prompt: str
    ) -> bool:
        try:
            async with self.work.one_at_a_time(channel.id, "threads"):
                await channel.get_partial_message(card.id).create_thread(
                    name=render.thread_name(prompt), auto_archive_duration=1440
                )
        except discord.HTTPException as exc:
            log.info(
                "card %s: no thread (%s %s), replying in channel", card.id, exc.status, exc.code
            )
            return False
        return True


class HeldFile:
    """A member's file kept for its card's copy (a holder, so its release can be watched)."""

    __slots__ = ("__weakref__", "data")

    def __init__(self, data: bytes | None) -> None:
        self.data = data


def fit_reference(reference: PreparedImage, *, limit: int) -> PreparedImage:
    """The reference re-encoded to fit the bot's upload limit, so it can live on the card."""
    fitted = fit_for_upload(reference.data, limit=limit, stem="reference")
    return PreparedImage(
        data=fitted.data,
        width=fitted.width,
        height=fitted.height,
        content_type=fitted.content_type,
        filename=fitted.filename,
    )
