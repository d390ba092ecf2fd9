"""A loopback fake of Discord that an unmodified discord.py client logs into.

One aiohttp app on 127.0.0.1 serves REST under ``/api/v10``, the gateway at ``/gateway`` and
signed attachment URLs at ``/attachments/...``. It behaves like Discord as documented — the
3 s interaction deadline, 15 min webhook tokens, expiring CDN URLs, message and permission
limits, rate-limit headers — and is stricter where unsure, so a test fails where Discord
would. Every 4xx it answers is also kept in :attr:`FakeDiscord.rejections`.

Set-up methods (``add_guild``...) are synchronous. Called after the client connected they
also dispatch GUILD_CREATE / CHANNEL_CREATE / THREAD_CREATE, so either order works.

Split in three: this module (server, world, messages, gateway, REST), ``interactions``
(what a user does and the interaction endpoints) and ``rules`` (Discord's limits as pure
checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import logging
import mimetypes
import re
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yarl
from aiohttp import WSMsgType, web

from tests.fakes.discord import rules
from tests.fakes.discord.interactions import (
    INTERACTION_DEADLINE,
    WEBHOOK_TOKEN_LIFETIME,
    FakeInteraction,
    InteractionsMixin,
)
from tests.fakes.discord.rules import (
    BODY,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_MEMBER_PERMISSIONS,
    EPHEMERAL,
    FILES,
    LOADING,
    ApiError,
    Form,
    missing_permissions,
)

__all__ = [
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_MEMBER_PERMISSIONS",
    "INTERACTION_DEADLINE",
    "WEBHOOK_TOKEN_LIFETIME",
    "ApiError",
    "FakeDiscord",
    "FakeInteraction",
    "FakeRequest",
    "RequestObserver",
    "rules",
]

_log = logging.getLogger(__name__)
API = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
CDN_URL_LIFETIME = 24 * 3600
_MAJOR_PARAMS = ("channel_id", "guild_id", "webhook_id", "webhook_token")


@dataclass
class FakeRequest:
    """One REST request as the fake saw it (``json`` is the parsed ``payload_json`` too)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, int]]
    time: float
    status: int = 0
    #: ``time.monotonic()`` when the fake finished handling it (benchmarks time against it).
    done_at: float = 0.0


#: Called with each REST request and its response once handled; benchmarks observe through it.
RequestObserver = Callable[[FakeRequest, web.StreamResponse], None]


@dataclass
class _Attachment:
    id: int
    channel_id: int
    filename: str
    data: bytes
    content_type: str | None
    width: int | None = None
    height: int | None = None
    ephemeral: bool = False
    description: str | None = None
    revoked: bool = False


