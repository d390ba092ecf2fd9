"""Pixels in and out, shared by references and uploads: frame 0 decoded upright, RGB, encoding."""

from __future__ import annotations

import io

from PIL import Image, ImageFile, ImageOps

from services.images.formats import _PILLOW_ERRORS, DAMAGED, _reading


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info


def _to_rgb(image: Image.Image, *, keep_alpha: bool = False) -> Image.Image:
    """RGB (or RGBA when kept), transparency flattened on white, 16-bit grey scaled not clipped."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # Pillow's own conversion clips 16-bit values at 255, turning 16-bit greys white.
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if image.mode in {"La", "RGBa"}:
        image = image.convert("RGBA" if image.mode == "RGBa" else "LA")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        if keep_alpha:
            return rgba
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _decode_first_frame(
    image: ImageFile.ImageFile, *, draft_to: tuple[int, int] | None
) -> Image.Image:
    """Fully decode frame 0 (truncation fails here), upright per EXIF."""
    with _reading(DAMAGED, "damaged"):
        if draft_to is not None and image.format == "JPEG":
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far less memory for big photos.
            image.draft("RGB", draft_to)
        image.load()
    try:
        upright = ImageOps.exif_transpose(image)
    except _PILLOW_ERRORS:
        # Broken metadata is no reason to refuse the pixels: they are used as stored.
        return image
    return upright if upright is not None else image


def _save(image: Image.Image, format_name: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format_name, **options)
    return buffer.getvalue()
