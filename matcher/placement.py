"""Where the matcher's threads run: request handling on one core, look-ups on the others.

A real-time query passes the GIL between threads several times (gRPC's poller hands the
call to a worker and back; the worker releases the GIL for the look-up and takes it
again). Between threads on one core a hand-over is cheap; between cores it is a wake-up
on the other core and the GIL's cache lines moving, which under load costs the matcher
much of its CPU per query. So the gRPC threads are kept on one core, and the look-ups,
which need no GIL, run on a native pool on the others (`lsh_pool` in
matcher/core/_kernel.c). The request thread that hands a pass of look-ups to the pool
runs queued look-ups too while it waits, with the GIL released (a pass of one query
entirely): on real encodings the look-ups are most of a query's CPU, and the request
core would otherwise sit idle while they queue. docs/performance.md (*Real-time queries*)
has the measurements.

Batch runs are not affected: their threads are started elsewhere and keep every core.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from blindmatch.matcher.core import kernel
from blindmatch.matcher.domain import counted

# More look-up threads than this buy nothing: one core of request handling cannot keep
# more of them busy (docs/performance.md, *Real-time queries*).
MAX_AUTO_THREADS = 4


@dataclass(frozen=True)
class Placement:
    request_cpus: frozenset[int]  # the gRPC threads (and everything that holds the GIL)
    lookup_cpus: frozenset[int]  # the native look-up threads
    lookup_threads: int

    def describe(self) -> str:
        return (
            f"request handling on CPU {_cpus(self.request_cpus)}, "
            f"{counted(self.lookup_threads, 'look-up thread')} on CPU {_cpus(self.lookup_cpus)}"
        )


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (a `taskset` or container limit included)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


# Several matchers on one host (a test suite's workers, a matcher beside a look-up server)
# each pin their request threads to one CPU; without this they all take the lowest.
REQUEST_CPU_ENV = "BLINDMATCH_REQUEST_CPU"


def request_cpu_from_env() -> int | None:
    """The request CPU `BLINDMATCH_REQUEST_CPU` names, or None when it is unset or empty."""
    value = os.environ.get(REQUEST_CPU_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"{REQUEST_CPU_ENV}={value!r}: a CPU number (0, 1, ...)")
    return int(value)


def check_request_cpu(cpu: int, allowed: set[int], name: str = "") -> None:
    """A ValueError where `cpu` is not one of `allowed` (the CPUs this process may use),
    named `name` (default "request CPU N"; `serve` names its flag or the variable) and
    naming the CPUs it may use: `serve`'s check before anything is opened, and
    `plan_placement`'s."""
    if cpu not in allowed:
        raise ValueError(
            f"{name or f'request CPU {cpu}'}: not a CPU this process may run on "
            f"(it may use CPU {_cpus(frozenset(allowed))})"
        )


def plan_placement(
    allowed: set[int], lookup_threads: int | None, request_cpu: int | None = None
) -> Placement | None:
    """Request handling on `request_cpu` (default: the lowest allowed CPU), look-ups on
    the rest.

    `lookup_threads` None picks one per remaining CPU (at most MAX_AUTO_THREADS); 0, or
    a single allowed CPU, means no placement: every thread goes where the OS puts it and
    look-ups run on the thread that asks. A `request_cpu` this process may not use is a
    ValueError naming the CPUs it may."""
    if request_cpu is not None:
        check_request_cpu(request_cpu, allowed)
    if lookup_threads == 0 or len(allowed) < 2:
        return None
    if lookup_threads is not None and lookup_threads < 0:
        raise ValueError("lookup_threads: 0 or more")
    first = min(allowed) if request_cpu is None else request_cpu
    rest = frozenset(allowed - {first})
    threads = lookup_threads if lookup_threads is not None else min(len(rest), MAX_AUTO_THREADS)
    return Placement(frozenset({first}), rest, threads)


def start_lookups(placement: Placement) -> int:
    """Start the native look-up pool (once per process); how many threads it runs."""
    if not kernel.NATIVE or not hasattr(os, "sched_setaffinity"):
        return 0
    return int(kernel._kernel.lsh_pool(sorted(placement.lookup_cpus), placement.lookup_threads))


def pin_this_thread(cpus: frozenset[int]) -> None:
    """Keep the calling thread (and the threads it starts from now on) on `cpus`."""
    if hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):  # a CPU taken away since: stay where we are
            os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """The calling thread on `cpus` for the block (threads it starts inherit that),
    then back where it was. None: no change."""
    if cpus is None or not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    pin_this_thread(cpus)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)
