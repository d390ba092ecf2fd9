"""Delivery: posts results, failures and card updates with the bot token.

An extension that attaches its publisher to the generation service when it loads and detaches it
when it unloads. Nothing here uses the interaction token: a queued job can outlive it (15 min),
so every later message goes to the thread or channel through the channel endpoints.

Where Discord refuses, the member is told on the card or in the thread, never only in the log:
a thread that is gone or locked (160005) gets its results in the channel above it; an archived one
is unarchived by the result itself; a card older than an hour is edited once per job, with its
final state, since Discord limits edits of old messages separately (30046, DESIGN §5).
"""

from __future__ import annotations

import collections
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord

from cogs import _access as access
from cogs import _render as render
from cogs._cardwork import card_fields, card_work
from cogs._references import References
from cogs._result_actions import result_view
from cogs._uploads import uploads
from services.aimlapi import GenerationResult
from services.clock import utc_now
from services.images import EncodedFile, ImageRejected, fit_for_upload
from services.store import Generation, GenerationStatus
from services.worker import (
    DeliveryFailed,
    NoPublisher,
)

if TYPE_CHECKING:
    from bot import FluxBot

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
TOO_LARGE_NOW = (
    "Discord refused the file as too large for this channel (its upload limit is lower than "
    "when you asked). Press Reroll to try again."
)
#: Discord's limit on edits of old messages starts at an hour; a margin for the edit's own delay.
OLD_CARD = timedelta(minutes=55)
#: How far back a job answered before a restart is looked for in its results place.
RECENT_MESSAGES = 100
FINAL = frozenset({GenerationStatus.DONE, GenerationStatus.FAILED, GenerationStatus.CANCELLED})
#: Refusals that mean "not now", not "not allowed": archived (a post unarchives) or locked.
THREAD_ARCHIVED, THREAD_LOCKED = 50083, 160005
THREAD_CLOSED = frozenset({THREAD_ARCHIVED, THREAD_LOCKED})
#: How many archived threads are kept in mind (see ``DiscordPublisher.thread_updated``).
ARCHIVED_KEPT = 10_000


class DiscordClock:
    """Discord's time as its newest snowflake shows it: a message's age is Discord's to judge.

    A host clock that is off (or a test's fake clock) would otherwise misjudge which cards are
    past the hour after which edits count against Discord's separate limit.
    """

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def saw(self, snowflake: int) -> None:
        self._offset = discord.utils.snowflake_time(snowflake) - utc_now()

    def age(self, snowflake: int) -> timedelta:
        return utc_now() + self._offset - discord.utils.snowflake_time(snowflake)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        self.saw(interaction.id)


