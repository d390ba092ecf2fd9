"""fluxbot: remix images with FLUX from Discord. ``python bot.py`` (or ``make run``) starts it."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import discord
from discord.ext import commands

from cogs import render
from cogs.publisher import DiscordPublisher
from services import log_redaction
from services.aimlapi import AimlApiClient
from services.config import Settings, SettingsError, load_settings
from services.jobs import Job, JobQueue
from services.model_registry import model_entry
from services.quotas import DailyQuotas
from services.store import Generation, NewGeneration, Store
from services.worker import GenerationWorker

log = logging.getLogger("fluxbot")
T = TypeVar("T")
#: Commands whose image work (download, decode, re-host) runs at once; a burst waits its turn
#: after its card is up, so answering interactions never competes with a pile of image work.
INTAKE_CONCURRENCY = 4

EXTENSIONS = ("cogs.errors", "cogs.imagine", "cogs.buttons", "cogs.admin")
RESUME_TOO_LATE = "The bot restarted and this job waited too long. Press Reroll to try again."


class FluxBot(commands.Bot):
    """The bot object; its services are opened in ``setup_hook`` and closed in ``close``."""

    store: Store
    api: AimlApiClient
    queue: JobQueue
    publisher: DiscordPublisher

    def __init__(self, settings: Settings, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # channel, thread and NSFW flags for result delivery
        options.setdefault("allowed_mentions", render.NO_MENTIONS)
        # This bot never joins voice: no warnings about voice libraries at every start.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options
        )
        self.settings = settings
        # Here, so every way of starting a bot (tests too) keeps its secrets out of logs from
        # before login on, for the life of the process.
        log_redaction.install(
            [settings.discord_token.get_secret_value(), settings.aimlapi_key.get_secret_value()]
        )
        self.http_session: aiohttp.ClientSession | None = None
        self._resumed = False
        self._admission = asyncio.Lock()
        self.intake = asyncio.Semaphore(INTAKE_CONCURRENCY)
        # Pillow work: one thread per core, so a burst can't starve the event loop of CPU.
        self._image_pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="images")
        self._shutdown: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        settings = self.settings
        self.http_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=15)
        )
        self.store = await Store.open(settings.database_url)
        self.api = AimlApiClient(
            self.http_session,
            base_url=settings.api_base,
            api_key=settings.aimlapi_key,
            deadline=settings.api_deadline_seconds,
        )
        self.publisher = DiscordPublisher(self)
        worker = GenerationWorker(
            store=self.store,
            api=self.api,
            model=model_entry(settings.aimlapi_model),
            publisher=self.publisher,
            job_timeout_seconds=settings.job_timeout_seconds,
            on_requeued=self._show_on_card,
        )
        # Started by ``resume_unfinished``: stored jobs go first, in their order.
        self.queue = JobQueue(
            worker,
            max_concurrent=settings.max_concurrent_jobs,
            max_per_user=settings.max_queued_per_user,
            started=False,
        )
        self.quotas = DailyQuotas(
            self.store,
            user_limit=settings.user_daily_limit,
            guild_limit=settings.guild_daily_limit,
        )
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except Exception:
                log.exception("extension %s failed to load", extension)
        self.synced_commands = await self.sync_commands()

    async def sync_commands(self) -> int:
        """Sync only when the command tree changed: Discord allows 200 creates a day."""
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        commands_ = self.tree.get_commands(guild=guild)
        payload = json.dumps([c.to_dict(self.tree) for c in commands_], sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()
        key = f"commands:{self.application_id}:{guild.id if guild else 'global'}"
        if await self.store.meta.get(key) == digest:
            return 0
        synced = await self.tree.sync(guild=guild)
        await self.store.meta.set(key, digest)
        return len(synced)

    async def on_ready(self) -> None:
        log.info(
            "fluxbot ready: %s, %d guilds, %d commands synced",
            self.user,
            len(self.guilds),
            self.synced_commands,
        )
        if not self._resumed:
            self._resumed = True
            await self.resume_unfinished()

    async def admit(self, user_id: int, guild_id: int | None) -> None:
        """Raise ``QueueRefused`` (or its ``QuotaExceeded``) if this job may not be queued.

        Commands and buttons call it before answering, so a refusal is ephemeral and stores
        nothing; ``enqueue`` checks again, as the state may have changed meanwhile.
        """
        self.queue.check_admission(user_id)
        await self.quotas.check(user_id, guild_id)

    async def enqueue(self, new: NewGeneration) -> tuple[Generation, int]:
        """Store a generation, queue it, and have its card show it; returns jobs ahead."""
        async with self._admission:  # check and store as one step, or two presses both pass
            await self.admit(new.user_id, new.guild_id)
            generation = await self.store.generations.create(new)
        ahead = self.queue.submit(
            Job(generation.id, generation.user_id, generation.guild_id), check=False
        )
        self._show_on_card(generation)
        return generation, ahead

    async def image_work(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a CPU-bound Pillow call off the event loop, on the bounded image pool."""
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._image_pool, call)

    def _show_on_card(self, generation: Generation) -> None:
        if generation.card_message_id is not None:
            self.publisher.cards.request(generation.card_message_id)

    async def resume_unfinished(self) -> None:
        """Jobs a stop or crash left behind run again, oldest first; stale ones fail loudly.

        The queue starts only afterwards, so commands that arrived while the bot connected
        wait behind them. Each job fetches a fresh reference URL from its card when it runs.
        """
        try:
            interrupted = await self.store.generations.mark_running_as_interrupted()
            if interrupted:
                log.warning("%d generations were interrupted mid-call; they run again", interrupted)
            cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.job_timeout_seconds)
            resumed = 0
            for generation in await self.store.generations.unfinished():
                if generation.created_at < cutoff:
                    await self.store.generations.mark_failed(
                        generation.id, RESUME_TOO_LATE, datetime.now(UTC)
                    )
                    await self.publisher.job_failed(generation, RESUME_TOO_LATE)
                    continue
                if generation.id not in self.queue:  # not one queued since start-up
                    job = Job(generation.id, generation.user_id, generation.guild_id)
                    self.queue.submit(job, check=False)
                    self._show_on_card(generation)
                    resumed += 1
            log.info("resumed %d waiting generations", resumed)
        finally:
            self.queue.start()

    async def close(self) -> None:
        """Once, however often a signal or discord.py asks: a second call waits for the first."""
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._close_once(), name="fluxbot-shutdown")
        await asyncio.shield(self._shutdown)

    async def _close_once(self) -> None:
        """DESIGN §7: no new API calls; running ones get the grace period, then are interrupted.

        Until the gateway closes, new commands are still stored (and told so), to run after the
        restart along with every job still waiting.
        """
        if hasattr(self, "queue"):
            grace = self.settings.shutdown_grace_seconds
            log.info(
                "fluxbot stopping: no new API calls; %d running get up to %gs to finish",
                self.queue.running_count,
                grace,
            )
            waiting, interrupted = await self.queue.shutdown(grace)
            for job in interrupted:
                await self.store.generations.mark_interrupted(job.generation_id)
                log.warning(
                    "generation %s: still running after %gs; interrupted, it runs again after "
                    "the restart (the API may bill it twice)",
                    job.generation_id,
                    grace,
                )
            # Anything the grace period cut mid-write.
            await self.store.generations.mark_running_as_interrupted()
            if waiting:
                log.info("%d waiting generations kept for the next start", len(waiting))
            await self.publisher.cards.flush()
        await super().close()
        self._image_pool.shutdown(wait=False, cancel_futures=True)
        if self.http_session is not None:
            await self.http_session.close()
        if hasattr(self, "store"):
            await self.store.close()


