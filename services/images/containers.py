"""Proving a file whole from its container, without decoding a pixel.

Posting a result or re-hosting a reference as it is needs no pixels, only the certainty that the
file is a complete picture. A full decode gives that at ~9 ms for a 1.5 MB PNG (~7 ms of it
inflating the zlib stream); the container gives it, for files cut short or damaged on the way,
at ~0.3 ms:

- PNG: the signature, IHDR first and valid, every chunk's CRC-32, a zlib header on the first
  IDAT, and IEND as the last bytes. A file cut short loses IEND or ends inside a chunk (Pillow
  decodes a PNG cut anywhere in its last ~20 bytes and never checks IDAT CRCs); a flipped byte
  breaks a CRC.
- JPEG: SOI, every segment's length, one Huffman frame header, the entropy-coded data scanned
  for markers, and EOI as the last bytes.
- WebP: the RIFF size equal to the file's, every chunk within it, an image chunk first.

What the container cannot prove is that compressed pixel data inside an intact container
decodes (a deflate or Huffman stream written wrongly, checksums computed over the wrong bytes,
rows missing). Damage on the way cannot do that; only an encoder's bug or a file made on purpose
can, and such a file re-hosted as a reference is refused by the API (a 400, not billed), so the
job fails with a plain message. Proving it here would mean inflating every PNG (~3-5 ms a
megapixel, about a sixth of the bot's CPU per job) to catch a file the API refuses at no cost.

Three outcomes: a :class:`WholeFile`; :class:`~services.images.formats.ImageRejected`
(``damaged``) when the structure proves the file cut short or altered; None when it proves
nothing either way (GIF, bytes after the end, an unusual variant), and a full decode decides.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Final, NoReturn

from services.images.formats import DAMAGED, ImageRejected, sniff_image_type

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: Bit depths allowed for each PNG colour type (PNG spec, table 11.1).
_PNG_DEPTHS: Final = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}
#: Chunks of a plain picture: pixels and how to show them, nothing about who or where.
#: (tRNS needs flattening, iCCP/eXIf/tEXt/zTXt/iTXt are metadata, acTL is an animation.)
_PNG_PLAIN_CHUNKS: Final = frozenset(
    {b"IHDR", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"pHYs"}
)

_SOI, _EOI, _SOS, _APP0, _DHT, _DQT, _DRI = 0xD8, 0xD9, 0xDA, 0xE0, 0xC4, 0xDB, 0xDD
#: Baseline, extended and progressive Huffman frames: what Pillow and browsers decode.
_JPEG_FRAMES: Final = frozenset({0xC0, 0xC1, 0xC2})
_JPEG_ANY_FRAME: Final = frozenset(range(0xC0, 0xD0)) - {_DHT, 0xC8, 0xCC}
_JPEG_STANDALONE: Final = frozenset({0x01, _SOI, *range(0xD0, 0xD8)})
#: Segments of a plain JPEG; APP1 (EXIF, XMP), APP2 (ICC), APP13 (IPTC), COM... are not.
_JPEG_PLAIN_MARKERS: Final = _JPEG_FRAMES | {_DHT, _DQT, _DRI, _SOS, _APP0}
#: In entropy-coded data 0xFF is followed by 0x00 (stuffing) or a restart marker; anything else
#: starts the next marker (a run of 0xFF fill bytes matches at its last one).
_JPEG_NEXT_MARKER: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

_WEBP_FIRST_CHUNKS: Final = frozenset({b"VP8 ", b"VP8L", b"VP8X"})
_WEBP_IMAGE_CHUNKS: Final = frozenset({b"VP8 ", b"VP8L", b"ANMF"})


@dataclass(frozen=True, slots=True)
class WholeFile:
    """A picture file proven complete from its structure.

    ``plain``: it can be shown publicly as it is. A still 8-bit RGB PNG (not interlaced) or a
    three-component JPEG, opaque, with no metadata (no EXIF: no location, and no orientation to
    apply) and no embedded thumbnail.
    """

    content_type: str
    width: int
    height: int
    plain: bool


def read_container(data: bytes) -> WholeFile | None:
    """The file's type, size and plainness if its structure proves it whole; None if it proves
    nothing; :class:`ImageRejected` (``damaged``) if it proves it cut short or altered."""
    kind = sniff_image_type(data)
    try:
        if kind == "image/png":
            return _png(data)
        if kind == "image/jpeg":
            return _jpeg(data)
        if kind == "image/webp":
            return _webp(data)
    except struct.error:  # a field past the last byte
        _damaged()
    return None  # GIF: results never are; references are re-encoded anyway


def _damaged() -> NoReturn:
    raise ImageRejected(DAMAGED, reason="damaged")


def _png(data: bytes) -> WholeFile | None:
    view, size = memoryview(data), len(data)
    position = len(_PNG_SIGNATURE)
    kinds: set[bytes] = set()
    header: tuple[int, ...] = ()
    while b"IEND" not in kinds:
        if position + 12 > size:
            _damaged()  # ends before IEND
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 8 + length
        if end + 4 > size:
            _damaged()  # ends inside a chunk
        if zlib.crc32(view[position + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            _damaged()
        if not kinds:
            if kind != b"IHDR" or length != 13:
                return None  # not a PNG Pillow would open either: let it say so
            header = struct.unpack_from(">IIBBBBB", data, position + 8)
        elif (
            kind == b"IDAT" and b"IDAT" not in kinds and not _zlib_header(view[end - length : end])
        ):
            _damaged()
        kinds.add(kind)
        position = end + 4
    width, height, depth, colour, compression, filtering, interlace = header
    if (
        position != size  # bytes after IEND: harmless or not, not ours to vouch for
        or b"IDAT" not in kinds
        or not (0 < width < 2**31 and 0 < height < 2**31)
        or depth not in _PNG_DEPTHS.get(colour, ())
        or (compression, filtering) != (0, 0)
        or interlace not in (0, 1)
        or (colour == 3 and b"PLTE" not in kinds)
    ):
        return None
    plain = colour == 2 and depth == 8 and not interlace and kinds <= _PNG_PLAIN_CHUNKS
    return WholeFile("image/png", width, height, plain)


def _zlib_header(stream: memoryview) -> bool:
    """Deflate, a window the format allows, no preset dictionary, and the header's own check."""
    if len(stream) < 2:
        return False
    method, flags = stream[0], stream[1]
    return (
        method & 0x0F == 8
        and method >> 4 <= 7
        and not flags & 0x20
        and (method * 256 + flags) % 31 == 0
    )


