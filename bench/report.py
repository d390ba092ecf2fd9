"""Command line and table for ``bench/run.py``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import platform
import time
from collections.abc import Callable

from bench.harness import photo_results
from bench.phases import Figures, Options, burst, busy, leak, throughput

Row = tuple[str, str, str, str, str]  # figure, value, target, verdict, phase


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=200, help="/imagine in the burst (200)")
    parser.add_argument("--members", type=int, default=50, help="members sending them (50)")
    parser.add_argument("--rerolls", type=int, default=None, help="Reroll presses (= members)")
    parser.add_argument("--channels", type=int, default=1, help="channels they use (1)")
    parser.add_argument("--latency", type=float, default=2.5, help="API latency, s (2.5)")
    parser.add_argument("--width", type=int, default=1024, help="reference/result width (1024)")
    parser.add_argument("--height", type=int, default=768, help="reference/result height (768)")
    parser.add_argument(
        "--bucket-limit", type=int, default=5, help="fake Discord requests per route window (5)"
    )
    parser.add_argument(
        "--bucket-window", type=float, default=0.5, help="fake Discord route window, s (0.5)"
    )
    parser.add_argument(
        "--queue-latency", type=float, default=1.0, help="API latency in phase B, s (1.0)"
    )
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument("--only", default="ABCD", help="phases to run, e.g. D (ABCD)")
    args = parser.parse_args(argv)
    opts = Options(
        commands=args.commands,
        members=args.members,
        rerolls=args.members if args.rerolls is None else args.rerolls,
        channels=args.channels,
        latency=args.latency,
        width=args.width,
        height=args.height,
        bucket_limit=args.bucket_limit,
        bucket_window=args.bucket_window,
        queue_latency=args.queue_latency,
        database_url=None,
        phases=args.only.upper(),
    )
    if args.quick:
        opts.commands, opts.members = min(opts.commands, 40), min(opts.members, 10)
        opts.rerolls = min(opts.rerolls, opts.members)
        opts.latency, opts.queued = min(opts.latency, 1.0), 100
        opts.leak_first, opts.leak_total = 100, 300
    return opts


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.1f} ms"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def rows_for(figures: list[Figures], tag: str) -> list[Row]:
    rows: list[Row] = []
    by = {f.name: f.values for f in figures}

    def add(
        phase: str, name: str, value: str, target: str = "", ok: Callable[[], bool] | None = None
    ) -> None:
        rows.append((name, value, target, verdict(ok() if ok else None), phase + tag))

    if a := by.get("A"):
        add("A", "interaction ack p50", ms(a["ack_p50"]))
        add("A", "interaction ack p99", ms(a["ack_p99"]), "≤ 50 ms", lambda: a["ack_p99"] <= 0.05)
        add("A", "interaction ack max", ms(a["ack_max"]), "< 3000 ms", lambda: a["ack_max"] < 3)
        add(
            "A",
            "  ack p99: commands / rerolls",
            f"{ms(a['ack_command_p99'])} / {ms(a['ack_click_p99'])}",
        )
        add(
            "A",
            "bot overhead p50 (API answer → result posted)",
            ms(a["overhead_p50"]),
            "≤ 30 ms",
            lambda: a["overhead_p50"] <= 0.03,
        )
        add(
            "A",
            "bot overhead p99",
            ms(a["overhead_p99"]),
            "≤ 100 ms",
            lambda: a["overhead_p99"] <= 0.1,
        )
        add(
            "A",
            "intake p50 / p99 (command → reference on card)",
            f"{ms(a['intake_p50'])} / {ms(a['intake_p99'])}",
        )
        add("A", "event-loop lag max / p99", f"{ms(a['lag_max'])} / {ms(a['lag_p99'])}")
        add(
            "A",
            "peak RSS",
            f"{a['peak_rss_mb']:.0f} MB",
            "≤ 150 MB",
            lambda: a["peak_rss_mb"] <= 150,
        )
        add(
            "A",
            "  RSS when ready (idle) / most jobs in the bot at once",
            f"{a['ready_rss_mb']:.0f} MB / {a['in_system_max']}",
        )
        add(
            "A",
            "bot CPU per job / fakes' event-loop lag max",
            f"{ms(a['bot_cpu_per_job'])} / {ms(a['fakes_lag_max'])}",
        )
        add(
            "A",
            "jobs done / wall time",
            f"{a['jobs']} / {a['elapsed']:.1f} s" + ("" if a["complete"] else " (INCOMPLETE)"),
        )
        add(
            "A",
            "Discord 429s / other 4xx / failed jobs",
            f"{a['discord_429']} / {a['discord_other_4xx']} / {a['failed']}",
        )
    if b := by.get("B"):
        add("B", "throughput", f"{b['throughput']:.1f} jobs/s")
        add("B", "  ideal MAX_CONCURRENT_JOBS / latency", f"{b['ideal']:.1f} jobs/s")
        add("B", "throughput / ideal", f"{b['ratio']:.3f}", "≥ 0.97", lambda: b["ratio"] >= 0.97)
        add("B", "  API call as served by the fake (mean)", ms(b["api_call_mean"]))
        add(
            "B",
            "bot overhead p50 / p99 under full load",
            f"{ms(b['overhead_p50'])} / {ms(b['overhead_p99'])}",
        )
        add("B", "event-loop lag max", ms(b["lag_max"]))
        add(
            "B",
            "bot CPU per job / fakes CPU per job",
            f"{ms(b['bot_cpu_per_job'])} / {ms(b['fakes_cpu_per_job'])}",
        )
        add("B", "queue filled in (intake of all commands)", f"{b['intake_seconds']:.1f} s")
        add("B", "peak RSS", f"{b['peak_rss_mb']:.0f} MB")
        add(
            "B",
            "jobs done; Discord 429s / other 4xx / failed",
            f"{b['jobs']}; {b['discord_429']} / {b['discord_other_4xx']} / {b['failed']}"
            + ("" if b["complete"] else " (INCOMPLETE)"),
        )
    if d := by.get("D"):
        add(
            "D",
            "command → API call p50 / p95",
            f"{ms(d['to_api_p50'])} / {ms(d['to_api_p95'])}",
            "p95 ≤ 1000 ms",
            lambda: d["to_api_p95"] <= 1.0,
        )
        add(
            "D",
            "result posted after API answer & thread p50 / p95",
            f"{ms(d['post_delay_p50'])} / {ms(d['post_delay_p95'])}",
            "p95 ≤ 1000 ms",
            lambda: d["post_delay_p95"] <= 1.0,
        )
        add(
            "D",
            "command → result p50 / p95",
            f"{ms(d['to_result_p50'])} / {ms(d['to_result_p95'])}",
        )
        add(
            "D",
            "last thread made / last card edit (after first command)",
            f"{d['threads_done']:.1f} s / {d['cards_settled']:.1f} s",
        )
        add(
            "D",
            "parent-channel writes / card edits per job",
            f"{d['parent_writes_per_job']:.2f} / {d['card_edits_per_job']:.2f}",
        )
        add(
            "D",
            "jobs done / wall time; Discord 429s / other 4xx / failed",
            f"{d['jobs']} / {d['elapsed']:.1f} s; {d['discord_429']} / "
            f"{d['discord_other_4xx']} / {d['failed']}"
            + ("" if d["complete"] else " (INCOMPLETE)"),
        )
    if c := by.get("C"):
        add("C", f"RSS after {c['rss_first_jobs']} jobs (after GC)", f"{c['rss_first_mb']:.0f} MB")
        add("C", f"RSS after {c['rss_last_jobs']} jobs (after GC)", f"{c['rss_last_mb']:.0f} MB")
        add(
            "C",
            "RSS growth",
            f"{c['rss_growth'] * 100:+.1f} %",
            "≤ +10 %",
            lambda: c["rss_growth"] <= 0.10,
        )
        add("C", "peak RSS / event-loop lag max", f"{c['peak_rss_mb']:.0f} MB / {ms(c['lag_max'])}")
        add(
            "C",
            "jobs done / wall time; failed",
            f"{c['jobs']} / {c['elapsed']:.1f} s; {c['failed']}"
            + ("" if c["complete"] else " (INCOMPLETE)"),
        )
    return rows


def table(rows: list[Row]) -> str:
    header: Row = ("figure", "value", "target", "verdict", "phase")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    out = [line, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.append(line)
    return "\n".join(out)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def postgres_skip_reason(url: str | None) -> str | None:
    if not url:
        return "DATABASE_URL is not set"
    if not url.startswith(("postgresql", "postgres:")):
        return "DATABASE_URL is not a postgresql:// URL"
    if importlib.util.find_spec("asyncpg") is None:
        return "asyncpg is not installed (pip install -e '.[postgres]')"
    return None


async def run(opts: Options) -> str:
    started = time.monotonic()
    sections: list[tuple[str, list[Figures]]] = []
    with photo_results():
        runners = {"A": burst, "B": throughput, "C": leak, "D": busy}
        sqlite = [await runners[name](opts) for name in opts.phases if name in runners]
        sections.append(("SQLite", sqlite))
        url = os.environ.get("DATABASE_URL")
        skip = postgres_skip_reason(url)
        if skip is None:
            opts.database_url = url
            pg = [await runners[name](opts) for name in opts.phases if name in "AB"]
            sections.append(("PostgreSQL", pg))
    rows: list[Row] = []
    for name, figures in sections:
        rows += rows_for(figures, "" if name == "SQLite" else "-pg")
    if skip is not None:
        rows.append(("PostgreSQL figures", "skipped", "", "-", f"({skip})"))
    phases = [(f.name, f.settings) for f in sections[0][1]]
    legend = "\n".join(f"  {name}: {settings}" for name, settings in phases)
    if len(sections) > 1:
        legend += "\n  A-pg, B-pg: the same on PostgreSQL (DATABASE_URL)"
    return (
        f"fluxbot benchmark — {machine()}\n"
        f"{table(rows)}\nPhases (each with fresh fakes, database and bot process):\n{legend}\n"
        "Bot overhead = the fake API's answer to the fake Discord accepting the result message "
        "(download, checks, upload, database).\n"
        f"Bot logs: {opts.log_dir}   total run time {time.monotonic() - started:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    print(asyncio.run(run(opts)))
    return 0
