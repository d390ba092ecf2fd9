"""What each check on a picture costs: CPU per call on the benchmark's photo-like result.

A result posted as it is, or a member's plain upload re-hosted as it is, must still be proven a
whole picture. Decoding it proves that; its container proves it for less (see
services/images/containers.py). This measures both on the same files, so the choice between
them is made on figures: ``python bench/checks.py`` alone, or as part of ``make bench``.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from bench.harness import photo_png
from services.images import fit_for_upload, normalise_reference
from services.images.containers import read_container
from services.images.formats import MAX_SOURCE_PIXELS, _open
from services.images.pixels import _decode_first_frame, _to_rgb

LIMIT = 10 * 1024 * 1024


def cpu_ms(call: Callable[[], object], repeat: int = 15) -> float:
    """Median CPU time of one call, in ms (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        call()
        times.append(time.thread_time() - started)
    return statistics.median(times) * 1000


def decoded_upright(data: bytes) -> None:
    """What fit_for_upload did to every result it kept, before containers: open, decode frame 0,
    turn it upright (a copy)."""
    image, _ = _open(data, MAX_SOURCE_PIXELS)
    with image:
        _decode_first_frame(image, draft_to=None)


def encoded(data: bytes, format_name: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(buffer, format_name, **options)
    return buffer.getvalue()


def costs(width: int = 1024, height: int = 768) -> list[tuple[str, str, float]]:
    """(file, check, CPU ms) rows."""
    png = photo_png(width, height)
    jpeg = encoded(png, "JPEG", quality=92)
    webp = encoded(png, "WEBP", quality=90)
    rows: list[tuple[str, str, float]] = []
    for label, data in (("PNG", png), ("JPEG q92", jpeg), ("WebP q90", webp)):
        name = f"{label} {width}×{height}, {len(data) / 1e6:.2f} MB"

        def add(check: str, call: Callable[[], object]) -> None:
            rows.append((name, check, cpu_ms(call)))  # noqa: B023 (called in this iteration)

        add("result before: decode, upright copy", lambda d=data: decoded_upright(d))
        add("result now: container (fit_for_upload)", lambda d=data: fit_for_upload(d, limit=LIMIT))
        if data is png:
            add("  of which chunk CRCs and structure", lambda: read_container(png))
            add("reference before: decode (bytes reused)", lambda: reference_before(png))
            add("reference now: container (CRCs)", lambda: normalise_reference(png))
        if data is jpeg:
            add("reference before: decode, encode q92", lambda: reference_before(jpeg))
            add("reference now: container", lambda: normalise_reference(jpeg))
    return rows


def reference_before(data: bytes) -> bytes:
    """A plain reference until now: decoded and upright; a PNG's bytes then reused, a JPEG
    encoded again at quality 92."""
    image, kind = _open(data, MAX_SOURCE_PIXELS)
    with image:
        frame = _to_rgb(_decode_first_frame(image, draft_to=None))
    if kind == "image/png":
        return data
    buffer = io.BytesIO()
    frame.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def table(rows: list[tuple[str, str, float]]) -> str:
    width = max(len(check) for _, check, _ in rows)
    lines, last = [], ""
    for name, check, ms in rows:
        if name != last:
            lines.append(f"  {name}")
            last = name
        lines.append(f"    {check.ljust(width)}  {ms:7.3f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    print("CPU per call (median of 15, one thread):")
    print(table(costs()))
