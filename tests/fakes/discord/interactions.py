"""The user's side of the fake Discord: commands, clicks and modal submits, as interactions.

A user can only send what a Discord client lets them (synced commands they may see, option
values within their limits, enabled buttons); the bot's answers are checked in ``responses``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.discord import rules
from tests.fakes.discord.commands import check_option_value
from tests.fakes.discord.gateway import Shard
from tests.fakes.discord.rules import EPHEMERAL
from tests.fakes.discord.state import DMChannel

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

#: How long the bot has for its first answer (the callback).
INTERACTION_DEADLINE = 3.0
#: How long followups and edits through the interaction's webhook token are accepted.
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
    #: The shards of the sessions it was dispatched to (``None``: an unsharded session); empty
    #: when no connected session has its guild's shard, so no bot could see it.
    delivered_to: list[Shard] = field(default_factory=list)
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
        if msg is None or msg.ephemeral or msg.deleted:
            return None
        return self.fake._render(msg)

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self.fake._render(self.fake._messages[i]) for i in self.followup_ids]


class InteractionsMixin:
    """Interaction methods of FakeDiscord (``self`` is always a FakeDiscord)."""

    def _interaction_base(
        self: FakeDiscord, itype: int, channel_id: int, user_id: int, data: dict[str, Any]
    ) -> FakeInteraction:
        assert self._sessions, "no discord.py client is connected to the fake gateway"
        ch = self._channel(channel_id)
        gid = ch.guild_id
        iid, token = self._snowflake(), f"aW50ZXJhY3Rpb24{secrets.token_urlsafe(48)}"
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "attachment_size_limit": self._attachment_size_limit(channel_id, user_id),
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
            assert isinstance(ch, DMChannel) and ch.recipient_id == user_id, (
                "only the DM's recipient can act in it"
            )
            payload.update(user=self.users[user_id].payload(), context=1)
            payload["authorizing_integration_owners"] = {"0": "0"}
        inter = FakeInteraction(self, iid, token, itype, payload, channel_id, user_id, self.now())
        self.interactions[iid] = inter
        return inter

    def _send_interaction(self: FakeDiscord, inter: FakeInteraction) -> FakeInteraction:
        inter._started = time.monotonic()
        inter.delivered_to = self._dispatch(
            "INTERACTION_CREATE", inter.payload, guild_id=self._guild_of(inter.channel_id)
        )
        return inter

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
                user = self.users[int(value)].payload()
                resolved.setdefault("users", {})[str(value)] = user
                if gid and (gid, int(value)) in self.members:
                    member = self._member_payload(gid, int(value))
                    member.pop("user")
                    resolved.setdefault("members", {})[str(value)] = member
                value = str(value)
            if validate:
                check_option_value(defs[key], value)
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
        assert msg and not msg.deleted and msg.channel_id == channel_id, "no such message"
        buttons = [c for c in rules.walk_components(msg.components) if c.get("type") == 2]
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

    async def choose(
        self: FakeDiscord,
        channel_id: int,
        message_id: int,
        custom_id: str,
        values: list[str],
        *,
        user_id: int,
    ) -> FakeInteraction:
        """A user picks ``values`` in a string select menu on a message."""
        msg = self._messages.get(message_id)
        assert msg and not msg.deleted and msg.channel_id == channel_id, "no such message"
        menus = [c for c in rules.walk_components(msg.components) if c.get("type") == 3]
        menu = next((m for m in menus if m.get("custom_id") == custom_id), None)
        found = [m.get("custom_id") for m in menus]
        assert menu is not None, f"no select menu {custom_id!r} on that message (has {found})"
        assert not menu.get("disabled"), f"select menu {custom_id!r} is disabled"
        offered = [o["value"] for o in menu.get("options") or []]
        assert set(values) <= set(offered), f"{values} are not among the options {offered}"
        assert len(set(values)) == len(values), "an option can be picked once"
        low, high = menu.get("min_values", 1), menu.get("max_values", 1)
        assert low <= len(values) <= high, f"pick {low}–{high} options, not {len(values)}"
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        if "id" in menu:
            data["id"] = menu["id"]
        inter = self._interaction_base(3, channel_id, user_id, data)
        inter.payload["message"] = self._render(msg)
        inter.source_message_id = message_id
        return self._send_interaction(inter)

    async def invoke_message_command(
        self: FakeDiscord, name: str, channel_id: int, message_id: int, *, user_id: int
    ) -> FakeInteraction:
        """A user runs a message context menu command (Apps -> ``name``) on a message."""
        gid = self._guild_of(channel_id)
        cmd = self._find_command(name, gid, kind=3)
        if gid and cmd.get("default_member_permissions") is not None:
            needed = int(cmd["default_member_permissions"])
            assert self._member_permissions(gid, user_id) & needed == needed, (
                "member cannot see the command"
            )
        msg = self._messages.get(message_id)
        assert msg and not msg.deleted and not msg.ephemeral, "no such message"
        assert msg.channel_id == channel_id, "the message is in another channel"
        data: dict[str, Any] = {
            "id": cmd["id"],
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): self._render(msg)}},
        }
        if gid and "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        return self._send_interaction(self._interaction_base(2, channel_id, user_id, data))

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
