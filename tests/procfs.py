"""What Linux's /proc says about this process: its RSS now and at its peak.

Shared by the bot in a child process (tests/botprocess.py) and the benchmark's bare relay
(bench/relay.py), which must not import each other: the relay's memory would then include the
bot's modules.
"""

from __future__ import annotations

from pathlib import Path


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in KiB, from /proc."""
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def reset_peak_rss() -> bool:
    """Restart VmHWM from the current RSS (Linux ≥ 4.0), so each phase has its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
