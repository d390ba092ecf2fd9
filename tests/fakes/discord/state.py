"""What the fake Discord stores: users, guilds, roles, members, channels, threads, messages.

Records hold state only; turning them into Discord's JSON lives in ``payloads`` (it needs the
whole world: a message renders its author, a channel the bot's overwrite). Ids are ints here
and become strings only in payloads, as Discord's are.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


class Record:
    """``record["field"]`` reads and writes a field: tests index records like the JSON they mirror.

    Unknown keys raise :class:`KeyError`, so a typo cannot add state the fake never reads.
    """

    def _field(self, key: str) -> str:
        if key not in {f.name for f in fields(self)}:  # type: ignore[arg-type]
            raise KeyError(key)
        return key

    def __getitem__(self, key: str) -> Any:
        return getattr(self, self._field(key))

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, self._field(key), value)


@dataclass
class User(Record):
    id: int
    username: str
    bot: bool = False
    #: Nitro plan (0 none, 1 Classic, 2 Nitro, 3 Basic): raises the user's own upload limit.
    premium_type: int = 0

    def payload(self) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": None if self.bot else self.username.title(),
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
        }
        if self.bot:
            user.update(verified=True, mfa_enabled=False, locale="en-US")
        return user


@dataclass
class Role(Record):
    id: int
    name: str
    permissions: int
    position: int
    managed: bool = False
    #: Only the bot's managed role has tags (``{"bot_id": ...}``); ``None`` leaves the key out.
    tags: dict[str, str] | None = None

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }
        if self.tags is not None:
            payload["tags"] = self.tags
        return payload


@dataclass
class Guild(Record):
    id: int
    name: str
    #: The boost tier (0–3): the only thing that sets what the bot may upload here.
    premium_tier: int
    joined_at: str
    #: Keyed by role id; the @everyone role's id is the guild's.
    roles: dict[int, Role] = field(default_factory=dict)


@dataclass
class Member(Record):
    roles: list[int]


@dataclass
class TextChannel(Record):
    """A guild text channel (type 0); the bot's permissions come from a member overwrite."""

    id: int
    guild_id: int
    name: str
    nsfw: bool
    bot_permissions: int
    position: int


class VoiceChannel(TextChannel):
    """A voice channel's text chat (type 2): messages as in a text channel, but no threads, and
    reading a message needs Connect as well."""


@dataclass
class DMChannel(Record):
    """The bot's DM with one user (type 1): no guild, no threads."""

    id: int
    recipient_id: int
    guild_id: None = None


@dataclass
class Thread(Record):
    """A public thread (type 11); one started from a message has that message's id."""

    id: int
    guild_id: int | None
    parent_id: int
    name: str
    owner_id: int
    created_at: str
    message_count: int = 0
    #: Archived: edits refused (50083) until a message unarchives it. Locked: only members
    #: with Manage Threads may send, edit or unarchive (160005).
    archived: bool = False
    locked: bool = False


Channel = TextChannel | DMChannel | Thread


@dataclass
class Attachment:
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


@dataclass
class Message(Record):
    """A stored message; ephemeral and deleted ones stay so interactions can still find them."""

    id: int
    channel_id: int
    timestamp: str
    ephemeral: bool
    #: Who wrote it; ``None`` is the bot (everything the bot or an interaction sends).
    author_id: int | None = None
    type: int = 0
    edited_timestamp: str | None = None
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachment_ids: list[int] = field(default_factory=list)
    flags: int = 0
    mention_everyone: bool = False
    mentions: list[int] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    allowed_mentions: dict[str, Any] | None = None
    deleted: bool = False
    #: A deferred "thinking" answer, until the first followup or edit replaces it.
    loading: bool = False
    webhook_id: str | None = None
    application_id: str | None = None
    interaction_metadata: dict[str, Any] | None = None
