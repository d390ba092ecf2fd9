"""Every Pillow operation of the bot: checking pictures, preparing references, fitting uploads.

All functions are synchronous and CPU-bound; callers run them on a worker thread. They keep
no state between calls and change no Pillow globals, so any number may run at once. Whatever bytes
they are given, the only exception they raise for bad input is :class:`ImageRejected`, whose
``user_message`` can be shown to a Discord member as it is.

Decompression bombs are refused from the header's dimensions before any pixel is decoded (our own
limit, ``max_source_pixels``, below Pillow's global ``MAX_IMAGE_PIXELS``, which we leave alone).
Truncated files fail: a file kept as it is (a result that fits, a plain reference) is proven
whole from its container without decoding (:mod:`~services.images.containers`), and anything
else is fully loaded with Pillow's ``LOAD_TRUNCATED_IMAGES`` left off.

One job per module: :mod:`~services.images.formats` (magic bytes, header sizes, declared types,
:class:`ImageRejected`), :mod:`~services.images.containers` (whole files without decoding),
:mod:`~services.images.pixels` (decoding and converting, shared),
:mod:`~services.images.reference` (:func:`normalise_reference`) and
:mod:`~services.images.upload` (:func:`fit_for_upload`).
"""

from __future__ import annotations

from services.images.formats import ImageRejected, check_attachment_meta, sniff_image_type
from services.images.reference import PreparedImage, normalise_reference
from services.images.upload import EncodedFile, fit_for_upload

__all__ = [
    "EncodedFile",
    "ImageRejected",
    "PreparedImage",
    "check_attachment_meta",
    "fit_for_upload",
    "normalise_reference",
    "sniff_image_type",
]
