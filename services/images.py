"""Every Pillow operation of the bot: checking pictures, preparing references, fitting uploads.

All functions are synchronous and CPU-bound; callers run them on a worker thread. They keep
no state between calls and change no Pillow globals, so any number may run at once. Whatever bytes
they are given, the only exception they raise for bad input is :class:`ImageRejected`, whose
``user_message`` can be shown to a Discord member as it is.

Decompression bombs are refused from the header's dimensions before any pixel is decoded (our own
limit, ``max_source_pixels``, below Pillow's global ``MAX_IMAGE_PIXELS``, which we leave alone), and
truncated files fail because Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off and every image is
fully loaded.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from PIL import Image, ImageFile, ImageOps

# Register Pillow's plugins now, once, rather than lazily inside the first calls made from threads.
Image.init()

#: Content types we accept, as Discord declares them and as our sniffer names them.
ACCEPTED_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
#: Biggest attachment we download (checked on the declared size before answering).
MAX_ATTACHMENT_BYTES: Final = 20 * 1024 * 1024
#: Above this the header is enough to refuse: decoding would cost hundreds of MB (DESIGN §7).
MAX_SOURCE_PIXELS: Final = 50_000_000
#: A prepared reference is PNG unless that is bigger than this, then JPEG at this quality.
REFERENCE_PNG_MAX_BYTES: Final = 4 * 1024 * 1024
REFERENCE_JPEG_QUALITY: Final = 92
#: FLUX works on 16-pixel cells (VAE downsamples ×8, the transformer packs 2×2 latents), see
#: :func:`_target_size`.
DIMENSION_MULTIPLE: Final = 16
#: Upload fit (DESIGN §7): PNG, else WebP at this quality, else JPEG at that one, else scale down.
UPLOAD_WEBP_QUALITY: Final = 90
UPLOAD_JPEG_QUALITY: Final = 85
#: Each scale-down step keeps at most this share of the long side...
UPLOAD_SCALE_STEP: Final = 0.85
#: ...and we give up rather than post something with a long side under this.
UPLOAD_MIN_LONG_SIDE: Final = 256

_MIB: Final = 1024 * 1024
#: Format limits on a side: beyond them the encoders refuse, so those candidates are skipped.
_WEBP_MAX_SIDE: Final = 16383
_JPEG_MAX_SIDE: Final = 65500
_FORMAT_OF_TYPE: Final = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}
_EXTENSION_OF_TYPE: Final = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}
_TYPE_OF_EXTENSION: Final = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "jfif": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}
#: Non-standard names some clients declare for accepted types.
_TYPE_ALIASES: Final = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
#: Pillow's plugins signal hostile or broken input with any of these (its decoders are parsers of
#: untrusted data and are not consistent about which): all mean "cannot use this picture".
_PILLOW_ERRORS: Final = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ArithmeticError,
    MemoryError,
    Image.DecompressionBombError,
    # Warnings are exceptions only when turned into errors (as test runs may): Pillow warns about
    # corrupt metadata and, between MAX_IMAGE_PIXELS and twice that, about bombs.
    UserWarning,
    Image.DecompressionBombWarning,
)

_ACCEPTED_WORDS: Final = "Attach a PNG, JPEG, WebP or GIF."
NOT_AN_IMAGE: Final = f"That file isn't a picture I can read. {_ACCEPTED_WORDS}"
EMPTY_FILE: Final = "That file is empty. Attach the picture again."
DAMAGED: Final = (
    "That picture is damaged or incomplete (maybe the upload was cut off). "
    "Try attaching it again, or save it again as PNG or JPEG."
)


class ImageRejected(ValueError):
    """Input we cannot use; ``user_message`` says what was wrong and what to do, in plain words.

    ``reason`` is a short stable code for logs and tests (``not_image``, ``empty``, ``too_big``,
    ``too_many_pixels``, ``damaged``, ``upload_too_large``).
    """

    def __init__(self, user_message: str, *, reason: str) -> None:
        super().__init__(f"{reason}: {user_message}")
        self.user_message = user_message
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A reference image ready to re-host and send to the API."""

    data: bytes = field(repr=False)
    width: int
    height: int
    content_type: str
    filename: str


@dataclass(frozen=True, slots=True)
class EncodedFile:
    """A file that fits an upload limit; ``reencoded`` is False when it is the original bytes."""

    data: bytes = field(repr=False)
    filename: str
    content_type: str
    width: int
    height: int
    reencoded: bool


