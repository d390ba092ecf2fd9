"""Phase S: the bot as one and as two processes, CPU-bound (a short API latency), per engine.

On a machine whose cores the bot shares with the fakes (and the PostgreSQL server), the rate
it can reach is bounded by ``cores / CPU seconds per job`` (everything on the machine that works
for a job, from /proc); a second process is worth it when the rate stays near that bound
(jobs/s ÷ bound ≥ 0.9). Two processes need shards (``SHARD_COUNT``/``SHARD_IDS``) to split the
interactions, so that run is skipped where the bot has no such settings yet. The jobs come from
two guilds, one on each shard (Discord: ``(guild_id >> 22) % shards``), in both runs alike.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Server, bot_process, own_cpu_seconds
from bench.phases import Figures, Options, _quiet, bot_settings, database, discord_figures, pct
from services.config import Settings
from tests.botprocess import BotProcess
from tests.fakes.discord import FakeDiscord
from tests.postgres import PostgresServer

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Commands sent before their answers are awaited: a larger burst misses Discord's 3 s deadline
#: on a busy 2-core machine (phase A measures bursts).
BATCH = 25
SHARDS = 2


def shards_supported() -> bool:
    return "shard_count" in Settings.model_fields


def cores() -> int:
    return len(os.sched_getaffinity(0))


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def postgres_cpu_seconds(server: PostgresServer) -> float:
    """CPU of the whole cluster: the postmaster (with the backends it reaped) and its live
    children."""
    postmaster = int((server.root / "data" / "postmaster.pid").read_text().split()[0])
    fields = _stat(postmaster)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLOCK_TICKS


def guild_on_shard(discord: FakeDiscord, name: str, shard: int) -> int:
    """A new guild that Discord's rule ``(guild_id >> 22) % shards`` puts on ``shard``."""
    guild = discord.add_guild(name)
    while (guild >> 22) % SHARDS != shard:
        discord.advance_clock(0.001)  # the next snowflake's timestamp, a millisecond on
        guild = discord.add_guild(name)
    return guild


def split_over_shards(server: Server, members: int, channels: int) -> None:
    """Members and channels of two guilds, one per shard, interleaved so that job ``n``'s
    member and channel (``n % len`` of each list) are always in the same guild."""
    guilds = [guild_on_shard(server.discord, f"shard {s}", s) for s in range(SHARDS)]
    server.channels = [
        server.discord.add_text_channel(guilds[n % SHARDS], f"art-{n}")
        for n in range(max(SHARDS, channels - channels % SHARDS))
    ]
    server.members = [
        server.discord.add_member(guilds[n % SHARDS], f"member{n}")
        for n in range(max(SHARDS, members - members % SHARDS))
    ]


@dataclass
class Run:
    processes: int
    jobs: int
    complete: bool
    elapsed: float
    intake: float  # until every command was answered
    bot_cpu: float
    fakes_cpu: float
    db_cpu: float
    claims: list[float] | None
    discord: dict[str, int]

    def values(self) -> dict[str, Any]:
        jobs = max(1, self.jobs)
        cpu_per_job = (self.bot_cpu + self.fakes_cpu + self.db_cpu) / jobs
        rate = self.jobs / self.elapsed if self.elapsed > 0 else math.nan
        bound = cores() / cpu_per_job if cpu_per_job > 0 else math.nan
        claims = self.claims
        return {
            "processes": self.processes,
            "jobs": self.jobs,
            "complete": self.complete,
            "elapsed": self.elapsed,
            "intake": self.intake,
            "rate": rate,
            "bot_cpu_per_job": self.bot_cpu / jobs,
            "fakes_cpu_per_job": self.fakes_cpu / jobs,
            "db_cpu_per_job": self.db_cpu / jobs,
            "cpu_per_job": cpu_per_job,
            "bound": bound,
            "ratio": rate / bound,
            # Below ``cores`` while the run was CPU-bound: other processes had the rest.
            "cores_busy": cpu_per_job * self.jobs / self.elapsed if self.elapsed > 0 else math.nan,
            "cores": cores(),
            "claim_p50": pct(claims, 0.5) if claims else None,
            "claim_p99": pct(claims, 0.99) if claims else None,
            "claims": len(claims) if claims is not None else None,
            **self.discord,
        }


