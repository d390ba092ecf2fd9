"""fluxbot: remix images with FLUX from Discord. ``python bot.py`` (or ``make run``) starts it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import discord
from discord.ext import commands

from cogs import render
from cogs.publisher import DiscordPublisher
from services import log_redaction
from services.aimlapi import AimlApiClient
from services.config import Settings, SettingsError, load_settings
from services.jobs import Job, JobQueue
from services.store import Generation, NewGeneration, Store
from services.worker import GenerationWorker

log = logging.getLogger("fluxbot")

EXTENSIONS = ("cogs.errors", "cogs.imagine", "cogs.buttons")
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
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options
        )
        self.settings = settings
        self.http_session: aiohttp.ClientSession | None = None
        self._resumed = False

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
            model=settings.aimlapi_model,
            deadline=settings.api_deadline_seconds,
        )
        self.publisher = DiscordPublisher(self)
        worker = GenerationWorker(store=self.store, api=self.api, publisher=self.publisher)
        self.queue = JobQueue(
            worker,
            max_concurrent=settings.max_concurrent_jobs,
            max_per_user=settings.max_queued_per_user,
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
        if await self.store.get_meta(key) == digest:
            return 0
        synced = await self.tree.sync(guild=guild)
        await self.store.set_meta(key, digest)
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

    async def enqueue(self, new: NewGeneration) -> tuple[Generation, int]:
        """Store a generation, queue it, and have its card show it; returns jobs ahead."""
        self.queue.check_admission(new.user_id)
        generation = await self.store.create_generation(new)
        ahead = self.queue.submit(
            Job(generation.id, generation.user_id, generation.guild_id), check=False
        )
        if generation.card_message_id is not None:
            self.publisher.cards.request(generation.card_message_id)
        return generation, ahead

    async def resume_unfinished(self) -> None:
        """Jobs a stop or crash left behind run again, oldest first; stale ones fail loudly."""
        interrupted = await self.store.mark_running_as_interrupted()
        if interrupted:
            log.warning("%d generations were interrupted mid-call; they run again", interrupted)
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.job_timeout_seconds)
        for generation in await self.store.unfinished_generations():
            if generation.created_at < cutoff:
                await self.store.mark_failed(generation.id, RESUME_TOO_LATE, datetime.now(UTC))
                await self.publisher.job_failed(generation, RESUME_TOO_LATE)
                continue
            job = Job(generation.id, generation.user_id, generation.guild_id)
            self.queue.submit(job, check=False)
        log.info("resumed %d waiting generations", self.queue.waiting_count)

    async def close(self) -> None:
        if hasattr(self, "queue"):
            leftover = await self.queue.shutdown(self.settings.shutdown_grace_seconds)
            if leftover:
                log.warning("%d generations kept for the next start", len(leftover))
            await self.store.mark_running_as_interrupted()
            await self.publisher.cards.flush()
        await super().close()
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
    secrets = [settings.discord_token.get_secret_value(), settings.aimlapi_key.get_secret_value()]
    log_redaction.install(secrets)


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
