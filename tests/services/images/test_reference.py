"""services.images.reference: what members' pictures become before the API sees them."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from services.images import reference
from services.images.formats import ImageRejected, sniff_image_type
from services.images.reference import PreparedImage, normalise_reference
from tests import images as fx
from tests.services.images.helpers import decode


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- normalising a reference ---------------------------------------------------------------------


def test_a_photo_reference_stays_a_jpeg_with_its_size() -> None:
    prepared = normalise_reference(fx.jpeg(320, 240))
    assert isinstance(prepared, PreparedImage)
    assert (prepared.content_type, prepared.filename) == ("image/jpeg", "reference.jpg")
    assert sniff_image_type(prepared.data) == "image/jpeg"
    assert decode(prepared.data).size == (prepared.width, prepared.height) == (320, 240)
    assert decode(prepared.data).mode == "RGB"
    with pytest.raises(AttributeError):
        prepared.width = 1  # type: ignore[misc]


def test_a_plain_png_that_needs_no_change_is_reused_byte_for_byte() -> None:
    original = fx.png(320, 240)
    prepared = normalise_reference(original)
    assert prepared.data == original
    assert (prepared.content_type, prepared.filename) == ("image/png", "reference.png")


def test_metadata_is_never_re_hosted() -> None:
    image = Image.new("RGB", (320, 240), "teal")
    exif = Image.Exif()
    exif[0x8825] = {1: "N"}  # GPSInfo: where the picture was taken
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    for original in (buffer.getvalue(), fx.jpeg_with_exif_orientation(32, 16, orientation=1)):
        prepared = normalise_reference(original)
        assert prepared.data != original
        assert not decode(prepared.data).getexif()


def test_exif_orientation_is_applied() -> None:
    prepared = normalise_reference(fx.jpeg_with_exif_orientation(4, 2, orientation=6))
    assert (prepared.width, prepared.height) == (2, 4)


def test_exif_orientation_turns_the_pixels_too() -> None:
    # Stored red left, blue right; orientation 6 = turn 90° clockwise, so red ends on top.
    prepared = decode(normalise_reference(fx.jpeg_with_exif_orientation(64, 32, 6)).data)
    assert prepared.size == (32, 64)
    assert close_to(prepared.getpixel((16, 8)), fx.RED, 30)
    assert close_to(prepared.getpixel((16, 56)), fx.BLUE, 30)


@pytest.mark.parametrize(
    "make",
    [
        lambda: fx.animated_gif((fx.RED, fx.GREEN, fx.BLUE)),
        lambda: fx.webp(frames=(fx.RED, fx.GREEN, fx.BLUE)),
    ],
)
def test_animation_uses_its_first_frame(make: Callable[[], bytes]) -> None:
    prepared = normalise_reference(make())
    assert (prepared.width, prepared.height) == (48, 32)
    assert close_to(decode(prepared.data).getpixel((24, 16)), fx.RED)


def test_large_images_are_scaled_down_to_the_megapixel_budget() -> None:
    prepared = normalise_reference(fx.png(2000, 1500))
    assert prepared.width * prepared.height <= 1_000_000
    assert prepared.width * prepared.height > 0.95 * 1_000_000
    assert prepared.width % 16 == prepared.height % 16 == 0
    assert abs(prepared.width / prepared.height - 4 / 3) < 0.02
    smaller = normalise_reference(fx.png(2000, 1500), max_megapixels=0.25)
    assert (smaller.width, smaller.height) == (576, 432)


def test_big_jpeg_scales_down_too() -> None:
    prepared = normalise_reference(fx.jpeg(3000, 2000), max_megapixels=0.5)
    assert (prepared.width, prepared.height) == (864, 576)
    assert close_to(decode(prepared.data).getpixel((400, 300)), fx.GREY)


def test_small_images_are_never_upscaled() -> None:
    prepared = normalise_reference(fx.png(320, 240))
    assert (prepared.width, prepared.height) == (320, 240)
    tiny = normalise_reference(fx.png(5, 3))
    assert (tiny.width, tiny.height) == (5, 3)


def test_sides_are_cut_to_multiples_of_16_by_a_centre_crop() -> None:
    source = fx.halves(1000, 520, left=fx.GREEN, right=fx.BLUE)
    buffer = io.BytesIO()
    source.save(buffer, "PNG")
    out = decode(normalise_reference(buffer.getvalue()).data)
    assert out.size == (992, 512)  # 1000 -> 992 and 520 -> 512, never up to 1008 or 528
    assert close_to(out.getpixel((0, 0)), fx.GREEN, 2)  # cropped: no padding border
    assert close_to(out.getpixel((991, 511)), fx.BLUE, 2)
    assert close_to(out.getpixel((490, 256)), fx.GREEN, 2)  # the split stays in the middle
    assert close_to(out.getpixel((500, 256)), fx.BLUE, 2)


@pytest.mark.parametrize(
    ("color", "expected"),
    [((0, 0, 0, 0), (255, 255, 255)), ((255, 0, 0, 128), (255, 127, 127))],
)
def test_alpha_is_flattened_on_white(
    color: tuple[int, int, int, int], expected: tuple[int, int, int]
) -> None:
    out = decode(normalise_reference(fx.rgba_png(color=color)).data)
    assert out.mode == "RGB"
    assert close_to(out.getpixel((5, 5)), expected, 2)


def test_sixteen_bit_grey_keeps_its_tone() -> None:
    buffer = io.BytesIO()
    Image.new("I;16", (32, 32), 32768).save(buffer, "PNG")
    out = decode(normalise_reference(buffer.getvalue()).data)
    assert close_to(out.getpixel((0, 0)), (128, 128, 128), 2)


def test_reference_falls_back_to_jpeg_when_the_png_is_big(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "REFERENCE_PNG_MAX_BYTES", 1000)
    prepared = normalise_reference(fx.noise_png(64, 64))
    assert (prepared.content_type, prepared.filename) == ("image/jpeg", "reference.jpg")
    assert sniff_image_type(prepared.data) == "image/jpeg"
    assert decode(prepared.data).size == (64, 64)


def test_max_megapixels_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        normalise_reference(fx.png(), max_megapixels=0)


@given(
    width=st.integers(1, 30_000),
    height=st.integers(1, 30_000),
    megapixels=st.floats(0.01, 4.0),
)
@settings(max_examples=300, deadline=None)
def test_target_size_stays_in_budget_and_never_upscales(
    width: int, height: int, megapixels: float
) -> None:
    budget = int(megapixels * 1_000_000)
    target_w, target_h = reference._target_size(width, height, budget)
    assert 1 <= target_w <= width
    assert 1 <= target_h <= height
    assert target_w * target_h <= budget
    for side in (target_w, target_h):
        assert side < 16 or side % 16 == 0
    if min(target_w, target_h) >= 256:  # rounding distorts the aspect by under 16 px a side
        assert abs(target_w / target_h - width / height) / (width / height) < 0.13


def test_concurrent_calls_agree_with_serial_ones() -> None:
    inputs = [
        fx.png(640, 480),
        fx.jpeg_with_exif_orientation(64, 32, 6),
        fx.animated_gif(),
        fx.rgba_png(),
        fx.truncated_png(),
        fx.decompression_bomb_png(),
    ] * 4

    def run(data: bytes) -> PreparedImage | str:
        try:
            return normalise_reference(data)
        except ImageRejected as rejected:
            return rejected.reason

    serial = [run(data) for data in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(run, inputs)) == serial


# --- uploads that need no change -----------------------------------------------------------------


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decode fails the test: a plain upload is proven by its structure alone."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(
    ("make", "content_type"),
    [
        (lambda: fx.photo_like_png(320, 240), "image/png"),
        (lambda: fx.jpeg(320, 240), "image/jpeg"),
    ],
)
@pytest.mark.usefixtures("no_decoding")
def test_a_plain_upload_is_reused_without_decoding(
    make: Callable[[], bytes], content_type: str
) -> None:
    original = make()
    prepared = normalise_reference(original)
    assert prepared.data == original
    assert (prepared.content_type, prepared.width, prepared.height) == (content_type, 320, 240)


@pytest.mark.parametrize(
    "make",
    [
        lambda: fx.png(330, 240),  # off FLUX's 16-pixel grid: cropped
        lambda: fx.png(1280, 960),  # over the megapixel budget: scaled
        fx.jpeg_with_jfif_thumbnail,  # a thumbnail can show what an edit removed
        lambda: fx.jpeg(320, 240) + b"\x00",  # bytes after the end
        lambda: fx.photo_like_png(320, 240)[:-12],  # cut in its last bytes: pixels all there
    ],
)
def test_an_upload_that_is_not_plain_and_whole_is_decoded_and_encoded_again(
    make: Callable[[], bytes],
) -> None:
    original = make()
    prepared = normalise_reference(original)
    assert prepared.data != original
    assert decode(prepared.data).size == (prepared.width, prepared.height)


@pytest.mark.usefixtures("no_decoding")
def test_pixels_broken_behind_valid_crcs_are_left_to_the_api() -> None:
    # Only made on purpose; the API refuses them unbilled (tests/e2e/test_hostile.py).
    for original in (fx.png_with_broken_deflate(), fx.patched_size_png(512, 512)):
        assert normalise_reference(original).data == original
