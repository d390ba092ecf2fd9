"""What a server's jobs did over a window: outcomes, models and how long a member waited.

Pure arithmetic over rows the store returns, so ``/fluxbot-stats`` shows figures that a test can
check against a seeded database.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from services.store import GenerationStatus

Row = tuple[GenerationStatus, str, datetime, datetime | None]


@dataclass(frozen=True)
class JobStats:
    by_outcome: Counter[GenerationStatus] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    #: Command (or press) to result posted, of the jobs that finished with an image.
    p50_seconds: float | None = None
    p95_seconds: float | None = None

    @property
    def total(self) -> int:
        return sum(self.by_outcome.values())


def nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def job_stats(rows: Iterable[Row], *, since: datetime | None = None) -> JobStats:
    """The rows created at or after ``since`` (all of them without it), summed up."""
    outcomes: Counter[GenerationStatus] = Counter()
    models: Counter[str] = Counter()
    waits: list[float] = []
    for status, model, created_at, finished_at in rows:
        if since is not None and created_at < since:
            continue
        outcomes[status] += 1
        models[model] += 1
        if status is GenerationStatus.DONE and finished_at is not None:
            waits.append((finished_at - created_at).total_seconds())
    return JobStats(outcomes, models, nearest_rank(waits, 0.50), nearest_rank(waits, 0.95))
