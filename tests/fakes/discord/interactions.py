"""The user's side of the fake Discord: commands, clicks, modals and the bot's answers.

A mixin of :class:`tests.fakes.discord.FakeDiscord`, kept apart because interactions carry
their own rules: the 3 s deadline, one callback each, 15 min webhook tokens, the deferred
"thinking" message that the first followup replaces, and what a Discord client lets a user
send at all.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord import rules
from tests.fakes.discord.rules import BODY, EPHEMERAL, FILES, LOADING, ApiError, Form

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

INTERACTION_DEADLINE = 3.0
WEBHOOK_TOKEN_LIFETIME = 15 * 60.0


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched, and what the bot did with it."""

    fake: FakeDiscord = field(repr=False)
    id: int
    token: str
    type: int
    payload: dict[str, Any] = field(repr=False)
    channel_id: int
    user_id: int
    dispatched_at: float  # fake clock
    source_message_id: int | None = None  # the message whose component started it
    callback: dict[str, Any] | None = None
    ack_latency: float | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    _answered: asyncio.Event = field(default_factory=asyncio.Event)
    _started: float = field(default_factory=time.monotonic)

    async def response(self, timeout: float = 5) -> dict[str, Any]:  # noqa: ASYNC109
        """The callback payload (``type`` and ``data``) once the bot has answered."""
        async with asyncio.timeout(timeout):
            await self._answered.wait()
        assert self.callback is not None
        return self.callback

    @property
    def ephemeral(self) -> bool:
        data = (self.callback or {}).get("data") or {}
        return bool((data.get("flags") or 0) & EPHEMERAL)

    @property
    def modal(self) -> dict[str, Any] | None:
        if self.callback and self.callback.get("type") == 9:
            return self.callback["data"]
        return None

    @property
    def original_message(self) -> dict[str, Any] | None:
        """The message the response created, as it is now (``None`` when ephemeral)."""
        msg = self.fake._messages.get(self.original_message_id or 0)
        if msg is None or msg["ephemeral"] or msg["deleted"]:
            return None
        return self.fake._render(msg)

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self.fake._render(self.fake._messages[i]) for i in self.followup_ids]