def _mb(size: int) -> str:
    """Bytes as the MB figure a member understands (MiB like Discord's limits; rounded up, so a
    file just over a limit never reads as equal to it)."""
    return f"{math.ceil(size * 10 / _MIB) / 10:.1f}".removesuffix(".0") + " MB"


def sniff_image_type(data: bytes) -> str | None:
    """The content type the magic bytes prove (PNG, JPEG, WebP, GIF), else None.

    File names and declared types are whatever the sender says; the first bytes are what decoders
    act on, so this decides which decoder may ever see the data.
    """
    head = bytes(data[:12])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _declared_type(content_type: str | None, filename: str) -> str | None:
    """Normalised declared type; Discord omits it sometimes, so fall back to the extension."""
    if content_type:
        base = content_type.split(";", 1)[0].strip().lower()
        return _TYPE_ALIASES.get(base, base)
    _, dot, extension = filename.rpartition(".")
    return _TYPE_OF_EXTENSION.get(extension.lower()) if dot else None


def check_attachment_meta(
    content_type: str | None, size: int, filename: str, *, max_bytes: int = MAX_ATTACHMENT_BYTES
) -> None:
    """The cheap check on what the interaction carries, done before answering (errors ephemeral)."""
    declared = _declared_type(content_type, filename)
    if declared not in ACCEPTED_TYPES:
        if declared and declared.startswith("image/"):
            kind = declared.removeprefix("image/").removeprefix("x-").upper()
            message = f"I can't use {kind} pictures. {_ACCEPTED_WORDS}"
        else:
            message = NOT_AN_IMAGE
        raise ImageRejected(message, reason="not_image")
    if size <= 0:
        raise ImageRejected(EMPTY_FILE, reason="empty")
    if size > max_bytes:
        raise ImageRejected(
            f"That picture is {_mb(size)}, over the {_mb(max_bytes)} limit. "
            "Attach a smaller one (a screenshot or an export as JPEG usually is).",
            reason="too_big",
        )


@contextmanager
def _reading(
    failure: str, reason: str, max_source_pixels: int = MAX_SOURCE_PIXELS
) -> Iterator[None]:
    """Turn anything Pillow raises inside the block into ``ImageRejected(failure)``."""
    try:
        yield
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own last-resort limit (over 2 × MAX_IMAGE_PIXELS) fired before ours could.
        message = _too_many_pixels_message(None, max_source_pixels)
        raise ImageRejected(message, reason="too_many_pixels") from error
    except _PILLOW_ERRORS as error:
        raise ImageRejected(failure, reason=reason) from error


def _too_many_pixels_message(size: tuple[int, int] | None, limit: int = MAX_SOURCE_PIXELS) -> str:
    megapixels = f"{limit / 1_000_000:g}"
    if size is None:
        return f"That picture has far too many pixels. Use one of at most {megapixels} megapixels."
    width, height = size
    return (
        f"That picture is {width}×{height} pixels ({width * height / 1_000_000:.0f} megapixels); "
        f"the most I take is {megapixels} megapixels. Scale it down and attach it again."
    )


def _open(data: bytes, max_source_pixels: int) -> tuple[ImageFile.ImageFile, str]:
    """Open (header only) a sniffed image and refuse it from its dimensions before any decoding.

    Returns the lazily opened image and the sniffed content type.
    """
    if not data:
        raise ImageRejected(EMPTY_FILE, reason="empty")
    kind = sniff_image_type(data)
    if kind is None:
        raise ImageRejected(NOT_AN_IMAGE, reason="not_image")
    # Our own header read first, so a bomb never reaches Pillow's parser (nor its warning).
    _refuse_if_too_many_pixels(_header_size(data, kind), max_source_pixels)
    with _reading(NOT_AN_IMAGE, "not_image", max_source_pixels):
        # Only the plugin the magic bytes name may parse it: no other decoder sees member data.
        image = Image.open(io.BytesIO(data), formats=[_FORMAT_OF_TYPE[kind]])
        width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise ImageRejected(NOT_AN_IMAGE, reason="not_image")
    try:
        _refuse_if_too_many_pixels((width, height), max_source_pixels)
    except ImageRejected:
        image.close()
        raise
    return image, kind


def _refuse_if_too_many_pixels(size: tuple[int, int] | None, max_source_pixels: int) -> None:
    if size is not None and size[0] * size[1] > max_source_pixels:
        message = _too_many_pixels_message(size, max_source_pixels)
        raise ImageRejected(message, reason="too_many_pixels")


_JPEG_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS: Final = frozenset({0x01, *range(0xD0, 0xD9)})


