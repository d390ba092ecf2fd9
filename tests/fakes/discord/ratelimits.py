"""Discord's per-route rate limits, enforced, plus 429s a test scripts in advance.

Buckets are keyed like Discord's (route template plus major parameters) and announced in the
``X-RateLimit-*`` headers, so a client that honours them is never refused; one that ignores
them gets a 429 that lands in ``FakeDiscord.rejections``. Scripted 429s land in
``FakeDiscord.rate_limited`` instead: they are the test's doing, not the bot's fault.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.discord.middleware import FakeRequest
    from tests.fakes.discord.server import FakeDiscord

_MAJOR_PARAMS = ("channel_id", "guild_id", "webhook_id", "webhook_token")


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
    def __init__(self, retry_after: float, *, scripted: bool) -> None:
        super().__init__(retry_after)
        self.retry_after, self.scripted = round(retry_after, 3), scripted


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

    def _rate_limit_headers(self: FakeDiscord, request: web.Request) -> dict[str, str]:
        """Per-route buckets (template + major parameters), like Discord's, and enforce them."""
        info = request.match_info
        template = info.route.resource.canonical if info.route.resource else request.path
        bucket_hash = hashlib.sha1(f"{request.method} {template}".encode()).hexdigest()[:16]
        key = bucket_hash + ":" + ":".join(info.get(p, "") for p in _MAJOR_PARAMS)
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None or now >= bucket.resets_at:
            bucket = self._buckets[key] = Bucket(now + self.bucket_window)
        bucket.count += 1
        reset_after = max(bucket.resets_at - now, 0.0)
        if bucket.count > self.bucket_limit:
            raise RateLimited(reset_after, scripted=False)
        return {
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": str(self.bucket_limit - bucket.count),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after + 0.0005:.3f}",
            "X-RateLimit-Bucket": bucket_hash,
        }

    def _rate_limited(
        self: FakeDiscord, entry: FakeRequest, rl: RateLimited, headers: dict[str, str]
    ) -> web.Response:
        """The 429 answer; adds its headers to ``headers``, which the middleware sends."""
        entry.status = 429
        body = {
            "message": "You are being rate limited.",
            "retry_after": rl.retry_after,
            "global": False,
        }
        if rl.scripted:
            self.rate_limited.append(entry)
        else:
            self.rejections.append({"status": 429, "request": entry, **body})
        headers.update(
            {"Retry-After": str(max(1, round(rl.retry_after))), "X-RateLimit-Scope": "user"}
        )
        headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": str(self.bucket_limit)})
        return self._json(body, 429)
