"""A loopback stand-in for the AI/ML API's image endpoint, with scripted faults.

It behaves like the documented API, and is stricter where the documentation is vague, so a client
that passes here does not lean on leniency the real service may not have. Each model's body is
checked against that model's own documented schema (:mod:`.schemas`) and answered in its own
documented shape (:mod:`.responses`). Like the real one, it fetches every reference URL itself: an
expired or unreachable reference fails here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import aiohttp
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from tests.fakes.aimlapi import responses
from tests.fakes.aimlapi.responses import CREDITS_PER_USD, DEFAULT_MESSAGES, PATH, error
from tests.fakes.aimlapi.schemas import SCHEMAS, SEED_MAX, SIZE_PRESETS, ResponseShape, Schema

DEFAULT_MODEL = "flux/dev/image-to-image"
BILLING_PATH = "/v2/billing"
REFERENCE_MAX_BYTES = 25 * 1024 * 1024
#: What the editing models make when no size is asked for: about one megapixel.
EDIT_AREA = 1024 * 1024
UPSCALE_SIDES = {"2k": 2048, "4k": 4096}
#: ``X-Client-Request-Id`` values outside this are silently dropped, as the real API does.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_SEED = web.ResponseKey("fake_seed", int)
_COST = web.ResponseKey("fake_cost", Decimal)
NsfwRule = bool | Callable[[dict[str, Any], int], bool]


class ReceivedRequest(dict[str, Any]):
    """One received JSON body (empty if it was not a JSON object).

    ``authorization`` is only ``"present"`` or ``"absent"``: the key itself is never kept.
    """

    def __init__(
        self,
        body: dict[str, Any],
        *,
        authorization: bool,
        valid_json: bool,
        client_request_id: str | None = None,
    ) -> None:
        super().__init__(body)
        self.authorization: Literal["present", "absent"] = "present" if authorization else "absent"
        self.valid_json = valid_json
        #: The ``X-Client-Request-Id`` header as sent, valid or not.
        self.client_request_id = client_request_id


@dataclass
class CallTiming:
    """When one generation call arrived and was answered (``time.monotonic()``), for benchmarks."""

    received_at: float
    answered_at: float = 0.0
    status: int = 0
    seed: int | None = None
    prompt: str | None = None


@dataclass
class _Fault:
    kind: Literal["fail", "bad_json", "delay", "break_url"]
    status: int = 0
    body: dict[str, Any] | str | None = None
    retry_after: float | str | None = None
    seconds: float = 0.0
    mode: Literal["404", "not_image"] = "404"


class _Rejected(Exception):
    """Raised inside the handler to answer with the documented error body."""

    def __init__(self, status: int, message: str | list[str]) -> None:
        super().__init__(status)
        self.status = status
        self.message = message


class FakeAimlApi:
    """``async with FakeAimlApi(api_key="test-key") as api:``, then use ``api.base_url``."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        models: Iterable[str] = tuple(SCHEMAS),
        latency: float = 0.0,
        nsfw: NsfwRule = False,
        max_concurrency: int | None = None,
        response_shape: ResponseShape | None = None,
        success_status: int = 201,
    ) -> None:
        """``models``: the ids this account may call (all documented ones by default);
        ``response_shape``: force one success shape on every model (default: each model's own).
        """
        self.api_key = api_key
        self.models = frozenset(models)
        self.latency = latency
        self.nsfw = nsfw
        self.max_concurrency = max_concurrency
        self.response_shape: ResponseShape | None = response_shape
        self.success_status = success_status
        #: What one output image costs when its model documents no price; answers carry the
        #: cost in the documented headers.
        self.usd_per_image = Decimal("0.025")
        #: Send ``x-aimlapi-*`` cost headers (some models' bodies carry ``meta.usage`` too).
        self.cost_headers = True
        #: The account's balance in USD: each success draws on it; at 0 or below, calls get 403.
        self.balance = Decimal("1000")
        #: Everything charged so far, in USD.
        self.spent = Decimal(0)
        #: The ``x-inference-id`` of every generation answer, in order.
        self.inference_ids: list[str] = []
        self.billing_requests = 0
        #: Serve files with chunked encoding (no Content-Length), to exercise streamed size caps.
        self.chunked_files = False
        #: Make results of random pixels, which no encoder shrinks (files of ~3 bytes a pixel),
        #: to exercise size limits; solid colours otherwise.
        self.noisy_results = False
        self.requests: list[ReceivedRequest] = []
        #: One record per generation call, in arrival order (``requests`` holds the bodies).
        self.timings: list[CallTiming] = []
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.file_requests = 0
        self.files: dict[str, tuple[bytes, str]] = {}
        self._faults: deque[_Fault] = deque()
        self._download_faults: deque[int] = deque()
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._fetcher: aiohttp.ClientSession | None = None
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeAimlApi:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(PATH, self._generate)
        app.router.add_get(BILLING_PATH, self._billing)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._fetcher = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._closing.set()
        # Server first: handlers still fetching a reference need the fetcher until they end.
        if self._runner is not None:
            await self._runner.cleanup()
        if self._fetcher is not None:
            await self._fetcher.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # ------------------------------------------------------------------ scripting

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        body: dict[str, Any] | str | None = None,
        retry_after: float | str | None = None,
    ) -> None:
        """Answer the next ``times`` calls with ``status`` (default: the documented error body)."""
        for _ in range(times):
            self._faults.append(_Fault("fail", status=status, body=body, retry_after=retry_after))

    def send_bad_json_next(self, times: int = 1) -> None:
        """Answer the next calls with a success status and a truncated JSON body."""
        for _ in range(times):
            self._faults.append(_Fault("bad_json"))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next calls this long before handling them, to trip client timeouts."""
        for _ in range(times):
            self._faults.append(_Fault("delay", seconds=seconds))

    def break_result_url_next(self, mode: Literal["404", "not_image"] = "404") -> None:
        """Make the next successful call's result URLs 404 or serve non-image bytes."""
        self._faults.append(_Fault("break_url", mode=mode))

    def fail_next_download(self, status: int, *, times: int = 1) -> None:
        """Answer the next ``times`` file downloads with ``status``."""
        self._download_faults.extend([status] * times)

    def add_file(self, data: bytes, *, content_type: str = "image/png") -> str:
        """Host bytes (a reference image, say) and return their URL on this server."""
        name = f"{uuid.uuid4().hex}.{content_type.rpartition('/')[2] or 'bin'}"
        self.files[name] = (data, content_type)
        return f"{self.base_url}/files/{name}"

    async def wait_for_calls(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until at least ``n`` generation calls have arrived."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.calls >= n), timeout)

    # ------------------------------------------------------------------ handlers

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        timing = CallTiming(received_at=time.monotonic())
        self.timings.append(timing)
        body = await self._record(request)
        timing.prompt = (body or {}).get("prompt")
        response = await self._answer(request, body)
        timing.answered_at, timing.status = time.monotonic(), response.status
        timing.seed = response.get(_SEED)
        self._trace(request, response)
        return response

    def _trace(self, request: web.Request, response: web.StreamResponse) -> None:
        """The documented tracing headers: an inference id always, our id echoed when valid,
        and the cost (nothing for a failure: its hold is rolled back)."""
        response.headers["x-inference-id"] = uuid.uuid4().hex[:21]
        self.inference_ids.append(response.headers["x-inference-id"])
        sent = request.headers.get("X-Client-Request-Id")
        if sent is not None and CLIENT_REQUEST_ID.fullmatch(sent):
            response.headers["x-client-request-id"] = sent
        if self.cost_headers:
            cost = response.get(_COST, Decimal(0))
            response.headers["x-aimlapi-credits-used"] = str(int(cost * CREDITS_PER_USD))
            response.headers["x-aimlapi-usd-spent"] = f"{cost:.9f}"

    async def _billing(self, request: web.Request) -> web.Response:
        self.billing_requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error(401, "Unauthorized")
        return web.json_response({"current_balance": float(self.balance), "currency": "USD"})

    async def _answer(
        self, request: web.Request, body: dict[str, Any] | None
    ) -> web.StreamResponse:
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            return error(429, "Too many concurrent requests for this API key")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._handle(request, body)
        except _Rejected as rejected:
            return error(rejected.status, rejected.message)
        finally:
            self.in_flight -= 1

    async def _record(self, request: web.Request) -> dict[str, Any] | None:
        raw = await request.read()
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        self.requests.append(
            ReceivedRequest(
                body or {},
                authorization="Authorization" in request.headers,
                valid_json=body is not None,
                client_request_id=request.headers.get("X-Client-Request-Id"),
            )
        )
        async with self._changed:
            self.calls += 1
            self._changed.notify_all()
        return body

    async def _handle(self, request: web.Request, body: dict[str, Any] | None) -> web.Response:
        fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.kind == "fail":
            return responses.scripted_error(fault.status, fault.body, fault.retry_after)
        if fault is not None and fault.kind == "bad_json":
            return web.Response(
                status=self.success_status,
                body=b'{"images": [{"url": "http',
                content_type="application/json",
            )
        if fault is not None and fault.kind == "delay":
            await self._pause(fault.seconds)  # then handled normally, if the client still waits
        broken = fault.mode if fault is not None and fault.kind == "break_url" else None
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise _Rejected(401, "Unauthorized")
        if self.balance <= 0:
            raise _Rejected(403, DEFAULT_MESSAGES[403])
        params = self._validate(body)
        schema = SCHEMAS[params["model"]]
        sizes = [await self._fetch_reference(url, schema) for url in schema.references(params)]
        width, height = _output_size(schema, params, sizes[0])
        await self._pause(self.latency)
        return await self._respond(schema, params, width, height, broken)

    async def _pause(self, seconds: float) -> None:
        """Simulated inference time that ends early when the server shuts down."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    def _validate(self, body: dict[str, Any] | None) -> dict[str, Any]:
        if body is None:
            raise _Rejected(400, "Request body must be a JSON object")
        model = body.get("model")
        if model not in self.models or not isinstance(model, str):
            known = ", ".join(sorted(self.models))
            raise _Rejected(400, [f"model must be one of the following values: {known}"])
        problems = SCHEMAS[model].problems(body)
        if problems:
            raise _Rejected(400, problems)
        return body

    async def _fetch_reference(self, url: str, schema: Schema) -> tuple[int, int]:
        """Fetch and decode a reference as the real service does; 400 if it cannot, or if the
        model documents limits the file is over."""
        assert self._fetcher is not None
        try:
            async with self._fetcher.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    raise _Rejected(
                        400, f"Could not fetch the image from image_url (HTTP {resp.status})"
                    )
                # read(n) returns what has arrived, up to n: read until the end (or the cap).
                data = b""
                while len(data) <= REFERENCE_MAX_BYTES:
                    chunk = await resp.content.read(REFERENCE_MAX_BYTES + 1 - len(data))
                    if not chunk:
                        break
                    data += chunk
        except (aiohttp.ClientError, TimeoutError):
            raise _Rejected(400, "Could not fetch the image from image_url") from None
        if len(data) > min(REFERENCE_MAX_BYTES, schema.reference_max_bytes):
            raise _Rejected(400, "The image at image_url is too large")
        try:
            width, height, image_format = await asyncio.to_thread(responses.image_facts, data)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise _Rejected(400, "The file at image_url is not a supported image") from None
        if f"image/{image_format.lower()}" not in schema.reference_types:
            raise _Rejected(400, f"The image format {image_format} is not supported by this model")
        side = schema.reference_max_side
        if side is not None and max(width, height) > side:
            raise _Rejected(400, f"The image resolution must be at most {side}x{side} pixels")
        return width, height

    async def _respond(
        self,
        schema: Schema,
        params: dict[str, Any],
        width: int,
        height: int,
        broken: Literal["404", "not_image"] | None,
    ) -> web.Response:
        seed = params.get("seed") or random.randint(1, SEED_MAX)
        count = params.get("num_images", 1)
        output_format = params.get("output_format", schema.output_format)
        files = await asyncio.to_thread(
            _results, width, height, seed, count, output_format, noisy=self.noisy_results
        )
        flags = [self._is_nsfw(params, index) for index in range(count)]
        shape = self.response_shape or schema.response
        price = self.usd_per_image
        if schema.usd_per_image is not None:
            price = Decimal(str(schema.usd_per_image))
        cost = price * count
        self.spent += cost
        self.balance -= cost
        usage = None
        if schema.usd_per_image is not None:
            usage = responses.usage(schema.usd_per_image * count, with_usd=schema.reports_usd)
        if shape == "data_b64":
            payload = responses.data_payload([{"b64_json": responses.b64(f)} for f in files], usage)
        elif shape == "data":
            urls = [self._host_result(f, broken, output_format) for f in files]
            payload = responses.data_payload([{"url": url} for url in urls], usage)
        else:
            payload = responses.images_payload(
                [self._host_result(f, broken, output_format) for f in files],
                width=width,
                height=height,
                content_type=f"image/{output_format}",
                seed=seed,
                nsfw=flags,
                prompt=params["prompt"],
                inference=round(self.latency + 0.01, 3),
            )
        response = web.json_response(payload, status=self.success_status)
        response[_SEED], response[_COST] = seed, cost
        return response

    def _is_nsfw(self, params: dict[str, Any], index: int) -> bool:
        return self.nsfw(params, index) if callable(self.nsfw) else bool(self.nsfw)

    def _host_result(
        self, data: bytes, broken: Literal["404", "not_image"] | None, output_format: str = "png"
    ) -> str:
        """Store a result and return its URL, signed-looking like a CDN link."""
        name = f"{uuid.uuid4().hex}.{output_format}"
        if broken != "404":
            content = b"<html>this is not an image</html>" if broken == "not_image" else data
            self.files[name] = (content, f"image/{output_format}")
        return f"{self.base_url}/files/{name}?expires=3600&signature={uuid.uuid4().hex}"

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.file_requests += 1
        if self._download_faults:
            return web.Response(status=self._download_faults.popleft(), text="fault")
        stored = self.files.get(request.match_info["name"])
        if stored is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = stored
        if not self.chunked_files:
            return web.Response(body=data, content_type=content_type)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 1024):
            await response.write(data[start : start + 1024])
        await response.write_eof()
        return response


# --------------------------------------------------------------------------- results


def _output_size(
    schema: Schema, params: dict[str, Any], reference: tuple[int, int]
) -> tuple[int, int]:
    """The size the model documents for this body: the reference's, an aspect ratio's, an
    ``image_size``'s, or the reference scaled to an upscale resolution."""
    width, height = reference
    if "aspect_ratio" in schema.fields:
        ratio_w, _, ratio_h = params.get("aspect_ratio", "16:9").partition(":")
        return _about(EDIT_AREA, int(ratio_w) / int(ratio_h))
    if "image_size" in schema.fields:
        size = params.get("image_size", "landscape_4_3")
        return (size["width"], size["height"]) if isinstance(size, dict) else SIZE_PRESETS[size]
    if "resolution" in schema.fields:
        scale = UPSCALE_SIDES[params.get("resolution", "2k")] / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def _about(area: int, ratio: float, step: int = 16) -> tuple[int, int]:
    return (
        round(math.sqrt(area * ratio) / step) * step,
        round(math.sqrt(area / ratio) / step) * step,
    )


def _results(
    width: int, height: int, seed: int, count: int, output_format: str, *, noisy: bool = False
) -> list[bytes]:
    make = responses.noisy_pngs if noisy else responses.solid_pngs
    pngs = make(width, height, seed, count)
    return [responses.reencode(png, output_format) for png in pngs]
