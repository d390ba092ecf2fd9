"""Wall-clock time for the whole bot: always timezone-aware UTC, so quotas and timeouts agree."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def discord_relative(moment: datetime) -> str:
    """Discord's ``<t:UNIX:R>`` markup ("in 5 hours", in the reader's own time zone)."""
    return f"<t:{int(moment.timestamp())}:R>"
