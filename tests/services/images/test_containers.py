"""services.images.containers: files proven whole (or damaged) without decoding a pixel."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from services.images.containers import WholeFile, read_container
from services.images.formats import ImageRejected, sniff_image_type
from tests import images as fx
from tests.services.images.helpers import decode


def save(image: Image.Image, format_name: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format_name, **options)
    return buffer.getvalue()


def photo(width: int = 64, height: int = 48) -> Image.Image:
    return decode(fx.photo_like_png(width, height)).convert("RGB")


def gps_exif() -> bytes:
    exif = Image.Exif()
    exif[0x8825] = {1: "N"}  # GPSInfo: where the picture was taken
    return exif.tobytes()


def texted_png() -> bytes:
    info = PngInfo()
    info.add_text("Author", "someone")
    return save(photo(), "PNG", pnginfo=info)


def interlace_flagged_png() -> bytes:
    """A plain PNG whose IHDR (CRC fixed) says interlaced."""
    data = bytearray(fx.png(16, 16))
    data[28] = 1
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def rgb_with_transparency() -> bytes:
    return save(Image.new("RGB", (16, 16), fx.RED), "PNG", transparency=fx.RED)


def apng() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in (fx.RED, fx.BLUE)]
    return save(frames[0], "PNG", save_all=True, append_images=frames[1:])


WHOLE: list[tuple[str, Callable[[], bytes]]] = [
    ("png", fx.png),
    ("photo png", lambda: fx.photo_like_png(64, 48)),
    ("rgba png", fx.rgba_png),
    ("palette png", lambda: save(photo().convert("P"), "PNG")),
    ("16-bit grey png", lambda: save(Image.new("I;16", (16, 8), 30000), "PNG")),
    ("apng", apng),
    ("jpeg", fx.jpeg),
    ("photo jpeg", lambda: save(photo(), "JPEG", quality=90)),
    ("progressive jpeg", lambda: save(photo(), "JPEG", progressive=True)),
    ("optimised jpeg", lambda: save(photo(), "JPEG", optimize=True)),
    ("jpeg with restarts", lambda: save(photo(), "JPEG", restart_marker_blocks=1)),
    ("exif jpeg", fx.jpeg_with_exif_orientation),
    ("webp lossless", fx.webp),
    ("webp lossy", lambda: fx.webp(lossless=False)),
    ("photo webp", lambda: save(photo(), "WEBP", quality=80)),
    ("animated webp", lambda: fx.webp(frames=(fx.RED, fx.BLUE))),
]


@pytest.mark.parametrize(("name", "make"), WHOLE)
def test_whole_files_are_proven_with_their_type_and_size(
    name: str, make: Callable[[], bytes]
) -> None:
    data = make()
    whole = read_container(data)
    assert isinstance(whole, WholeFile), name
    assert whole.content_type == sniff_image_type(data)
    assert (whole.width, whole.height) == decode(data).size


CUT: list[tuple[str, Callable[[], bytes]]] = [
    ("photo png", lambda: fx.photo_like_png(48, 32)),
    ("palette png", lambda: save(photo(48, 32).convert("P"), "PNG")),
    ("photo jpeg", lambda: save(photo(48, 32), "JPEG", quality=90)),
    ("progressive jpeg", lambda: save(photo(48, 32), "JPEG", progressive=True)),
    ("webp lossless", lambda: fx.webp(48, 32)),
    ("photo webp", lambda: save(photo(48, 32), "WEBP", quality=80)),
]


@pytest.mark.parametrize(("name", "make"), CUT)
def test_a_file_cut_short_anywhere_is_damaged(name: str, make: Callable[[], bytes]) -> None:
    data = make()
    magic = {"image/png": 8, "image/jpeg": 3, "image/webp": 12}[sniff_image_type(data) or ""]
    for length in range(magic, len(data)):
        with pytest.raises(ImageRejected) as caught:
            read_container(data[:length])
        assert caught.value.reason == "damaged", (name, length)


def test_a_png_with_any_byte_altered_is_damaged() -> None:
    data = fx.png(16, 8)
    for position in range(8, len(data)):  # past the signature, which only says what it is
        altered = bytearray(data)
        altered[position] ^= 0x01
        with pytest.raises(ImageRejected):
            read_container(bytes(altered))


@pytest.mark.parametrize(
    "make",
    [
        fx.animated_gif,  # GIF: left to the decoder
        lambda: fx.png() + b"trailing",
        lambda: fx.jpeg() + b"\x00\x00",
        lambda: fx.webp() + b"\x00\x00",
        fx.text_file,
        fx.pdf_named_png,
        fx.zip_bytes,
        fx.zero_bytes,
    ],
)
def test_what_the_container_cannot_vouch_for_is_left_to_the_decoder(
    make: Callable[[], bytes],
) -> None:
    assert read_container(make()) is None


@pytest.mark.parametrize(
    ("make", "plain"),
    [
        (fx.png, True),
        (lambda: fx.photo_like_png(64, 48), True),
        (fx.jpeg, True),
        (lambda: save(photo(), "JPEG", progressive=True), True),
        (lambda: save(photo(), "PNG", exif=gps_exif()), False),
        (texted_png, False),
        (lambda: save(photo(), "PNG", icc_profile=b"\0" * 128), False),
        (rgb_with_transparency, False),
        (fx.rgba_png, False),
        (lambda: save(photo().convert("P"), "PNG"), False),
        (lambda: save(Image.new("I;16", (16, 8), 30000), "PNG"), False),
        (apng, False),
        (interlace_flagged_png, False),
        (lambda: save(photo(), "JPEG", exif=gps_exif()), False),
        (fx.jpeg_with_exif_orientation, False),
        (lambda: save(photo(), "JPEG", icc_profile=b"\0" * 128), False),
        (lambda: save(photo(), "JPEG", comment="shot at home"), False),
        (fx.jpeg_with_jfif_thumbnail, False),
        (lambda: save(Image.new("L", (16, 16), 100), "JPEG"), False),
        (lambda: save(Image.new("CMYK", (16, 16)), "JPEG"), False),
        (fx.webp, False),
    ],
)
def test_plain_means_nothing_to_hide_and_nothing_to_change(
    make: Callable[[], bytes], plain: bool
) -> None:
    whole = read_container(make())
    assert whole is not None
    assert whole.plain is plain


def test_pixel_data_broken_behind_valid_crcs_is_beyond_the_container() -> None:
    # Made on purpose, never by damage on the way: the API refuses it (tests/e2e/test_hostile.py).
    for data in (fx.png_with_broken_deflate(), fx.patched_size_png(512, 512)):
        whole = read_container(data)
        assert whole is not None and whole.plain
        with pytest.raises(OSError):
            decode(data)
