"""The spend chart of ``/fluxbot-stats``: a small PNG, drawn off the event loop.

matplotlib's object-oriented API with the Agg canvas: no pyplot, so no global figure state and no
GUI backend, and each call owns its figure (safe on the image pool's threads). It is imported on
first use, so a bot that is never asked for stats never pays for loading it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date
from decimal import Decimal


def spend_chart_png(
    days: Sequence[date],
    usd: Sequence[Decimal],
    *,
    budget_usd: Decimal | None = None,
    title: str = "Spend per day (UTC)",
) -> bytes:
    """Bars of USD per day, with the daily budget as a dashed line when there is one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = range(len(days))
    axes.bar(positions, [float(value) for value in usd], color="#5865F2")
    if budget_usd is not None:
        axes.axhline(float(budget_usd), color="#ED4245", linestyle="--", label="daily budget")
        axes.legend(loc="upper left", frameon=False)
    step = max(1, len(days) // 7)
    axes.set_xticks(list(positions)[::step], [day.strftime("%d %b") for day in days][::step])
    axes.set_ylabel("USD")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
