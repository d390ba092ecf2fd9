"""The fake's records as Discord's JSON, in the shapes discord.py parses.

Rendering needs the whole world (a message's author and mentions, a channel's overwrite for
the bot, freshly signed attachment URLs), so it lives on the server rather than the records.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.fakes.discord import rules
from tests.fakes.discord.state import DMChannel, Thread, VoiceChannel

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord
    from tests.fakes.discord.state import Message


class PayloadsMixin:
    """Payload rendering of FakeDiscord (``self`` is always a FakeDiscord)."""

    def _member_payload(self: FakeDiscord, guild_id: int, user_id: int) -> dict[str, Any]:
        return {
            "user": self.users[user_id].payload(),
            "roles": [str(r) for r in self.members[guild_id, user_id].roles],
            "joined_at": self.guilds[guild_id].joined_at,
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

    def _channel_payload(self: FakeDiscord, channel_id: int) -> dict[str, Any]:
        ch = self._channel(channel_id)
        if isinstance(ch, DMChannel):
            return {
                "id": str(ch.id),
                "type": 1,
                "recipients": [self.users[ch.recipient_id].payload()],
                "last_message_id": None,
                "flags": 0,
            }
        if isinstance(ch, Thread):
            return {
                "id": str(ch.id),
                "type": 11,
                "guild_id": str(ch.guild_id),
                "parent_id": str(ch.parent_id),
                "owner_id": str(ch.owner_id),
                "name": ch.name,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "message_count": ch.message_count,
                "member_count": 1,
                "total_message_sent": ch.message_count,
                "flags": 0,
                "thread_metadata": {
                    "archived": ch.archived,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": ch.created_at,
                    "locked": ch.locked,
                    "create_timestamp": ch.created_at,
                },
            }
        granted = ch.bot_permissions
        overwrite = {
            "id": str(self.bot_id),
            "type": 1,
            "allow": str(granted),
            "deny": str(rules.ALL_PERMISSIONS & ~granted),
        }
        payload: dict[str, Any] = {
            "id": str(ch.id),
            "type": 0,
            "guild_id": str(ch.guild_id),
            "name": ch.name,
            "position": ch.position,
            "permission_overwrites": [overwrite],
            "nsfw": ch.nsfw,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        if isinstance(ch, VoiceChannel):
            payload.update(type=2, bitrate=64000, user_limit=0, rtc_region=None)
        return payload

    def _guild_payload(self: FakeDiscord, guild_id: int) -> dict[str, Any]:
        g = self.guilds[guild_id]
        members = [uid for (gid, uid) in self.members if gid == guild_id]
        return {
            "id": str(guild_id),
            "name": g.name,
            "icon": None,
            "owner_id": str(self.owner.id),
            "unavailable": False,
            "premium_tier": g.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "features": [],
            "joined_at": g.joined_at,
            "large": False,
            "member_count": len(members),
            "roles": [r.payload() for r in g.roles.values()],
            "emojis": [],
            "stickers": [],
            "channels": [
                self._channel_payload(cid)
                for cid, c in self.channels.items()
                if c.guild_id == guild_id
            ],
            "threads": [
                self._channel_payload(tid)
                for tid, t in self.threads.items()
                if t.guild_id == guild_id
            ],
            "members": [self._member_payload(guild_id, uid) for uid in members],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _render(self: FakeDiscord, msg: Message) -> dict[str, Any]:
        """A stored message as Discord returns it, with freshly signed attachment URLs."""
        attachments = [self._attachment_payload(self._attachments[a]) for a in msg.attachment_ids]
        by_name = {a["filename"]: a for a in attachments}
        embeds = json.loads(json.dumps(msg.embeds))
        for embed in embeds:
            embed.setdefault("type", "rich")
            for key in ("image", "thumbnail"):
                url = (embed.get(key) or {}).get("url", "")
                if url.startswith("attachment://") and url[13:] in by_name:
                    att = by_name[url[13:]]
                    embed[key].update(url=att["url"], proxy_url=att["proxy_url"])
                    embed[key].update({k: att[k] for k in ("width", "height") if k in att})
        out = {
            "id": str(msg.id),
            "type": msg.type,
            "channel_id": str(msg.channel_id),
            "author": self.users[msg.author_id or self.bot_id].payload(),
            "content": msg.content,
            "timestamp": msg.timestamp,
            "edited_timestamp": msg.edited_timestamp,
            "tts": False,
            "mention_everyone": msg.mention_everyone,
            "mentions": [self.users[u].payload() for u in msg.mentions],
            "mention_roles": [str(r) for r in msg.mention_roles],
            "attachments": attachments,
            "embeds": embeds,
            "components": msg.components,
            "pinned": False,
            "flags": msg.flags,
            "allowed_mentions": msg.allowed_mentions,
        }
        for key in ("webhook_id", "application_id", "interaction_metadata"):
            if getattr(msg, key) is not None:
                out[key] = getattr(msg, key)
        if msg.id in self.threads:
            out["thread"] = self._channel_payload(msg.id)
        return out