class _Session:
    """One identified gateway connection, written by a single task so events stay ordered."""

    def __init__(self, ws: web.WebSocketResponse, intents: int) -> None:
        self.ws, self.intents, self.seq = ws, intents, 0
        self.session_id = secrets.token_hex(16)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def send(self, payload: dict[str, Any]) -> None:
        if payload.get("op") == 0:
            self.seq += 1
            payload["s"] = self.seq
        self.queue.put_nowait(payload)

    async def writer(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self.ws.closed:
                await self.ws.send_str(json.dumps(await self.queue.get()))


class FakeDiscord(InteractionsMixin):
    """The fake Discord server; use as ``async with FakeDiscord() as discord:``."""

    def __init__(
        self,
        token: str = "fake-token",
        bot_name: str = "fluxbot",
        *,
        bucket_limit: int = 5,
        bucket_window: float = 0.5,
    ) -> None:
        self.token = token
        self.url = ""
        self.port = 0
        self._offset = 0.0
        self._last_snowflake = 0
        self._secret = secrets.token_bytes(32)
        self.bucket_limit, self.bucket_window = bucket_limit, bucket_window
        self.application_id = self._snowflake()
        self.bot_user = self._make_user(bot_name, bot=True)
        self.owner = self._make_user(f"{bot_name}-owner")
        self.requests: list[FakeRequest] = []
        self.rejections: list[dict[str, Any]] = []
        self.rate_limited: list[FakeRequest] = []
        self.observers: list[RequestObserver] = []
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.threads: dict[int, dict[str, Any]] = {}
        self.users: dict[int, dict[str, Any]] = {self.bot_id: self.bot_user}
        self.members: dict[tuple[int, int], dict[str, Any]] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self._messages: dict[int, dict[str, Any]] = {}
        self._attachments: dict[int, _Attachment] = {}
        self._dms: dict[int, int] = {}
        self._scripted_429: list[list[Any]] = []
        self._buckets: dict[str, list[float]] = {}
        self._sessions: list[_Session] = []
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
        routes: list[tuple[str, str, Callable[[web.Request], Any]]] = [
            ("GET", "/users/@me", self._h_me),
            ("GET", "/oauth2/applications/@me", self._h_app),
            ("GET", "/applications/@me", self._h_app),
            ("GET", "/gateway", self._h_gateway_url),
            ("GET", "/gateway/bot", self._h_gateway_url),
            ("POST", "/users/@me/channels", self._h_create_dm),
            ("GET", "/channels/{channel_id}", self._h_get_channel),
            ("GET", "/channels/{channel_id}/messages", self._h_history),
            ("POST", "/channels/{channel_id}/messages", self._h_send),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._h_get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._h_edit),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._h_delete),
            (
                "POST",
                "/channels/{channel_id}/messages/{message_id}/threads",
                self._h_thread_from_msg,
            ),
            ("POST", "/channels/{channel_id}/threads", self._h_thread),
            ("GET", "/applications/{app_id}/commands", self._h_get_commands),
            ("PUT", "/applications/{app_id}/commands", self._h_put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._h_get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._h_put_commands),
            ("POST", "/interactions/{interaction_id}/{webhook_token}/callback", self._h_callback),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}", self._h_followup),
            ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", self._h_wh_get),
            (
                "PATCH",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self._h_wh_edit,
            ),
            (
                "DELETE",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self._h_wh_delete,
            ),
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

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

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

    def _snowflake(self) -> int:
        ms = int(self.now() * 1000) - DISCORD_EPOCH_MS
        value = max((ms << 22) | (1 << 17), self._last_snowflake + 1)
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

    async def wait_for_message(
        self,
        predicate: Callable[[dict[str, Any]], Any],
        timeout: float = 10,  # noqa: ASYNC109 - the documented test API
    ) -> dict[str, Any]:
        """The newest visible message matching ``predicate``, waiting for a create or edit."""

        def find(_: FakeDiscord) -> dict[str, Any] | None:
            for msg in sorted(self._messages.values(), key=lambda m: -m["id"]):
                if not msg["ephemeral"] and not msg["deleted"]:
                    rendered = self._render(msg)
                    if predicate(rendered):
                        return rendered
            return None

        return await self.wait_for(find, timeout)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- world set-up ----------------------------------------------------------------------

    def _make_user(self, name: str, *, bot: bool = False) -> dict[str, Any]:
        uid = self._snowflake()
        user = {
            "id": str(uid),
            "username": name,
            "discriminator": "0",
            "global_name": None if bot else name.title(),
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
            "flags": 0,
        }
        if bot:
            user.update(verified=True, mfa_enabled=False, locale="en-US")
        return user

    @staticmethod
    def _public_user(user: dict[str, Any]) -> dict[str, Any]:
        return dict(user)

    @property
    def bot_id(self) -> int:
        return int(self.bot_user["id"])

    def add_guild(self, name: str, *, filesize_limit: int = 10 * 1024 * 1024) -> int:
        """A guild with an @everyone role and the bot as a member.

        The premium tier is the one whose upload limit equals ``filesize_limit`` (else 0, and
        the fake enforces ``filesize_limit`` while discord.py's ``Guild.filesize_limit`` says
        10 MiB; ``Interaction.filesize_limit`` always reports the enforced limit).
        """
        gid = self._snowflake()
        tier = {50 * 1024 * 1024: 2, 100 * 1024 * 1024: 3}.get(filesize_limit, 0)
        bot_role = self._snowflake()
        self.guilds[gid] = {
            "id": gid,
            "name": name,
            "filesize_limit": filesize_limit,
            "premium_tier": tier,
            "roles": {
                gid: {"id": gid, "name": "@everyone", "permissions": 0, "position": 0},
                bot_role: {
                    "id": bot_role,
                    "name": self.bot_user["username"],
                    "permissions": DEFAULT_BOT_PERMISSIONS,
                    "position": 1,
                    "managed": True,
                    "tags": {"bot_id": self.bot_user["id"]},
                },
            },
            "joined_at": self._iso(),
        }
        self.members[gid, self.bot_id] = {"roles": [bot_role]}
        self._dispatch_guild_event("GUILD_CREATE", gid, lambda: self._guild_payload(gid))
        return gid

    def add_text_channel(
        self,
        guild_id: int,
        name: str,
        *,
        nsfw: bool = False,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
    ) -> int:
        """A text channel where the bot has exactly ``bot_permissions`` (via a member overwrite)."""
        cid = self._snowflake()
        position = sum(1 for c in self.channels.values() if c.get("guild_id") == guild_id)
        self.channels[cid] = {
            "id": cid,
            "type": 0,
            "guild_id": guild_id,
            "name": name,
            "nsfw": nsfw,
            "bot_permissions": bot_permissions,
            "position": position,
        }
        self._dispatch_guild_event("CHANNEL_CREATE", guild_id, lambda: self._channel_payload(cid))
        return cid

    def add_thread(self, parent_channel_id: int, name: str, *, owner_id: int | None = None) -> int:
        """A public thread (type 11) not started from a message."""
        parent = self.channels[parent_channel_id]
        return self._new_thread(self._snowflake(), parent, name, owner_id or int(self.owner["id"]))

    def _new_thread(self, tid: int, parent: dict[str, Any], name: str, owner_id: int) -> int:
        self.threads[tid] = {
            "id": tid,
            "type": 11,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "name": name,
            "owner_id": owner_id,
            "created_at": self._iso(),
            "message_count": 0,
        }
        self._dispatch_guild_event(
            "THREAD_CREATE",
            parent["guild_id"],
            lambda: self._channel_payload(tid) | {"newly_created": True},
        )
        self._notify()
        return tid

    def set_bot_permissions(self, channel_id: int, permissions: int) -> None:
        """An admin changes the bot's permissions in a channel (REST enforces them at once)."""
        self.channels[channel_id]["bot_permissions"] = permissions

    def delete_thread(self, thread_id: int) -> None:
        """A moderator deletes a thread: from now on its routes answer 10003 Unknown Channel."""
        thread = self.threads.pop(thread_id)
        self._dispatch_guild_event(
            "THREAD_DELETE",
            thread["guild_id"],
            lambda: {
                "id": str(thread_id),
                "guild_id": str(thread["guild_id"]),
                "parent_id": str(thread["parent_id"]),
                "type": 11,
            },
        )
        self._notify()

    def add_member(
        self, guild_id: int, username: str, *, permissions: int = DEFAULT_MEMBER_PERMISSIONS
    ) -> int:
        """A human member whose guild-wide permissions are exactly ``permissions``."""
        user = self._make_user(username)
        uid = int(user["id"])
        self.users[uid] = user
        role = self._snowflake()
        roles = self.guilds[guild_id]["roles"]
        roles[role] = {
            "id": role,
            "name": username,
            "permissions": permissions,
            "position": len(roles),
        }
        self.members[guild_id, uid] = {"roles": [role]}
        self._dispatch_guild_event(
            "GUILD_ROLE_CREATE", guild_id, lambda: {"role": self._role_payload(roles[role])}
        )
        self._dispatch_guild_event(
            "GUILD_MEMBER_ADD", guild_id, lambda: self._member_payload(guild_id, uid), intent=1 << 1
        )
        return uid

    def add_user(self, username: str) -> int:
        """A user known to Discord but in no guild (e.g. for DMs)."""
        user = self._make_user(username)
        self.users[int(user["id"])] = user
        return int(user["id"])

    def add_dm(self, user_id: int) -> int:
        """The DM channel between the bot and ``user_id`` (type 1; no threads possible)."""
        if user_id not in self._dms:
            cid = self._snowflake()
            self.channels[cid] = {"id": cid, "type": 1, "guild_id": None, "recipient_id": user_id}
            self._dms[user_id] = cid
        return self._dms[user_id]

    def upload_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        *,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        """A user's upload, as Discord puts it in ``resolved.attachments``."""
        att = self._store_attachment(channel_id, filename, data, content_type, ephemeral=ephemeral)
        return self._attachment_payload(att)

    def revoke_attachment(self, attachment_id: int | str) -> None:
        """Make the CDN answer 404 for this attachment from now on (ephemeral uploads vanish)."""
        self._attachments[int(attachment_id)].revoked = True

    def delete_message(self, channel_id: int, message_id: int) -> None:
        """A user (moderator) deletes a message; the bot sees MESSAGE_DELETE."""
        msg = self._messages[message_id]
        assert msg["channel_id"] == channel_id, "message is in another channel"
        self._delete(msg)

    def _store_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        *,
        ephemeral: bool = False,
        description: str | None = None,
    ) -> _Attachment:
        width = height = None
        sniffed: str | None = None
        try:
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as img:
                    width, height = img.size
                    sniffed = Image.MIME.get(img.format or "")
        except Exception:  # not an image Pillow can read: no dimensions
            pass
        att = _Attachment(
            id=self._snowflake(),
            channel_id=channel_id,
            filename=re.sub(r"[^\w.\-]", "_", filename),
            data=data,
            content_type=content_type,
            width=width,
            height=height,
            ephemeral=ephemeral,
            description=description,
        )
        if content_type == "":
            att.content_type = sniffed or mimetypes.guess_type(filename)[0]
        self._attachments[att.id] = att
        return att

    # -- payloads --------------------------------------------------------------------------

    def _channel(self, channel_id: int) -> dict[str, Any]:
        ch = self.channels.get(channel_id) or self.threads.get(channel_id)
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return ch

    def _guild_of(self, channel_id: int) -> int | None:
        return self._channel(channel_id).get("guild_id")

    def _bot_permissions(self, channel_id: int) -> int:
        ch = self._channel(channel_id)
        if ch["type"] == 1:
            return rules.DM_PERMISSIONS
        in_thread = ch["type"] in (10, 11, 12)
        parent = self.channels[ch["parent_id"]] if in_thread else ch
        return rules.effective_permissions(parent["bot_permissions"], in_thread=in_thread)

    def _member_permissions(self, guild_id: int, user_id: int) -> int:
        roles = self.guilds[guild_id]["roles"]
        perms = roles[guild_id]["permissions"]
        for rid in self.members[guild_id, user_id]["roles"]:
            perms |= roles[rid]["permissions"]
        return rules.effective_permissions(perms, in_thread=False)

    def _role_payload(self, role: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "id": str(role["id"]),
            "name": role["name"],
            "permissions": str(role["permissions"]),
            "position": role["position"],
            "color": 0,
            "hoist": False,
            "managed": role.get("managed", False),
            "mentionable": False,
            "flags": 0,
        }
        if "tags" in role:
            payload["tags"] = role["tags"]
        return payload

    def _member_payload(self, guild_id: int, user_id: int) -> dict[str, Any]:
        return {
            "user": self._public_user(self.users[user_id]),
            "roles": [str(r) for r in self.members[guild_id, user_id]["roles"]],
            "joined_at": self.guilds[guild_id]["joined_at"],
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
            "guild_id": str(guild_id),
        }

    def _channel_payload(self, channel_id: int) -> dict[str, Any]:
        ch = self._channel(channel_id)
        if ch["type"] == 1:
            return {
                "id": str(ch["id"]),
                "type": 1,
                "recipients": [self._public_user(self.users[ch["recipient_id"]])],
                "last_message_id": None,
                "flags": 0,
            }
        if ch["type"] == 11:
            return {
                "id": str(ch["id"]),
                "type": 11,
                "guild_id": str(ch["guild_id"]),
                "parent_id": str(ch["parent_id"]),
                "owner_id": str(ch["owner_id"]),
                "name": ch["name"],
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "message_count": ch["message_count"],
                "member_count": 1,
                "total_message_sent": ch["message_count"],
                "flags": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": ch["created_at"],
                    "locked": False,
                    "create_timestamp": ch["created_at"],
                },
            }
        granted = ch["bot_permissions"]
        overwrite = {
            "id": self.bot_user["id"],
            "type": 1,
            "allow": str(granted),
            "deny": str(rules.ALL_PERMISSIONS & ~granted),
        }
        return {
            "id": str(ch["id"]),
            "type": 0,
            "guild_id": str(ch["guild_id"]),
            "name": ch["name"],
            "position": ch["position"],
            "permission_overwrites": [overwrite],
            "nsfw": ch["nsfw"],
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _guild_payload(self, guild_id: int) -> dict[str, Any]:
        g = self.guilds[guild_id]
        members = [uid for (gid, uid) in self.members if gid == guild_id]
        return {
            "id": str(guild_id),
            "name": g["name"],
            "icon": None,
            "owner_id": self.owner["id"],
            "unavailable": False,
            "premium_tier": g["premium_tier"],
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "features": [],
            "joined_at": g["joined_at"],
            "large": False,
            "member_count": len(members),
            "roles": [self._role_payload(r) for r in g["roles"].values()],
            "emojis": [],
            "stickers": [],
            "channels": [
                self._channel_payload(cid)
                for cid, c in self.channels.items()
                if c.get("guild_id") == guild_id
            ],
            "threads": [
                self._channel_payload(tid)
                for tid, t in self.threads.items()
                if t["guild_id"] == guild_id
            ],
            "members": [self._member_payload(guild_id, uid) for uid in members],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _sign(self, att: _Attachment, issued: int) -> str:
        ex = issued + CDN_URL_LIFETIME
        return hmac.new(
            self._secret, f"{att.id}:{ex:x}:{issued:x}".encode(), hashlib.sha256
        ).hexdigest()

    def _attachment_url(self, att: _Attachment) -> str:
        issued = int(self.now())
        ex = issued + CDN_URL_LIFETIME
        path = f"/attachments/{att.channel_id}/{att.id}/{att.filename}"
        return f"{self.url}{path}?ex={ex:x}&is={issued:x}&hm={self._sign(att, issued)}&"

    def _attachment_payload(self, att: _Attachment) -> dict[str, Any]:
        url = self._attachment_url(att)
        payload: dict[str, Any] = {
            "id": str(att.id),
            "filename": att.filename,
            "size": len(att.data),
            "url": url,
            "proxy_url": url,
            "content_type": att.content_type,
        }
        if att.width is not None:
            payload.update(width=att.width, height=att.height)
        if att.ephemeral:
            payload["ephemeral"] = True
        if att.description is not None:
            payload["description"] = att.description
        return payload

    def _render(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A stored message as Discord returns it, with freshly signed attachment URLs."""
        attachments = [
            self._attachment_payload(self._attachments[a]) for a in msg["attachment_ids"]
        ]
        by_name = {a["filename"]: a for a in attachments}
        embeds = json.loads(json.dumps(msg["embeds"]))
        for embed in embeds:
            embed.setdefault("type", "rich")
            for key in ("image", "thumbnail"):
                url = (embed.get(key) or {}).get("url", "")
                if url.startswith("attachment://") and url[13:] in by_name:
                    att = by_name[url[13:]]
                    embed[key].update(url=att["url"], proxy_url=att["proxy_url"])
                    embed[key].update({k: att[k] for k in ("width", "height") if k in att})
        out = {
            "id": str(msg["id"]),
            "type": msg["type"],
            "channel_id": str(msg["channel_id"]),
            "author": self._public_user(self.bot_user),
            "content": msg["content"],
            "timestamp": msg["timestamp"],
            "edited_timestamp": msg["edited_timestamp"],
            "tts": False,
            "mention_everyone": msg["mention_everyone"],
            "mentions": [self._public_user(self.users[u]) for u in msg["mentions"]],
            "mention_roles": [str(r) for r in msg["mention_roles"]],
            "attachments": attachments,
            "embeds": embeds,
            "components": msg["components"],
            "pinned": False,
            "flags": msg["flags"],
            "allowed_mentions": msg["allowed_mentions"],
        }
        for key in ("webhook_id", "application_id", "interaction_metadata"):
            if msg.get(key) is not None:
                out[key] = msg[key]
        if msg["id"] in self.threads:
            out["thread"] = self._channel_payload(msg["id"])
        return out

    # -- messages --------------------------------------------------------------------------

    def _filesize_limit(self, channel_id: int) -> int:
        gid = self._guild_of(channel_id)
        return self.guilds[gid]["filesize_limit"] if gid else 10 * 1024 * 1024

    def _apply_message(
        self,
        channel_id: int,
        payload: dict[str, Any],
        files: list[tuple[str, str, bytes]],
        *,
        existing: dict[str, Any] | None = None,
        flags_mask: int = rules.CHANNEL_SEND_FLAGS,
        check_permissions: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Validate a message create/edit against Discord's limits, then store it."""
        if not isinstance(payload, dict):
            raise ApiError(400, 50109, "The request body contains invalid JSON.")
        limit = self._filesize_limit(channel_id)
        if (
            any(len(data) > limit for _, _, data in files)
            or sum(len(d) for _, _, d in files) > limit
        ):
            raise ApiError(413, 40005, "Request entity too large")
        if len(files) > 10:
            raise ApiError(
                400, 50035, "Invalid Form Body (files: at most 10)", {"files": {"_errors": []}}
            )
        if check_permissions:
            perms = self._bot_permissions(channel_id)
            thread = channel_id in self.threads
            need = rules.SEND_MESSAGES_IN_THREADS if thread else rules.SEND_MESSAGES
            if not perms & rules.VIEW_CHANNEL:
                raise ApiError(403, 50001, "Missing Access")
            if not perms & need or (files and not perms & rules.ATTACH_FILES):
                raise missing_permissions()
            if payload.get("embeds") and not perms & rules.EMBED_LINKS:
                raise missing_permissions()
        uploads: dict[int, tuple[str, bytes]] = {}
        for name, filename, data in files:
            m = re.fullmatch(r"files\[(\d+)\]", name)
            uploads[int(m.group(1)) if m else len(uploads)] = (filename, data)
        form = Form()
        refs = payload.get("attachments")
        kept: list[int] = []
        new: list[tuple[str, bytes, str | None]] = []
        if refs is None:
            kept = list(existing["attachment_ids"]) if existing else []
            new = [(fn, data, None) for _, (fn, data) in sorted(uploads.items())]
        else:
            for i, ref in enumerate(refs):
                rid = int(ref.get("id", -1))
                if rid in uploads:
                    fn, data = uploads.pop(rid)
                    new.append((ref.get("filename") or fn, data, ref.get("description")))
                elif existing and rid in existing["attachment_ids"]:
                    kept.append(rid)
                else:
                    form.add(f"attachments.{i}.id", "Unknown attachment reference.")
            new += [(fn, data, None) for _, (fn, data) in sorted(uploads.items())]
        file_names = {re.sub(r"[^\w.\-]", "_", fn) for fn, _, _ in new}
        file_names |= {self._attachments[a].filename for a in kept}
        flags = payload.get("flags", existing["flags"] if existing else 0) or 0
        rules.check_message(form, payload, file_names, flags_mask=flags_mask, merged_flags=flags)
        gid = self._guild_of(channel_id)
        merged = {
            "content": payload.get("content", existing["content"] if existing else ""),
            "components": payload.get("components", existing["components"] if existing else []),
        }
        everyone, users, roles = rules.compute_mentions(
            form,
            rules.mention_sources(merged),
            payload.get("allowed_mentions"),
            known_users={u for (g, u) in self.members if g == gid} if gid else set(self.users),
            known_roles=set(self.guilds[gid]["roles"]) if gid else set(),
            may_ping_everyone=bool(self._bot_permissions(channel_id) & rules.MENTION_EVERYONE),
        )
        if form:
            raise ApiError.form(form)
        if (
            existing is None
            and not flags & LOADING
            and not (
                merged["content"]
                or payload.get("embeds")
                or merged["components"]
                or kept
                or new
                or payload.get("sticker_ids")
            )
        ):
            raise ApiError(400, 50006, "Cannot send an empty message")
        ephemeral = bool(flags & EPHEMERAL)
        att_ids = kept + [
            self._store_attachment(
                channel_id, fn, data, "", ephemeral=ephemeral, description=desc
            ).id
            for fn, data, desc in new
        ]
        msg = existing or {
            "id": self._snowflake(),
            "type": 0,
            "channel_id": channel_id,
            "timestamp": self._iso(),
            "edited_timestamp": None,
            "embeds": [],
            "ephemeral": ephemeral,
            "deleted": False,
            "allowed_mentions": None,
        }
        msg.update(
            content=merged["content"] or "",
            components=merged["components"] or [],
            attachment_ids=att_ids,
            flags=flags,
            mention_everyone=everyone,
            mentions=users,
            mention_roles=roles,
            **(extra or {}),
        )
        if "embeds" in payload:
            msg["embeds"] = payload["embeds"] or []
        if "allowed_mentions" in payload or existing is None:
            msg["allowed_mentions"] = payload.get("allowed_mentions")
        if existing is not None:
            msg["edited_timestamp"] = self._iso()
        self._messages[msg["id"]] = msg
        if existing is None and channel_id in self.threads:
            self.threads[channel_id]["message_count"] += 1
        if not msg["ephemeral"]:
            event = "MESSAGE_UPDATE" if existing else "MESSAGE_CREATE"
            self._dispatch_message_event(event, msg)
        self._notify()
        return msg

    def _delete(self, msg: dict[str, Any]) -> None:
        msg["deleted"] = True
        if not msg["ephemeral"]:
            gid = self._guild_of(msg["channel_id"])
            data = {"id": str(msg["id"]), "channel_id": str(msg["channel_id"])}
            if gid:
                data["guild_id"] = str(gid)
            self._dispatch("MESSAGE_DELETE", data, intent=(1 << 9) if gid else (1 << 12))
        self._notify()

    def _visible_message(self, channel_id: int, message_id: int) -> dict[str, Any]:
        msg = self._messages.get(message_id)
        if msg is None or msg["deleted"] or msg["ephemeral"] or msg["channel_id"] != channel_id:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    def messages(self, channel_id: int) -> list[dict[str, Any]]:
        """Non-ephemeral, undeleted messages of a channel or thread, oldest first."""
        return [
            self._render(m)
            for m in sorted(self._messages.values(), key=lambda m: m["id"])
            if m["channel_id"] == channel_id and not m["ephemeral"] and not m["deleted"]
        ]

    def attachment_bytes(self, url_or_attachment: str | dict[str, Any]) -> bytes:
        """The stored bytes behind an attachment URL or payload (ignores expiry)."""
        if isinstance(url_or_attachment, dict):
            return self._attachments[int(url_or_attachment["id"])].data
        m = re.search(r"/attachments/\d+/(\d+)/", url_or_attachment)
        assert m, f"not a fake CDN URL: {url_or_attachment}"
        return self._attachments[int(m.group(1))].data

    # -- gateway ---------------------------------------------------------------------------

    def _dispatch(self, event: str, data: dict[str, Any], *, intent: int = 1) -> None:
        for session in self._sessions:
            if session.intents & intent:
                session.send({"op": 0, "t": event, "d": data})

    def _dispatch_guild_event(
        self,
        event: str,
        guild_id: int | None,
        build: Callable[[], dict[str, Any]],
        *,
        intent: int = 1,
    ) -> None:
        if self._sessions:
            self._dispatch(
                event, build() | ({"guild_id": str(guild_id)} if guild_id else {}), intent=intent
            )

    def _dispatch_message_event(self, event: str, msg: dict[str, Any]) -> None:
        if not self._sessions:
            return
        gid = self._guild_of(msg["channel_id"])
        data = self._render(msg)
        if gid:
            member = self._member_payload(gid, self.bot_id)
            data.update(guild_id=str(gid), member={k: v for k, v in member.items() if k != "user"})
        self._dispatch(event, data, intent=(1 << 9) if gid else (1 << 12))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(
            json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        )
        session: _Session | None = None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op, data = frame.get("op"), frame.get("d")
                if op == 1:
                    if session:
                        session.send({"op": 11, "d": None, "s": None, "t": None})
                    else:
                        await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op in (2, 6):
                    if data.get("token") != self.token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    if op == 2 and "intents" not in data:
                        await ws.close(code=4013, message=b"Invalid intent(s).")
                        break
                    session = _Session(ws, int(data.get("intents", (1 << 17) - 1)))
                    self._sessions.append(session)
                    session.task = self._spawn(session.writer())
                    self._identify(session, resume=op == 6)
                elif op == 8 and session:
                    gid = int(data["guild_id"])
                    members = [
                        self._member_payload(gid, uid) for (g, uid) in self.members if g == gid
                    ]
                    chunk = {
                        "guild_id": str(gid),
                        "members": members,
                        "chunk_index": 0,
                        "chunk_count": 1,
                    }
                    if data.get("nonce"):
                        chunk["nonce"] = data["nonce"]
                    session.send({"op": 0, "t": "GUILD_MEMBERS_CHUNK", "d": chunk})
        finally:
            if session in self._sessions:
                self._sessions.remove(session)
            if session and session.task:
                session.task.cancel()
            self._notify()
        return ws

    def _identify(self, session: _Session, *, resume: bool) -> None:
        if resume:
            session.send({"op": 0, "t": "RESUMED", "d": {}})
            return
        ready = {
            "v": 10,
            "user": self._public_user(self.bot_user),
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        session.send({"op": 0, "t": "READY", "d": ready})
        for gid in self.guilds:
            session.send({"op": 0, "t": "GUILD_CREATE", "d": self._guild_payload(gid)})
        self._notify()

    @property
    def connected(self) -> bool:
        return bool(self._sessions)

    # -- HTTP plumbing ---------------------------------------------------------------------

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.Response(
            status=status, body=json.dumps(data).encode(), content_type="application/json"
        )

    async def _parse_body(self, request: web.Request) -> tuple[Any, list[tuple[str, str, bytes]]]:
        if not request.body_exists:
            return None, []
        files: list[tuple[str, str, bytes]] = []
        try:
            if request.content_type.startswith("multipart/"):
                body = None
                reader = await request.multipart()
                async for part in reader:
                    if part.name == "payload_json":
                        body = json.loads(await part.text())
                    elif part.filename is not None:
                        files.append((part.name or "", part.filename, bytes(await part.read())))
                return body, files
            return json.loads(await request.text()), files
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from exc

    def rate_limit_next(
        self, method: str, path_regex: str, retry_after: float = 0.05, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests matching with 429 (path relative to /api/v10)."""
        self._scripted_429.append([method.upper(), re.compile(path_regex), retry_after, times])

    def _rate_limit_headers(self, request: web.Request, entry: FakeRequest) -> dict[str, str]:
        """Per-route buckets (template + major parameters), like Discord's, and enforce them."""
        info = request.match_info
        template = info.route.resource.canonical if info.route.resource else request.path
        bucket_hash = hashlib.sha1(f"{request.method} {template}".encode()).hexdigest()[:16]
        key = bucket_hash + ":" + ":".join(info.get(p, "") for p in _MAJOR_PARAMS)
        now = time.monotonic()
        window = self._buckets.get(key)
        if window is None or now >= window[0]:
            window = self._buckets[key] = [now + self.bucket_window, 0]
        window[1] += 1
        reset_after = max(window[0] - now, 0.0)
        if window[1] > self.bucket_limit:
            raise _RateLimited(reset_after, scripted=False)
        return {
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": str(self.bucket_limit - int(window[1])),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after + 0.0005:.3f}",
            "X-RateLimit-Bucket": bucket_hash,
        }

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[..., Any]
    ) -> web.StreamResponse:
        if not request.path.startswith(API + "/"):
            return await handler(request)
        sub = request.path[len(API) :]
        entry = FakeRequest(request.method, sub, dict(request.query), None, [], self.now())
        self.requests.append(entry)
        headers = {"Via": "1.1 google"}
        try:
            entry.json, files = await self._parse_body(request)
            entry.files = [(fn, len(data)) for _, fn, data in files]
            request[BODY], request[FILES] = entry.json, files
            for script in self._scripted_429:
                if script[3] > 0 and script[0] == request.method and script[1].search(sub):
                    script[3] -= 1
                    raise _RateLimited(script[2], scripted=True)
            unauthenticated = sub.startswith(("/interactions/", "/webhooks/"))
            if not unauthenticated and request.headers.get("Authorization") != f"Bot {self.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            if not sub.startswith("/interactions/"):
                headers.update(self._rate_limit_headers(request, entry))
            response = await handler(request)
        except _RateLimited as rl:
            entry.status = 429
            body = {
                "message": "You are being rate limited.",
                "retry_after": rl.retry_after,
                "global": False,
            }
            if rl.scripted:
                self.rate_limited.append(entry)
            else:
                self.rejections.append({"status": 429, "request": entry, **body})
            headers.update(
                {"Retry-After": str(max(1, round(rl.retry_after))), "X-RateLimit-Scope": "user"}
            )
            headers.update(
                {"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": str(self.bucket_limit)}
            )
            response = self._json(body, 429)
        except ApiError as err:
            response = self._json(err.body(), err.status)
            self.rejections.append({"status": err.status, "request": entry, **err.body()})
        except Exception as exc:
            # A bug in the fake: answer a 400 (discord.py would retry a 5xx for ~25 s).
            _log.exception("fake discord failed on %s %s", request.method, sub)
            body = {"code": -1, "message": f"fake discord internal error: {exc!r}"}
            self.rejections.append({"status": 400, "request": entry, **body})
            response = self._json(body, 400)
        entry.status = response.status
        entry.done_at = time.monotonic()
        response.headers.update(headers)
        for observer in self.observers:
            observer(entry, response)
        self._notify()
        return response

    async def _h_unknown(self, request: web.Request) -> web.Response:
        raise ApiError(404, 0, "404: Not Found")

    async def _cdn(self, request: web.Request) -> web.Response:
        """Serve attachment bytes only for a valid, unexpired signature of a live attachment."""
        q = request.query
        att = self._attachments.get(int(request.match_info["attachment_id"]))
        try:
            issued, ex = int(q["is"], 16), int(q["ex"], 16)
            valid = (
                att is not None
                and not att.revoked
                and str(att.channel_id) == request.match_info["channel_id"]
                and att.filename == request.match_info["filename"]
                and ex == issued + CDN_URL_LIFETIME
                and hmac.compare_digest(q["hm"], self._sign(att, issued))
                and self.now() < ex
            )
        except (KeyError, ValueError):
            valid = False
        if not valid or att is None:
            self.rejections.append({"status": 404, "cdn": str(request.rel_url)})
            return web.Response(status=404, text="This content is no longer available.")
        content_type = att.content_type or "application/octet-stream"
        return web.Response(body=att.data, headers={"Content-Type": content_type})

    # -- REST: identity, channels, commands ------------------------------------------------

    async def _h_me(self, request: web.Request) -> web.Response:
        return self._json(self._public_user(self.bot_user))

    async def _h_app(self, request: web.Request) -> web.Response:
        return self._json(
            {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self._public_user(self.owner),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "interactions_endpoint_url": None,
                "bot": self._public_user(self.bot_user),
                "redirect_uris": [],
            }
        )

    async def _h_gateway_url(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return self._json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _h_create_dm(self, request: web.Request) -> web.Response:
        uid = int((request[BODY] or {}).get("recipient_id", 0))
        if uid not in self.users or uid == self.bot_id:
            raise ApiError(400, 50007, "Cannot send messages to this user")
        return self._json(self._channel_payload(self.add_dm(uid)))

    def _readable_channel(self, request: web.Request, *, history: bool = False) -> int:
        cid = int(request.match_info["channel_id"])
        perms = self._bot_permissions(cid)
        if not perms & rules.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if history and not perms & rules.READ_MESSAGE_HISTORY:
            raise missing_permissions()
        return cid

    async def _h_get_channel(self, request: web.Request) -> web.Response:
        return self._json(self._channel_payload(self._readable_channel(request)))

    async def _h_history(self, request: web.Request) -> web.Response:
        cid = self._readable_channel(request, history=True)
        q = request.query
        limit = int(q.get("limit", 50))
        if not 1 <= limit <= 100:
            raise ApiError(
                400, 50035, "Invalid Form Body (limit: 1–100)", {"limit": {"_errors": []}}
            )
        msgs = self.messages(cid)
        if "before" in q:
            msgs = [m for m in msgs if int(m["id"]) < int(q["before"])]
        if "after" in q:
            msgs = [m for m in msgs if int(m["id"]) > int(q["after"])][:limit]
        return self._json(list(reversed(msgs))[:limit])

    async def _h_send(self, request: web.Request) -> web.Response:
        cid = int(request.match_info["channel_id"])
        self._channel(cid)
        msg = self._apply_message(cid, request[BODY], request[FILES])
        return self._json(self._render(msg))

    async def _h_get_message(self, request: web.Request) -> web.Response:
        cid = self._readable_channel(request, history=True)
        return self._json(
            self._render(self._visible_message(cid, int(request.match_info["message_id"])))
        )

    async def _h_edit(self, request: web.Request) -> web.Response:
        cid = self._readable_channel(request)
        msg = self._visible_message(cid, int(request.match_info["message_id"]))
        if request[FILES] and not self._bot_permissions(cid) & rules.ATTACH_FILES:
            raise missing_permissions()  # adding files by an edit needs Attach Files too
        msg = self._apply_message(
            cid, request[BODY], request[FILES], existing=msg, check_permissions=False
        )
        return self._json(self._render(msg))

    async def _h_delete(self, request: web.Request) -> web.Response:
        cid = self._readable_channel(request)
        self._delete(self._visible_message(cid, int(request.match_info["message_id"])))
        return web.Response(status=204)

    def _check_thread_create(self, cid: int, body: Any) -> dict[str, Any]:
        parent = self._channel(cid)
        if parent["type"] != 0:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        perms = self._bot_permissions(cid)
        if not perms & rules.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if not perms & rules.CREATE_PUBLIC_THREADS:
            raise missing_permissions()
        form = Form()
        form.length("name", (body or {}).get("name"), 1, 100)
        if form:
            raise ApiError.form(form)
        return parent

    async def _h_thread_from_msg(self, request: web.Request) -> web.Response:
        cid, mid = int(request.match_info["channel_id"]), int(request.match_info["message_id"])
        parent = self._check_thread_create(cid, request[BODY])
        self._visible_message(cid, mid)
        if mid in self.threads:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        self._new_thread(mid, parent, request[BODY]["name"], self.bot_id)
        return self._json(self._channel_payload(mid), 201)

    async def _h_thread(self, request: web.Request) -> web.Response:
        cid = int(request.match_info["channel_id"])
        parent = self._check_thread_create(cid, request[BODY])
        if request[BODY].get("type", 12) != 11:
            raise ApiError(400, 50024, "The fake supports public threads (type 11) only")
        tid = self._new_thread(self._snowflake(), parent, request[BODY]["name"], self.bot_id)
        return self._json(self._channel_payload(tid), 201)

    def _command_store(self, request: web.Request) -> list[dict[str, Any]]:
        if request.match_info["app_id"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")
        gid = request.match_info.get("guild_id")
        if gid is None:
            return self.commands
        if int(gid) not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return self.guild_commands.setdefault(int(gid), [])

    async def _h_get_commands(self, request: web.Request) -> web.Response:
        return self._json(self._command_store(request))

    async def _h_put_commands(self, request: web.Request) -> web.Response:
        store = self._command_store(request)
        form = Form()
        rules.check_commands(form, request[BODY])
        if form:
            raise ApiError.form(form)
        ids = {(c["type"], c["name"]): c["id"] for c in store}
        gid = request.match_info.get("guild_id")
        stored = []
        for cmd in request[BODY]:
            kind = cmd.get("type", 1)
            c = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                "contexts": None,
                "integration_types": [0],
                **cmd,
                "type": kind,
                "id": ids.get((kind, cmd["name"])) or str(self._snowflake()),
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
            }
            if gid:
                c["guild_id"] = gid
            stored.append(c)
        store[:] = stored
        self._notify()
        return self._json(stored)


class _RateLimited(Exception):
    def __init__(self, retry_after: float, *, scripted: bool) -> None:
        super().__init__(retry_after)
        self.retry_after, self.scripted = round(retry_after, 3), scripted
