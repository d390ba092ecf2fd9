"""Where Pillow work runs: a bounded thread pool, so image work never blocks the event loop."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class ImagePool:
    """One thread per core: a burst of uploads can't starve the event loop of CPU."""

    def __init__(self, workers: int | None = None) -> None:
        self._executor = ThreadPoolExecutor(workers or os.cpu_count() or 1, "images")

    async def run(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
