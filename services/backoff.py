"""One backoff rule for everything that waits after a failure (API retries, the job queue)."""

from __future__ import annotations

from collections.abc import Callable


def equal_jitter(
    retry_index: int, *, base: float, cap: float, random: Callable[[], float]
) -> float:
    """Seconds to wait before retry ``retry_index`` (0-based): uniform in ``[d/2, d]``.

    ``d = min(cap, base * 2**retry_index)``. Half fixed, half random: waits still grow, yet many
    callers that failed together do not come back together.
    """
    ceiling = min(cap, base * 2.0**retry_index)
    return ceiling / 2 + random() * ceiling / 2
