"""The gateway websocket: identify/resume, heartbeats, member chunks and dispatched events.

Events are only sent to sessions whose intents ask for them, as Discord does, so a bot that
forgets an intent misses the event here too.

Sharding, as Discord documents it (https://discord.com/developers/docs/events/gateway#sharding):
IDENTIFY may carry ``shard: [shard_id, num_shards]``; a session then receives only the events of
the guilds with ``(guild_id >> 22) % num_shards == shard_id`` (READY lists only those, and only
they get GUILD_CREATE), and DMs only on shard 0. An invalid shard array is closed with 4010
"Invalid shard"; a session that would hold more guilds than ``max_guilds_per_session`` (2500 on
Discord) with 4011 "Sharding required".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord
    from tests.fakes.discord.state import Message

#: Intent bits the fake filters on (GUILDS is 1).
GUILD_MEMBERS = 1 << 1
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12


#: A session's ``[shard_id, num_shards]``; ``None``: unsharded (every guild, and DMs).
Shard = tuple[int, int] | None


def shard_of(guild_id: int | None, num_shards: int) -> int:
    """The shard that receives a guild's events (Discord's formula); DMs go to shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % num_shards


def parse_shard(value: object) -> Shard:
    """IDENTIFY's ``shard`` field; ``ValueError`` where Discord closes with 4010."""
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in value)
    ):
        raise ValueError(value)
    shard_id, num_shards = value
    if not 0 <= shard_id < num_shards:
        raise ValueError(value)
    return shard_id, num_shards


class Session:
    """One identified gateway connection, written by a single task so events stay ordered."""

    def __init__(
        self, ws: web.WebSocketResponse, intents: int, shard: Shard, session_id: str | None = None
    ) -> None:
        self.ws, self.intents, self.shard, self.seq = ws, intents, shard, 0
        self.session_id = session_id or secrets.token_hex(16)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def receives(self, guild_id: int | None) -> bool:
        """Whether this session's shard gets the events of ``guild_id`` (``None``: a DM)."""
        return self.shard is None or shard_of(guild_id, self.shard[1]) == self.shard[0]

    def send(self, payload: dict[str, Any]) -> None:
        if payload.get("op") == 0:
            self.seq += 1
            payload["s"] = self.seq
        self.queue.put_nowait(payload)

    async def writer(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self.ws.closed:
                await self.ws.send_str(json.dumps(await self.queue.get()))


class GatewayMixin:
    """Gateway of FakeDiscord (``self`` is always a FakeDiscord)."""

    @property
    def gateway_url(self: FakeDiscord) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def connected(self: FakeDiscord) -> bool:
        return bool(self._sessions)

    @property
    def shards_connected(self: FakeDiscord) -> list[Shard]:
        """The shard of each open session (``None``: an unsharded one)."""
        return [session.shard for session in self._sessions]

    def guilds_of_shard(self: FakeDiscord, shard: Shard) -> list[int]:
        return [gid for gid in self.guilds if shard is None or shard_of(gid, shard[1]) == shard[0]]

    def _dispatch(
        self: FakeDiscord,
        event: str,
        data: dict[str, Any],
        *,
        guild_id: int | None,
        intent: int = 1,
    ) -> list[Shard]:
        """Send to the sessions of the guild's shard that asked for ``intent``; which they were."""
        reached = []
        for session in self._sessions:
            if session.intents & intent and session.receives(guild_id):
                session.send({"op": 0, "t": event, "d": data})
                reached.append(session.shard)
        return reached

    def _dispatch_guild_event(
        self: FakeDiscord,
        event: str,
        guild_id: int | None,
        build: Callable[[], dict[str, Any]],
        *,
        intent: int = 1,
    ) -> None:
        """Dispatch only if someone listens: ``build`` may need state set up after this call."""
        if any(session.receives(guild_id) for session in self._sessions):
            self._dispatch(
                event,
                build() | ({"guild_id": str(guild_id)} if guild_id else {}),
                guild_id=guild_id,
                intent=intent,
            )

    def _dispatch_message_event(self: FakeDiscord, event: str, msg: Message) -> None:
        if not self._sessions:
            return
        gid = self._guild_of(msg.channel_id)
        data = self._render(msg)
        if gid:
            member = self._member_payload(gid, msg.author_id or self.bot_id)
            data.update(guild_id=str(gid), member={k: v for k, v in member.items() if k != "user"})
        self._dispatch(event, data, guild_id=gid, intent=GUILD_MESSAGES if gid else DIRECT_MESSAGES)

    async def _gateway(self: FakeDiscord, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(
            json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        )
        session: Session | None = None
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
                    if op == 6:  # the session resumed keeps its shard
                        shard = self._resumable.get(str(data.get("session_id")))
                    else:
                        try:
                            shard = parse_shard(data.get("shard"))
                        except ValueError:
                            await ws.close(code=4010, message=b"Invalid shard.")
                            break
                        if self._needs_more_shards(shard):
                            await ws.close(code=4011, message=b"Sharding required.")
                            break
                        self.identifies.append(shard)
                    session = Session(
                        ws,
                        int(data.get("intents", (1 << 17) - 1)),
                        shard,
                        data.get("session_id") if op == 6 else None,
                    )
                    self._resumable[session.session_id] = shard
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

    def _identify(self: FakeDiscord, session: Session, *, resume: bool) -> None:
        if resume:
            session.send({"op": 0, "t": "RESUMED", "d": {}})
            return
        guilds = self.guilds_of_shard(session.shard)
        ready = {
            "v": 10,
            "user": self.bot_user.payload(),
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        if session.shard is not None:
            ready["shard"] = list(session.shard)
        session.send({"op": 0, "t": "READY", "d": ready})
        for gid in guilds:
            session.send({"op": 0, "t": "GUILD_CREATE", "d": self._guild_payload(gid)})
        self._notify()

    def _needs_more_shards(self: FakeDiscord, shard: Shard) -> bool:
        limit = self.max_guilds_per_session
        return limit is not None and len(self.guilds_of_shard(shard)) > limit
