"""Prometheus metrics (``METRICS_PORT``) and the one structured log line per finished job.

Every metric of a bot lives in its own registry, held by one :class:`Metrics`: the services and
the bot record into it, and :class:`MetricsServer` serves it on ``/metrics``. Several bots in one
process (the tests) therefore never share counts.

What is measured, and where:
- jobs by outcome and model, and the log line: ``job_ended`` (worker, generation service);
- queue depth and running jobs, whole bot: read from the database at each scrape (``watch_queue``);
- API latency: each generation call, retries included (worker);
- spend: each API attempt's cost as the API reported it, or its estimate (worker, DESIGN §10);
- acknowledgement latency: an :func:`interaction_ack_trace` on the bot's HTTP session sees every
  answer to Discord, whichever command, button or form it answers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from services.clock import utc_now
from services.store import Generation

job_log = logging.getLogger("fluxbot.jobs")
log = logging.getLogger(__name__)

#: A generation call takes seconds to minutes (API_DEADLINE_SECONDS is 180 by default).
API_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0)
#: Discord wants an answer within 3 s; the bot aims at tens of milliseconds.
ACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
#: An interaction callback: ``POST /api/v10/interactions/<id>/<token>/callback``.
_CALLBACK = re.compile(r"/interactions/(?P<id>[0-9]+)/[^/]+/callback$")


class Outcome(StrEnum):
    """How a job ended; a job that will run again (429, shutdown) has not ended."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Metrics:
    def __init__(self) -> None:
        self._depth: Callable[[], Awaitable[tuple[int, int]]] | None = None
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "fluxbot_jobs",
            "Jobs that ended, by outcome and model",
            ["outcome", "model"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "fluxbot_queue_depth", "Jobs waiting for an API slot", registry=self.registry
        )
        self.jobs_running = Gauge(
            "fluxbot_jobs_running",
            "Jobs started and not yet finished (calling the API or posting)",
            registry=self.registry,
        )
        self.api_latency = Histogram(
            "fluxbot_api_latency_seconds",
            "One generation call to the AI/ML API, retries included, by model and result",
            ["model", "result"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self.spend = Counter(
            "fluxbot_spend_usd",
            "USD the AI/ML API reported per attempt (estimated when it did not say), by model",
            ["model"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "fluxbot_ack_latency_seconds",
            "From an interaction's creation (its id's timestamp) to Discord taking the answer",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )

    def watch_queue(self, depth: Callable[[], Awaitable[tuple[int, int]]]) -> None:
        """Read the whole bot's running and waiting jobs at each scrape, so they are never
        stale (the database holds the queue: every process reports the same figures)."""
        self._depth = depth

    async def refresh(self) -> None:
        if self._depth is not None:
            running, waiting = await self._depth()
            self.queue_depth.set(waiting)
            self.jobs_running.set(running)

    def spent(self, model: str, usd: float) -> None:
        if usd > 0:
            self.spend.labels(model=model).inc(usd)

    def api_call(self, model: str, result: str, seconds: float) -> None:
        self.api_latency.labels(model=model, result=result).observe(seconds)

    def job_ended(
        self,
        generation: Generation,
        outcome: Outcome,
        *,
        api_seconds: float | None = None,
        now: datetime | None = None,
    ) -> None:
        """Count the job and log its one line: ``job id=… outcome=… model=… member=… …``.

        The fields are also on the record as ``record.job`` for a JSON log formatter.
        """
        self.jobs.labels(outcome=outcome.value, model=generation.model).inc()
        end = now or utc_now()
        started = generation.started_at
        fields: dict[str, object] = {
            "id": generation.id,
            "outcome": outcome.value,
            "model": generation.model,
            "kind": generation.kind.value,
            "member": generation.user_id,
            "guild": generation.guild_id,
            "attempts": generation.attempts,
            "waited_s": _seconds(started - generation.created_at) if started else None,
            "api_s": None if api_seconds is None else round(api_seconds, 3),
            "total_s": _seconds(end - generation.created_at),
        }
        line = " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())
        job_log.info("job %s", line, extra={"job": fields})


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


def _logfmt(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return f'"{text}"' if " " in text or '"' in text else text


def interaction_ack_trace(
    metrics: Metrics, created_at: Callable[[int], float]
) -> aiohttp.TraceConfig:
    """Observe every interaction answer the bot's HTTP client sends to Discord.

    ``created_at`` maps an interaction id to its creation time (Unix seconds; the bot derives it
    from the snowflake). The time counted ends when Discord has accepted the answer, which is
    what its 3-second rule measures. A clock skew between Discord and us never counts below 0.
    """

    async def on_request_end(
        _session: aiohttp.ClientSession,
        _context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        match = _CALLBACK.search(params.url.path)
        if params.method == "POST" and match and params.response.status < 400:
            seconds = time.time() - created_at(int(match["id"]))
            metrics.ack_latency.observe(max(0.0, seconds))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


class MetricsServer:
    """``GET /metrics`` in Prometheus' text format, on the bot's own event loop."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0: any free one) and return the port."""
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, _request: web.Request) -> web.Response:
        await self._metrics.refresh()
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
