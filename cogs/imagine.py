"""``/imagine``: check what the interaction carries, answer with a job card, then queue the job.

Between the answer and the API call there is no Discord write when the member's file can be used
as it is: the job gets the attachment's own URL, and the results thread and the card's copy of
the reference (which later jobs need, as attachment URLs expire) are made while the API works.
In a busy channel those writes wait for the channel's budget; the API call does not.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs import _access as access
from cogs import _render as render
from cogs._cardwork import card_fields, card_work
from cogs._replies import reply
from cogs._uploads import uploads
from services.errors import UserFacingError
from services.images import (
    ImageRejected,
    PreparedImage,
    check_attachment_meta,
    fit_for_upload,
    normalise_reference,
)
from services.jobs import QUEUED_FOR_RESTART
from services.parameters import (
    COUNT,
    GUIDANCE,
    PROMPT,
    SEED,
    STEPS,
    STRENGTH,
    GenerationParameters,
    parse_parameters,
)
from services.safety import check_prompt, safety_checker_enabled
from services.store import Generation, GenerationKind, NewGeneration

if TYPE_CHECKING:
    from bot import FluxBot

    Interaction = discord.Interaction[FluxBot]

log = logging.getLogger(__name__)

#: Largest reference attachment we download; it is scaled down to MAX_INPUT_MEGAPIXELS anyway.
MAX_REFERENCE_BYTES = 20 * 1024 * 1024
INTAKE_CONCURRENCY = 4


def own_upload_limit(guild: discord.Guild | None) -> int:
    """What the bot may upload per file: the guild's boost tier, or 10 MiB in DMs.

    Never ``Interaction.filesize_limit``: that is the member's, Nitro included (DESIGN §5).
    """
    return (
        guild.filesize_limit if guild is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
    )


class ImagineCog(commands.Cog):
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        #: Commands whose image work (download, decode, re-host) runs at once; a burst waits its
        #: turn after its card is up, so answering interactions never competes with image work.
        self.intake = asyncio.Semaphore(INTAKE_CONCURRENCY)
        self.work = card_work(bot)

    async def cog_unload(self) -> None:
        await self.work.close()

    @commands.Cog.listener()
    async def on_thread_create(self, thread: discord.Thread) -> None:
        self.work.thread_created(thread.id)

    # Ranges and descriptions come from the parameter specs (services/parameters.py).
    @app_commands.command(name="imagine")
    # Guild installs only: a user-installed command would run where the bot is no member.
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.describe(
        image="The picture to remix (PNG, JPEG, WebP or GIF)",
        prompt=PROMPT.help,
        **{spec.name: spec.description for spec in (STRENGTH, SEED, STEPS, GUIDANCE, COUNT)},
    )
    async def imagine(
        self,
        interaction: Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, PROMPT.min_length, PROMPT.max_length],
        strength: app_commands.Range[float, STRENGTH.minimum, STRENGTH.maximum] | None = None,
        seed: app_commands.Range[int, int(SEED.minimum), int(SEED.maximum)] | None = None,
        steps: app_commands.Range[int, int(STEPS.minimum), int(STEPS.maximum)] | None = None,
        guidance: app_commands.Range[float, GUIDANCE.minimum, GUIDANCE.maximum] | None = None,
        count: app_commands.Range[int, int(COUNT.minimum), int(COUNT.maximum)] | None = None,
    ) -> None:
        """Remix an image with FLUX: attach a picture and describe what it should become."""
        if (refused := access.check(interaction)) is not None:
            await reply(interaction, refused)
            return
        options = {"strength": strength, "seed": seed, "steps": steps, "guidance": guidance}
        options["count"] = count
        try:
            parameters = parse_parameters(
                prompt=prompt, **{k: v for k, v in options.items() if v is not None}
            )
            parameters = await self._apply_policy(interaction, parameters)
            check_attachment_meta(
                image.content_type, image.size, image.filename, max_bytes=MAX_REFERENCE_BYTES
            )
            await self.bot.generations.admit(interaction.user.id, interaction.guild_id)
        except UserFacingError as exc:
            await reply(interaction, exc.user_message)
            return

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
        try:
            async with self.intake:
                generation = await self._start(interaction, card, parameters, image)
        except UserFacingError as exc:
            await self._turn_card_down(
                card, parameters.prompt, interaction.user.id, exc.user_message
            )
            return
        except discord.Forbidden:
            log.warning("card %s: a permission is missing in channel %s", card.id, card.channel.id)
            names = access.missing_now(interaction.channel)
            reason = access.refusal(names, card.channel.id) if names else render.MISSING_PERMISSION
            await self._turn_card_down(card, parameters.prompt, interaction.user.id, reason)
            return
        log.info("generation %s: /imagine by %s", generation.id, interaction.user.id)
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
        image: discord.Attachment,
    ) -> Generation:
        """After the card is up: the checks that need the bytes, then the queue at once."""
        data = await self._download(image)
        reference = await self.bot.images.run(
            normalise_reference, data, max_megapixels=self.bot.settings.max_input_megapixels
        )
        limit = own_upload_limit(interaction.guild)
        if len(reference.data) > limit:
            reference = await self.bot.images.run(fit_reference, reference, limit=limit)
        thread_id = self._results_thread(interaction, card, parameters.prompt)
        as_sent = reference.data == data  # nothing changed: the API may read the member's file
        if as_sent:
            reference_url = image.url
        else:
            reference_url = await self._rehost(
                card, reference, parameters.prompt, interaction.user.id
            )
        new = NewGeneration(
            parameters=parameters,
            kind=GenerationKind.IMAGINE,
            model=self.bot.settings.aimlapi_model,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=card.channel.id,
            thread_id=thread_id,
            card_channel_id=card.channel.id,
            card_message_id=card.id,
            reference_url=reference_url,
            upload_limit=limit,
        )
        generation = (await self.bot.generations.submit(new)).generation
        if as_sent:  # the card's first status edit also keeps the reference, for later jobs
            rehosted = self.work.rehosting(card.id)
            edit = functools.partial(
                self._rehost_with_status, card, image, reference.filename, rehosted
            )
            self.bot.generations.cards.request(card.id, edit=edit)
        return generation

    async def _apply_policy(
        self, interaction: Interaction, parameters: GenerationParameters
    ) -> GenerationParameters:
        """The guild's blocked terms, and the safety checker: on unless allowed off right here."""
        guild_id = interaction.guild_id
        settings = await self.bot.store.guild_settings.get(guild_id) if guild_id else None
        check_prompt(parameters.prompt, settings)
        checker = safety_checker_enabled(settings, channel_nsfw=render.is_nsfw(interaction.channel))
        return parameters.model_copy(update={"safety_checker": checker})

    def _card(self, interaction: Interaction, card_id: int) -> discord.PartialMessage:
        """The card as a message we edit with the bot token, not the 15-minute interaction one."""
        channel_id = interaction.channel_id or 0
        messageable = self.bot.get_partial_messageable(channel_id, guild_id=interaction.guild_id)
        return messageable.get_partial_message(card_id)

    async def _download(self, image: discord.Attachment) -> bytes:
        try:
            return await image.read()
        except discord.HTTPException as exc:
            log.info("attachment %s: download failed (%s)", image.id, exc.status)
            raise ImageRejected(
                "I couldn't download your image. Attach it again.", reason="download_failed"
            ) from None

    async def _rehost(
        self, card: discord.PartialMessage, reference: PreparedImage, prompt: str, user_id: int
    ) -> str:
        """Put the normalised reference on the card: its URL can be refreshed for months."""
        embed = render.pending_card_embed(prompt, user_id, status="⏳ Queued")
        with uploads([(reference.data, reference.filename, False)]) as files:
            edited = await card.edit(
                embed=embed, attachments=files, allowed_mentions=render.NO_MENTIONS
            )
        self.bot.generations.cards.note_edited(card.id)
        return edited.attachments[0].url

    async def _rehost_with_status(
        self,
        card: discord.PartialMessage,
        image: discord.Attachment,
        filename: str,
        rehosted: asyncio.Future[str | None],
    ) -> None:
        """The card's first status edit, which also attaches the reference (one edit, not two).

        The reference is the member's file unchanged, so it is read again here rather than
        held in memory while a busy channel's edits queue. If this fails, the job goes on with
        the member's own URL, and so do later jobs while that URL lives (about a day); the card
        still gets its status.
        """
        try:
            generation = await self.bot.store.generations.latest_for_card(card.id)
            if generation is None:
                return
            fields = card_fields(self.bot, generation)
            async with self.work.one_at_a_time(card.channel.id, "edits"):
                data = await image.read()
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


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(ImagineCog(bot))