def _jpeg(data: bytes) -> WholeFile | None:
    size = len(data)
    position = 2  # after SOI (sniffed)
    markers: set[int] = set()
    frame: tuple[int, int, int] | None = None
    jfif_plain = True
    while True:
        if position + 2 > size:
            _damaged()  # ends before EOI
        if data[position] != 0xFF:
            return None  # garbage between segments: the decoder decides
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == _EOI:
            position += 2
            break
        if marker in _JPEG_STANDALONE:
            return None  # out of place outside entropy-coded data
        (length,) = struct.unpack_from(">H", data, position + 2)
        end = position + 2 + length
        if end > size:
            _damaged()  # ends inside a segment
        if length < 2:
            return None
        markers.add(marker)
        if marker in _JPEG_ANY_FRAME:
            if frame is not None or marker not in _JPEG_FRAMES:
                return None  # a second frame, or arithmetic/lossless/hierarchical coding
            _precision, height, width, components = struct.unpack_from(">BHHB", data, position + 4)
            frame = (width, height, components)
        elif marker == _APP0:
            # JFIF without a thumbnail (a stale thumbnail can show what an edit removed).
            body = data[position + 4 : end]
            no_thumbnail = body[:5] == b"JFIF\x00" and len(body) >= 14 and body[12:14] == b"\0\0"
            jfif_plain = jfif_plain and no_thumbnail
        position = end
        if marker == _SOS:
            if frame is None:
                return None
            found = _JPEG_NEXT_MARKER.search(data, position)
            if found is None:
                _damaged()  # the scan runs to the last byte: cut short
            position = found.start()
    if position != size or frame is None or _SOS not in markers:
        return None
    width, height, components = frame
    if not (width and height):
        return None  # height 0 defers it to a DNL marker: the decoder decides
    plain = components == 3 and jfif_plain and markers <= _JPEG_PLAIN_MARKERS
    return WholeFile("image/jpeg", width, height, plain)


def _webp(data: bytes) -> WholeFile | None:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > len(data):
        _damaged()  # shorter than its RIFF header says
    if riff_size + 8 < len(data) or len(data) < 30:
        return None
    first = data[12:16]
    if first not in _WEBP_FIRST_CHUNKS:
        return None
    position, kinds = 12, set()
    while position < len(data):
        if position + 8 > len(data):
            _damaged()
        (length,) = struct.unpack_from("<I", data, position + 4)
        kinds.add(data[position : position + 4])
        position += 8 + length + (length & 1)
    if position == len(data) + 1:
        return None  # the last chunk's pad byte left out: the decoder decides
    if position != len(data):
        _damaged()  # the last chunk runs past the end
    width, height = _webp_size(data, first)
    if not (width and height) or not kinds & _WEBP_IMAGE_CHUNKS:
        return None
    return WholeFile("image/webp", width, height, plain=False)


def _webp_size(data: bytes, chunk: bytes) -> tuple[int, int]:
    if chunk == b"VP8X":  # 24-bit canvas width - 1, height - 1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L":  # signature 0x2f, then 14-bit width - 1 and height - 1
        if data[20] != 0x2F:
            return 0, 0
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data[23:26] != b"\x9d\x01\x2a":  # VP8 key frame start code
        return 0, 0
    width, height = struct.unpack_from("<HH", data, 26)
    return width & 0x3FFF, height & 0x3FFF