def create_bot(settings: Settings | None = None, **discord_options: Any) -> FluxBot:
    """The bot, ready for ``start``; tests pass discord.py options such as ``connector=``."""
    return FluxBot(settings or load_settings(), **discord_options)


def configure_logging(settings: Settings) -> None:
    discord.utils.setup_logging(level=getattr(logging, settings.log_level), root=True)
    logging.getLogger("discord.http").setLevel(logging.WARNING)


async def run(bot: FluxBot) -> None:
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: stopping.append(loop.create_task(bot.close())))
    async with bot:
        await bot.start(bot.settings.discord_token.get_secret_value())
    await asyncio.gather(*stopping)


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - logging is not configured without settings
        return 2
    configure_logging(settings)
    try:
        asyncio.run(run(create_bot(settings)))
    except discord.LoginFailure:
        log.error(
            "Discord refused DISCORD_TOKEN. Reset it at https://discord.com/developers/"
            "applications -> your app -> Bot, and put the new one in .env."
        )
        return 2
    except discord.PrivilegedIntentsRequired:
        log.error("Discord refused the gateway intents this bot asked for.")
        return 2
    except (aiohttp.ClientConnectionError, OSError) as exc:
        # Only reached when logging in fails: once connected, discord.py reconnects by itself.
        log.error("Could not reach Discord (%s). Check this machine's network and DNS.", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
