"""Setting up the fake's world (guilds, channels, threads, members) and looking it up.

Set-up methods are synchronous. Called after the client connected they also dispatch
GUILD_CREATE / CHANNEL_CREATE / THREAD_CREATE, so a test may set up before or after login.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.discord import rules
from tests.fakes.discord.errors import ApiError
from tests.fakes.discord.gateway import GUILD_MEMBERS
from tests.fakes.discord.rules import DEFAULT_BOT_PERMISSIONS, DEFAULT_MEMBER_PERMISSIONS
from tests.fakes.discord.state import (
    Channel,
    DMChannel,
    Guild,
    Member,
    Message,
    Role,
    TextChannel,
    Thread,
    User,
    VoiceChannel,
)

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord


class WorldMixin:
    """World set-up and lookups of FakeDiscord (``self`` is always a FakeDiscord)."""

    @property
    def bot_id(self: FakeDiscord) -> int:
        return self.bot_user.id

    def _make_user(self: FakeDiscord, name: str, *, bot: bool = False) -> User:
        return User(self._snowflake(), name, bot)

    def add_guild(
        self: FakeDiscord,
        name: str,
        *,
        premium_tier: int = 0,
        shard: tuple[int, int] | None = None,
    ) -> int:
        """A guild with an @everyone role and the bot as a member.

        Its boost tier alone sets what the bot may upload there (10, 50 or 100 MiB), as on
        Discord, so discord.py's ``Guild.filesize_limit`` agrees with what the fake enforces.
        ``shard=(shard_id, num_shards)`` picks an id that lands on that shard.
        """
        assert premium_tier in rules.UPLOAD_LIMIT_BY_TIER, "boost tiers are 0 to 3"
        gid = self._snowflake(shard=shard)
        bot_role = self._snowflake()
        everyone = Role(gid, "@everyone", permissions=0, position=0)
        managed = Role(
            bot_role,
            self.bot_user.username,
            permissions=DEFAULT_BOT_PERMISSIONS,
            position=1,
            managed=True,
            tags={"bot_id": str(self.bot_id)},
        )
        self.guilds[gid] = Guild(
            id=gid,
            name=name,
            premium_tier=premium_tier,
            joined_at=self._iso(),
            roles={gid: everyone, bot_role: managed},
        )
        self.members[gid, self.bot_id] = Member(roles=[bot_role])
        self._dispatch_guild_event("GUILD_CREATE", gid, lambda: self._guild_payload(gid))
        return gid

    def set_premium_tier(
        self: FakeDiscord, guild_id: int, tier: int, *, announce: bool = True
    ) -> None:
        """Boosts come or go. ``announce=False`` skips GUILD_UPDATE: the bot's cache lags."""
        assert tier in rules.UPLOAD_LIMIT_BY_TIER, "boost tiers are 0 to 3"
        self.guilds[guild_id].premium_tier = tier
        if announce:
            self._dispatch_guild_event(
                "GUILD_UPDATE", guild_id, lambda: self._guild_payload(guild_id)
            )

    def add_text_channel(
        self: FakeDiscord,
        guild_id: int,
        name: str,
        *,
        nsfw: bool = False,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
    ) -> int:
        """A text channel where the bot has exactly ``bot_permissions`` (via a member overwrite)."""
        return self._add_guild_channel(TextChannel, guild_id, name, nsfw, bot_permissions)

    def add_voice_channel(
        self: FakeDiscord,
        guild_id: int,
        name: str,
        *,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS | rules.CONNECT,
    ) -> int:
        """A voice channel; members (and the bot) use its text chat. No threads there."""
        return self._add_guild_channel(VoiceChannel, guild_id, name, False, bot_permissions)

    def _add_guild_channel(
        self: FakeDiscord,
        kind: type[TextChannel],
        guild_id: int,
        name: str,
        nsfw: bool,
        bot_permissions: int,
    ) -> int:
        cid = self._snowflake()
        position = sum(1 for c in self.channels.values() if c.guild_id == guild_id)
        self.channels[cid] = kind(
            id=cid,
            guild_id=guild_id,
            name=name,
            nsfw=nsfw,
            bot_permissions=bot_permissions,
            position=position,
        )
        self._dispatch_guild_event("CHANNEL_CREATE", guild_id, lambda: self._channel_payload(cid))
        return cid

    def add_thread(
        self: FakeDiscord, parent_channel_id: int, name: str, *, owner_id: int | None = None
    ) -> int:
        """A public thread (type 11) not started from a message."""
        parent = self.channels[parent_channel_id]
        return self._new_thread(self._snowflake(), parent, name, owner_id or self.owner.id)

    def _new_thread(
        self: FakeDiscord, tid: int, parent: TextChannel | DMChannel, name: str, owner_id: int
    ) -> int:
        self.threads[tid] = Thread(
            id=tid,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            name=name,
            owner_id=owner_id,
            created_at=self._iso(),
        )
        self._dispatch_guild_event(
            "THREAD_CREATE",
            parent.guild_id,
            lambda: self._channel_payload(tid) | {"newly_created": True},
        )
        self._notify()
        return tid

    def set_bot_permissions(self: FakeDiscord, channel_id: int, permissions: int) -> None:
        """An admin changes the bot's permissions in a channel (REST enforces them at once)."""
        channel = self.channels[channel_id]
        assert isinstance(channel, TextChannel), "the bot's permissions in a DM are fixed"
        channel.bot_permissions = permissions
        self._dispatch_guild_event(
            "CHANNEL_UPDATE", channel.guild_id, lambda: self._channel_payload(channel_id)
        )

    def archive_thread(self: FakeDiscord, thread_id: int, *, locked: bool = False) -> None:
        """The thread archives (inactivity, or a moderator); ``locked``: a moderator locks it."""
        thread = self.threads[thread_id]
        thread.archived, thread.locked = True, thread.locked or locked
        self._thread_updated(thread)

    def lock_thread(self: FakeDiscord, thread_id: int) -> None:
        """A moderator locks the thread but leaves it open (possible since 2023-03-06)."""
        thread = self.threads[thread_id]
        thread.locked = True
        self._thread_updated(thread)

    def _thread_updated(self: FakeDiscord, thread: Thread) -> None:
        self._dispatch_guild_event(
            "THREAD_UPDATE", thread.guild_id, lambda: self._channel_payload(thread.id)
        )
        self._notify()

    def delete_thread(self: FakeDiscord, thread_id: int) -> None:
        """A moderator deletes a thread: from now on its routes answer 10003 Unknown Channel."""
        thread = self.threads.pop(thread_id)
        self._dispatch_guild_event(
            "THREAD_DELETE",
            thread.guild_id,
            lambda: {
                "id": str(thread_id),
                "guild_id": str(thread.guild_id),
                "parent_id": str(thread.parent_id),
                "type": 11,
            },
        )
        self._notify()

    def add_member(
        self: FakeDiscord,
        guild_id: int,
        username: str,
        *,
        permissions: int = DEFAULT_MEMBER_PERMISSIONS,
        premium_type: int = 0,
    ) -> int:
        """A human member whose guild-wide permissions are exactly ``permissions``.

        ``premium_type`` is their Nitro plan (2: Nitro), which raises the interaction's
        ``attachment_size_limit`` (theirs) but not what the bot may upload.
        """
        user = self._make_user(username)
        user.premium_type = premium_type
        uid = user.id
        self.users[uid] = user
        role = self._snowflake()
        roles = self.guilds[guild_id].roles
        roles[role] = Role(role, username, permissions=permissions, position=len(roles))
        self.members[guild_id, uid] = Member(roles=[role])
        self._dispatch_guild_event(
            "GUILD_ROLE_CREATE", guild_id, lambda: {"role": roles[role].payload()}
        )
        self._dispatch_guild_event(
            "GUILD_MEMBER_ADD",
            guild_id,
            lambda: self._member_payload(guild_id, uid),
            intent=GUILD_MEMBERS,
        )
        return uid

    def add_user(self: FakeDiscord, username: str) -> int:
        """A user known to Discord but in no guild (e.g. for DMs)."""
        user = self._make_user(username)
        self.users[user.id] = user
        return user.id

    def add_dm(self: FakeDiscord, user_id: int) -> int:
        """The DM channel between the bot and ``user_id`` (type 1; no threads possible)."""
        if user_id not in self._dms:
            cid = self._snowflake()
            self.channels[cid] = DMChannel(id=cid, recipient_id=user_id)
            self._dms[user_id] = cid
        return self._dms[user_id]

    def post_message(
        self: FakeDiscord,
        channel_id: int,
        user_id: int,
        content: str = "",
        *,
        files: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] = (),
        embeds: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    ) -> dict[str, Any]:
        """A member posts a message (files as ``(filename, bytes)``); the bot sees MESSAGE_CREATE.

        ``embeds`` are stored as given: Discord's own unfurls, such as :meth:`image_embed`.
        """
        channel = self._channel(channel_id)
        if channel.guild_id is not None:
            assert (channel.guild_id, user_id) in self.members, "that user is not a member here"
        else:
            assert isinstance(channel, DMChannel) and channel.recipient_id == user_id
        assert content or files or embeds, "Discord refuses an empty message"
        msg = Message(
            id=self._snowflake(),
            channel_id=channel_id,
            timestamp=self._iso(),
            ephemeral=False,
            author_id=user_id,
            content=content,
            embeds=list(embeds),
        )
        msg.attachment_ids = [
            self._store_attachment(channel_id, name, data, "").id for name, data in files
        ]
        self._messages[msg.id] = msg
        if channel_id in self.threads:
            self.threads[channel_id].message_count += 1
        self._dispatch_message_event("MESSAGE_CREATE", msg)
        self._notify()
        return self._render(msg)

    def image_embed(
        self: FakeDiscord, data: bytes, *, url: str = "https://images.example/cat.png"
    ) -> dict[str, Any]:
        """The embed Discord unfurls a link to a picture into: type ``image``, the picture as
        the thumbnail, served from Discord's media proxy (here, this fake's CDN)."""
        cached = self._store_attachment(0, url.rsplit("/", 1)[-1] or "image", data, "")
        proxied = self._attachment_payload(cached)
        thumbnail = {"url": url, "proxy_url": proxied["url"]}
        if cached.width is not None:
            thumbnail.update(width=cached.width, height=cached.height)
        return {"type": "image", "url": url, "thumbnail": thumbnail}

    def delete_message(self: FakeDiscord, channel_id: int, message_id: int) -> None:
        """A user (moderator) deletes a message; the bot sees MESSAGE_DELETE."""
        msg = self._messages[message_id]
        assert msg.channel_id == channel_id, "message is in another channel"
        self._delete(msg)

    # -- lookups ---------------------------------------------------------------------------

    def _channel(self: FakeDiscord, channel_id: int) -> Channel:
        ch = self.channels.get(channel_id) or self.threads.get(channel_id)
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return ch

    def _guild_of(self: FakeDiscord, channel_id: int) -> int | None:
        return self._channel(channel_id).guild_id

    def _bot_permissions(self: FakeDiscord, channel_id: int) -> int:
        ch = self._channel(channel_id)
        if isinstance(ch, DMChannel):
            return rules.DM_PERMISSIONS
        in_thread = isinstance(ch, Thread)
        parent = self.channels[ch.parent_id] if isinstance(ch, Thread) else ch
        assert isinstance(parent, TextChannel), "threads live in guild text channels"
        return rules.effective_permissions(parent.bot_permissions, in_thread=in_thread)

    def _member_permissions(self: FakeDiscord, guild_id: int, user_id: int) -> int:
        roles = self.guilds[guild_id].roles
        perms = roles[guild_id].permissions
        for rid in self.members[guild_id, user_id].roles:
            perms |= roles[rid].permissions
        return rules.effective_permissions(perms, in_thread=False)

    def _filesize_limit(self: FakeDiscord, channel_id: int) -> int:
        """What the bot may upload per file here: the guild's boost tier, 10 MiB in DMs."""
        gid = self._guild_of(channel_id)
        if gid is None:
            return rules.DEFAULT_UPLOAD_LIMIT
        return rules.UPLOAD_LIMIT_BY_TIER[self.guilds[gid].premium_tier]

    def _attachment_size_limit(self: FakeDiscord, channel_id: int, user_id: int) -> int:
        """An interaction's ``attachment_size_limit``: the member's, Nitro included."""
        nitro = rules.NITRO_UPLOAD_LIMIT[self.users[user_id].premium_type]
        return max(self._filesize_limit(channel_id), nitro)
