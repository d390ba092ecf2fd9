"""fluxbot: remix images with FLUX from Discord. ``python bot.py`` (or ``make run``) starts it.

This file builds the services and loads the extensions under ``cogs/``; it imports no cog. The
extensions reach the services through the bot's attributes, and the delivery extension attaches
itself to the generation service when it loads.

A process has one of three roles (DESIGN §9): one unsharded gateway connection (the default),
the shards ``SHARD_IDS`` of ``SHARD_COUNT`` (:class:`ShardedFluxBot`), or ``WORKER_ONLY``: jobs
run and results posted over REST, with no gateway connection at all.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import pkgutil
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import discord
from discord.ext import commands

from services import doctor, log_redaction
from services.aimlapi import AimlApiClient
from services.config import Settings, SettingsError, load_settings
from services.costs import BudgetGuard, PriceList, usd_to_nanos
from services.credits import CreditWatch
from services.generations import GenerationService
from services.image_pool import ImagePool
from services.metrics import Metrics, MetricsServer, interaction_ack_trace
from services.quotas import DailyQuotas
from services.store import SCHEMA_VERSION, SchemaTooNewError, Store

log = logging.getLogger("fluxbot")


#: Where the extensions live; found by path, so this module imports no cog.
EXTENSIONS_DIR = Path(__file__).resolve().parent / "cogs"
#: What a ``WORKER_ONLY`` process loads: posting results, and the operator's credit notices.
#: Commands and buttons arrive over the gateway, which a worker never joins.
WORKER_EXTENSIONS = frozenset({"cogs.delivery", "cogs.stats"})
#: Discord allows ``max_concurrency`` IDENTIFYs per this many seconds (one per rate-limit bucket).
IDENTIFY_WINDOW = 5.0
#: The names discord.py gives the tasks that handle an interaction: slash and context menu
#: commands, views, modals, dynamic items, and ``on_interaction`` listeners.
INTERACTION_TASKS = (
    "CommandTree-invoker",
    "discord-ui-view-dispatch-",
    "discord-ui-modal-dispatch-",
    "discord-ui-dynamic-item-",
    "discord.py: on_interaction",
)
#: How long a stop waits for interactions being handled to send their last answers.
HANDLING_GRACE_SECONDS = 5.0


def walk_extensions() -> Iterator[str]:
    """Every module in ``cogs/`` but the helpers, whose names start with ``_``."""
    for module in pkgutil.iter_modules([str(EXTENSIONS_DIR)], "cogs."):
        if not module.name.rpartition(".")[2].startswith("_"):
            yield module.name


class FluxBot(commands.Bot):
    """The bot object; its services are opened in ``setup_hook`` and closed in ``close``."""

    store: Store
    api: AimlApiClient
    generations: GenerationService
    credits: CreditWatch
    http_session: aiohttp.ClientSession

    def __init__(self, settings: Settings, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # channel, thread and NSFW flags for result delivery
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        self.metrics = Metrics()
        # Every answer to an interaction passes through discord.py's HTTP client: one hook
        # there times them all, whichever command, button or form is answered.
        options.setdefault(
            "http_trace",
            interaction_ack_trace(
                self.metrics, lambda snowflake: discord.utils.snowflake_time(snowflake).timestamp()
            ),
        )
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
        self.images = ImagePool()
        self.synced_commands = 0
        self.metrics_server: MetricsServer | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

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
        quotas = DailyQuotas(
            self.store, user_limit=settings.user_daily_limit, guild_limit=settings.guild_daily_limit
        )
        bot_budget = settings.bot_daily_budget_usd
        self.generations = GenerationService(
            store=self.store,
            api=self.api,
            quotas=quotas,
            max_concurrent=settings.max_concurrent_jobs,
            max_per_user=settings.max_queued_per_user,
            job_timeout_seconds=settings.job_timeout_seconds,
            lease_seconds=settings.job_lease_seconds,
            poll_seconds=settings.queue_poll_seconds,
            card_edit_interval=settings.card_edit_interval_seconds,
            metrics=self.metrics,
            prices=PriceList(settings.model_prices, megapixels=settings.max_input_megapixels),
            budgets=BudgetGuard(
                self.store,
                bot_daily_nanos=None if bot_budget is None else usd_to_nanos(bot_budget),
            ),
        )
        self.credits = CreditWatch(
            balance=self.api.balance,
            generations=self.generations,
            store=self.store,
            low_balance=settings.low_balance_usd,
        )
        if settings.metrics_port is not None:
            self.metrics_server = MetricsServer(self.metrics)
            await self.metrics_server.start(settings.metrics_host, settings.metrics_port)
        for extension in walk_extensions():
            if settings.worker_only and extension not in WORKER_EXTENSIONS:
                continue
            try:
                await self.load_extension(extension)
            except Exception:
                log.exception("extension %s failed to load", extension)
        if not settings.worker_only:  # the processes that receive commands keep them synced
            self.synced_commands = await self.sync_commands()
        self.credits.start()  # the balance at start, then hourly (DESIGN §10)

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

    async def start(self, token: str, *, reconnect: bool = True) -> None:
        """Log in and serve until closed: over the gateway, or ``WORKER_ONLY`` over REST alone."""
        if not self.settings.worker_only:
            await super().start(token, reconnect=reconnect)
            return
        await self.login(token)  # REST only: the user, the application, then setup_hook
        await self.on_ready()
        await self._stopped.wait()

    async def on_ready(self) -> None:
        # Resume first, so "ready" means stored jobs are back in the queue: a stop right after
        # the line (tests do) then never finds resume still writing to the database.
        await self.generations.resume()  # once; later READYs (reconnects) do nothing
        log.info(
            "fluxbot ready: %s, %d guilds, %d commands synced%s",
            self.user,
            len(self.guilds),
            self.synced_commands,
            self.role,
        )

    @property
    def role(self) -> str:
        """What this process does besides the default (one unsharded gateway connection)."""
        if self.settings.worker_only:
            return "; worker only (no gateway)"
        return ""

    async def close(self) -> None:
        """Once, however often a signal or discord.py asks: a second call waits for the first."""
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._close_once(), name="fluxbot-shutdown")
        await asyncio.shield(self._shutdown)

    async def _close_once(self) -> None:
        """Until the gateway closes, new commands are still stored (and told so)."""
        if hasattr(self, "generations"):
            grace = self.settings.shutdown_grace_seconds
            log.info(
                "fluxbot stopping: no new API calls; %d running get up to %gs to finish",
                self.generations.queue.running_count,
                grace,
            )
            await self.generations.shutdown(grace)
            await self._interactions_handled()
        if hasattr(self, "credits"):
            await self.credits.close()
        await super().close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        self.images.close()
        if hasattr(self, "http_session"):
            await self.http_session.close()
        if hasattr(self, "store"):
            await self.store.close()
        self._stopped.set()

    @staticmethod
    async def _interactions_handled() -> None:
        """Interactions being handled send their answers before the HTTP session closes under
        them: a command that arrived while stopping is told it is queued for the restart."""
        current = asyncio.current_task()
        handling = {
            task
            for task in asyncio.all_tasks()
            if task is not current and task.get_name().startswith(INTERACTION_TASKS)
        }
        if handling:
            await asyncio.wait(handling, timeout=HANDLING_GRACE_SECONDS)


class ShardedFluxBot(FluxBot, commands.AutoShardedBot):
    """The same bot on the shards ``SHARD_IDS`` (default: all) of ``SHARD_COUNT``.

    discord.py's AutoShardedBot runs them over one connection each in this process; the count is
    always given, so it never asks Discord for a recommended one, and every process of the bot
    agrees on which guild is whose.
    """

    def __init__(self, settings: Settings, **options: Any) -> None:
        assert settings.shard_count is not None, "create_bot picks this class for a shard count"
        options.setdefault("shard_count", settings.shard_count)
        options.setdefault("shard_ids", list(settings.shard_ids) if settings.shard_ids else None)
        super().__init__(settings, **options)
        self._max_concurrency: int | None = None
        self._identified: dict[int, float] = {}

    @property
    def role(self) -> str:
        shards = self.shard_ids or range(self.shard_count or 0)
        return f"; shards {', '.join(map(str, shards))} of {self.shard_count}"

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait only as long as Discord requires, where discord.py waits 5 s before every
        shard but the first."""
        if self._max_concurrency is None:
            try:
                self._max_concurrency = (await self.fetch_session_start_limits()).max_concurrency
            except discord.HTTPException:
                self._max_concurrency = 1
        loop = asyncio.get_running_loop()
        delay = self.identify_delay(shard_id or 0, loop.time())
        if delay > 0:
            await asyncio.sleep(delay)

    def identify_delay(self, shard_id: int, now: float) -> float:
        """Seconds until ``shard_id`` may IDENTIFY, that moment then taken: Discord allows one
        IDENTIFY per 5 s in each bucket ``shard_id % max_concurrency`` (``GET /gateway/bot``)."""
        bucket = shard_id % max(self._max_concurrency or 1, 1)
        last = self._identified.get(bucket)
        at = now if last is None else max(now, last + IDENTIFY_WINDOW)
        self._identified[bucket] = at
        return at - now


