"""Waiting in a benchmark for something another thread or process does: `wait_for` polls a
condition until it holds, and says when (the watch benchmarks time events with it)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    done: Callable[[], object], seconds: float = 120.0, *, what: str = "not in time"
) -> float:
    """Poll `done()` every millisecond until it is true; when (`time.perf_counter`).
    TimeoutError with `what` after `seconds`."""
    deadline = time.perf_counter() + seconds
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError(what)
        time.sleep(0.001)
    return time.perf_counter()
