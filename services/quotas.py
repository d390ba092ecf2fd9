"""Daily quotas: how many generations a member, and a guild, may start per UTC day.

Checked where the per-member cap is, before anything is stored, for commands and buttons alike.
Counts come from the store, so they survive restarts and hold across processes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

from services.clock import discord_relative, utc_now
from services.jobs import QueueRefused
from services.store import GenerationStatus, Store

#: What uses quota: every job that was accepted and not given back. A job cancelled while it
#: waited never reached the API; a failed one delivered nothing, and Reroll retries it, which
#: must not cost the member twice for an outage. (A 504 may have been billed all the same: the
#: operator's account absorbs that rare case rather than the member.)
COUNTED = frozenset(
    {
        GenerationStatus.QUEUED,
        GenerationStatus.RUNNING,
        GenerationStatus.INTERRUPTED,
        GenerationStatus.DONE,
    }
)


class QuotaExceeded(QueueRefused):
    """Today's quota is used up; ``resets_at`` is the next UTC midnight."""

    def __init__(self, user_message: str, resets_at: datetime) -> None:
        super().__init__(user_message)
        self.resets_at = resets_at


class DailyQuotas:
    """``user_limit`` per member and ``guild_limit`` per guild each UTC day; 0 = unlimited."""

    def __init__(
        self,
        store: Store,
        *,
        user_limit: int = 0,
        guild_limit: int = 0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self.user_limit = user_limit
        self.guild_limit = guild_limit
        self._clock = clock

    def today(self) -> tuple[datetime, datetime]:
        """The current UTC day as ``(start, next midnight)``."""
        start = datetime.combine(self._clock().astimezone(UTC).date(), time(), tzinfo=UTC)
        return start, start + timedelta(days=1)

    async def check(self, user_id: int, guild_id: int | None) -> None:
        """Raise :class:`QuotaExceeded` if this member or guild has used today's quota."""
        scopes = []
        if self.user_limit:
            scopes.append((self.user_limit, {"user_id": user_id}, "You've made your"))
        if self.guild_limit and guild_id is not None:
            scopes.append((self.guild_limit, {"guild_id": guild_id}, "This server has used all"))
        if not scopes:
            return
        since, resets_at = self.today()
        for limit, scope, who in scopes:
            used = await self._store.generations.count_since(since=since, statuses=COUNTED, **scope)
            if used >= limit:
                raise QuotaExceeded(
                    f"{who} {limit} images for today. "
                    f"The quota resets {discord_relative(resets_at)} (midnight UTC).",
                    resets_at,
                )
