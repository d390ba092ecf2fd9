"""REST routes a bot calls with its token: identity, DMs, channels, messages and threads.

Each handler checks what Discord checks (access, permissions, limits) in Discord's order, so
the first refusal is the one Discord would give. Sources, where the fake is as strict as Discord:

- reading a message or the history of a voice channel's chat needs Connect besides View Channel
  and Read Message History (https://discord.com/developers/docs/resources/message, Get Channel
  Message / Get Channel Messages); no threads in voice channels (50024);
- archived threads refuse edits (50083 "Thread is archived"); sending a message unarchives them
  "unless the thread has been locked" (https://discord.com/developers/docs/topics/threads);
- locked threads refuse creating and editing messages without Manage Threads (160005 "Thread is
  locked"; change log 2023-02-10 "Update to Locked Threads");
- edits of messages older than an hour have their own, smaller limit (429, code 30046, in
  ``ratelimits``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord import rules
from tests.fakes.discord.errors import ApiError, Form, missing_permissions
from tests.fakes.discord.middleware import BODY, FILES
from tests.fakes.discord.state import DMChannel, TextChannel, Thread, VoiceChannel

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord


class RestMixin:
    """REST handlers of FakeDiscord (``self`` is always a FakeDiscord)."""

    # -- identity --------------------------------------------------------------------------

    async def _h_me(self: FakeDiscord, request: web.Request) -> web.Response:
        return self._json(self.bot_user.payload())

    async def _h_app(self: FakeDiscord, request: web.Request) -> web.Response:
        return self._json(
            {
                "id": str(self.application_id),
                "name": self.bot_user.username,
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.owner.payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "interactions_endpoint_url": None,
                "bot": self.bot_user.payload(),
                "redirect_uris": [],
            }
        )

    async def _h_gateway_url(self: FakeDiscord, request: web.Request) -> web.Response:
        """``/gateway/bot`` (``/gateway`` answers the same): the recommended shard count and
        how many sessions may still start today, ``max_concurrency`` of them per 5 s."""
        limit = {
            "total": 1000,
            "remaining": 1000 - len(self.identifies),
            "reset_after": 86_400_000,
            "max_concurrency": self.max_concurrency,
        }
        return self._json(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": limit,
            }
        )

    # -- channels and messages -------------------------------------------------------------

    async def _h_create_dm(self: FakeDiscord, request: web.Request) -> web.Response:
        uid = int((request[BODY] or {}).get("recipient_id", 0))
        if uid not in self.users or uid == self.bot_id:
            raise ApiError(400, 50007, "Cannot send messages to this user")
        return self._json(self._channel_payload(self.add_dm(uid)))

    def _readable_channel(self: FakeDiscord, request: web.Request, *, history: bool = False) -> int:
        cid = int(request.match_info["channel_id"])
        perms = self._bot_permissions(cid)
        if not perms & rules.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if history and isinstance(self._channel(cid), VoiceChannel) and not perms & rules.CONNECT:
            raise ApiError(403, 50001, "Missing Access")
        if history and not perms & rules.READ_MESSAGE_HISTORY:
            raise missing_permissions()
        return cid

    def _writable_thread(self: FakeDiscord, cid: int, *, edit: bool) -> Thread | None:
        """The thread ``cid`` if it is one, once its archived and locked states allow the write."""
        thread = self.threads.get(cid)
        if thread is None:
            return None
        if thread.locked and not self._bot_permissions(cid) & rules.MANAGE_THREADS:
            raise ApiError(403, 160005, "Thread is locked")
        if edit and thread.archived:
            raise ApiError(403, 50083, "Thread is archived")
        return thread

    async def _h_get_channel(self: FakeDiscord, request: web.Request) -> web.Response:
        return self._json(self._channel_payload(self._readable_channel(request)))

    async def _h_history(self: FakeDiscord, request: web.Request) -> web.Response:
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

    async def _h_send(self: FakeDiscord, request: web.Request) -> web.Response:
        cid = int(request.match_info["channel_id"])
        self._channel(cid)
        thread = None  # without View Channel, _apply_message answers 50001 first
        if self._bot_permissions(cid) & rules.VIEW_CHANNEL:
            thread = self._writable_thread(cid, edit=False)
        msg = self._apply_message(cid, request[BODY], request[FILES])
        if thread is not None and thread.archived:
            thread.archived = False  # "Sending a message will automatically unarchive the thread"
            self._thread_updated(thread)
        return self._json(self._render(msg))

    async def _h_get_message(self: FakeDiscord, request: web.Request) -> web.Response:
        cid = self._readable_channel(request, history=True)
        return self._json(
            self._render(self._visible_message(cid, int(request.match_info["message_id"])))
        )

    async def _h_edit(self: FakeDiscord, request: web.Request) -> web.Response:
        cid = self._readable_channel(request)
        msg = self._visible_message(cid, int(request.match_info["message_id"]))
        self._writable_thread(cid, edit=True)
        self._old_message_edit(cid, msg)
        if request[FILES] and not self._bot_permissions(cid) & rules.ATTACH_FILES:
            raise missing_permissions()  # adding files by an edit needs Attach Files too
        msg = self._apply_message(
            cid, request[BODY], request[FILES], existing=msg, check_permissions=False
        )
        return self._json(self._render(msg))

    async def _h_delete(self: FakeDiscord, request: web.Request) -> web.Response:
        """A bot deletes its own messages freely; anyone else's needs Manage Messages."""
        cid = self._readable_channel(request)
        msg = self._visible_message(cid, int(request.match_info["message_id"]))
        if msg.author_id not in (None, self.bot_id):
            if isinstance(self._channel(cid), DMChannel):
                raise ApiError(403, 50003, "Cannot execute action on a DM channel")
            if not self._bot_permissions(cid) & rules.MANAGE_MESSAGES:
                raise missing_permissions()
        self._delete(msg)
        return web.Response(status=204)

    # -- threads ---------------------------------------------------------------------------

    def _check_thread_create(self: FakeDiscord, cid: int, body: Any) -> TextChannel:
        parent = self._channel(cid)
        if not isinstance(parent, TextChannel) or isinstance(parent, VoiceChannel):
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

    async def _h_thread_from_msg(self: FakeDiscord, request: web.Request) -> web.Response:
        cid, mid = int(request.match_info["channel_id"]), int(request.match_info["message_id"])
        parent = self._check_thread_create(cid, request[BODY])
        self._visible_message(cid, mid)
        if mid in self.threads:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        self._new_thread(mid, parent, request[BODY]["name"], self.bot_id)
        return self._json(self._channel_payload(mid), 201)

    async def _h_thread(self: FakeDiscord, request: web.Request) -> web.Response:
        cid = int(request.match_info["channel_id"])
        parent = self._check_thread_create(cid, request[BODY])
        if request[BODY].get("type", 12) != 11:
            raise ApiError(400, 50024, "The fake supports public threads (type 11) only")
        tid = self._new_thread(self._snowflake(), parent, request[BODY]["name"], self.bot_id)
        return self._json(self._channel_payload(tid), 201)
