"""Every REST request passes here: recorded, parsed, authenticated, rate limited, answered.

Errors a handler raises become Discord's JSON error answers; every 4xx is also kept in
``FakeDiscord.rejections`` so a test can assert the bot was never refused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord.errors import ApiError
from tests.fakes.discord.ratelimits import RateLimited

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

_log = logging.getLogger("tests.fakes.discord")
API = "/api/v10"

#: Where the middleware leaves a request's parsed JSON (or payload_json) and files.
BODY = web.RequestKey("body", object)
FILES = web.RequestKey("files", list)


@dataclass
class FakeRequest:
    """One REST request as the fake saw it (``json`` is the parsed ``payload_json`` too)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, int]]
    time: float
    status: int = 0
    #: ``time.monotonic()`` when the fake finished handling it (benchmarks time against it).
    done_at: float = 0.0


#: Called with each REST request and its response once handled; benchmarks observe through it.
RequestObserver = Callable[[FakeRequest, web.StreamResponse], None]


class MiddlewareMixin:
    """Request plumbing of FakeDiscord (``self`` is always a FakeDiscord)."""

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.Response(
            status=status, body=json.dumps(data).encode(), content_type="application/json"
        )

    async def _parse_body(self, request: web.Request) -> tuple[Any, list[tuple[str, str, bytes]]]:
        if not request.body_exists:
            return None, []
        files: list[tuple[str, str, bytes]] = []
        try:
            if request.content_type.startswith("multipart/"):
                body = None
                reader = await request.multipart()
                async for part in reader:
                    if part.name == "payload_json":
                        body = json.loads(await part.text())
                    elif part.filename is not None:
                        files.append((part.name or "", part.filename, bytes(await part.read())))
                return body, files
            return json.loads(await request.text()), files
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from exc

    @web.middleware
    async def _middleware(
        self: FakeDiscord, request: web.Request, handler: Callable[..., Any]
    ) -> web.StreamResponse:
        if not request.path.startswith(API + "/"):
            return await handler(request)
        sub = request.path[len(API) :]
        entry = FakeRequest(request.method, sub, dict(request.query), None, [], self.now())
        self.requests.append(entry)
        headers = {"Via": "1.1 google"}
        try:
            entry.json, files = await self._parse_body(request)
            entry.files = [(fn, len(data)) for _, fn, data in files]
            request[BODY], request[FILES] = entry.json, files
            self._scripted_rate_limit(request.method, sub)
            unauthenticated = sub.startswith(("/interactions/", "/webhooks/"))
            if not unauthenticated and request.headers.get("Authorization") != f"Bot {self.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            if not sub.startswith("/interactions/"):
                headers.update(self._rate_limit_headers(request))
            response = await handler(request)
        except RateLimited as rl:
            response = self._rate_limited(entry, rl, headers)
        except ApiError as err:
            response = self._json(err.body(), err.status)
            self.rejections.append({"status": err.status, "request": entry, **err.body()})
        except Exception as exc:
            # A bug in the fake: answer a 400 (discord.py would retry a 5xx for ~25 s).
            _log.exception("fake discord failed on %s %s", request.method, sub)
            body = {"code": -1, "message": f"fake discord internal error: {exc!r}"}
            self.rejections.append({"status": 400, "request": entry, **body})
            response = self._json(body, 400)
        entry.status = response.status
        entry.done_at = time.monotonic()
        response.headers.update(headers)
        for observer in self.observers:
            observer(entry, response)
        self._notify()
        return response

    async def _h_unknown(self, request: web.Request) -> web.Response:
        raise ApiError(404, 0, "404: Not Found")