class DiscordPublisher:
    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.clock = DiscordClock()
        self.work = card_work(bot)
        self.references = References(bot, self.work, post=self._post_fitted)
        #: Cards whose failed edit was already explained in their thread.
        self._told: set[int] = set()
        #: Threads the gateway last said are archived: discord.py drops those from its cache.
        self._archived_threads: collections.OrderedDict[int, None] = collections.OrderedDict()

    # -- where things go ----------------------------------------------------------------

    def _messageable(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(channel_id, guild_id=guild_id)

    def upload_limit(self, generation: Generation) -> int:
        """The bot's own limit, per file: the guild's boost tier now, or 10 MiB in DMs.

        The stored limit is kept if lower (a boost that ended while the job waited may not have
        reached this process); a limit stored from an interaction, the member's, never raises it.
        """
        guild = self.bot.get_guild(generation.guild_id) if generation.guild_id else None
        own = guild.filesize_limit if guild is not None else None
        if generation.guild_id is None:
            own = DEFAULT_UPLOAD_LIMIT
        limits = [limit for limit in (generation.upload_limit, own) if limit]
        return min(limits) if limits else DEFAULT_UPLOAD_LIMIT

    async def allows_nsfw(self, generation: Generation) -> bool:
        """Only a channel Discord marks NSFW may show flagged images; unknown means no."""
        channel: object = self.bot.get_channel(generation.thread_id or generation.channel_id)
        if channel is None and generation.thread_id:
            channel = self.bot.get_channel(generation.channel_id)
        if channel is None:  # no gateway cache (WORKER_ONLY, or another shard's guild)
            channel = await self._fetch_nsfw_holder(generation.channel_id)
        return render.is_nsfw(channel)

    async def _fetch_nsfw_holder(self, channel_id: int) -> object:
        """The channel that decides NSFW, asked of Discord: a thread's parent decides for it."""
        try:
            channel: object = await self.bot.fetch_channel(channel_id)
            if isinstance(channel, discord.Thread) and channel.parent_id:
                channel = await self.bot.fetch_channel(channel.parent_id)
        except discord.HTTPException as exc:
            log.info(
                "channel %s: NSFW flag unknown (%s); treated as not NSFW", channel_id, exc.status
            )
            return None
        return channel

    # -- cards ----------------------------------------------------------------------------

    async def edit_card(self, card_message_id: int) -> None:
        generation = await self.bot.store.generations.latest_for_card(card_message_id)
        if generation is None or generation.card_channel_id is None:
            return
        if self._archived(generation.card_channel_id):
            # Refused in any state (50083) until a post unarchives the thread; its job's edits
            # then show the newest state, so a final state waiting here is not lost.
            return
        if generation.status not in FINAL and self.clock.age(card_message_id) > OLD_CARD:
            return  # an old card shows each job's final state only: one edit per job
        card = self._messageable(generation.card_channel_id, generation.guild_id)
        fields = await card_fields(self.bot, generation)
        try:
            async with self.work.one_at_a_time(generation.card_channel_id, "edits"):
                await card.get_partial_message(card_message_id).edit(**fields)
        except discord.NotFound:
            log.info("card %s: deleted, not edited", card_message_id)
        except discord.Forbidden as exc:
            if exc.code in THREAD_CLOSED:
                log.info(
                    "card %s: its thread is closed (%s), not edited", card_message_id, exc.code
                )
            else:
                await self._explain_card(generation, exc)
        except discord.HTTPException as exc:  # 30046 after discord.py's retries, say
            log.warning("card %s: not edited (%s %s)", card_message_id, exc.status, exc.code)

    async def _explain_card(self, generation: Generation, exc: discord.Forbidden) -> None:
        """A card Discord won't let us edit: say so once where the results go."""
        card_id = generation.card_message_id or 0
        log.warning("card %s: not editable (%s %s)", card_id, exc.status, exc.code)
        if card_id in self._told:
            return
        self._told.add(card_id)
        names = access.missing_now(self.bot.get_channel(generation.card_channel_id or 0))
        why = f" (I'm missing {', '.join(names)})" if names else ""
        text = f"⚠️ I can't update the job card any more{why}. Results still come here."
        try:
            await self._send(generation, [], content=text)
        except discord.HTTPException as second:
            log.warning("card %s: could not say so either (%s)", card_id, second.status)

    # -- results ------------------------------------------------------------------------

    async def fresh_reference_urls(self, generation: Generation) -> list[str]:
        return await self.references.fresh_urls(generation)

    async def thread_updated(self, payload: discord.RawThreadUpdateEvent) -> None:
        """Keep archived threads in mind (the newest ``ARCHIVED_KEPT``): a card in one is
        refused any edit (50083) until a post unarchives it."""
        if payload.data.get("thread_metadata", {}).get("archived"):
            self._archived_threads[payload.thread_id] = None
            self._archived_threads.move_to_end(payload.thread_id)
            if len(self._archived_threads) > ARCHIVED_KEPT:
                self._archived_threads.popitem(last=False)
        else:
            self._archived_threads.pop(payload.thread_id, None)

    async def thread_created(self, thread: discord.Thread) -> None:
        """The gateway's news that a results thread exists (see ``CardWork.thread_created``)."""
        self.work.thread_created(thread.id)

    async def ready_for_results(self, generation: Generation) -> None:
        if generation.thread_id and generation.thread_id != generation.channel_id:
            await self.work.thread_ready(generation.thread_id)

    async def job_succeeded(
        self, generation: Generation, result: GenerationResult, images: list[bytes]
    ) -> list[int]:
        allow_nsfw = await self.allows_nsfw(generation)
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
                stem = render.image_stem(generation.id, len(files))
                encoded = await self.bot.images.run(fit_for_upload, data, limit=limit, stem=stem)
            except ImageRejected as exc:
                log.warning("generation %s: image %s not uploadable", generation.id, index)
                await self.post_text(generation, render.failure_text(exc.user_message))
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
            message_ids.append(await self.post_text(generation, notice))
        return message_ids

    async def posted_results(self, generation: Generation) -> list[int]:
        """Our messages carrying this generation's files, posted since it started: a process
        that stopped after posting but before recording them must not cause a second post."""
        me = self.bot.user
        if me is None:
            return []
        since = discord.Object(discord.utils.time_snowflake(generation.created_at))
        places = dict.fromkeys(x for x in (generation.thread_id, generation.channel_id) if x)
        found: list[int] = []
        for channel_id in places:
            messageable = self._messageable(channel_id, generation.guild_id)
            try:
                async for message in messageable.history(limit=RECENT_MESSAGES, after=since):
                    if message.author.id == me.id and any(
                        render.is_result_file(file.filename, generation.id)
                        for file in message.attachments
                    ):
                        found.append(message.id)
            except discord.HTTPException as exc:
                log.info(
                    "generation %s: could not look for earlier posts (%s)",
                    generation.id,
                    exc.status,
                )
            if found:
                break
        return found

    async def job_failed(self, generation: Generation, reason: str) -> None:
        try:
            await self.post_text(
                generation, render.failure_text(reason), view=result_view(generation, images=0)
            )
        except discord.HTTPException as exc:
            log.warning("generation %s: could not report failure (%s)", generation.id, exc.status)

    # -- sending --------------------------------------------------------------------------

    async def _send(
        self, generation: Generation, encoded: list[tuple[EncodedFile, bool]], **fields: Any
    ) -> discord.Message:
        """Post where the job's results go; if Discord says that thread is gone or locked, in
        the channel above it instead."""
        fields["allowed_mentions"] = render.NO_MENTIONS
        channel_id, in_thread = await self._results_place(generation)
        try:
            message = await self._post(channel_id, generation.guild_id, encoded, fields)
        except (discord.NotFound, discord.Forbidden) as exc:
            gone = isinstance(exc, discord.NotFound) or exc.code == THREAD_LOCKED
            parent = await self._parent_of(generation) if in_thread and gone else None
            if parent is None:  # other refusals would hold in the channel above too
                raise
            log.warning(
                "generation %s: thread %s unusable (%s %s); posting in its channel",
                generation.id,
                channel_id,
                exc.status,
                exc.code,
            )
            message = await self._post(parent, generation.guild_id, encoded, fields)
        self.clock.saw(message.id)
        return message

    async def _post(
        self,
        channel_id: int,
        guild_id: int | None,
        encoded: list[tuple[EncodedFile, bool]],
        fields: dict[str, Any],
    ) -> discord.Message:
        with uploads((e.data, e.filename, flagged) for e, flagged in encoded) as files:
            return await self._messageable(channel_id, guild_id).send(files=files, **fields)

    async def _results_place(self, generation: Generation) -> tuple[int, bool]:
        """The results thread if it takes posts (a post unarchives it), else the channel.

        Returns the channel id and whether it is the job's thread. A thread still being opened
        is waited for; one that could not be opened, or that the gateway says is locked to us,
        is passed over for the channel above it.
        """
        thread_id = generation.thread_id
        if not thread_id:
            return generation.channel_id, False
        if thread_id != generation.channel_id and not await self.work.thread_ready(thread_id):
            return generation.channel_id, False
        if self._locked(thread_id) and (parent := await self._parent_of(generation)) is not None:
            return parent, False
        return thread_id, True

    def _archived(self, channel_id: int) -> bool:
        return channel_id in self._archived_threads

    def _locked(self, thread_id: int) -> bool:
        """Whether the gateway said this thread is locked to the bot (no Manage Threads)."""
        thread = self.bot.get_channel(thread_id)
        if not isinstance(thread, discord.Thread) or not thread.locked:
            return False
        me = thread.guild.me
        return me is None or not thread.permissions_for(me).manage_threads

    async def _parent_of(self, generation: Generation) -> int | None:
        """The channel a job's results thread hangs off, if any."""
        if generation.thread_id != generation.channel_id:
            return generation.channel_id
        thread = self.bot.get_channel(generation.channel_id)
        if isinstance(thread, discord.Thread):
            return thread.parent_id
        try:
            fetched = await self.bot.fetch_channel(generation.channel_id)
        except discord.HTTPException:
            return None
        return fetched.parent_id if isinstance(fetched, discord.Thread) else None

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

    async def _post_fitted(
        self, generation: Generation, fitted: EncodedFile, note: str
    ) -> discord.Message:
        return await self._send(generation, [(fitted, False)], content=note)

    async def post_text(
        self, generation: Generation, text: str, *, view: discord.ui.View | None = None
    ) -> int:
        """``text`` where the job's results go, as they go (see ``_send``)."""
        extra = {"view": view} if view is not None else {}
        return (await self._send(generation, [], content=text, **extra)).id


async def setup(bot: FluxBot) -> None:
    publisher = DiscordPublisher(bot)
    bot.add_listener(publisher.clock.on_interaction, "on_interaction")
    bot.add_listener(publisher.thread_created, "on_thread_create")
    bot.add_listener(publisher.thread_updated, "on_raw_thread_update")
    bot.generations.attach(publisher)


async def teardown(bot: FluxBot) -> None:
    try:
        publisher = bot.generations.publisher()
    except NoPublisher:
        publisher = None
    bot.generations.detach()
    if isinstance(publisher, DiscordPublisher):
        bot.remove_listener(publisher.clock.on_interaction, "on_interaction")
        bot.remove_listener(publisher.thread_created, "on_thread_create")
        bot.remove_listener(publisher.thread_updated, "on_raw_thread_update")
        await publisher.work.close()  # threads still being opened for jobs that won't post
