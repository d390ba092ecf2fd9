"""The top costs in a profile written by ``bench/run.py --profile``: py-spy's, or the process's
own (``X.samples.txt``, ``bench/samples.py``; whole stacks, where py-spy's lose the frames under
SQLAlchemy's greenlets).

``python bench/hotspots.py LOGDIR/R1-bot-sqlite.samples.txt [--top 15]`` prints the frames with the
largest share of samples *inside* them (inclusive: a call and all it calls) and the lines where
the samples were *taken* (self: the Python line that was running or had called into C code,
e.g. Pillow's decoder or zlib). Samples of a thread that was waiting (in the event loop's
``select``, on a lock, on a work queue) are dropped first: py-spy's own idle detection keeps
many of them, which would hide the work among the waits. So are samples with no Python frame
at all (native code between calls), which name no line to blame.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

#: Frames every sample passes through (the event loop, a worker thread): they say nothing.
_PLUMBING = ("runpy>", "asyncio/", "threading.py", "concurrent/futures/thread.py", "<module>")
#: Where a thread waits: the event loop for events, threads for work or a lock.
_WAITING = (
    "EpollSelector.select (selectors.py",
    "Condition.wait (threading.py",
    "_worker (concurrent/futures/thread.py",
    "_connection_worker_thread (aiosqlite/core.py:59)",
)


def read(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """Inclusive and self sample counts per frame, and the total number of samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(_WAITING):
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            if not any(part in frame for part in _PLUMBING):
                inclusive[frame] += samples
    return inclusive, own, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    inclusive, own, total = read(args.profile)
    print(f"{args.profile.name}: {total} samples of threads at work")
    for title, counts in (("inclusive", inclusive), ("self", own)):
        print(f"-- {title}")
        for frame, samples in counts.most_common(args.top):
            print(f"{100 * samples / max(1, total):5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
