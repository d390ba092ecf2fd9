"""Aspect ratios and output sizes: the arithmetic some models need from the reference's size."""

from __future__ import annotations

import math

from services.parameters import ASPECT_RATIO

#: The ratios the editing models take (the spec's choices without "source").
ASPECT_RATIOS: tuple[str, ...] = tuple(c for c in ASPECT_RATIO.choices if c != ASPECT_RATIO.default)


def ratio_value(ratio: str) -> float:
    """``"16:9"`` -> 1.777…"""
    width, _, height = ratio.partition(":")
    return int(width) / int(height)


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The listed ratio closest to ``width:height``, compared on a log scale so 2:1 and 1:2 are
    equally far from 1:1; the first listed wins a tie."""
    if width <= 0 or height <= 0:
        raise ValueError(f"not a picture size: {width}×{height}")
    target = math.log(width / height)
    return min(ASPECT_RATIOS, key=lambda ratio: abs(math.log(ratio_value(ratio)) - target))


def fitted_size(
    ratio: float, area: float, *, minimum: int, maximum: int, step: int
) -> tuple[int, int]:
    """About ``area`` pixels at ``ratio``, each side within ``minimum``–``maximum`` and a
    multiple of ``step`` (sides are scaled together first, so the shape holds where it can)."""
    width, height = math.sqrt(area * ratio), math.sqrt(area / ratio)
    shrink = min(1.0, maximum / width, maximum / height)
    width, height = width * shrink, height * shrink
    grow = max(1.0, minimum / width, minimum / height)
    width, height = width * grow, height * grow

    def snap(side: float) -> int:
        return min(maximum, max(minimum, round(side / step) * step))

    return snap(width), snap(height)
