"""``make bench``: how much the bot adds on top of the AI/ML API's own time, under load.

Runs the real bot (in a child process) against the loopback fake Discord and fake AI/ML API,
in four phases with fresh state each, and prints one table of figures against the targets.
Targets are reported, not asserted: the script exits 0 whatever it measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tests` and `bench` by name

from bench.report import main

if __name__ == "__main__":
    sys.exit(main())
