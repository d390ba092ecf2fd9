"""The bot's side of an interaction: the callback, then followups and edits by webhook.

Discord's rules are kept: the 3 s deadline, one callback each, callback types the
interaction allows, 15 min webhook tokens, and the deferred "thinking" message that the
first followup replaces.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord import rules
from tests.fakes.discord.errors import ApiError, Form
from tests.fakes.discord.interactions import (
    INTERACTION_DEADLINE,
    WEBHOOK_TOKEN_LIFETIME,
    FakeInteraction,
)
from tests.fakes.discord.middleware import BODY, FILES
from tests.fakes.discord.rules import EPHEMERAL, LOADING

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord
    from tests.fakes.discord.state import Message


class ResponsesMixin:
    """Interaction callback and webhook routes of FakeDiscord (``self`` is a FakeDiscord)."""

    async def _h_callback(self: FakeDiscord, request: web.Request) -> web.Response:
        inter = self.interactions.get(int(request.match_info["interaction_id"]))
        if inter is None or inter.token != request.match_info["webhook_token"]:
            raise ApiError(404, 10062, "Unknown interaction")
        if self.now() > inter.dispatched_at + INTERACTION_DEADLINE:
            raise ApiError(404, 10062, "Unknown interaction")
        if inter.callback is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = request[BODY] or {}
        rtype, data = body.get("type"), body.get("data") or {}
        allowed = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 5: {4, 5, 6, 7}}[inter.type]
        if inter.type == 5 and inter.source_message_id is None:
            allowed = {4, 5}
        if rtype not in allowed:
            raise ApiError(
                400, 50035, f"Invalid Form Body (type: {rtype} is not valid here)", {"type": {}}
            )
        flags = data.get("flags") or 0
        if rtype == 4:
            msg = self._apply_message(
                inter.channel_id,
                data,
                request[FILES],
                flags_mask=rules.INTERACTION_SEND_FLAGS,
                check_permissions=False,
                extra=self._interaction_message_fields(inter),
            )
            inter.original_message_id = msg.id
        elif rtype == 5:
            if flags & ~EPHEMERAL:
                raise ApiError(400, 50035, "Invalid Form Body (data.flags)", {"data": {}})
            msg = self._apply_message(
                inter.channel_id,
                {"content": "", "flags": flags | LOADING, "components": []},
                [],
                flags_mask=rules.INTERACTION_SEND_FLAGS | LOADING,
                check_permissions=False,
                extra=self._interaction_message_fields(inter) | {"loading": True},
            )
            inter.original_message_id = msg.id
        elif rtype in (6, 7):
            inter.original_message_id = inter.source_message_id
            if rtype == 7:
                self._apply_message(
                    inter.channel_id,
                    data,
                    request[FILES],
                    existing=self._messages[inter.source_message_id],  # type: ignore[index]
                    flags_mask=rules.INTERACTION_SEND_FLAGS,
                    check_permissions=False,
                )
        else:
            form = Form()
            rules.check_modal(form, data)
            if form:
                raise ApiError.form(form)
        inter.callback = body
        inter.ack_latency = time.monotonic() - inter._started
        inter._answered.set()
        self._notify()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        original = self._messages.get(inter.original_message_id or 0)
        response: dict[str, Any] = {"interaction": {"id": str(inter.id), "type": inter.type}}
        if original is not None and rtype in (4, 5):
            response["interaction"].update(
                response_message_id=str(original.id),
                response_message_loading=rtype == 5,
                response_message_ephemeral=original.ephemeral,
            )
        response["resource"] = {"type": rtype}
        if original is not None and rtype in (4, 7):
            response["resource"]["message"] = self._render(original)
        return self._json(response)

    def _interaction_message_fields(self: FakeDiscord, inter: FakeInteraction) -> dict[str, Any]:
        user = self.users[inter.user_id].payload()
        metadata = {
            "id": str(inter.id),
            "type": inter.type,
            "user": user,
            "authorizing_integration_owners": inter.payload["authorizing_integration_owners"],
        }
        if inter.type == 2:
            metadata["name"] = inter.payload["data"]["name"]
        if inter.source_message_id:
            metadata["interacted_message_id"] = str(inter.source_message_id)
        kind = 0  # DEFAULT: answers to components and modals
        if inter.type == 2:  # CHAT_INPUT_COMMAND, or CONTEXT_MENU_COMMAND for a menu
            kind = 20 if inter.payload["data"].get("type", 1) == 1 else 23
        return {
            "type": kind,
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
            "interaction_metadata": metadata,
        }

    def _webhook_interaction(self: FakeDiscord, request: web.Request) -> FakeInteraction:
        token = request.match_info["webhook_token"]
        inter = next((i for i in self.interactions.values() if i.token == token), None)
        if inter is None or request.match_info["webhook_id"] != str(self.application_id):
            raise ApiError(404, 10015, "Unknown Webhook")
        if self.now() > inter.dispatched_at + WEBHOOK_TOKEN_LIFETIME:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if inter.callback is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        return inter

    def _webhook_message(
        self: FakeDiscord, request: web.Request
    ) -> tuple[FakeInteraction, Message]:
        inter = self._webhook_interaction(request)
        mid_text = request.match_info["message_id"]
        mid = inter.original_message_id if mid_text == "@original" else int(mid_text)
        if mid is None or (mid != inter.original_message_id and mid not in inter.followup_ids):
            raise ApiError(404, 10008, "Unknown Message")
        msg = self._messages.get(mid)
        if msg is None or msg.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return inter, msg

    async def _h_followup(self: FakeDiscord, request: web.Request) -> web.Response:
        inter = self._webhook_interaction(request)
        body = request[BODY] or {}
        original = self._messages.get(inter.original_message_id or 0)
        if original is not None and original.loading:
            # The first followup after a deferred "thinking" answer replaces that message.
            flags = (original.flags & EPHEMERAL) | ((body.get("flags") or 0) & ~EPHEMERAL)
            msg = self._apply_message(
                inter.channel_id,
                body | {"flags": flags},
                request[FILES],
                existing=original,
                flags_mask=rules.INTERACTION_SEND_FLAGS,
                check_permissions=False,
                extra={"loading": False},
            )
        else:
            msg = self._apply_message(
                inter.channel_id,
                body,
                request[FILES],
                flags_mask=rules.INTERACTION_SEND_FLAGS,
                check_permissions=False,
                extra=self._interaction_message_fields(inter),
            )
            inter.followup_ids.append(msg.id)
        if request.query.get("wait") in ("1", "true", "True"):
            return self._json(self._render(msg))
        return web.Response(status=204)

    async def _h_wh_get(self: FakeDiscord, request: web.Request) -> web.Response:
        return self._json(self._render(self._webhook_message(request)[1]))

    async def _h_wh_edit(self: FakeDiscord, request: web.Request) -> web.Response:
        inter, msg = self._webhook_message(request)
        body = request[BODY] or {}
        if msg.loading:
            body = body | {
                "flags": (msg.flags & EPHEMERAL) | ((body.get("flags") or 0) & ~EPHEMERAL)
            }
        msg = self._apply_message(
            inter.channel_id,
            body,
            request[FILES],
            existing=msg,
            flags_mask=rules.INTERACTION_SEND_FLAGS,
            check_permissions=False,
            extra={"loading": False},
        )
        return self._json(self._render(msg))

    async def _h_wh_delete(self: FakeDiscord, request: web.Request) -> web.Response:
        self._delete(self._webhook_message(request)[1])
        return web.Response(status=204)
