"""Discord's per-route rate limits, enforced, plus 429s a test scripts in advance.

Buckets are keyed like Discord's: the route (method and template) plus its top-level resource,
the "major parameter" (channel, guild or webhook), so every channel has its own budget
(https://discord.com/developers/docs/topics/rate-limits). They are announced in the
``X-RateLimit-*`` headers, so a client that honours them is never refused; one that ignores them
gets a 429 that lands in ``FakeDiscord.rejections``. Scripted 429s land in
``FakeDiscord.rate_limited`` instead: they are the test's doing, not the bot's fault.

Discord publishes no numbers ("rate limits should not be hard coded"), so the fake uses what bots
commonly see (DESIGN §5): per channel, 5 message sends, 5 message edits and 5 thread creations
(both thread routes share one bucket) per 5 s; other routes get ``bucket_limit`` per
``bucket_window``. Edits of messages older than an hour have their own, smaller, undocumented
limit, answered as a 429 with code 30046 ("Maximum number of edits to messages older than 1 hour
reached. Try again later", https://discord.com/developers/docs/topics/opcodes-and-status-codes;
discord-api-docs issue 4413: "We dont put rate limit details in our documentation"): the fake
allows one such edit per channel per ``old_edit_window``.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.discord.middleware import FakeRequest
    from tests.fakes.discord.server import FakeDiscord
    from tests.fakes.discord.state import Message

_MAJOR_PARAMS = ("channel_id", "guild_id", "webhook_id", "webhook_token")
_API = "/api/v10"
#: Routes with Discord's per-channel write limits, and the bucket each counts against.
WRITE_BUCKETS = {
    ("POST", "/channels/{channel_id}/messages"): "send",
    ("PATCH", "/channels/{channel_id}/messages/{message_id}"): "edit",
    ("POST", "/channels/{channel_id}/messages/{message_id}/threads"): "thread",
    ("POST", "/channels/{channel_id}/threads"): "thread",
}
#: Discord's age limit past which an edit counts against the 30046 limit.
OLD_MESSAGE_SECONDS = 3600
OLD_EDIT_MESSAGE = "Maximum number of edits to messages older than 1 hour reached. Try again later"


@dataclass
class ScriptedRateLimit:
    method: str
    path: re.Pattern[str]
    retry_after: float
    times: int


@dataclass
class Bucket:
    """One window of a route bucket: requests counted until ``resets_at`` (monotonic)."""

    resets_at: float
    count: int = 0


class RateLimited(Exception):
    def __init__(
        self, retry_after: float, *, scripted: bool, code: int | None = None, limit: int = 0
    ) -> None:
        super().__init__(retry_after)
        self.retry_after, self.scripted = round(retry_after, 3), scripted
        #: Discord's JSON error code for limits that have one (30046); ``limit``: the bucket's.
        self.code, self.limit = code, limit


class RateLimitsMixin:
    """Rate limiting of FakeDiscord (``self`` is always a FakeDiscord)."""

    def rate_limit_next(
        self: FakeDiscord, method: str, path_regex: str, retry_after: float = 0.05, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests matching with 429 (path relative to /api/v10)."""
        script = ScriptedRateLimit(method.upper(), re.compile(path_regex), retry_after, times)
        self._scripted_429.append(script)

    def _scripted_rate_limit(self: FakeDiscord, method: str, path: str) -> None:
        for script in self._scripted_429:
            if script.times > 0 and script.method == method and script.path.search(path):
                script.times -= 1
                raise RateLimited(script.retry_after, scripted=True)

    def _route_limit(self: FakeDiscord, method: str, template: str) -> tuple[str, int, float]:
        """The bucket's name (its ``X-RateLimit-Bucket`` seed), limit and window for a route."""
        write = WRITE_BUCKETS.get((method, template.removeprefix(_API)))
        if write is not None and self.channel_write_limit is not None:
            return f"channel {write}", *self.channel_write_limit
        return f"{method} {template}", self.bucket_limit, self.bucket_window

    def _count(self: FakeDiscord, key: str, window: float) -> tuple[Bucket, float]:
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None or now >= bucket.resets_at:
            bucket = self._buckets[key] = Bucket(now + window)
        bucket.count += 1
        return bucket, max(bucket.resets_at - now, 0.0)

    def _rate_limit_headers(self: FakeDiscord, request: web.Request) -> dict[str, str]:
        """Per-route buckets (template + major parameters), like Discord's, and enforce them."""
        info = request.match_info
        template = info.route.resource.canonical if info.route.resource else request.path
        name, limit, window = self._route_limit(request.method, template)
        bucket_hash = hashlib.sha1(name.encode()).hexdigest()[:16]
        key = bucket_hash + ":" + ":".join(info.get(p, "") for p in _MAJOR_PARAMS)
        bucket, reset_after = self._count(key, window)
        if bucket.count > limit:
            raise RateLimited(reset_after, scripted=False, limit=limit)
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - bucket.count),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after + 0.0005:.3f}",
            "X-RateLimit-Bucket": bucket_hash,
        }

    def _old_message_edit(self: FakeDiscord, channel_id: int, msg: Message) -> None:
        """Count an edit of a message older than an hour (fake clock) against its own limit."""
        created = datetime.fromisoformat(msg.timestamp).timestamp()
        if self.now() - created < OLD_MESSAGE_SECONDS:
            return
        self.old_message_edits += 1
        bucket, reset_after = self._count(f"old-edit:{channel_id}", self.old_edit_window)
        if bucket.count > 1:
            raise RateLimited(reset_after, scripted=False, code=30046)

    def _rate_limited(
        self: FakeDiscord, entry: FakeRequest, rl: RateLimited, headers: dict[str, str]
    ) -> web.Response:
        """The 429 answer; adds its headers to ``headers``, which the middleware sends."""
        entry.status = 429
        body: dict[str, Any] = {
            "message": "You are being rate limited.",
            "retry_after": rl.retry_after,
            "global": False,
        }
        if rl.code is not None:
            body.update(code=rl.code, message=OLD_EDIT_MESSAGE)
        if rl.scripted:
            self.rate_limited.append(entry)
        else:
            self.rejections.append({"status": 429, "request": entry, **body})
        headers.update(
            {"Retry-After": str(max(1, round(rl.retry_after))), "X-RateLimit-Scope": "user"}
        )
        if rl.code is None:  # a sub-limit leaves the route's own bucket as it was
            limit = rl.limit or self.bucket_limit
            headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": str(limit)})
        return self._json(body, 429)
