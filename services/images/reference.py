"""The reference image the API gets: first frame, upright, opaque, within budget, on FLUX's grid."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from PIL import Image

from services.images.containers import read_container
from services.images.formats import (
    _EXTENSION_OF_TYPE,
    DAMAGED,
    MAX_SOURCE_PIXELS,
    ImageRejected,
    _open,
    _reading,
)
from services.images.pixels import _decode_first_frame, _save, _to_rgb

#: A prepared reference is PNG unless that is bigger than this, then JPEG at this quality.
REFERENCE_PNG_MAX_BYTES: Final = 4 * 1024 * 1024
REFERENCE_JPEG_QUALITY: Final = 92
#: FLUX works on 16-pixel cells (VAE downsamples ×8, the transformer packs 2×2 latents), see
#: :func:`_target_size`.
DIMENSION_MULTIPLE: Final = 16


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A reference image ready to re-host and send to the API."""

    data: bytes = field(repr=False)
    width: int
    height: int
    content_type: str
    filename: str


def _target_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Largest size within ``max_pixels`` with the same aspect, never larger than the source.

    Sides are rounded down to multiples of 16: FLUX's VAE downsamples ×8 and its transformer packs
    2×2 latent patches, so its pipelines snap other sizes to 16 themselves (resize or crop, their
    choice). Rounding here means the result has exactly the reference's size and we choose how:
    a centre crop of under 16 px, no distortion. Sides already under 16 px are kept as they are
    (rounding would give 0 and we never upscale).
    """
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))

    def snap(side: float) -> int:
        whole = int(side)
        return whole - whole % DIMENSION_MULTIPLE if whole >= DIMENSION_MULTIPLE else max(1, whole)

    target_w, target_h = snap(width * scale), snap(height * scale)
    # Extreme aspect ratios: a side held at 1 px can push the other over budget; cut that one.
    if target_w * target_h > max_pixels:
        if target_w <= target_h:
            target_h = snap(min(height, max_pixels / target_w))
        else:
            target_w = snap(min(width, max_pixels / target_h))
    return target_w, target_h


def _cover_box(
    width: int, height: int, target: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The centred source region with the target's aspect (what ``resize(box=...)`` should read)."""
    target_w, target_h = target
    cover = max(target_w / width, target_h / height)
    box_w, box_h = min(width, target_w / cover), min(height, target_h / cover)
    left, top = (width - box_w) / 2, (height - box_h) / 2
    return (left, top, left + box_w, top + box_h)


def normalise_reference(
    data: bytes, *, max_megapixels: float = 1.0, max_source_pixels: int = MAX_SOURCE_PIXELS
) -> PreparedImage:
    """The check that needs the bytes, and the image the API gets.

    Refuses non-images (whatever their name), bombs (from the header), empty and truncated files.
    Keeps the first frame of an animation, turns it upright, flattens transparency on white,
    scales it down to ``max_megapixels`` (cost grows with pixels; 1 MP = 10⁶ pixels, below
    1024², so a rounding-up per-megapixel bill stays at one unit) and encodes it as PNG, or JPEG
    if the PNG is over 4 MiB.
    """
    if not max_megapixels > 0:
        raise ValueError("max_megapixels must be positive")
    max_pixels = max(1, int(max_megapixels * 1_000_000))
    if (reused := _reusable(data, min(max_pixels, max_source_pixels))) is not None:
        return reused
    image, kind = _open(data, max_source_pixels)
    with image:
        raw_w, raw_h = image.size
        scale = min(1.0, math.sqrt(max_pixels / (raw_w * raw_h)))
        draft_to = (math.ceil(raw_w * scale), math.ceil(raw_h * scale)) if scale < 1 else None
        frame = _decode_first_frame(image, draft_to=draft_to)
        with _reading(DAMAGED, "damaged"):
            rgb = _to_rgb(frame)
            target = _target_size(rgb.width, rgb.height, max_pixels)
            if target != rgb.size:
                rgb = rgb.resize(
                    target,
                    Image.Resampling.LANCZOS,
                    box=_cover_box(rgb.width, rgb.height, target),
                    reducing_gap=3.0,
                )
    if kind == "image/jpeg":
        encoded = _save(rgb, "JPEG", quality=REFERENCE_JPEG_QUALITY)  # photos stay photos
        content_type = "image/jpeg"
    else:
        # Fastest zlib level: the file is read once by the API, so speed beats a smaller size.
        encoded, content_type = _save(rgb, "PNG", compress_level=1), "image/png"
        if len(encoded) > REFERENCE_PNG_MAX_BYTES:
            encoded = _save(rgb, "JPEG", quality=REFERENCE_JPEG_QUALITY)
            content_type = "image/jpeg"
    return PreparedImage(
        data=encoded,
        width=rgb.width,
        height=rgb.height,
        content_type=content_type,
        filename=f"reference.{_EXTENSION_OF_TYPE[content_type]}",
    )


def _reusable(data: bytes, max_pixels: int) -> PreparedImage | None:
    """The upload itself, when it needs no change and its container proves it whole.

    A plain PNG or JPEG (no metadata, no transparency, one frame: see
    :class:`~services.images.containers.WholeFile`) already within the pixel budget and on the
    16-pixel grid would come out of the decode, resize and encode as the same picture. Its
    container proves it whole (~0.3 ms for a 1.5 MB PNG, ~0.1 ms for a JPEG, against ~12 ms to
    decode the PNG): every chunk's CRC or segment's length intact, nothing after the end. Pixel
    data broken behind valid checksums is no accident; the API refuses such a file (a 400, not
    billed) and the card says so. Anything else is decoded and encoded again, so no bytes of a
    member's file but those of a plain picture are ever re-hosted: no trailing data, no unknown
    chunk, no metadata.
    """
    try:
        whole = read_container(data)
    except ImageRejected:
        return None  # cut short or altered: decoding decides whether the pixels are all there
    if (
        whole is None
        or not whole.plain
        or len(data) > REFERENCE_PNG_MAX_BYTES
        or _target_size(whole.width, whole.height, max_pixels) != (whole.width, whole.height)
    ):
        return None
    extension = _EXTENSION_OF_TYPE[whole.content_type]
    return PreparedImage(
        data=data,
        width=whole.width,
        height=whole.height,
        content_type=whole.content_type,
        filename=f"reference.{extension}",
    )
