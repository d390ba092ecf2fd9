"""The spend chart: a PNG of a sensible size, with or without a budget line."""

from __future__ import annotations

import io
from datetime import date, timedelta
from decimal import Decimal

from PIL import Image

from services.charts import spend_chart_png


def test_a_chart_is_a_small_png_for_any_number_of_days():
    for days, budget in ((1, None), (14, Decimal("0.5")), (90, Decimal(0))):
        calendar = [date(2026, 11, 1) + timedelta(days=n) for n in range(days)]
        png = spend_chart_png(calendar, [Decimal(n) / 100 for n in range(days)], budget_usd=budget)
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and image.size == (640, 320)
        assert len(png) < 200_000
