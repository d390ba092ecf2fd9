"""The unmodified bot in a child process, against the parent's fakes: for tests and ``make bench``.

Several processes on one database is what DESIGN §9 is about, and a process's own RSS, CPU and
event-loop lag are only its own in a process of its own; one in-process bot proves neither.

The child (``python -m tests.botprocess``) reads one JSON line of configuration on stdin (where
the fake Discord listens), takes its settings from the environment as ``python bot.py`` does,
and runs the bot through ``bot.run``: SIGTERM and SIGINT take the bot's own shutdown path. It
answers one-line commands on stdin (``stats``, ``reset``, ``settle``, ``stop``) with one JSON
line each on stdout, and writes each log record as one JSON line on stderr.

The parent holds a :class:`BotProcess`: it starts the child, waits for its ``fluxbot ready:``,
keeps its log records (and waits for one), asks for stats, stops it with SIGTERM or kills it
with SIGKILL. bench/relay.py speaks the same protocol, so the handle runs it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.procfs import proc_status, reset_peak_rss

if TYPE_CHECKING:
    from bot import FluxBot
    from tests.world import World

ROOT = Path(__file__).resolve().parent.parent
MODULE = "tests.botprocess"
LAG_INTERVAL = 0.005
#: Long enough for a cold start (imports, migrations) on a loaded 2-core machine.
READY_TIMEOUT = 60.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the child ------------------------------------------------------------------------------


class JsonLines(logging.Formatter):
    """One record, traceback included, as one JSON line the parent parses."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps(
            {
                "time": record.created,
                "level": record.levelno,
                "name": record.name,
                "message": message,
            }
        )


class Monitor:
    """Scheduling delay of a task that asks to wake every 5 ms, and the most jobs in the bot.

    Waking every 5 ms costs CPU of its own: off unless asked for (the benchmark's lag figures).
    """

    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.lags: list[float] = []
        self.in_system_max = 0
        self.claims_seen = 0

    def reset(self) -> None:
        self.lags.clear()
        self.in_system_max = 0
        self.claims_seen = len(self._claims() or [])

    def _claims(self) -> list[float] | None:
        """The queue's claim latencies, if it measures them (the database queue does)."""
        claims = getattr(self.bot.generations.queue, "claim_seconds", None)
        return None if claims is None else [float(c) for c in claims]

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
        claims = self._claims()
        return {
            **proc_status(),
            "lag_max": lags[-1] if lags else 0.0,
            "lag_p99": lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
            "waiting": queue.waiting_count,
            "running": queue.running_count,
            "in_system_max": self.in_system_max,
            "claim_seconds": None if claims is None else claims[self.claims_seen :],
        }


def cpu_samples() -> Any:
    from bench.samples import CpuSamples  # the benchmark's alone

    return CpuSamples()


async def child() -> int:
    import discord.gateway
    import discord.http
    import yarl

    from bot import configure_logging, create_bot, run
    from services.config import Settings
    from tests.world import ReadySignal

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    # The parent's fake Discord (what FakeDiscord.patch_discord_py does in a test process).
    discord.http.Route.BASE = config["rest"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config["gateway"])

    def answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    settings = Settings(_env_file=None)  # type: ignore[call-arg]  # the environment's, as bot.py
    configure_logging(settings)  # as in production, then one JSON line per record
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonLines())
    bot = create_bot(settings, guild_ready_timeout=0.05)
    ready = ReadySignal()
    logging.getLogger("fluxbot").addHandler(ready)
    running = asyncio.create_task(run(bot), name="bot")
    waiter = asyncio.create_task(ready.event.wait())
    done, _ = await asyncio.wait(
        {running, waiter}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    logging.getLogger("fluxbot").removeHandler(ready)
    if waiter not in done:
        waiter.cancel()
        if running in done:
            running.result()  # the start-up error, as a traceback on stderr
        raise TimeoutError("bot never logged 'fluxbot ready:'")
    monitor = Monitor(bot)
    watcher = asyncio.create_task(monitor.run()) if config.get("monitor") else None
    samples = cpu_samples() if config.get("cpu_samples") else None
    answer({"ready": True, "pid": os.getpid(), "pid_rss": proc_status()})
    while not running.done():
        line_task = asyncio.ensure_future(reader.readline())
        await asyncio.wait({running, line_task}, return_when=asyncio.FIRST_COMPLETED)
        if not line_task.done():  # stopped by a signal: the bot's own shutdown ran
            line_task.cancel()
            break
        line = line_task.result().decode().strip()
        if line == "stats":
            answer(monitor.stats())
        elif line == "reset":
            monitor.reset()
            answer({"peak_reset": reset_peak_rss(), **proc_status()})
        elif line == "settle":  # RSS once garbage is gone, for the leak check
            gc.collect()
            answer(monitor.stats())
        elif line in ("stop", ""):  # "" is the end of stdin: the parent is gone
            started = time.monotonic()
            await bot.close()
            await running
            if samples is not None:
                samples.write(Path(config["cpu_samples"]))
            answer({"stopped": True, "close_seconds": time.monotonic() - started})
            break
    if watcher is not None:
        watcher.cancel()
    await running
    return 0


# -- the parent -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One log record of the child; ``level`` is ``logging``'s number, 0 for raw stderr text."""

    time: float
    level: int
    name: str
    message: str

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        level = logging.getLevelName(self.level) if self.level else "STDERR"
        return f"{stamp}.{int(self.time % 1 * 1000):03d} {level:<8} {self.name}: {self.message}"


def environment(settings: Mapping[str, object]) -> dict[str, str]:
    """This process's environment with ``settings`` (``database_url=...``) as the bot's
    variables, and none of the bot's variables this process happens to have."""
    from services.config import Settings

    ours = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in ours}
    for name, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        env[name.upper()] = str(value)
    return env


