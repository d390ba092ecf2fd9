"""A loopback fake of Discord that an unmodified discord.py client logs into.

One aiohttp app on 127.0.0.1 serves REST under ``/api/v10``, the gateway at ``/gateway`` and
signed attachment URLs at ``/attachments/...``. It behaves like Discord as documented — the
3 s interaction deadline, 15 min webhook tokens, expiring CDN URLs, message and permission
limits, per-channel rate limits with Discord's headers, the separate limit on edits of hour-old
messages (30046), 403 50001 where the bot can't see, voice channels' chat (Connect to read),
archived and locked threads, upload limits by boost tier while an interaction reports the
member's own (Nitro) limit — and is stricter where unsure, so a test fails where Discord would.
Each rule names its source where it is enforced. Every 4xx it answers is also kept in
:attr:`FakeDiscord.rejections`.

Set-up methods (``add_guild``...) are synchronous. Called after the client connected they
also dispatch GUILD_CREATE / CHANNEL_CREATE / THREAD_CREATE, so either order works.

:class:`FakeDiscord` (``server``) is assembled from one mixin per concern:

- ``state``: the stored records (guilds, channels, threads, members, messages...);
- ``world``: test set-up of those records and lookups; ``payloads``: their JSON;
- ``messages``: create/edit/delete under Discord's limits;
- ``middleware``: recording, parsing and authenticating each REST request;
- ``ratelimits``: per-route buckets and scripted 429s;
- ``rest``: the bot's REST routes; ``commands``: command sync and its rules;
- ``gateway``: the websocket; ``cdn``: attachments and their signed URLs;
- ``interactions``: what a user does; ``responses``: how the bot may answer;
- ``rules`` and ``errors``: Discord's limits as pure checks, and its error answers.
"""

from tests.fakes.discord import rules
from tests.fakes.discord.errors import ApiError
from tests.fakes.discord.interactions import (
    INTERACTION_DEADLINE,
    WEBHOOK_TOKEN_LIFETIME,
    FakeInteraction,
)
from tests.fakes.discord.middleware import FakeRequest, RequestObserver
from tests.fakes.discord.rules import DEFAULT_BOT_PERMISSIONS, DEFAULT_MEMBER_PERMISSIONS
from tests.fakes.discord.server import FakeDiscord

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
