"""The benchmark's phases: a burst (latency), a full queue (throughput), a long run (leaks) and
a busy channel under Discord's own per-channel limits.

Each phase gets fresh fakes, a fresh database and a fresh bot process, so one phase's state
cannot colour the next one's figures.
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import LoopLag, Result, Server, bot_process, own_cpu_seconds
from tests.botprocess import MODULE, BotProcess
from tests.postgres import PostgresServer


@dataclass
class Options:
    commands: int = 200
    members: int = 50
    rerolls: int = 50
    channels: int = 1
    latency: float = 2.5
    width: int = 1024
    height: int = 768
    burst_concurrency: int = 64
    bucket_limit: int = 5
    bucket_window: float = 0.5
    fast_latency: float = 0.1
    queue_latency: float = 1.0
    fast_concurrency: int = 32
    fast_bucket_limit: int = 1000
    queued: int = 500
    leak_first: int = 200
    leak_total: int = 2000
    relay_jobs: int = 96
    relay_interval: float = 0.4
    relay_rounds: int = 4
    phases: str = "RABCD"
    profile: bool = False
    busy_commands: int = 30
    busy_spread: float = 10.0
    busy_concurrency: int = 32
    #: Discord's per-channel budget for sends, edits and thread creation (commonly 5 per 5 s).
    busy_write_limit: tuple[int, float] = (5, 5.0)
    #: Where each phase's fresh database lives: ``sqlite`` (a file) or ``postgresql`` (a new
    #: database on ``postgres``, the run's throwaway server).
    engine: str = "sqlite"
    engines: tuple[str, ...] = ("sqlite", "postgresql")
    postgres: PostgresServer | None = None
    scale_jobs: int = 300
    scale_latency: float = 0.05
    scale_concurrency: int = 16
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fluxbot-bench-")))


@dataclass
class Figures:
    """What one phase measured; units in the names (seconds unless ``_mb``)."""

    name: str
    settings: str
    values: dict[str, Any] = field(default_factory=dict)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def bot_settings(opts: Options, server: Server, *, concurrency: int, db: str) -> dict[str, Any]:
    megapixels = max(1.0, math.ceil(opts.width * opts.height / 100_000) / 10)
    return {
        "aimlapi_base_url": server.api.base_url,
        "database_url": db,
        "max_concurrent_jobs": concurrency,
        "max_queued_per_user": 100,
        "max_input_megapixels": megapixels,
        "shutdown_grace_seconds": 5,
        "log_level": "INFO",
    }


@asynccontextmanager
async def world(
    opts: Options,
    name: str,
    *,
    latency: float,
    concurrency: int,
    bucket_limit: int,
    module: str = MODULE,
    monitor: bool = True,
    members: int | None = None,
    channels: int | None = None,
    channel_write_limit: tuple[int, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Server, BotProcess]]:
    async with Server.running(
        latency=latency,
        members=members or opts.members,
        channels=channels or opts.channels,
        width=opts.width,
        height=opts.height,
        bucket_limit=bucket_limit,
        bucket_window=opts.bucket_window,
        channel_write_limit=channel_write_limit,
    ) as server:
        name = f"{name}-{opts.engine}"
        async with database(opts, name) as db:
            settings = bot_settings(opts, server, concurrency=concurrency, db=db) | (extra or {})
            log = opts.log_dir / f"{name}.log"
            profile = opts.log_dir / f"{name}.py-spy.txt" if opts.profile else None
            async with bot_process(
                server.discord.url, settings, log, module, profile, monitor
            ) as bot:
                yield server, bot


@asynccontextmanager
async def database(opts: Options, name: str) -> AsyncIterator[str]:
    """A fresh database for one phase on ``opts.engine``: its ``DATABASE_URL``."""
    if opts.engine == "sqlite":
        yield f"sqlite:///{opts.log_dir / name}.sqlite3"
        return
    assert opts.postgres is not None, "the run starts its PostgreSQL server first"
    async with opts.postgres.database() as url:
        yield url


class Rerolls:
    """Presses Reroll on new results: at most ``per_member`` each, ``budget`` in all."""

    def __init__(self, server: Server, budget: int, per_member: int = 1) -> None:
        self.server, self.budget, self.per_member = server, budget, per_member
        self.pressed: dict[int, int] = {}
        self.seen = len(server.observed.results)
        self.clicks: list[Any] = []

    async def run(self) -> None:
        observed = self.server.observed
        while len(self.clicks) < self.budget:
            await observed.changed.wait()
            new: list[Result] = observed.results[self.seen :]
            self.seen += len(new)
            for result in new:
                user = result.user_id or 0
                if (
                    not result.failed
                    and result.generation_id is not None
                    and self.pressed.get(user, 0) < self.per_member
                    and len(self.clicks) < self.budget
                ):
                    self.pressed[user] = self.pressed.get(user, 0) + 1
                    self.clicks.append(await self.server.reroll(result))
            await asyncio.sleep(0)


async def fire(
    server: Server,
    first: int,
    commands: int,
    rerolls: int,
    *,
    timeout: float,  # noqa: ASYNC109
    per_member: int = 1,
) -> tuple[list[Any], list[Any], bool]:
    """Send ``commands`` /imagine in one burst, reroll as results come; wait for all results."""
    expected = len(server.observed.results) + commands + rerolls
    presser = Rerolls(server, rerolls, per_member)
    task = asyncio.create_task(presser.run())
    sent = [await server.imagine(first + n) for n in range(commands)]
    complete = await server.observed.wait_results(expected, timeout)
    task.cancel()
    return sent, presser.clicks, complete


def ack_figures(commands: list[Any], clicks: list[Any]) -> dict[str, Any]:
    acks = [i.ack_latency for i in commands + clicks if i.ack_latency is not None]
    command_acks = [i.ack_latency for i in commands if i.ack_latency is not None]
    click_acks = [i.ack_latency for i in clicks if i.ack_latency is not None]
    return {
        "ack_p50": pct(acks, 0.5),
        "ack_p99": pct(acks, 0.99),
        "ack_max": max(acks, default=math.nan),
        "ack_command_p99": pct(command_acks, 0.99),
        "ack_click_p99": pct(click_acks, 0.99),
        "unanswered": len(commands) + len(clicks) - len(acks),
    }


def overheads(server: Server, results: list[Result]) -> list[float]:
    """API answer -> result accepted by Discord, matched by seed (random, so unique)."""
    answered = {t.seed: t.answered_at for t in server.api.timings if t.seed is not None}
    return [r.done_at - answered[r.seed] for r in results if r.seed in answered]


def overhead_figures(server: Server, results: list[Result]) -> dict[str, Any]:
    samples = overheads(server, results)
    intake = [
        server.observed.rehosted_at[i.original_message_id] - server.sent_at[i.id]
        for i in server.interactions
        if i.original_message_id in server.observed.rehosted_at and i.id in server.sent_at
    ]
    return {
        "overhead_p50": pct(samples, 0.5),
        "overhead_p99": pct(samples, 0.99),
        "overhead_n": len(samples),
        "intake_p50": pct(intake, 0.5),
        "intake_p99": pct(intake, 0.99),
    }


def discord_figures(server: Server) -> dict[str, Any]:
    rejections = server.discord.rejections
    writes = [r for r in server.discord.requests if r.method in ("POST", "PATCH")]
    return {
        "discord_edits": sum(1 for r in writes if r.method == "PATCH"),
        "discord_posts": sum(1 for r in writes if r.method == "POST"),
        "discord_upload_bytes": sum(size for r in writes for _, size in r.files),
        "discord_429": sum(1 for r in rejections if r.get("status") == 429),
        "discord_other_4xx": sum(1 for r in rejections if r.get("status") != 429),
        "failed": sum(1 for r in server.observed.results if r.failed),
    }


async def burst(opts: Options, label: str = "A") -> Figures:
    """N commands from M members at once at the real API latency: acks, overhead, peak RSS."""
    figures = Figures(
        label,
        f"{opts.commands} /imagine from {opts.members} members in one burst "
        f"+ {opts.rerolls} rerolls, {opts.channels} channel(s); API latency {opts.latency:g} s; "
        f"{opts.width}×{opts.height} PNG (~{_mb(_png_size(opts))} MB); "
        f"MAX_CONCURRENT_JOBS={opts.burst_concurrency}; Discord per-route limit "
        f"{opts.bucket_limit}/{opts.bucket_window:g} s",
    )
    async with world(
        opts,
        f"{label}-burst",
        latency=opts.latency,
        concurrency=opts.burst_concurrency,
        bucket_limit=opts.bucket_limit,
    ) as (server, bot):
        await bot.ask("reset")
        cpu = bot.cpu_seconds()
        with LoopLag() as fakes_lag:
            started = time.monotonic()
            commands, clicks, complete = await fire(
                server, 0, opts.commands, opts.rerolls, timeout=120 + 2 * opts.latency
            )
            elapsed = time.monotonic() - started
        stats = await bot.ask("stats")
        jobs = len(server.observed.results)
        figures.values.update(
            ack_figures(commands, clicks),
            **overhead_figures(server, server.observed.results),
            **discord_figures(server),
            complete=complete,
            jobs=jobs,
            elapsed=elapsed,
            lag_max=stats["lag_max"],
            lag_p99=stats["lag_p99"],
            peak_rss_mb=stats["VmHWM"] / 1024,
            ready_rss_mb=bot.ready_rss_mb,
            in_system_max=stats["in_system_max"],
            bot_cpu_per_job=(bot.cpu_seconds() - cpu) / max(1, jobs),
            fakes_lag_max=fakes_lag.worst,
        )
    return figures


async def throughput(opts: Options, label: str = "B") -> Figures:
    """Fill the queue behind a closed API, then open it: jobs per second against the ideal."""
    figures = Figures(
        label,
        f"{opts.queued} jobs queued ({opts.members} members) before the API answers; "
        f"API latency {opts.queue_latency:g} s; MAX_CONCURRENT_JOBS={opts.fast_concurrency}; "
        f"Discord per-route limit raised to {opts.fast_bucket_limit}/{opts.bucket_window:g} s",
    )
    async with world(
        opts,
        f"{label}-throughput",
        latency=opts.queue_latency,
        concurrency=opts.fast_concurrency,
        bucket_limit=opts.fast_bucket_limit,
    ) as (server, bot):
        server.api.gate.clear()
        # In batches of 50, each answered before the next: one 500-command burst makes most
        # interactions miss Discord's 3 s deadline (phase A measures bursts).
        for first in range(0, opts.queued, 50):
            batch = [await server.imagine(n) for n in range(first, min(first + 50, opts.queued))]
            await asyncio.gather(*(i.response(timeout=10) for i in batch), return_exceptions=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stats = await bot.ask("stats")
            in_bot = stats["waiting"] + stats["running"] + len(server.observed.results)
            if in_bot >= opts.queued:
                break
            await asyncio.sleep(0.1)
        filled = time.monotonic()
        await bot.ask("reset")
        cpu, fakes_cpu = bot.cpu_seconds(), own_cpu_seconds()
        with LoopLag() as fakes_lag:
            opened = time.monotonic()
            server.api.gate.set()
            complete = await server.observed.wait_results(opts.queued, timeout=120)
        results = server.observed.results
        finished = max((r.done_at for r in results), default=opened)
        stats = await bot.ask("stats")
        rate = len(results) / (finished - opened) if finished > opened else math.nan
        ideal = opts.fast_concurrency / opts.queue_latency
        served = [
            t.answered_at - max(t.received_at, opened) for t in server.api.timings if t.answered_at
        ]
        figures.values.update(
            **overhead_figures(server, results),
            **discord_figures(server),
            complete=complete,
            jobs=len(results),
            intake_seconds=filled - min(server.sent_at.values()),
            throughput=rate,
            ideal=ideal,
            ratio=rate / ideal,
            api_call_mean=statistics.fmean(served) if served else math.nan,
            lag_max=stats["lag_max"],
            peak_rss_mb=stats["VmHWM"] / 1024,
            in_system_max=stats["in_system_max"],
            bot_cpu_per_job=(bot.cpu_seconds() - cpu) / max(1, len(results)),
            fakes_cpu_per_job=(own_cpu_seconds() - fakes_cpu) / max(1, len(results)),
            fakes_lag_max=fakes_lag.worst,
        )
    return figures


async def leak(opts: Options, label: str = "C") -> Figures:
    """Many jobs in waves; RSS (after a GC) once the first wave is done and at the end."""
    wave = opts.leak_first
    commands = min(opts.members, wave // 2)
    rerolls = wave - commands
    figures = Figures(
        label,
        f"{opts.leak_total} jobs in waves of {wave} ({commands} /imagine, one per member, + "
        f"{rerolls} rerolls pressed as results land); API latency {opts.fast_latency:g} s; "
        f"MAX_CONCURRENT_JOBS={opts.fast_concurrency}; Discord per-route limit raised to "
        f"{opts.fast_bucket_limit}/{opts.bucket_window:g} s",
    )
    async with world(
        opts,
        f"{label}-leak",
        latency=opts.fast_latency,
        concurrency=opts.fast_concurrency,
        bucket_limit=opts.fast_bucket_limit,
    ) as (server, bot):
        await bot.ask("reset")
        rss: dict[int, float] = {}
        done, sent, started, complete = 0, 0, time.monotonic(), True
        while done < opts.leak_total:
            presses = min(wave, opts.leak_total - done) - commands
            _, _, ok = await fire(server, sent, commands, presses, timeout=120, per_member=wave)
            complete = complete and ok
            sent += commands
            done = len(server.observed.results)
            if not rss:
                rss[done] = (await bot.ask("settle"))["VmRSS"] / 1024
        stats = await bot.ask("settle")
        rss[done] = stats["VmRSS"] / 1024
        (first, first_rss), (last, last_rss) = min(rss.items()), max(rss.items())
        figures.values.update(
            **discord_figures(server),
            complete=complete,
            jobs=done,
            elapsed=time.monotonic() - started,
            rss_first_jobs=first,
            rss_first_mb=first_rss,
            rss_last_jobs=last,
            rss_last_mb=last_rss,
            rss_growth=last_rss / first_rss - 1,
            peak_rss_mb=stats["VmHWM"] / 1024,
            lag_max=stats["lag_max"],
        )
    return figures


#: The processes of phase R, each with the settings it adds: the bot; the bare relay that is
#: its floor; and the relay that also keeps the card's copy of the member's picture.
CONTENDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "bot": (MODULE, {}),
    "relay": ("bench.relay", {}),
    "relay_copy": ("bench.relay", {"relay_copies_reference": True}),
}
#: After the last result, time for what a job still does (the bot's last card edits).
SETTLE_SECONDS = 2.0


async def relay_comparison(opts: Options, label: str = "R") -> Figures:
    """The same paced /imagine workload, on fresh fakes, against the bot and the relays.

    Commands are paced (one every ``relay_interval``) rather than fired in one burst, so the
    result path is measured as a member meets it, not as a queue behind other results or
    Discord's rate limits (phase A's subject). Every result is a ~1.5 MB PNG within the upload
    limit, so both post the API's bytes as they are; the bot's CPU per job includes its intake
    (card, thread, re-hosted reference, card edits). They take turns over ``relay_rounds``
    rounds, so a change in the machine's load (other processes) falls on all.
    """
    rounds = max(1, opts.relay_rounds)
    per_round = max(1, opts.relay_jobs // rounds)
    figures = Figures(
        label,
        f"{per_round * rounds} /imagine from {opts.members} members, one every "
        f"{opts.relay_interval:g} s, to the bot, to a bare relay (bench/relay.py) and to the "
        f"relay keeping the card's copy of each picture, taking turns over {rounds} round(s); "
        f"API latency {opts.latency:g} s; "
        f"{opts.width}×{opts.height} PNG results posted unchanged; Discord per-route limit "
        f"{opts.bucket_limit}/{opts.bucket_window:g} s",
    )
    totals: dict[str, dict[str, Any]] = {
        name: {"overheads": [], "cpu": 0.0, "jobs": 0, "peak_rss_mb": 0.0, "complete": True}
        for name in CONTENDERS
    }
    for round_number in range(rounds):
        for name, (module, extra) in CONTENDERS.items():
            total = totals[name]
            async with world(
                opts,
                f"{label}{round_number + 1}-{name}",
                latency=opts.latency,
                concurrency=opts.burst_concurrency,
                bucket_limit=opts.bucket_limit,
                module=module,
                monitor=False,
                extra=extra,
            ) as (server, process):
                await process.ask("reset")
                cpu = process.cpu_seconds()
                started = time.monotonic()
                for number in range(per_round):
                    await server.imagine(number)
                    # Pacing of the workload (what is measured is timed by the fakes).
                    await asyncio.sleep(
                        max(0.0, started + (number + 1) * opts.relay_interval - time.monotonic())
                    )
                complete = await server.observed.wait_results(per_round, 60 + 2 * opts.latency)
                await asyncio.sleep(SETTLE_SECONDS)
                stats = await process.ask("stats")
                total["cpu"] += process.cpu_seconds() - cpu
                total["jobs"] += len(server.observed.results)
                total["overheads"] += overheads(server, server.observed.results)
                total["peak_rss_mb"] = max(total["peak_rss_mb"], stats["VmHWM"] / 1024)
                total["complete"] = total["complete"] and complete
                for key, value in discord_figures(server).items():
                    total[key] = total.get(key, 0) + value
    for name, total in totals.items():
        samples = total.pop("overheads")
        figures.values[name] = {
            **total,
            "overhead_p50": pct(samples, 0.5),
            "overhead_p99": pct(samples, 0.99),
            "overhead_n": len(samples),
            "cpu_per_job": total["cpu"] / max(1, total["jobs"]),
        }
    return figures


THREAD = re.compile(r"^/channels/(\d+)/messages/(\d+)/threads$")
CHANNEL_WRITE = re.compile(r"^/channels/(\d+)/(messages|threads)")


async def busy(opts: Options, label: str = "D") -> Figures:
    """One channel, Discord's real per-channel limits, members arriving over a few seconds.

    What a member waits for: their API call to start, and their result once both the API has
    answered and the channel's thread budget has let their thread be made.
    """
    limit, window = opts.busy_write_limit
    figures = Figures(
        label,
        f"{opts.busy_commands} /imagine from {opts.busy_commands} members within "
        f"{opts.busy_spread:g} s in 1 channel; API latency {opts.latency:g} s; "
        f"MAX_CONCURRENT_JOBS={opts.busy_concurrency}; Discord per-channel limit {limit}/"
        f"{window:g} s for sends, edits and threads (others {opts.bucket_limit}/"
        f"{opts.bucket_window:g} s)",
    )
    async with world(
        opts,
        f"{label}-busy",
        latency=opts.latency,
        concurrency=opts.busy_concurrency,
        bucket_limit=opts.bucket_limit,
        members=opts.busy_commands,
        channels=1,
        channel_write_limit=opts.busy_write_limit,
    ) as (server, _):
        started = time.monotonic()
        commands = []
        for number in range(opts.busy_commands):
            commands.append(await server.imagine(number))
            await asyncio.sleep(opts.busy_spread / opts.busy_commands)  # arrival pacing
        complete = await server.observed.wait_results(opts.busy_commands, timeout=180)
        await _quiet(server, seconds=2 * window, timeout=180)  # card edits still draining
        figures.values.update(
            _busy_figures(server, commands),
            **discord_figures(server),
            complete=complete,
            jobs=len(server.observed.results),
            elapsed=time.monotonic() - started,
        )
    return figures


async def _quiet(server: Server, *, seconds: float, timeout: float) -> None:  # noqa: ASYNC109
    """Wait until the fake Discord has had no request for ``seconds`` (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = max((r.done_at for r in server.discord.requests), default=0.0)
        if time.monotonic() - last >= seconds:
            return
        await asyncio.sleep(0.2)


def _busy_figures(server: Server, commands: list[Any]) -> dict[str, Any]:
    requests = [r for r in server.discord.requests if 200 <= r.status < 300]
    threads = {int(m[2]): r.done_at for r in requests if (m := THREAD.match(r.path))}
    calls = {t.prompt: t for t in server.api.timings}
    answered = {t.seed: t.answered_at for t in server.api.timings if t.seed is not None}
    results = {r.channel_id: r for r in server.observed.results}
    to_api, to_result, post_delay = [], [], []
    for interaction in commands:
        sent = server.sent_at[interaction.id]
        options = interaction.payload["data"]["options"]
        prompt = next(o["value"] for o in options if o["name"] == "prompt")
        if (call := calls.get(prompt)) is not None:
            to_api.append(call.received_at - sent)
        card = interaction.original_message_id
        result = results.get(card or 0)
        if result is None:
            continue
        to_result.append(result.done_at - sent)
        if result.seed in answered:
            ready = max(answered[result.seed], threads.get(card or 0, 0.0))
            post_delay.append(result.done_at - ready)
    channel = str(server.channels[0])
    writes = [r for r in requests if (m := CHANNEL_WRITE.match(r.path)) and m[1] == channel]
    edits = [r for r in writes if r.method == "PATCH"]
    first = min(server.sent_at.values(), default=0.0)
    return {
        "to_api_p50": pct(to_api, 0.5),
        "to_api_p95": pct(to_api, 0.95),
        "post_delay_p50": pct(post_delay, 0.5),
        "post_delay_p95": pct(post_delay, 0.95),
        "to_result_p50": pct(to_result, 0.5),
        "to_result_p95": pct(to_result, 0.95),
        "threads_done": max(threads.values(), default=first) - first,
        "parent_writes_per_job": len(writes) / max(1, len(commands)),
        "card_edits_per_job": len(edits) / max(1, len(commands)),
        "cards_settled": max((r.done_at for r in edits), default=first) - first,
    }


def _png_size(opts: Options) -> int:
    from bench.harness import photo_png

    return len(photo_png(opts.width, opts.height))


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}"
