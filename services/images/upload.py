"""Fitting a picture into a channel's upload limit: the original, else the encodings ladder."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Final

from PIL import Image

from services.images.containers import read_container
from services.images.formats import (
    _EXTENSION_OF_TYPE,
    DAMAGED,
    MAX_SOURCE_PIXELS,
    ImageRejected,
    _mb,
    _open,
    _reading,
)
from services.images.pixels import _decode_first_frame, _save, _to_rgb

#: Upload fit (DESIGN §7): PNG, else WebP at this quality, else JPEG at that one, else scale down.
UPLOAD_WEBP_QUALITY: Final = 90
UPLOAD_JPEG_QUALITY: Final = 85
#: Each scale-down step keeps at most this share of the long side...
UPLOAD_SCALE_STEP: Final = 0.85
#: ...and we give up rather than post something with a long side under this.
UPLOAD_MIN_LONG_SIDE: Final = 256
#: Format limits on a side: beyond them the encoders refuse, so those candidates are skipped.
_WEBP_MAX_SIDE: Final = 16383
_JPEG_MAX_SIDE: Final = 65500
#: What a Discord upload may be: every format of the ladder.
#: What may be posted. GIF is kept when it fits (Discord shows it); the ladder never makes one.
UPLOAD_TYPES: Final = frozenset({"image/png", "image/webp", "image/jpeg", "image/gif"})


@dataclass(frozen=True, slots=True)
class EncodedFile:
    """A file that fits an upload limit; ``reencoded`` is False when it is the original bytes."""

    data: bytes = field(repr=False)
    filename: str
    content_type: str
    width: int
    height: int
    reencoded: bool


def _encodings(
    image: Image.Image, *, with_png: bool, types: Collection[str] = UPLOAD_TYPES
) -> Iterator[tuple[bytes, str]]:
    """Candidate files in order of preference (lossless, then the better lossy, then JPEG)."""
    if with_png and "image/png" in types:
        yield _save(image, "PNG", optimize=True), "image/png"
    long_side = max(image.size)
    if long_side <= _WEBP_MAX_SIDE and "image/webp" in types:
        yield _save(image, "WEBP", quality=UPLOAD_WEBP_QUALITY), "image/webp"
    if long_side <= _JPEG_MAX_SIDE and "image/jpeg" in types:
        flat = _to_rgb(image)
        yield _save(flat, "JPEG", quality=UPLOAD_JPEG_QUALITY, optimize=True), "image/jpeg"


def _kept(data: bytes, stem: str, kind: str, width: int, height: int) -> EncodedFile:
    filename = f"{stem}.{_EXTENSION_OF_TYPE[kind]}"
    return EncodedFile(data, filename, kind, width, height, reencoded=False)


def fit_for_upload(
    data: bytes,
    *,
    limit: int,
    stem: str = "result",
    max_source_pixels: int = MAX_SOURCE_PIXELS,
    max_side: int | None = None,
    types: Collection[str] = UPLOAD_TYPES,
) -> EncodedFile:
    """A file within ``limit`` bytes (a channel's upload limit), re-encoding only when needed.

    Order (DESIGN §7): the original bytes; PNG optimised; WebP 90; JPEG 85; then smaller sizes,
    each tried as WebP then JPEG (once lossless has failed, lossy at a larger size beats lossless at
    a smaller one), until one fits or the long side would go under 256 px. A model's input limits
    narrow it: ``max_side`` (scaled down to it first) and ``types`` (the formats it takes).
    """
    if len(data) <= limit:
        # A truncated or damaged file must never be posted: its container proves it whole
        # (~0.3 ms for 1.5 MB) unless it is of a kind only a full decode can vouch for.
        whole = read_container(data)
        if (
            whole is not None
            and whole.width * whole.height <= max_source_pixels
            and whole.content_type in types
            and (max_side is None or max(whole.width, whole.height) <= max_side)
        ):
            return _kept(data, stem, whole.content_type, whole.width, whole.height)
    image, kind = _open(data, max_source_pixels)
    with image:
        width, height = image.size
        # Decoded even when kept as it is: a truncated or corrupt file must not be posted.
        frame = _decode_first_frame(image, draft_to=None)
        too_long = max_side is not None and max(width, height) > max_side
        if len(data) <= limit and kind in types and not too_long:
            return EncodedFile(
                data=data,
                filename=f"{stem}.{_EXTENSION_OF_TYPE[kind]}",
                content_type=kind,
                width=width,
                height=height,
                reencoded=False,
            )
        with _reading(DAMAGED, "damaged"):
            source = _to_rgb(frame, keep_alpha=True)
    if max_side is not None and max(source.size) > max_side:
        shrink = max_side / max(source.size)
        size = (max(1, int(source.width * shrink)), max(1, int(source.height * shrink)))
        source = source.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    current = source
    with_png = True
    while True:
        smallest = len(data)
        for encoded, encoded_type in _encodings(current, with_png=with_png, types=types):
            if len(encoded) <= limit:
                return EncodedFile(
                    data=encoded,
                    filename=f"{stem}.{_EXTENSION_OF_TYPE[encoded_type]}",
                    content_type=encoded_type,
                    width=current.width,
                    height=current.height,
                    reencoded=True,
                )
            smallest = min(smallest, len(encoded))
        long_side = max(current.size)
        if long_side <= UPLOAD_MIN_LONG_SIDE:
            break
        # Bytes grow roughly with area: jump towards the size that should fit, but by at least one
        # step, so a far-off limit takes a few tries rather than dozens.
        factor = min(UPLOAD_SCALE_STEP, 0.95 * math.sqrt(max(0, limit) / smallest))
        factor = max(factor, UPLOAD_MIN_LONG_SIDE / long_side)
        size = (
            max(1, round(current.width * factor)),
            max(1, round(current.height * factor)),
        )
        current = source.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        with_png = False
    raise ImageRejected(
        f"That picture is too large to upload here even after compressing "
        f"(this channel takes files up to {_mb(limit)}).",
        reason="upload_too_large",
    )
