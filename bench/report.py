"""Command line and table for ``bench/run.py``."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from bench import checks
from bench.harness import photo_results
from bench.phases import Figures, Options, burst, busy, leak, relay_comparison, throughput
from bench.scale import scale
from tests.postgres import PostgresServer, PostgresUnavailable

Row = tuple[str, str, str, str, str]  # figure, value, target, verdict, phase
ENGINES = ("sqlite", "postgresql")
ENGINE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


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
    parser.add_argument(
        "--relay-jobs", type=int, default=96, help="/imagine sent to each of bot and relays (96)"
    )
    parser.add_argument(
        "--relay-interval", type=float, default=0.4, help="seconds between them in R (0.4)"
    )
    parser.add_argument(
        "--relay-rounds", type=int, default=4, help="bot/relay alternations they are split in (4)"
    )
    parser.add_argument(
        "--phases",
        default="RABCDS",
        help="which phases to run, in order (RABCDS; see the legend)",
    )
    parser.add_argument(
        "--engines",
        default="sqlite,postgresql",
        help="databases to run every phase on, side by side (sqlite,postgresql); PostgreSQL "
        "is a throwaway server of its own (tests/postgres.py)",
    )
    parser.add_argument(
        "--scale-jobs", type=int, default=300, help="/imagine per run of phase S (300)"
    )
    parser.add_argument(
        "--scale-latency", type=float, default=0.05, help="API latency in phase S, s (0.05)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample each process into the log directory, with py-spy (pip install py-spy) "
        "and from inside (X.samples.txt, bench/samples.py)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a ~2.5 min smoke run (without D unless --phases)"
    )
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
        relay_jobs=args.relay_jobs,
        relay_interval=args.relay_interval,
        relay_rounds=args.relay_rounds,
        phases=args.phases.upper(),
        profile=args.profile,
        engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()),
        scale_jobs=args.scale_jobs,
        scale_latency=args.scale_latency,
    )
    unknown = set(opts.engines) - set(ENGINES)
    if unknown or not opts.engines:
        parser.error(f"--engines: choose among {', '.join(ENGINES)}")
    if args.quick:
        opts.commands, opts.members = min(opts.commands, 40), min(opts.members, 10)
        opts.rerolls = min(opts.rerolls, opts.members)
        opts.latency, opts.queued = min(opts.latency, 1.0), 100
        opts.leak_first, opts.leak_total = 100, 300
        opts.relay_jobs, opts.relay_rounds = min(opts.relay_jobs, 24), 1
        opts.scale_jobs = min(opts.scale_jobs, 100)
        if args.phases == parser.get_default("phases"):
            # D's pace is Discord's per-channel budget (over a minute per engine): asked for only.
            opts.phases = opts.phases.replace("D", "")
    return opts


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.1f} ms"


def ratio(bot: float, relay: float, unit: Callable[[float], str]) -> str:
    """``bot / relay = ratio×``: the absolute figures beside the ratio that travels."""
    times = bot / relay if relay > 0 else math.nan
    return f"{unit(bot)} / {unit(relay)} = {times:.2f}×"


def mb(value: float) -> str:
    return f"{value:.0f} MB"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def rows_for(figures: list[Figures], tag: str = "") -> list[Row]:
    rows: list[Row] = []
    by = {f.name: f.values for f in figures}

    def add(
        phase: str, name: str, value: str, target: str = "", ok: Callable[[], bool] | None = None
    ) -> None:
        rows.append((name, value, target, verdict(ok() if ok else None), phase + tag))

    if r := by.get("R"):
        bot, relay = r["bot"], r["relay"]

        def within(key: str, bound: float) -> Callable[[], bool]:
            return lambda: bot[key] <= bound * relay[key]

        add(
            "R",
            "result overhead p50: bot / relay",
            ratio(bot["overhead_p50"], relay["overhead_p50"], ms),
            "≤ 1.5×",
            within("overhead_p50", 1.5),
        )
        add(
            "R",
            "result overhead p99: bot / relay",
            ratio(bot["overhead_p99"], relay["overhead_p99"], ms),
            "≤ 2×",
            within("overhead_p99", 2),
        )
        add(
            "R",
            "CPU per job, intake included: bot / relay",
            ratio(bot["cpu_per_job"], relay["cpu_per_job"], ms),
            "≤ 2×",
            within("cpu_per_job", 2),
        )
        copy = r["relay_copy"]
        add(
            "R",
            "  CPU per job: bot / relay keeping the card's copy",
            ratio(bot["cpu_per_job"], copy["cpu_per_job"], ms),
        )
        add("R", "peak RSS: bot / relay", ratio(bot["peak_rss_mb"], relay["peak_rss_mb"], mb))
        add(
            "R",
            "jobs done; failed; Discord 429s: bot / relay",
            " / ".join(
                f"{side['jobs']}; {side['failed']}; {side['discord_429']}"
                + ("" if side["complete"] else " (INCOMPLETE)")
                for side in (bot, relay)
            ),
        )
        add(
            "R",
            "per job: Discord edits; posts; MB uploaded: bot / relay",
            " / ".join(
                f"{side['discord_edits'] / jobs:.2f}; {side['discord_posts'] / jobs:.2f}; "
                f"{side['discord_upload_bytes'] / jobs / 1e6:.2f}"
                for side in (bot, relay)
                if (jobs := max(1, side["jobs"]))
            ),
        )
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
    if s := by.get("S"):
        for count in ("1", "2"):
            run = s.get(count)
            if run is None:
                continue
            label = f"{count} process{'es' if count != '1' else ''}:"
            if "skipped" in run:
                add("S", f"{label} jobs/s", f"skipped ({run['skipped']})")
                continue
            add(
                "S",
                f"{label} jobs/s / bound (cores ÷ CPU-s per job); cores busy",
                f"{run['rate']:.1f} / {run['bound']:.1f} jobs/s; "
                f"{run['cores_busy']:.2f} of {run['cores']}",
            )
            # One process's event loop runs on one core: the bound is for several processes.
            if count == "1":
                add("S", f"{label} jobs/s ÷ bound", f"{run['ratio']:.2f}")
            else:
                add("S", f"{label} jobs/s ÷ bound", f"{run['ratio']:.2f}", "≥ 0.9", _at_least(run))
            add(
                "S",
                f"{label} CPU per job: bots + fakes + database",
                f"{ms(run['bot_cpu_per_job'])} + {ms(run['fakes_cpu_per_job'])} + "
                f"{ms(run['db_cpu_per_job'])}",
            )
            claims = (
                "n/a (the queue has no claim_seconds)"
                if run["claim_p99"] is None
                else f"{ms(run['claim_p50'])} / {ms(run['claim_p99'])} ({run['claims']} claims)"
            )
            add(
                "S",
                f"{label} claim latency p50 / p99",
                claims,
                "p99 ≤ 20 ms",
                None if run["claim_p99"] is None else (lambda r=run: r["claim_p99"] <= 0.02),
            )
            add(
                "S",
                f"{label} jobs / wall time (all answered at); 429s / other 4xx / failed",
                f"{run['jobs']} / {run['elapsed']:.1f} s ({run['intake']:.1f} s); "
                f"{run['discord_429']} / "
                f"{run['discord_other_4xx']} / {run['failed']}"
                + ("" if run["complete"] else " (INCOMPLETE)"),
            )
    return rows


def _at_least(run: dict[str, Any]) -> Callable[[], bool]:
    return lambda: run["ratio"] >= 0.9


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


def side_by_side(per_engine: dict[str, list[Row]]) -> str:
    """One line per figure, one value column (and verdict) per engine, targets once."""
    engines = list(per_engine)
    keys: list[tuple[str, str]] = []
    cells: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    targets: dict[tuple[str, str], str] = {}
    for engine, rows in per_engine.items():
        for name, value, target, ok, phase in rows:
            key = (phase, name)
            if key not in cells:
                keys.append(key)
                cells[key] = {}
            cells[key][engine] = (value, ok)
            targets[key] = targets.get(key) or target
    header = ["figure"]
    for engine in engines:
        header += [ENGINE_NAMES.get(engine, engine), "verdict"]
    header += ["target", "phase"]
    lines = []
    for key in keys:
        line = [key[1]]
        for engine in engines:
            value, ok = cells[key].get(engine, ("", ""))
            line += [value, ok]
        line += [targets[key], key[0]]
        lines.append(line)
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    out = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), rule]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines]
    out.append(rule)
    return "\n".join(out)


def engine_ratio_row(per_engine: dict[str, list[Figures]]) -> Row | None:
    """Bot CPU per job on PostgreSQL over SQLite, one process each (phase S)."""
    sqlite = next((f for f in per_engine.get("sqlite", []) if f.name == "S"), None)
    postgres = next((f for f in per_engine.get("postgresql", []) if f.name == "S"), None)
    if sqlite is None or postgres is None:
        return None
    lite, pg = sqlite.values["1"]["bot_cpu_per_job"], postgres.values["1"]["bot_cpu_per_job"]
    return (
        "bot CPU per job, 1 process: PostgreSQL / SQLite",
        ratio(pg, lite, ms),
        "≤ 1.25×",
        verdict(pg <= 1.25 * lite),
        "S",
    )


async def run(opts: Options) -> str:
    started, load_before = time.monotonic(), os.getloadavg()[0]
    phases = {
        "R": relay_comparison,
        "A": burst,
        "B": throughput,
        "C": leak,
        "D": busy,
        "S": scale,
    }
    notes: list[str] = []
    engines = list(opts.engines)
    if "postgresql" in engines:
        try:
            opts.postgres = PostgresServer.start()
        except PostgresUnavailable as exc:
            engines.remove("postgresql")
            notes.append(f"PostgreSQL skipped: {str(exc).splitlines()[0]}")
    try:
        figures: dict[str, list[Figures]] = {engine: [] for engine in engines}
        with photo_results():
            # Phase by phase, each on every engine in turn: R, whose ratios are the targets,
            # then runs on every engine while the machine is still quiet, not after the heavy
            # phases of the engine before (the load they leave slows the bot more than the relay).
            for name in (n for n in opts.phases if n in phases):
                for engine in engines:
                    opts.engine = engine
                    figures[engine].append(await phases[name](opts))
    finally:
        if opts.postgres is not None:
            opts.postgres.stop()
    rows = {engine: rows_for(found) for engine, found in figures.items()}
    if (row := engine_ratio_row(figures)) is not None and "postgresql" in rows:
        rows["postgresql"].append(row)
    first = next(iter(figures.values()), [])
    legend = "\n".join(f"  {f.name}: {f.settings}" for f in first)
    return (
        f"fluxbot benchmark — {machine()}\n"
        # Other processes on the machine weigh on the bot (more threads, more hops) more than
        # on the relay: the ratios are comparable between runs on quiet machines.
        f"load average (1 min) {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at the end "
        f"of the phases\n"
        f"{side_by_side(rows)}\n"
        + "".join(f"{note}\n" for note in notes)
        + "Phases (each with fresh fakes, database and bot process; every engine alike):\n"
        f"{legend}\n"
        "Bot overhead = the fake API's answer to the fake Discord accepting the result message "
        "(download, checks, upload, database).\n"
        "R's ratios are the targets: milliseconds depend on the machine, the ratio to a bare relay "
        "measured in the same run on the same machine much less.\n"
        "S: bound = cores / CPU seconds per job (bot processes, fakes and PostgreSQL together, "
        "from /proc); claim latency from the bot's queue (claim_seconds) where it measures it.\n"
        "What each check on a picture costs (bench/checks.py; CPU per call, median of 15):\n"
        f"{checks.table(checks.costs(opts.width, opts.height))}\n"
        f"Bot logs: {opts.log_dir}   total run time {time.monotonic() - started:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    print(asyncio.run(run(opts)))
    return 0