def _header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """Dimensions as the header states them, read with plain ``struct``; None if not found.

    Only an early refusal: Pillow's reading of the header stays the authority.
    """
    try:
        if kind == "image/png":
            return struct.unpack_from(">II", data, 16)
        if kind == "image/gif":
            return struct.unpack_from("<HH", data, 6)
        if kind == "image/webp":
            chunk = data[12:16]
            if chunk == b"VP8X":  # extended format: 24-bit canvas width - 1, height - 1
                width = int.from_bytes(data[24:27], "little") + 1
                return width, int.from_bytes(data[27:30], "little") + 1
            if chunk == b"VP8L":  # lossless: 14-bit width - 1 and height - 1, packed
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":  # lossy: 14-bit width and height after the key-frame start code
                width, height = struct.unpack_from("<HH", data, 26)
                return width & 0x3FFF, height & 0x3FFF
            return None
        return _jpeg_header_size(data)
    except struct.error:
        return None


def _jpeg_header_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments up to the first start-of-frame, which holds the dimensions."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack_from(">HH", data, position + 5)
            return width, height
        (length,) = struct.unpack_from(">H", data, position + 2)
        position += 2 + length
    return None


def image_size(data: bytes, *, max_source_pixels: int = MAX_SOURCE_PIXELS) -> tuple[int, int]:
    """Width and height from the header alone (no pixel is decoded)."""
    image, _ = _open(data, max_source_pixels)
    with image:
        return image.size


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
    image, kind = _open(data, max_source_pixels)
    with image:
        raw_w, raw_h = image.size
        scale = min(1.0, math.sqrt(max_pixels / (raw_w * raw_h)))
        draft_to = (math.ceil(raw_w * scale), math.ceil(raw_h * scale)) if scale < 1 else None
        frame = _decode_first_frame(image, draft_to=draft_to)
        with _reading(DAMAGED, "damaged"):
            rgb = _to_rgb(frame)
            target = _target_size(rgb.width, rgb.height, max_pixels)
            reusable = kind == "image/png" and target == image.size and _plain_rgb(image)
            if target != rgb.size:
                rgb = rgb.resize(
                    target,
                    Image.Resampling.LANCZOS,
                    box=_cover_box(rgb.width, rgb.height, target),
                    reducing_gap=3.0,
                )
    if reusable and len(data) <= REFERENCE_PNG_MAX_BYTES:
        encoded, content_type = data, "image/png"  # nothing to change: skip a ~100 ms encode
    elif kind == "image/jpeg":
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


def _plain_rgb(image: Image.Image) -> bool:
    """A still RGB picture with no metadata: its original bytes can be re-hosted as they are.

    Metadata rules it out because the reference is posted publicly: EXIF can hold a location.
    """
    metadata = {"exif", "icc_profile", "XML:com.adobe.xmp", "xmp"} & set(image.info)
    animated = getattr(image, "is_animated", False)
    return image.mode == "RGB" and not metadata and not animated and not image.text  # type: ignore[attr-defined]


def _save(image: Image.Image, format_name: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format_name, **options)
    return buffer.getvalue()


def _encodings(image: Image.Image, *, with_png: bool) -> Iterator[tuple[bytes, str]]:
    """Candidate files in order of preference (lossless, then the better lossy, then JPEG)."""
    if with_png:
        yield _save(image, "PNG", optimize=True), "image/png"
    long_side = max(image.size)
    if long_side <= _WEBP_MAX_SIDE:
        yield _save(image, "WEBP", quality=UPLOAD_WEBP_QUALITY), "image/webp"
    if long_side <= _JPEG_MAX_SIDE:
        flat = _to_rgb(image)
        yield _save(flat, "JPEG", quality=UPLOAD_JPEG_QUALITY, optimize=True), "image/jpeg"


def fit_for_upload(
    data: bytes, *, limit: int, stem: str = "result", max_source_pixels: int = MAX_SOURCE_PIXELS
) -> EncodedFile:
    """A file within ``limit`` bytes (a channel's upload limit), re-encoding only when needed.

    Order (DESIGN §7): the original bytes; PNG optimised; WebP 90; JPEG 85; then smaller sizes,
    each tried as WebP then JPEG (once lossless has failed, lossy at a larger size beats lossless at
    a smaller one), until one fits or the long side would go under 256 px.
    """
    image, kind = _open(data, max_source_pixels)
    with image:
        width, height = image.size
        # Decoded even when kept as it is: a truncated or corrupt file must not be posted.
        frame = _decode_first_frame(image, draft_to=None)
        if len(data) <= limit:
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
    current = source
    with_png = True
    while True:
        smallest = len(data)
        for encoded, encoded_type in _encodings(current, with_png=with_png):
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