def create_bot(settings: Settings | None = None, **discord_options: Any) -> FluxBot:
    """The bot, ready for ``start``; tests pass discord.py options such as ``connector=``.

    With ``SHARD_COUNT`` it is a :class:`ShardedFluxBot`; without, a plain one, which never
    asks Discord how many shards to run.
    """
    settings = settings or load_settings()
    kind = ShardedFluxBot if settings.shard_count is not None else FluxBot
    return kind(settings, **discord_options)


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


async def check() -> int:
    """``--check``: one line per check on stdout; 0 when every check passed, else 1."""
    results = await doctor.run_checks(load_settings, discord_api=discord.http.Route.BASE)
    for result in results:
        print(result.line())  # noqa: T201 - a report for the operator, not a log
    return 0 if all(result.ok for result in results) else 1


async def migrate_database(settings: Settings) -> int:
    """``--migrate``: bring the database to this code's schema (a deploy step), then exit."""
    try:
        async with await Store.open(settings.database_url):
            pass
    except SchemaTooNewError as exc:
        log.error("%s", exc)
        return 1
    log.info("database is at schema version %d", SCHEMA_VERSION)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bot.py", description="fluxbot: remix images with FLUX from Discord."
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--check",
        action="store_true",
        help="check the configuration, Discord login, API key and database, then exit",
    )
    action.add_argument(
        "--migrate", action="store_true", help="upgrade the database schema, then exit"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        return asyncio.run(check())
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - logging is not configured without settings
        return 2
    configure_logging(settings)
    if args.migrate:
        return asyncio.run(migrate_database(settings))
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
