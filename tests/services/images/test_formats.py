"""services.images.formats: what a file really is, and that no bytes make us raise anything else.

Refusing hostile files (bombs from the header, non-images whatever their name, truncation) is
checked through :func:`normalise_reference` and :func:`fit_for_upload`, the calls that get them.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from services.errors import UserFacingError
from services.images import formats
from services.images.containers import read_container
from services.images.formats import ImageRejected, check_attachment_meta, sniff_image_type
from services.images.reference import normalise_reference
from services.images.upload import fit_for_upload
from tests import images as fx
from tests.services.images.helpers import decode

# --- sniffing and header reads -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (fx.png, "image/png"),
        (fx.jpeg, "image/jpeg"),
        (fx.animated_gif, "image/gif"),
        (fx.webp, "image/webp"),
        (lambda: fx.webp(lossless=False), "image/webp"),
        (fx.pdf_named_png, None),
        (fx.zip_bytes, None),
        (fx.text_file, None),
        (fx.zero_bytes, None),
        (lambda: b"\x89PN", None),
        (lambda: b"RIFF\x00\x00\x00\x00WAVE", None),
    ],
)
def test_sniff_image_type(make: Callable[[], bytes], expected: str | None) -> None:
    assert sniff_image_type(make()) == expected


@pytest.mark.parametrize(
    "make",
    [fx.png, fx.jpeg, fx.animated_gif, fx.webp, lambda: fx.webp(lossless=False), fx.rgba_png],
)
def test_header_size_matches_the_decoded_size(make: Callable[[], bytes]) -> None:
    data = make()
    kind = sniff_image_type(data)
    assert kind is not None
    assert formats._header_size(data, kind) == decode(data).size


# --- the cheap check before answering ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "filename"),
    [
        ("image/png", "a.png"),
        ("image/jpeg", "a.jpg"),
        ("IMAGE/WEBP", "a.webp"),
        ("image/gif; charset=binary", "a.gif"),
        ("image/jpg", "photo"),
        (None, "holiday.JPEG"),
    ],
)
def test_check_attachment_meta_accepts(content_type: str | None, filename: str) -> None:
    check_attachment_meta(content_type, 1234, filename)


@pytest.mark.parametrize(
    ("content_type", "filename", "size", "reason", "words"),
    [
        ("application/pdf", "cat.png", 100, "not_image", "PNG, JPEG, WebP or GIF"),
        ("image/heic", "cat.heic", 100, "not_image", "HEIC"),
        ("image/svg+xml", "cat.svg", 100, "not_image", "SVG"),
        (None, "notes.txt", 100, "not_image", "PNG, JPEG, WebP or GIF"),
        (None, "noextension", 100, "not_image", "PNG, JPEG, WebP or GIF"),
        ("image/png", "cat.png", 0, "empty", "empty"),
        ("image/png", "cat.png", 21 * 1024 * 1024, "too_big", "20 MB"),
    ],
)
def test_check_attachment_meta_rejects(
    content_type: str | None, filename: str, size: int, reason: str, words: str
) -> None:
    with pytest.raises(ImageRejected) as caught:
        check_attachment_meta(content_type, size, filename)
    assert caught.value.reason == reason
    assert words in caught.value.user_message


def test_check_attachment_meta_names_the_given_limit() -> None:
    with pytest.raises(ImageRejected) as caught:
        check_attachment_meta(
            "image/png", 10 * 1024 * 1024 + 1, "a.png", max_bytes=10 * 1024 * 1024
        )
    assert "10 MB limit" in caught.value.user_message
    assert "10.1 MB" in caught.value.user_message  # rounded up: never reads as equal to the limit


# --- hostile bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (fx.zero_bytes, "empty"),
        (fx.text_file, "not_image"),
        (fx.pdf_named_png, "not_image"),
        (fx.zip_bytes, "not_image"),
        (fx.truncated_png, "damaged"),
        (fx.truncated_jpeg, "damaged"),
        (fx.decompression_bomb_png, "too_many_pixels"),
        (fx.huge_dimensions_png, "too_many_pixels"),
        (lambda: fx.patched_size_png(20_000, 20_000), "too_many_pixels"),
        (lambda: fx.patched_size_png(12_000, 12_000), "too_many_pixels"),  # Pillow only warns here
        (lambda: fx.patched_size_png(2_000, 2_000), "damaged"),  # header lies, pixel data short
        (lambda: fx.png()[:40], "not_image"),  # cut inside the header
    ],
)
def test_hostile_input_is_rejected_in_plain_words(make: Callable[[], bytes], reason: str) -> None:
    data = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either: we refuse first
        with pytest.raises(ImageRejected) as caught:
            normalise_reference(data)
    assert caught.value.reason == reason
    assert caught.value.user_message.strip()
    assert isinstance(caught.value, UserFacingError)


def test_bombs_are_refused_before_decoding() -> None:
    data = fx.decompression_bomb_png()  # valid 400 MP: decoding would take seconds and GBs
    start = time.perf_counter()
    for _ in range(20):
        with pytest.raises(ImageRejected):
            normalise_reference(data)
    assert time.perf_counter() - start < 0.5


def test_source_pixel_limit_is_a_parameter() -> None:
    with pytest.raises(ImageRejected) as caught:
        normalise_reference(fx.png(100, 100), max_source_pixels=9_999)
    assert caught.value.reason == "too_many_pixels"
    assert "100×100" in caught.value.user_message
    assert normalise_reference(fx.png(100, 100), max_source_pixels=10_000).width == 96


def test_pillow_globals_are_left_alone() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for make in (fx.decompression_bomb_png, fx.truncated_png, fx.png):
        with contextlib.suppress(ImageRejected):
            normalise_reference(make())
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


# --- anything at all -----------------------------------------------------------------------------

_MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\x10\x00\x00\x00WEBPVP8 "]
_SEEDS = [
    fx.png(32, 16),
    fx.jpeg_with_exif_orientation(16, 8, 6),
    fx.animated_gif(width=16, height=16),
    fx.webp(16, 16),
    fx.webp(16, 16, lossless=False),
    fx.webp(16, 16, frames=(fx.RED, fx.BLUE)),
]


def _only_image_rejected(data: bytes) -> None:
    assert sniff_image_type(data) in {None, *formats.ACCEPTED_TYPES}
    for call in (
        normalise_reference,
        lambda d: fit_for_upload(d, limit=200),
        lambda d: fit_for_upload(d, limit=10 * 1024 * 1024),  # kept: the container decides
        read_container,
    ):
        try:
            call(data)
        except ImageRejected as rejected:
            assert rejected.user_message


@given(prefix=st.sampled_from(_MAGIC), body=st.binary(max_size=512))
@settings(max_examples=400, deadline=None)
def test_arbitrary_bytes_raise_only_image_rejected(prefix: bytes, body: bytes) -> None:
    _only_image_rejected(prefix + body)


@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.floats(0.05, 1.0),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_damaged_images_raise_only_image_rejected(
    seed: bytes, edits: list[tuple[float, int]], cut: float
) -> None:
    data = bytearray(seed[: max(1, int(len(seed) * cut))])
    for where, value in edits:
        data[int(where * len(data))] = value
    _only_image_rejected(bytes(data))
