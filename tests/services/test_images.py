"""services.images: what members' pictures become, and that no bytes make it raise anything else."""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from services import images
from services.images import (
    EncodedFile,
    ImageRejected,
    PreparedImage,
    check_attachment_meta,
    fit_for_upload,
    image_size,
    normalise_reference,
    sniff_image_type,
)
from tests import images as fx


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


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
def test_image_size_reads_the_header(make: Callable[[], bytes]) -> None:
    data = make()
    assert image_size(data) == decode(data).size


def test_image_size_refuses_a_bomb_from_its_header() -> None:
    with pytest.raises(ImageRejected) as caught:
        image_size(fx.decompression_bomb_png())
    assert caught.value.reason == "too_many_pixels"


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
    assert isinstance(caught.value, ValueError)


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
    monkeypatch.setattr(images, "REFERENCE_PNG_MAX_BYTES", 1000)
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
    target_w, target_h = images._target_size(width, height, budget)
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


# --- fitting uploads -----------------------------------------------------------------------------


def test_fit_keeps_small_files_untouched() -> None:
    data = fx.png(64, 48)
    fitted = fit_for_upload(data, limit=10 * 1024 * 1024)
    assert fitted == EncodedFile(data, "result.png", "image/png", 64, 48, reencoded=False)
    jpeg = fx.jpeg(32, 16)
    kept = fit_for_upload(jpeg, limit=len(jpeg), stem="out-1")
    assert (kept.data, kept.filename, kept.reencoded) == (jpeg, "out-1.jpg", False)


def test_fit_reencodes_as_webp_when_the_png_is_too_big() -> None:
    data = fx.photo_like_png(256, 256)
    fitted = fit_for_upload(data, limit=len(data) // 3)
    assert (fitted.content_type, fitted.filename, fitted.reencoded) == (
        "image/webp",
        "result.webp",
        True,
    )
    assert (fitted.width, fitted.height) == (256, 256)
    assert len(fitted.data) <= len(data) // 3
    assert decode(fitted.data).size == (256, 256)


def test_fit_falls_back_to_jpeg_when_webp_is_too_big() -> None:
    data = fx.photo_like_png(256, 256)
    source = decode(data)
    webp = io.BytesIO()
    source.save(webp, "WEBP", quality=images.UPLOAD_WEBP_QUALITY)
    jpeg = io.BytesIO()
    source.save(jpeg, "JPEG", quality=images.UPLOAD_JPEG_QUALITY, optimize=True)
    assert len(jpeg.getvalue()) < len(webp.getvalue())  # precondition of this test
    limit = (len(jpeg.getvalue()) + len(webp.getvalue())) // 2
    fitted = fit_for_upload(data, limit=limit)
    assert (fitted.content_type, fitted.filename) == ("image/jpeg", "result.jpg")
    assert (fitted.width, fitted.height) == (256, 256)
    assert len(fitted.data) <= limit


def test_fit_scales_down_when_no_encoding_fits() -> None:
    data = fx.noise_png(640, 320)
    fitted = fit_for_upload(data, limit=60_000)
    assert fitted.reencoded
    assert len(fitted.data) <= 60_000
    assert 256 <= fitted.width < 640
    assert abs(fitted.width / fitted.height - 2) < 0.02
    assert decode(fitted.data).size == (fitted.width, fitted.height)


@pytest.mark.parametrize("limit", [0, -1])
def test_fit_with_no_room_at_all_is_rejected(limit: int) -> None:
    with pytest.raises(ImageRejected):
        fit_for_upload(fx.png(300, 300), limit=limit)


def test_fit_gives_up_at_the_floor() -> None:
    start = time.perf_counter()
    with pytest.raises(ImageRejected) as caught:
        fit_for_upload(fx.noise_png(1024, 1024), limit=2_000)
    assert caught.value.reason == "upload_too_large"
    assert "too large to upload here" in caught.value.user_message
    assert time.perf_counter() - start < 3  # jumps towards the floor rather than crawling


@pytest.mark.parametrize("make", [fx.text_file, fx.zero_bytes, fx.truncated_png, fx.pdf_named_png])
@pytest.mark.parametrize("limit", [10, 10 * 1024 * 1024])
def test_fit_rejects_what_is_not_a_picture(make: Callable[[], bytes], limit: int) -> None:
    with pytest.raises(ImageRejected):
        fit_for_upload(make(), limit=limit)


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
    assert sniff_image_type(data) in {None, *images.ACCEPTED_TYPES}
    for call in (
        normalise_reference,
        image_size,
        lambda d: fit_for_upload(d, limit=200),
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
