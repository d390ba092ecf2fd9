"""Sample and hostile image files for tests, as bytes. Deterministic, small and quick to build.

Plain functions (no pytest) so unit tests, fakes and e2e tests can all share them. Default sizes
are multiples of 16, which :func:`services.images.normalise_reference` keeps unchanged.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Sequence

from PIL import Image, ImageChops

Color = tuple[int, int, int]
RED: Color = (220, 30, 30)
GREEN: Color = (30, 200, 60)
BLUE: Color = (30, 60, 220)
GREY: Color = (128, 128, 128)

# EXIF tag holding the orientation (1 upright ... 8); 6 means "rotate 90° clockwise to view".
EXIF_ORIENTATION = 0x0112


def _save(image: Image.Image, format_name: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format_name, **options)
    return buffer.getvalue()


def png(width: int = 64, height: int = 48, color: Color = GREY) -> bytes:
    """A plain RGB PNG."""
    return _save(Image.new("RGB", (width, height), color), "PNG")


def jpeg(width: int = 64, height: int = 48, color: Color = GREY, quality: int = 90) -> bytes:
    """A plain baseline JPEG."""
    return _save(Image.new("RGB", (width, height), color), "JPEG", quality=quality)


def halves(width: int, height: int, left: Color = RED, right: Color = BLUE) -> Image.Image:
    """Left half one colour, right half another: shows which way an image was turned."""
    image = Image.new("RGB", (width, height), right)
    image.paste(left, (0, 0, width // 2, height))
    return image


def jpeg_with_exif_orientation(width: int = 4, height: int = 2, orientation: int = 6) -> bytes:
    """A JPEG stored ``width``×``height`` (red left, blue right) tagged with an EXIF orientation."""
    image = halves(width, height)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return _save(image, "JPEG", quality=95, exif=exif.tobytes())


def animated_gif(
    frames: Sequence[Color] = (RED, GREEN, BLUE), width: int = 48, height: int = 32
) -> bytes:
    """An animated GIF whose frames are plain colours, in order."""
    images = [Image.new("RGB", (width, height), color) for color in frames]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def webp(
    width: int = 48,
    height: int = 32,
    color: Color = GREY,
    *,
    frames: Sequence[Color] | None = None,
    lossless: bool = True,
) -> bytes:
    """A WebP; with ``frames``, an animated one whose frames are those plain colours."""
    if frames:
        images = [Image.new("RGB", (width, height), c) for c in frames]
        return _save(
            images[0],
            "WEBP",
            save_all=True,
            append_images=images[1:],
            duration=100,
            lossless=lossless,
        )
    return _save(Image.new("RGB", (width, height), color), "WEBP", lossless=lossless)


def rgba_png(
    width: int = 48, height: int = 32, color: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> bytes:
    """An RGBA PNG, fully transparent by default (flattening should give white)."""
    return _save(Image.new("RGBA", (width, height), color), "PNG")


def noise_png(width: int = 256, height: int = 256, seed: int = 0) -> bytes:
    """Random RGB pixels: incompressible, so the PNG is about 3 bytes per pixel."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    return _save(Image.frombytes("RGB", (width, height), pixels), "PNG", compress_level=1)


def photo_like_png(width: int = 256, height: int = 256, seed: int = 0) -> bytes:
    """Smooth gradients plus a little grain: big as PNG, small as WebP/JPEG, like a photo."""
    across = Image.linear_gradient("L").rotate(90).resize((width, height))
    down = Image.linear_gradient("L").resize((width, height))
    base = Image.merge("RGB", (across, down, Image.new("L", (width, height), 128)))
    grain_bytes = random.Random(seed).randbytes(width * height * 3).translate(_GRAIN)
    grain = Image.frombytes("RGB", (width, height), grain_bytes)
    return _save(ImageChops.add(base, grain, 1.0, -8), "PNG")


#: Maps random bytes to 0..16, i.e. ±8 around the base once offset.
_GRAIN = bytes(value % 17 for value in range(256))


# --- hostile -----------------------------------------------------------------------------------


def zero_bytes() -> bytes:
    """An empty file."""
    return b""


def text_file() -> bytes:
    """Plain text, as if someone attached notes.txt renamed to .png."""
    return b"Just some notes, definitely not a picture.\n" * 4


def pdf_named_png() -> bytes:
    """A minimal valid one-page PDF (the kind of thing that arrives named ``cat.png``)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def zip_bytes() -> bytes:
    """A ZIP archive holding a PNG (still not a picture we should open)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat.png", png(8, 8))
    return buffer.getvalue()


def truncated_png() -> bytes:
    """A valid header and the first part of the pixel data, as from an upload cut short."""
    data = noise_png(64, 64, seed=1)
    return data[: len(data) * 3 // 5]


def truncated_jpeg() -> bytes:
    """A JPEG cut short in the middle of its scan data."""
    pixels = random.Random(2).randbytes(64 * 64 * 3)
    data = _save(Image.frombytes("RGB", (64, 64), pixels), "JPEG", quality=90)
    return data[: len(data) * 3 // 5]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _blank_bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG written by hand: 1 bit per pixel, zlib squeezes it ~1000×."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then the packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


@functools.cache
def decompression_bomb_png() -> bytes:
    """A real, fully decodable 20000×20000 PNG (400 MP, ~1.6 GB as RGBA) in about 50 kB.

    Over Pillow's own hard limit as well as ours; cached because it takes ~0.1 s to build.
    """
    return _blank_bilevel_png(20_000, 20_000)


@functools.cache
def huge_dimensions_png() -> bytes:
    """A real 8000×8000 PNG (64 MP): over our 50 MP limit but under Pillow's, so ours must act."""
    return _blank_bilevel_png(8_000, 8_000)


def patched_size_png(width: int, height: int) -> bytes:
    """A small PNG whose IHDR (with a correct CRC) claims ``width``×``height``: header lies."""
    data = bytearray(png(8, 8))
    # Signature (8) + length (4) + b"IHDR" (4), then width, height; the CRC covers type + body.
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def png_with_broken_deflate(width: int = 64, height: int = 48) -> bytes:
    """A plain PNG whose pixel stream no longer inflates, every CRC recomputed to match: its
    container is whole, its pixels are not (only a file made on purpose is like this)."""
    data = bytearray(photo_like_png(width, height))
    idat = 8 + 25  # the signature, then IHDR (length, type, 13 bytes, CRC)
    length, kind = struct.unpack_from(">I4s", data, idat)
    assert kind == b"IDAT"
    data[idat + 8 + length // 2] ^= 0xFF  # inside the deflate data
    end = idat + 8 + length
    struct.pack_into(">I", data, end, zlib.crc32(bytes(data[idat + 4 : end])))
    return bytes(data)


def jpeg_with_jfif_thumbnail(width: int = 32, height: int = 16) -> bytes:
    """A JPEG whose JFIF header carries a 1×1 thumbnail (stale thumbnails can leak edits)."""
    data = jpeg(width, height)
    assert data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00"
    (length,) = struct.unpack_from(">H", data, 4)
    body = bytearray(data[6 : 4 + length])
    body[12:14] = b"\x01\x01"  # thumbnail width and height
    body += b"\x80\x80\x80"  # its one RGB pixel
    return data[:4] + struct.pack(">H", len(body) + 2) + bytes(body) + data[4 + length :]
