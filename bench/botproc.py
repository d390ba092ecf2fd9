"""The bot under benchmark, in its own process: its RSS and event-loop lag are then its own.

The fakes (which keep every upload, and encode PNGs) run in the parent; this process runs the
unmodified bot against them, exactly as tests/e2e does, and answers one-line JSON commands on
stdin (``stats``, ``reset``, ``stop``) with one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bot import FluxBot, configure_logging, create_bot
from services.config import Settings
from tests.fakes.discord import FakeDiscord
from tests.world import API_KEY, TOKEN, ReadySignal

LAG_INTERVAL = 0.005


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


class Monitor:
    """Scheduling delay of a task that asks to wake every 5 ms; and the most jobs in the bot."""

    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.lags: list[float] = []
        self.in_system_max = 0

    def reset(self) -> None:
        self.lags.clear()
        self.in_system_max = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.lags.append(max(0.0, loop.time() - start - LAG_INTERVAL))
            queue = self.bot.generations.queue
            self.in_system_max = max(self.in_system_max, queue.waiting_count + queue.running_count)

    def stats(self) -> dict[str, Any]:
        lags = sorted(self.lags)
        queue = self.bot.generations.queue
        return {
            **proc_status(),
            "lag_max": lags[-1] if lags else 0.0,
            "lag_p99": lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
            "waiting": queue.waiting_count,
            "running": queue.running_count,
            "in_system_max": self.in_system_max,
        }


async def start(config: dict[str, Any]) -> tuple[FluxBot, asyncio.Task[None]]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        discord_token=TOKEN,
        aimlapi_key=API_KEY,
        **config["settings"],
    )
    configure_logging(settings)  # as in production: INFO lines to stderr (a file here)
    bot = create_bot(settings, guild_ready_timeout=0.05)
    ready = ReadySignal()
    logging.getLogger("fluxbot").addHandler(ready)
    task = asyncio.create_task(bot.start(TOKEN))
    waiter = asyncio.create_task(ready.event.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    logging.getLogger("fluxbot").removeHandler(ready)
    if waiter not in done:
        waiter.cancel()
        if task in done:
            task.result()
        raise TimeoutError("bot never logged 'fluxbot ready:'")
    return bot, task


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    # The parent's fake: only its address is needed to point discord.py at it.
    fake = FakeDiscord(token=TOKEN)
    fake.port, fake.url = config["port"], f"http://127.0.0.1:{config['port']}"

    def answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    with fake.patch_discord_py():
        bot, task = await start(config)
        monitor = Monitor(bot)
        watcher = asyncio.create_task(monitor.run())
        answer({"ready": True, "pid_rss": proc_status()})
        while line := (await reader.readline()).decode().strip():
            if line == "stats":
                answer(monitor.stats())
            elif line == "reset":
                monitor.reset()
                answer({"peak_reset": reset_peak_rss(), **proc_status()})
            elif line == "settle":  # RSS once garbage is gone, for the leak check
                gc.collect()
                answer(monitor.stats())
            elif line == "stop":
                break
        watcher.cancel()
        started = time.monotonic()
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        answer({"stopped": True, "close_seconds": time.monotonic() - started})


if __name__ == "__main__":
    asyncio.run(main())