class BotProcess:
    """The bot (or bench/relay.py) in a child process, pointed at the parent's fake Discord.

    ``await BotProcess.start(discord_url, settings)`` returns once the child logged
    ``fluxbot ready:``. ``logs`` holds its records as they arrive; :meth:`wait_for_log` waits
    for one; :meth:`stats` asks the child; :meth:`stop` sends SIGTERM, :meth:`kill` SIGKILL.
    """

    def __init__(
        self, proc: asyncio.subprocess.Process, name: str, log_file: Path | None = None
    ) -> None:
        self.proc = proc
        self.name = name
        self.log_file = log_file
        self.logs: list[LogLine] = []
        self.ready_rss_mb = 0.0
        self._changed = asyncio.Condition()
        self._stdout_lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read_logs(), name=f"{name}-logs")

    @classmethod
    async def start(
        cls,
        discord_url: str,
        settings: Mapping[str, object],
        *,
        name: str = "bot",
        log_file: Path | None = None,
        module: str = MODULE,
        monitor: bool = False,
        cpu_samples: Path | None = None,
        timeout: float = READY_TIMEOUT,  # noqa: ASYNC109
    ) -> BotProcess:
        """``settings``: the bot's settings by name (``discord_token``, ``database_url``...),
        given to the child as its environment; ``log_file``: where its log lines also go;
        ``monitor``: measure its event-loop lag (costs CPU); ``module``: the child's program;
        ``cpu_samples``: where it writes CPU samples of itself from ready to stop
        (``bench/samples.py``)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            cwd=ROOT,
            env=environment(settings),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 22,  # a log line with a long traceback, a stats line with many samples
        )
        process = cls(proc, name, log_file)
        config = {
            "rest": f"{discord_url}/api/v10",
            "gateway": f"{discord_url.replace('http', 'ws', 1)}/gateway",
            "monitor": monitor,
            "cpu_samples": None if cpu_samples is None else str(cpu_samples),
            # For the relay, which reads no environment and imports nothing of the bot.
            "token": str(settings.get("discord_token", "")),
            "api_key": str(settings.get("aimlapi_key", "")),
            "api_base": str(settings.get("aimlapi_base_url", "")),
        }
        try:
            ready = await process.ask(json.dumps(config), timeout=timeout)
            if not ready.get("ready"):
                raise RuntimeError(f"{name} did not start: {ready}")
        except BaseException:
            await process.kill()
            raise
        process.ready_rss_mb = ready.get("pid_rss", {}).get("VmRSS", 0) / 1024
        return process

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def errors(self) -> list[LogLine]:
        """Records at ERROR or above: in a test, each is a failure unless expected."""
        return [line for line in self.logs if line.level >= logging.ERROR]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(str(line) for line in self.logs[-lines:])

    async def wait_for_log(
        self,
        match: str | re.Pattern[str] | Callable[[LogLine], bool],
        *,
        after: int = 0,
        timeout: float = 30,  # noqa: ASYNC109
    ) -> LogLine:
        """The first record from index ``after`` on whose message matches (``re.search`` for a
        string or pattern); waits for it. Raises TimeoutError, with the log's tail, if none."""
        if callable(match):
            test = match
        else:
            pattern = re.compile(match)

            def test(line: LogLine) -> bool:
                return pattern.search(line.message) is not None

        def found() -> LogLine | None:
            return next((line for line in self.logs[after:] if test(line)), None)

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: found() is not None or self._reader.done())
        except TimeoutError:
            raise TimeoutError(f"{self.name} never logged {match!r}:\n{self.tail()}") from None
        line = found()
        if line is None:
            raise RuntimeError(f"{self.name} exited without logging {match!r}:\n{self.tail()}")
        return line

    async def ask(self, command: str, timeout: float = 30) -> dict[str, Any]:  # noqa: ASYNC109
        """Send one command line, return the child's one-line JSON answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self._stdout_lock:
            self.proc.stdin.write(command.encode() + b"\n")
            await self.proc.stdin.drain()
            answer = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not answer:
            await self._exited(timeout)
            raise RuntimeError(
                f"{self.name} exited ({self.proc.returncode}) instead of answering "
                f"{command[:40]!r}:\n{self.tail()}"
            )
        result: dict[str, Any] = json.loads(answer)
        return result

    async def stats(self) -> dict[str, Any]:
        return await self.ask("stats")

    async def stop(self, timeout: float = 60) -> int:  # noqa: ASYNC109
        """SIGTERM, as an operator or a service manager stops the bot; its exit status."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        return await self._exited(timeout)

    async def kill(self) -> int:
        """SIGKILL: a crash, nothing of the bot's shutdown runs."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        return await self._exited(30)

    async def close(self, timeout: float = 60) -> None:  # noqa: ASYNC109
        """Stop through the protocol (``stop``; the relay has no signal handler), SIGKILL if
        the child does not exit in time."""
        if self.proc.returncode is None:
            with contextlib.suppress(RuntimeError, ConnectionError, TimeoutError):
                await self.ask("stop", timeout=timeout)
        try:
            await self._exited(timeout)
        except TimeoutError:
            await self.kill()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the child so far (while it runs)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    async def _exited(self, timeout: float) -> int:  # noqa: ASYNC109
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, timeout)  # every line it wrote is in ``logs``
        return code

    async def _read_logs(self) -> None:
        assert self.proc.stderr is not None
        sink = self.log_file.open("a") if self.log_file is not None else None
        try:
            while raw := await self.proc.stderr.readline():
                text = raw.decode(errors="replace").rstrip("\n")
                try:
                    record = json.loads(text)
                    line = LogLine(
                        record["time"], record["level"], record["name"], record["message"]
                    )
                except (ValueError, KeyError, TypeError):
                    line = LogLine(time.time(), 0, "stderr", text)
                self.logs.append(line)
                if sink is not None:
                    sink.write(f"{line}\n")
                async with self._changed:
                    self._changed.notify_all()
        finally:
            if sink is not None:
                sink.close()
            async with self._changed:
                self._changed.notify_all()


class BotProcesses:
    """The bot processes of one test, on one world's fakes and database, each logging to a file
    in ``log_dir``; :meth:`close` ends those still running and returns their ERROR records."""

    def __init__(self, world: World, log_dir: Path) -> None:
        self.world = world
        self.log_dir = log_dir
        self.started: list[BotProcess] = []
        #: Patterns of ERROR messages a test provokes on purpose.
        self.expected_errors: list[str] = []
        self._numbers = itertools.count(1)

    async def start(self, name: str | None = None, **overrides: Any) -> BotProcess:
        """A new bot process with the world's settings and ``overrides``, once it is ready."""
        name = name or f"bot{next(self._numbers)}"  # taken at once: starts may overlap
        process = await BotProcess.start(
            self.world.discord.url,
            self.world.setting_values(**overrides),
            name=name,
            log_file=self.log_dir / f"{name}.log",
        )
        self.started.append(process)
        return process

    async def close(self) -> list[str]:
        """SIGTERM to each one still running (SIGKILL if it hangs); the unexpected ERRORs."""
        for process in self.started:
            if process.returncode is None:
                try:
                    await process.stop(timeout=30)
                except TimeoutError:
                    await process.kill()
        return [
            f"{process.name} ({process.log_file}): {line}"
            for process in self.started
            for line in process.errors()
            if not any(re.search(p, line.message) for p in self.expected_errors)
        ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(asyncio.run(child()))
