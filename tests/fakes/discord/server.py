"""The fake Discord server: its state, lifecycle, routes, clock and change notification.

Everything else is a mixin of :class:`FakeDiscord` by concern; state lives here so one
``__init__`` shows all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import yarl
from aiohttp import web

from tests.fakes.discord.cdn import CdnMixin
from tests.fakes.discord.commands import CommandsMixin
from tests.fakes.discord.gateway import GatewayMixin, Session, Shard
from tests.fakes.discord.interactions import FakeInteraction, InteractionsMixin
from tests.fakes.discord.messages import MessagesMixin
from tests.fakes.discord.middleware import API, FakeRequest, MiddlewareMixin, RequestObserver
from tests.fakes.discord.payloads import PayloadsMixin
from tests.fakes.discord.ratelimits import Bucket, RateLimitsMixin, ScriptedRateLimit
from tests.fakes.discord.responses import ResponsesMixin
from tests.fakes.discord.rest import RestMixin
from tests.fakes.discord.state import (
    Attachment,
    DMChannel,
    Guild,
    Member,
    Message,
    TextChannel,
    Thread,
    User,
)
from tests.fakes.discord.world import WorldMixin

DISCORD_EPOCH_MS = 1_420_070_400_000


class FakeDiscord(
    WorldMixin,
    PayloadsMixin,
    MessagesMixin,
    CdnMixin,
    GatewayMixin,
    MiddlewareMixin,
    RateLimitsMixin,
    RestMixin,
    CommandsMixin,
    InteractionsMixin,
    ResponsesMixin,
):
    """The fake Discord server; use as ``async with FakeDiscord() as discord:``."""

    def __init__(
        self,
        token: str = "fake-token",
        bot_name: str = "fluxbot",
        *,
        bucket_limit: int = 5,
        bucket_window: float = 0.5,
        channel_write_limit: tuple[int, float] | None = (5, 5.0),
        old_edit_window: float = 10.0,
        recommended_shards: int = 1,
        max_concurrency: int = 1,
        max_guilds_per_session: int | None = None,
    ) -> None:
        """``channel_write_limit``: per-channel sends, edits and thread creations per window
        (Discord's; ``None`` puts them under ``bucket_limit``/``bucket_window`` like other
        routes). ``old_edit_window``: one edit of an hour-old message per channel per window.
        ``recommended_shards`` and ``max_concurrency``: what ``GET /gateway/bot`` answers;
        ``max_guilds_per_session``: more guilds on one session closes it with 4011 (Discord:
        2500; ``None``: no limit)."""
        self.token = token
        self.url = ""
        self.port = 0
        self._offset = 0.0
        self._last_snowflake = 0
        self._secret = secrets.token_bytes(32)
        self.bucket_limit, self.bucket_window = bucket_limit, bucket_window
        self.channel_write_limit, self.old_edit_window = channel_write_limit, old_edit_window
        self.recommended_shards, self.max_concurrency = recommended_shards, max_concurrency
        self.max_guilds_per_session = max_guilds_per_session
        self.application_id = self._snowflake()
        self.bot_user = self._make_user(bot_name, bot=True)
        self.owner = self._make_user(f"{bot_name}-owner")
        # What tests and benchmarks observe.
        self.requests: list[FakeRequest] = []
        self.rejections: list[dict[str, Any]] = []
        self.rate_limited: list[FakeRequest] = []
        #: Edits of messages older than an hour (fake clock) the bot asked for.
        self.old_message_edits = 0
        self.observers: list[RequestObserver] = []
        #: The shard of every IDENTIFY the fake accepted (``None``: unsharded), in order.
        self.identifies: list[Shard] = []
        # The world.
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, TextChannel | DMChannel] = {}
        self.threads: dict[int, Thread] = {}
        self.users: dict[int, User] = {self.bot_id: self.bot_user}
        self.members: dict[tuple[int, int], Member] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self._messages: dict[int, Message] = {}
        self._attachments: dict[int, Attachment] = {}
        self._dms: dict[int, int] = {}
        # Plumbing.
        self._scripted_429: list[ScriptedRateLimit] = []
        self._buckets: dict[str, Bucket] = {}
        self._sessions: list[Session] = []
        self._resumable: dict[str, Shard] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 30)
        r = app.router
        r.add_get("/gateway", self._gateway)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        channel = "/channels/{channel_id}"
        message = channel + "/messages/{message_id}"
        webhook = "/webhooks/{webhook_id}/{webhook_token}"
        routes: list[tuple[str, str, Callable[[web.Request], Any]]] = [
            ("GET", "/users/@me", self._h_me),
            ("GET", "/oauth2/applications/@me", self._h_app),
            ("GET", "/applications/@me", self._h_app),
            ("GET", "/gateway", self._h_gateway_url),
            ("GET", "/gateway/bot", self._h_gateway_url),
            ("POST", "/users/@me/channels", self._h_create_dm),
            ("GET", channel, self._h_get_channel),
            ("GET", channel + "/messages", self._h_history),
            ("POST", channel + "/messages", self._h_send),
            ("GET", message, self._h_get_message),
            ("PATCH", message, self._h_edit),
            ("DELETE", message, self._h_delete),
            ("POST", message + "/threads", self._h_thread_from_msg),
            ("POST", channel + "/threads", self._h_thread),
            ("GET", "/applications/{app_id}/commands", self._h_get_commands),
            ("PUT", "/applications/{app_id}/commands", self._h_put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._h_get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._h_put_commands),
            ("POST", "/interactions/{interaction_id}/{webhook_token}/callback", self._h_callback),
            ("POST", webhook, self._h_followup),
            ("GET", webhook + "/messages/{message_id}", self._h_wh_get),
            ("PATCH", webhook + "/messages/{message_id}", self._h_wh_edit),
            ("DELETE", webhook + "/messages/{message_id}", self._h_wh_delete),
        ]
        for method, path, handler in routes:
            r.add_route(method, API + path, handler)
        r.add_route("*", "/{tail:.*}", self._h_unknown)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        for session in self._sessions:
            await session.ws.close(code=1001, message=b"fake discord shutting down")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def patch_discord_py(self) -> Iterator[None]:
        """Point discord.py's REST base and gateway at this fake; restore them on exit."""
        import discord.gateway
        import discord.http

        old = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.url + API
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old

    # -- clock, ids, change notification ---------------------------------------------------

    def now(self) -> float:
        """Fake wall clock: real time plus whatever :meth:`advance_clock` added."""
        return time.time() + self._offset

    def advance_clock(self, seconds: float) -> None:
        """Jump the fake clock (interaction deadlines, token and URL expiry use it)."""
        self._offset += seconds
        self._notify()

    def _iso(self, t: float | None = None) -> str:
        return datetime.fromtimestamp(self.now() if t is None else t, UTC).isoformat()

    def _snowflake(self, *, shard: tuple[int, int] | None = None) -> int:
        """A new id, later than every earlier one; ``shard=(shard_id, num_shards)``: one whose
        guild would land on that shard (its timestamp moved up to a few ms later)."""
        ms = int(self.now() * 1000) - DISCORD_EPOCH_MS
        value = max((ms << 22) | (1 << 17), self._last_snowflake + 1)
        if shard is not None:
            shard_id, num_shards = shard
            assert 0 <= shard_id < num_shards, "shards are numbered 0 to num_shards - 1"
            stamp = value >> 22
            if stamp % num_shards != shard_id:
                stamp += (shard_id - stamp) % num_shards
                value = (stamp << 22) | (1 << 17)
        self._last_snowflake = value
        return value

    def _notify(self) -> None:
        """Wake every waiter: set the current event and start a fresh one."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self,
        predicate: Callable[[FakeDiscord], Any],
        timeout: float = 10,  # noqa: ASYNC109 - the documented test API
    ) -> Any:
        """Wait until ``predicate(fake)`` is truthy; re-checked on every state change."""
        async with asyncio.timeout(timeout):
            while not (result := predicate(self)):
                await self._changed.wait()
        return result

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
