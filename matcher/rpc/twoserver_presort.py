"""S1's sorts of each upload's band keys, off the request path (docs/realtime.md "Queries in a
two-server project", docs/operations.md "Two servers and a combiner").

A run's join looks each of one member's keys up in the other's keys sorted, a range of bands
at a time (core/twoblocking.py `matched_keys`, `Sealed.sorted_keys`); the sort is kept for the
upload's later joins. Sorted on the first join, it held up the first query after an upload
(about 0.8 s a partner of 5,000 records, 2.3-3.1 s for three); a query's few records are now
looked up band by band with no sort (`looked_up`), and S1 sorts an upload's keys as soon as it
holds it, on a thread of its own (`Presorter.submit`: after the upload is held, before its
reply; the reply does not wait), and every upload it restores at start, so that a run's first
join finds them sorted too. A join that comes before the sort is done waits for the range
being sorted, or sorts a range not reached yet itself: each range is sorted once either way.
A query's own records are not sorted (a query is the first member of its joins, whose keys
are looked up, not sorted). The sort order costs 4 bytes a key for as long as S1 holds the
upload (the sorted keys, kept too until 2026-12-06, 8 more; docs/operations.md measures it a
record).

One thread, at a lower CPU priority than S1's calls (`BACKGROUND_NICE`): uploads are sorted
one after the other, in the order they arrive (a sort releases the interpreter lock, so S1
answers meanwhile). An upload replaced or dropped
before its turn is not sorted; one replaced during its sort stops at the next range.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from blindmatch.matcher.core.twoblocking import Sealed

log = logging.getLogger("blindmatch.matcher.twoserver")


class Presorter:
    """S1's sorts of its uploads' band keys, one upload after the other on a thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bm-s1-presort",
                                        initializer=_background)  # fmt: skip
        self._jobs: set[Future[float]] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def submit(self, name: str, sealed: tuple[Sealed, ...], wanted: Callable[[], bool]) -> None:
        """Sort `name`'s upload's keys (`sealed`, each CLK's) on the thread, while
        `wanted()` (S1 still holds that upload)."""

        def still() -> bool:
            return not self._closed.is_set() and wanted()

        def run() -> float:
            start = time.perf_counter()
            ranges = 0
            for clk in sealed:  # every CLK's token offsets first: a query's join needs them
                if still():
                    clk.token_offsets()
            for clk in sealed:
                if not still():
                    break
                ranges += clk.presort(still)
            seconds = time.perf_counter() - start
            if ranges:
                log.info("S1 sorted %s's band keys (%d ranges) in %.2f s", name, ranges, seconds)
            return seconds

        try:
            job = self._pool.submit(run)
        except RuntimeError:  # closed (S1 stopping): a join sorts what it needs
            return
        with self._lock:
            self._jobs = {j for j in self._jobs if not j.done()} | {job}
        job.add_done_callback(_failed)

    def wait(self, timeout: float | None = None) -> bool:
        """Whether every sort submitted so far is done, waiting up to `timeout` seconds
        (benchmarks and tests: S1 answers without it)."""
        with self._lock:
            jobs = set(self._jobs)
        return not wait(jobs, timeout).not_done

    def close(self) -> None:
        """Stop: sorts not started are dropped, the one under way ends with its range (the
        process's exit waits for that range only)."""
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


BACKGROUND_NICE = 10  # the sorting thread's niceness above the process's (Linux: a thread's own)


def _background() -> None:
    """Lower the sorting thread's CPU priority, so that S1's calls (a query right after an
    upload) come first on a busy host; where the platform cannot, it sorts as it is."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE)
    except (AttributeError, OSError):
        pass


def _failed(job: Future[float]) -> None:
    """A sort that failed (memory, say): the joins sort lazily, as before; logged."""
    if not job.cancelled() and job.exception() is not None:
        log.warning("S1 could not sort an upload's band keys ahead: %s", job.exception())


__all__ = ["Presorter"]
