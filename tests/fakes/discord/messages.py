"""Messages: create and edit under Discord's limits, delete, and what a test may read back.

Channel sends, interaction answers and webhook edits all go through :meth:`_apply_message`,
so a limit holds whichever route the bot takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.fakes.discord import rules
from tests.fakes.discord.errors import ApiError, Form, missing_permissions
from tests.fakes.discord.gateway import DIRECT_MESSAGES, GUILD_MESSAGES
from tests.fakes.discord.rules import EPHEMERAL, LOADING
from tests.fakes.discord.state import Message

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord


class MessagesMixin:
    """Messages of FakeDiscord (``self`` is always a FakeDiscord)."""

    def _apply_message(
        self: FakeDiscord,
        channel_id: int,
        payload: dict[str, Any],
        files: list[tuple[str, str, bytes]],
        *,
        existing: Message | None = None,
        flags_mask: int = rules.CHANNEL_SEND_FLAGS,
        check_permissions: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> Message:
        """Validate a message create/edit against Discord's limits, then store it.

        ``extra`` sets further :class:`Message` fields (an interaction answer's metadata).
        """
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
            kept = list(existing.attachment_ids) if existing else []
            new = [(fn, data, None) for _, (fn, data) in sorted(uploads.items())]
        else:
            for i, ref in enumerate(refs):
                rid = int(ref.get("id", -1))
                if rid in uploads:
                    fn, data = uploads.pop(rid)
                    new.append((ref.get("filename") or fn, data, ref.get("description")))
                elif existing and rid in existing.attachment_ids:
                    kept.append(rid)
                else:
                    form.add(f"attachments.{i}.id", "Unknown attachment reference.")
            new += [(fn, data, None) for _, (fn, data) in sorted(uploads.items())]
        file_names = {re.sub(r"[^\w.\-]", "_", fn) for fn, _, _ in new}
        file_names |= {self._attachments[a].filename for a in kept}
        flags = payload.get("flags", existing.flags if existing else 0) or 0
        rules.check_message(form, payload, file_names, flags_mask=flags_mask, merged_flags=flags)
        gid = self._guild_of(channel_id)
        merged = {
            "content": payload.get("content", existing.content if existing else ""),
            "components": payload.get("components", existing.components if existing else []),
        }
        everyone, users, roles = rules.compute_mentions(
            form,
            rules.mention_sources(merged),
            payload.get("allowed_mentions"),
            known_users={u for (g, u) in self.members if g == gid} if gid else set(self.users),
            known_roles=set(self.guilds[gid].roles) if gid else set(),
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
        msg = existing or Message(
            id=self._snowflake(),
            channel_id=channel_id,
            timestamp=self._iso(),
            ephemeral=ephemeral,
        )
        msg.content = merged["content"] or ""
        msg.components = merged["components"] or []
        msg.attachment_ids = att_ids
        msg.flags = flags
        msg.mention_everyone, msg.mentions, msg.mention_roles = everyone, users, roles
        for key, value in (extra or {}).items():
            msg[key] = value
        if "embeds" in payload:
            msg.embeds = payload["embeds"] or []
        if "allowed_mentions" in payload or existing is None:
            msg.allowed_mentions = payload.get("allowed_mentions")
        if existing is not None:
            msg.edited_timestamp = self._iso()
        self._messages[msg.id] = msg
        if existing is None and channel_id in self.threads:
            self.threads[channel_id].message_count += 1
        if not msg.ephemeral:
            event = "MESSAGE_UPDATE" if existing else "MESSAGE_CREATE"
            self._dispatch_message_event(event, msg)
        self._notify()
        return msg

    def _delete(self: FakeDiscord, msg: Message) -> None:
        msg.deleted = True
        if not msg.ephemeral:
            gid = self._guild_of(msg.channel_id)
            data = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if gid:
                data["guild_id"] = str(gid)
            self._dispatch(
                "MESSAGE_DELETE",
                data,
                guild_id=gid,
                intent=GUILD_MESSAGES if gid else DIRECT_MESSAGES,
            )
        self._notify()

    def _visible_message(self: FakeDiscord, channel_id: int, message_id: int) -> Message:
        msg = self._messages.get(message_id)
        if msg is None or msg.deleted or msg.ephemeral or msg.channel_id != channel_id:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    def messages(self: FakeDiscord, channel_id: int) -> list[dict[str, Any]]:
        """Non-ephemeral, undeleted messages of a channel or thread, oldest first."""
        return [
            self._render(m)
            for m in sorted(self._messages.values(), key=lambda m: m.id)
            if m.channel_id == channel_id and not m.ephemeral and not m.deleted
        ]

    async def wait_for_message(
        self: FakeDiscord,
        predicate: Callable[[dict[str, Any]], Any],
        timeout: float = 10,  # noqa: ASYNC109 - the documented test API
    ) -> dict[str, Any]:
        """The newest visible message matching ``predicate``, waiting for a create or edit."""

        def find(_: FakeDiscord) -> dict[str, Any] | None:
            for msg in sorted(self._messages.values(), key=lambda m: -m.id):
                if not msg.ephemeral and not msg.deleted:
                    rendered = self._render(msg)
                    if predicate(rendered):
                        return rendered
            return None

        return await self.wait_for(find, timeout)