async def scale(opts: Options, label: str = "S") -> Figures:
    """1 process, then 2 (PostgreSQL only: SQLite serves one process), at a short latency."""
    counts = [1, 2] if opts.engine == "postgresql" else [1]
    figures = Figures(
        label,
        f"{opts.scale_jobs} /imagine from {opts.members} members in two guilds (one per shard), "
        f"sent {BATCH} at a time; API latency {opts.scale_latency:g} s (CPU-bound); "
        f"MAX_CONCURRENT_JOBS={opts.scale_concurrency} per process; 1 bot process, and 2 "
        f"(shards 0 and 1 of 2) on PostgreSQL; {cores()} cores for bots, fakes and database",
    )
    for processes in counts:
        if processes > 1 and not shards_supported():
            figures.values[str(processes)] = {"skipped": "needs SHARD_COUNT/SHARD_IDS"}
            continue
        run = await _run(opts, f"{label}-{processes}proc", processes)
        figures.values[str(processes)] = run.values()
    return figures


async def _run(opts: Options, name: str, processes: int) -> Run:
    async with Server.running(
        latency=opts.scale_latency,
        members=1,
        channels=1,
        width=opts.width,
        height=opts.height,
        bucket_limit=opts.fast_bucket_limit,
        bucket_window=opts.bucket_window,
    ) as server:
        split_over_shards(server, opts.members, max(2 * SHARDS, opts.channels))
        name = f"{name}-{opts.engine}"
        async with database(opts, name) as db, AsyncExitStack() as stack:
            settings = bot_settings(opts, server, concurrency=opts.scale_concurrency, db=db)
            bots: list[BotProcess] = []
            for index in range(processes):
                shard = {"shard_count": SHARDS, "shard_ids": index} if processes > 1 else {}
                bots.append(
                    await stack.enter_async_context(
                        bot_process(
                            server.discord.url,
                            {**settings, **shard},
                            opts.log_dir / f"{name}-{index}.log",
                            monitor=False,  # its 5 ms wake-ups would count as CPU per job
                            name=f"bot{index}",
                        )
                    )
                )
            return await _measure(opts, server, bots)


async def _measure(opts: Options, server: Server, bots: list[BotProcess]) -> Run:
    postgres = opts.postgres if opts.engine == "postgresql" else None

    def cpu() -> tuple[float, float, float]:
        return (
            sum(bot.cpu_seconds() for bot in bots),
            own_cpu_seconds(),
            postgres_cpu_seconds(postgres) if postgres is not None else 0.0,
        )

    before = cpu()
    started = time.monotonic()
    for first in range(0, opts.scale_jobs, BATCH):
        batch = [await server.imagine(n) for n in range(first, min(first + BATCH, opts.scale_jobs))]
        await asyncio.gather(*(i.response(timeout=10) for i in batch), return_exceptions=True)
    answered = time.monotonic()
    complete = await server.observed.wait_results(opts.scale_jobs, timeout=300)
    finished = max((r.done_at for r in server.observed.results), default=started)
    # What a job still does after its result (the card's last edit) is part of its cost.
    await _quiet(server, seconds=1.5, timeout=30)
    after = cpu()
    claims: list[float] | None = None
    for bot in bots:
        measured = (await bot.stats()).get("claim_seconds")
        if measured is not None:
            claims = (claims or []) + measured
    return Run(
        processes=len(bots),
        jobs=len(server.observed.results),
        complete=complete,
        elapsed=finished - started,
        intake=answered - started,
        bot_cpu=after[0] - before[0],
        fakes_cpu=after[1] - before[1],
        db_cpu=after[2] - before[2],
        claims=claims,
        discord=discord_figures(server),
    )
