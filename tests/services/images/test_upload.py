"""services.images.upload: results fitted into a channel's upload limit."""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable

import pytest
from PIL import Image, ImageFile

from services.images import upload
from services.images.formats import ImageRejected
from services.images.upload import EncodedFile, fit_for_upload
from tests import images as fx
from tests.services.images.helpers import decode

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
    source.save(webp, "WEBP", quality=upload.UPLOAD_WEBP_QUALITY)
    jpeg = io.BytesIO()
    source.save(jpeg, "JPEG", quality=upload.UPLOAD_JPEG_QUALITY, optimize=True)
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


# --- fitting a model's input limits --------------------------------------------------------------


def test_a_picture_within_a_models_limits_is_kept_as_it_is() -> None:
    data = fx.jpeg(300, 200)
    kept = fit_for_upload(
        data, limit=len(data), max_side=300, types=("image/png", "image/jpeg"), stem="reference"
    )
    assert (kept.data, kept.filename, kept.reencoded) == (data, "reference.jpg", False)


def test_a_format_the_model_refuses_is_reencoded_into_one_it_takes() -> None:
    data = fx.webp(64, 48)
    fitted = fit_for_upload(data, limit=10 * 1024 * 1024, types=("image/png", "image/jpeg"))
    assert fitted.content_type == "image/png" and fitted.reencoded
    assert decode(fitted.data).size == (64, 48)


def test_a_side_over_the_models_limit_is_scaled_down_first() -> None:
    data = fx.png(400, 100)
    fitted = fit_for_upload(data, limit=10 * 1024 * 1024, max_side=200)
    assert (fitted.width, fitted.height) == (200, 50)
    assert decode(fitted.data).size == (200, 50)


def test_bytes_over_the_models_limit_give_a_smaller_file_it_takes() -> None:
    data = fx.noise_png(512, 512)
    limit = len(data) // 4
    fitted = fit_for_upload(data, limit=limit, max_side=4096, types=("image/png", "image/jpeg"))
    assert fitted.content_type == "image/jpeg" and len(fitted.data) <= limit
    assert max(decode(fitted.data).size) <= 512


# --- results posted as they are ------------------------------------------------------------------


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decode fails the test: what is kept must be proven whole without one."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(
    ("make", "content_type", "size"),
    [
        (lambda: fx.photo_like_png(320, 240), "image/png", (320, 240)),
        (lambda: fx.jpeg(320, 240), "image/jpeg", (320, 240)),
        (lambda: fx.webp(48, 32, lossless=False), "image/webp", (48, 32)),
    ],
)
@pytest.mark.usefixtures("no_decoding")
def test_whole_results_are_kept_without_decoding(
    make: Callable[[], bytes], content_type: str, size: tuple[int, int]
) -> None:
    data = make()
    kept = fit_for_upload(data, limit=10 * 1024 * 1024)
    assert (kept.data, kept.content_type, kept.reencoded) == (data, content_type, False)
    assert (kept.width, kept.height) == size


@pytest.mark.parametrize(
    "make",
    [
        lambda: fx.photo_like_png(48, 32),
        lambda: fx.jpeg(48, 32),
        lambda: fx.webp(48, 32, lossless=False),
    ],
)
def test_a_result_cut_short_anywhere_is_never_posted(make: Callable[[], bytes]) -> None:
    data = make()
    for length in range(len(data)):
        with pytest.raises(ImageRejected):
            fit_for_upload(data[:length], limit=10 * 1024 * 1024)


def test_a_gif_result_is_still_proven_by_decoding_its_first_frame() -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).save(buffer, "GIF")
    data = buffer.getvalue()
    assert fit_for_upload(data, limit=10 * 1024 * 1024).data == data
    with pytest.raises(ImageRejected) as caught:
        fit_for_upload(data[: len(data) * 3 // 5], limit=10 * 1024 * 1024)
    assert caught.value.reason == "damaged"


def test_a_result_cut_in_its_last_bytes_is_refused_though_pillow_would_decode_it() -> None:
    data = fx.photo_like_png(48, 32)
    decode(data[:-12])  # no IEND: Pillow does not miss it
    with pytest.raises(ImageRejected) as caught:
        fit_for_upload(data[:-12], limit=10 * 1024 * 1024)
    assert caught.value.reason == "damaged"


def test_a_result_altered_on_the_way_is_never_posted() -> None:
    data = bytearray(fx.photo_like_png(48, 32))
    (length,) = struct.unpack_from(">I", data, 33)
    data[33 + 8 + length] ^= 0x01  # the IDAT's CRC: Pillow never checks it
    decode(bytes(data))
    with pytest.raises(ImageRejected) as caught:
        fit_for_upload(bytes(data), limit=10 * 1024 * 1024)
    assert caught.value.reason == "damaged"
