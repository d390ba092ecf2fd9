"""CPU samples taken from inside a process, for ``bench/run.py --profile``.

py-spy reads a process's stacks from outside, and under SQLAlchemy's greenlets it loses them: a
third of its samples of the bot came out with no frame at all, and the database's share of the
bot's CPU read 21 % where it was over 40 % (issue 10). Here ``SIGPROF`` fires after each
millisecond of the process's CPU time and the main thread's stack is read where it stands,
greenlet frames included; time in C code (SQLite, a socket write) lands on the line that called
it. Signals that arrive during one C call are delivered as one, so each sample weighs the CPU
time since the one before (in µs). Other threads' CPU lands on whatever the main thread is doing
(the bot's are a few percent). Written as collapsed stacks, py-spy's raw format, so
``bench/hotspots.py`` reads either.
"""

from __future__ import annotations

import collections
import signal
import sysconfig
import time
from pathlib import Path
from types import FrameType

INTERVAL = 0.001
_PREFIXES = sorted(
    {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"], str(Path.cwd())},
    key=len,
    reverse=True,
)


def _where(filename: str) -> str:
    for prefix in _PREFIXES:
        if filename.startswith(prefix):
            return filename[len(prefix) :].lstrip("/")
    return filename


class CpuSamples:
    """Samples the main thread's stack until :meth:`write`; start it from that thread."""

    def __init__(self) -> None:
        self._stacks: collections.Counter[str] = collections.Counter()
        self._last = time.process_time()
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)

    def _sample(self, _signal: int, frame: FrameType | None) -> None:
        now = time.process_time()
        weight, self._last = round((now - self._last) * 1e6), now
        frames = []
        while frame is not None:
            code = frame.f_code
            frames.append(f"{code.co_qualname} ({_where(code.co_filename)}:{frame.f_lineno})")
            frame = frame.f_back
        self._stacks[";".join(reversed(frames))] += weight

    def write(self, path: Path) -> None:
        """Stop sampling and write the samples to ``path``."""
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_DFL)
        lines = (f"{stack} {count}\n" for stack, count in self._stacks.items())
        path.write_text("".join(lines))
