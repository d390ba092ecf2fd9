"""What the fake API sends back: the documented error body, both success shapes, result images."""

from __future__ import annotations

import base64
import io
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from PIL import Image

PATH = "/v1/images/generations"
DEFAULT_MESSAGES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Insufficient credits. Top up your balance to continue.",
    404: "Not found",
    422: "Unprocessable entity",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Generation timed out",
}
#: Pillow's name for each ``output_format`` the models take.
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
#: The API's credits per US dollar, as its documented examples report them (120000 for $0.06).
CREDITS_PER_USD = 2_000_000


def error_body(status: int, message: str | list[str]) -> dict[str, Any]:
    return {
        "message": message,
        "path": PATH,
        "requestId": str(uuid.uuid4()),
        "statusCode": status,
        "timestamp": datetime.now(UTC).isoformat(),
    }


def error(status: int, message: str | list[str]) -> web.Response:
    return web.json_response(error_body(status, message), status=status)


def scripted_error(
    status: int, body: dict[str, Any] | str | None, retry_after: float | str | None
) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    if isinstance(body, str):
        return web.Response(status=status, text=body, headers=headers)
    if body is None:
        body = error_body(status, DEFAULT_MESSAGES.get(status, "Error"))
    return web.json_response(body, status=status, headers=headers)


def images_payload(
    urls: list[str],
    *,
    width: int,
    height: int,
    content_type: str,
    seed: int,
    nsfw: list[bool],
    prompt: str,
    inference: float,
) -> dict[str, Any]:
    """``{"images": [...], "timings", "seed", "has_nsfw_concepts", "prompt"}`` (FLUX.1 models)."""
    return {
        "images": [
            {"url": url, "width": width, "height": height, "content_type": content_type}
            for url in urls
        ],
        "timings": {"inference": inference},
        "seed": seed,
        "has_nsfw_concepts": nsfw,
        "prompt": prompt,
    }


def data_payload(items: list[dict[str, str]], usage: dict[str, float] | None) -> dict[str, Any]:
    """``{"data": [{"url" | "b64_json"}], "meta": {"usage": {...}}}`` (FLUX.2, Dreamina)."""
    return {"data": items, "meta": {"usage": usage} if usage is not None else {}}


def usage(usd: float, *, with_usd: bool) -> dict[str, float]:
    """``meta.usage`` as the model documents it: credits always, dollars where documented."""
    spent = {"credits_used": round(usd * CREDITS_PER_USD)}
    return spent | {"usd_spent": round(usd, 6)} if with_usd else spent


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_facts(data: bytes) -> tuple[int, int, str]:
    """Width, height and Pillow's format name of a fully decoded picture."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.width, image.height, image.format or ""


def solid_pngs(width: int, height: int, seed: int, count: int) -> list[bytes]:
    """Cheap stand-ins for results: one solid colour per (seed, index), so seeds differ."""
    pngs = []
    for index in range(count):
        rng = random.Random(f"{seed}:{index}")
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def noisy_pngs(width: int, height: int, seed: int, count: int) -> list[bytes]:
    """Results no encoder can shrink much (random pixels), for size limits; fast to make."""
    pngs = []
    for index in range(count):
        rng = random.Random(f"{seed}:{index}")
        pixels = rng.randbytes(width * height * 3)
        buffer = io.BytesIO()
        Image.frombytes("RGB", (width, height), pixels).save(buffer, format="PNG", compress_level=1)
        pngs.append(buffer.getvalue())
    return pngs


def reencode(png: bytes, output_format: str) -> bytes:
    """A PNG result in the format the body asked for (``png`` returns it as it is)."""
    if output_format == "png":
        return png
    with Image.open(io.BytesIO(png)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format=FORMATS[output_format])
        return buffer.getvalue()