class InteractionsMixin:
    """Interaction methods of FakeDiscord (``self`` is always a FakeDiscord)."""

    # -- interactions: what a user does ----------------------------------------------------

    def _interaction_base(
        self: FakeDiscord, itype: int, channel_id: int, user_id: int, data: dict[str, Any]
    ) -> FakeInteraction:
        assert self._sessions, "no discord.py client is connected to the fake gateway"
        ch = self._channel(channel_id)
        gid = ch.get("guild_id")
        iid, token = self._snowflake(), f"aW50ZXJhY3Rpb24{secrets.token_urlsafe(48)}"
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "attachment_size_limit": self._filesize_limit(channel_id),
            "app_permissions": str(self._bot_permissions(channel_id)),
            "channel": self._channel_payload(channel_id),
            "channel_id": str(channel_id),
            "entitlements": [],
            "locale": "en-US",
            "data": data,
        }
        if gid:
            assert (gid, user_id) in self.members, "that user is not a member of this guild"
            member = self._member_payload(gid, user_id)
            member["permissions"] = str(self._member_permissions(gid, user_id))
            payload.update(
                guild_id=str(gid),
                guild={"id": str(gid), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member,
                context=0,
                authorizing_integration_owners={"0": str(gid)},
            )
        else:
            assert ch.get("recipient_id") == user_id, "only the DM's recipient can act in it"
            payload.update(user=self._public_user(self.users[user_id]), context=1)
            payload["authorizing_integration_owners"] = {"0": "0"}
        inter = FakeInteraction(self, iid, token, itype, payload, channel_id, user_id, self.now())
        self.interactions[iid] = inter
        return inter

    def _send_interaction(self: FakeDiscord, inter: FakeInteraction) -> FakeInteraction:
        inter._started = time.monotonic()
        self._dispatch("INTERACTION_CREATE", inter.payload)
        return inter

    def _find_command(self: FakeDiscord, name: str, guild_id: int | None) -> dict[str, Any]:
        candidates = list(self.guild_commands.get(guild_id, [])) if guild_id else []
        candidates += self.commands
        for cmd in candidates:
            if cmd["name"] == name and cmd["type"] == 1:
                if (
                    guild_id is None
                    and cmd.get("contexts") is not None
                    and 1 not in cmd["contexts"]
                ):
                    continue
                return cmd
        raise AssertionError(f"no /{name} command is synced where this channel could see it")

    async def invoke_command(
        self: FakeDiscord,
        name: str,
        options: dict[str, Any],
        *,
        user_id: int,
        channel_id: int,
        attachments: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
        validate: bool = True,
    ) -> FakeInteraction:
        """A user runs ``/name``; option types come from the synced definition.

        An attachment option takes the attachment payload (or its id). ``validate=False`` lets
        a test send what the Discord client would refuse (out-of-range numbers...).
        """
        gid = self._guild_of(channel_id)
        cmd = self._find_command(name, gid)
        if gid and cmd.get("default_member_permissions") is not None:
            needed = int(cmd["default_member_permissions"])
            assert self._member_permissions(gid, user_id) & needed == needed, (
                "member cannot see the command"
            )
        defs = {o["name"]: o for o in cmd.get("options") or []}
        resolved: dict[str, dict[str, Any]] = {}
        for att in attachments:
            resolved.setdefault("attachments", {})[str(att["id"])] = att
        opts = []
        for key, value in options.items():
            assert key in defs, f"/{name} has no option {key!r} (has {sorted(defs)})"
            kind = defs[key]["type"]
            if kind == 11:
                if isinstance(value, dict):
                    resolved.setdefault("attachments", {})[str(value["id"])] = value
                    value = value["id"]
                value = str(value)
                assert value in resolved.get("attachments", {}), f"attachment {value} not passed"
            elif kind == 6:
                user = self._public_user(self.users[int(value)])
                resolved.setdefault("users", {})[str(value)] = user
                if gid and (gid, int(value)) in self.members:
                    member = self._member_payload(gid, int(value))
                    member.pop("user")
                    resolved.setdefault("members", {})[str(value)] = member
                value = str(value)
            if validate:
                _check_option_value(defs[key], value)
            opts.append({"name": key, "type": kind, "value": value})
        if validate:
            missing = [
                o["name"] for o in defs.values() if o.get("required") and o["name"] not in options
            ]
            assert not missing, f"required options missing: {missing}"
        data: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        if gid and "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        return self._send_interaction(self._interaction_base(2, channel_id, user_id, data))

    async def click(
        self: FakeDiscord, channel_id: int, message_id: int, custom_id: str, *, user_id: int
    ) -> FakeInteraction:
        """A user presses a button on a message (ephemeral ones included)."""
        msg = self._messages.get(message_id)
        assert msg and not msg["deleted"] and msg["channel_id"] == channel_id, "no such message"
        buttons = [c for c in rules.walk_components(msg["components"]) if c.get("type") == 2]
        button = next((b for b in buttons if b.get("custom_id") == custom_id), None)
        found = [b.get("custom_id") for b in buttons]
        assert button is not None, f"no button {custom_id!r} on that message (has {found})"
        assert not button.get("disabled"), f"button {custom_id!r} is disabled"
        data = {"custom_id": custom_id, "component_type": 2}
        if "id" in button:
            data["id"] = button["id"]
        inter = self._interaction_base(3, channel_id, user_id, data)
        inter.payload["message"] = self._render(msg)
        inter.source_message_id = message_id
        return self._send_interaction(inter)

    async def submit_modal(
        self: FakeDiscord,
        opened: FakeInteraction,
        values: dict[str, str],
        *,
        user_id: int | None = None,
    ) -> FakeInteraction:
        """Submit the modal the bot opened for ``opened``; inputs not in ``values`` keep theirs."""
        modal = opened.modal
        assert modal is not None, "the bot did not answer that interaction with a modal"
        unknown = set(values)

        def fill(c: dict[str, Any]) -> dict[str, Any]:
            if c.get("type") == 1:
                return {"type": 1, "components": [fill(x) for x in c["components"]]}
            if c.get("type") == 18:
                return {
                    "type": 18,
                    **({"id": c["id"]} if "id" in c else {}),
                    "component": fill(c["component"]),
                }
            if c.get("type") == 4:
                cid = c["custom_id"]
                unknown.discard(cid)
                value = values.get(cid, c.get("value") or "")
                assert len(value) <= c.get("max_length", 4000), f"{cid}: longer than max_length"
                assert not value or len(value) >= c.get("min_length", 0), (
                    f"{cid}: shorter than min_length"
                )
                assert value or not c.get("required", True), f"{cid} is required"
                return {
                    "type": 4,
                    "custom_id": cid,
                    "value": value,
                    **({"id": c["id"]} if "id" in c else {}),
                }
            return {k: v for k, v in c.items() if k in ("type", "id")}

        components = [fill(c) for c in modal["components"]]
        assert not unknown, f"the modal has no inputs {sorted(unknown)}"
        data = {"custom_id": modal["custom_id"], "components": components}
        inter = self._interaction_base(5, opened.channel_id, user_id or opened.user_id, data)
        if opened.source_message_id is not None:
            source = self._messages[opened.source_message_id]
            inter.payload["message"] = self._render(source)
            inter.source_message_id = opened.source_message_id
        return self._send_interaction(inter)

    # -- REST: interaction callback and webhook --------------------------------------------

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
            inter.original_message_id = msg["id"]
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
            inter.original_message_id = msg["id"]
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
                response_message_id=str(original["id"]),
                response_message_loading=rtype == 5,
                response_message_ephemeral=original["ephemeral"],
            )
        response["resource"] = {"type": rtype}
        if original is not None and rtype in (4, 7):
            response["resource"]["message"] = self._render(original)
        return self._json(response)

    def _interaction_message_fields(self: FakeDiscord, inter: FakeInteraction) -> dict[str, Any]:
        user = self._public_user(self.users[inter.user_id])
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
        return {
            "type": 20 if inter.type == 2 else 0,
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
    ) -> tuple[FakeInteraction, dict[str, Any]]:
        inter = self._webhook_interaction(request)
        mid_text = request.match_info["message_id"]
        mid = inter.original_message_id if mid_text == "@original" else int(mid_text)
        if mid is None or (mid != inter.original_message_id and mid not in inter.followup_ids):
            raise ApiError(404, 10008, "Unknown Message")
        msg = self._messages.get(mid)
        if msg is None or msg["deleted"]:
            raise ApiError(404, 10008, "Unknown Message")
        return inter, msg

    async def _h_followup(self: FakeDiscord, request: web.Request) -> web.Response:
        inter = self._webhook_interaction(request)
        body = request[BODY] or {}
        original = self._messages.get(inter.original_message_id or 0)
        if original is not None and original.get("loading"):
            # The first followup after a deferred "thinking" answer replaces that message.
            flags = (original["flags"] & EPHEMERAL) | ((body.get("flags") or 0) & ~EPHEMERAL)
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
            inter.followup_ids.append(msg["id"])
        if request.query.get("wait") in ("1", "true", "True"):
            return self._json(self._render(msg))
        return web.Response(status=204)

    async def _h_wh_get(self: FakeDiscord, request: web.Request) -> web.Response:
        return self._json(self._render(self._webhook_message(request)[1]))

    async def _h_wh_edit(self: FakeDiscord, request: web.Request) -> web.Response:
        inter, msg = self._webhook_message(request)
        body = request[BODY] or {}
        if msg.get("loading"):
            body = body | {
                "flags": (msg["flags"] & EPHEMERAL) | ((body.get("flags") or 0) & ~EPHEMERAL)
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


def _check_option_value(definition: dict[str, Any], value: Any) -> None:
    """What the Discord client enforces before a command is even sent."""
    kind, name = definition["type"], definition["name"]
    if kind == 3:
        assert isinstance(value, str), f"{name} must be a string"
        lo, hi = definition.get("min_length", 0), definition.get("max_length", 6000)
        assert lo <= len(value) <= hi, f"{name}: length {len(value)} outside {lo}–{hi}"
    elif kind in (4, 10):
        ok = isinstance(value, int) if kind == 4 else isinstance(value, int | float)
        assert ok and not isinstance(value, bool), (
            f"{name} must be a {'integer' if kind == 4 else 'number'}"
        )
        lo, hi = definition.get("min_value"), definition.get("max_value")
        assert lo is None or value >= lo, f"{name}: {value} < {lo}"
        assert hi is None or value <= hi, f"{name}: {value} > {hi}"
    elif kind == 5:
        assert isinstance(value, bool), f"{name} must be a boolean"
    choices = definition.get("choices")
    if choices:
        assert value in [c["value"] for c in choices], f"{name}: {value!r} is not a choice"
