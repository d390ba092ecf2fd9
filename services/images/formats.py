"""What a file is and whether we will touch it: magic bytes, header sizes, declared types.

The checks that come before any pixel is decoded: the real format from the first bytes (never the
name or the declared type), the dimensions from the header (so decompression bombs are refused
before Pillow parses them), and the cheap check on what an interaction declares. Also
:class:`ImageRejected`, the one exception this package raises for bad input, and the wrapper that
turns whatever Pillow raises into it.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from PIL import Image, ImageFile

from services.errors import UserFacingError

# Register Pillow's plugins now, once, rather than lazily inside the first calls made from threads.
Image.init()

#: Content types we accept, as Discord declares them and as our sniffer names them.
ACCEPTED_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
#: Biggest attachment we download (checked on the declared size before answering).
MAX_ATTACHMENT_BYTES: Final = 20 * 1024 * 1024
#: Above this the header is enough to refuse: decoding would cost hundreds of MB (DESIGN §7).
MAX_SOURCE_PIXELS: Final = 50_000_000

_MIB: Final = 1024 * 1024
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


class ImageRejected(UserFacingError):
    """Input we cannot use; ``user_message`` says what was wrong and what to do, in plain words.

    ``reason`` is a short stable code for logs and tests (``not_image``, ``empty``, ``too_big``,
    ``too_many_pixels``, ``damaged``, ``upload_too_large``).
    """

    def __init__(self, user_message: str, *, reason: str) -> None:
        super().__init__(user_message, detail=f"{reason}: {user_message}")
        self.reason = reason


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


def header_size(data: bytes) -> tuple[int, int] | None:
    """A picture's dimensions as its header states them, without decoding; None if unreadable.

    Enough to shape a request (an aspect ratio); checks that guard decoding use Pillow too.
    """
    kind = sniff_image_type(data)
    return None if kind is None else _header_size(data, kind)


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
