"""What the image tests share."""

from __future__ import annotations

import io

from PIL import Image


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()
