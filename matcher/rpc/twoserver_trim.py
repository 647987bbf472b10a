"""S1's and S2's freed heap given back after each step of a run that makes and drops large
temporaries (docs/performance.md "S1's memory through a two-server run (2026-12-07)").

A run's steps each allocate tens to hundreds of MB and free nearly all of it when they end:
S1's `Propose` (the join, S2's Expand), each block of a part's `PrepareBlocks` and
`BlockExchange` (a block's conversion, ~150 MB at 1,024 x 1,600 rows with two 1,024-bit CLKs:
core/denseblock.py `part_sides`), each batch's `Evaluate` and `Exchange` (its circuit). gRPC
runs each call on a thread of its pool; glibc serves each thread from an arena of its own and,
under its mmap threshold (raised to 32 MiB by the first large free), keeps what is freed in
that arena, fragmented, for reuse. So each thread that ran a block or a batch held about its
largest step's temporaries after it, and S1's resident memory rose by several of them over
the run and stayed there. `trimmed` gives the freed heap back when such a call ends (and
`trim` after each block, where a part's blocks run in one call), as the standing
conversions' pieces do (rpc/twoserver_standcache.py `trim`): glibc's `malloc_trim(0)`
(core/memory.py; nothing on other C libraries). What a run computes is unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from blindmatch.matcher.core import memory

F = TypeVar("F", bound=Callable[..., Any])

TRIM = True


def trim() -> None:
    """The freed heap given back (glibc's `malloc_trim(0)`), where `TRIM`."""
    if TRIM:
        memory.release_free_memory()


def trimmed(method: F) -> F:
    """`method` (an RPC handler, unary or streaming) followed by `trim` when it ends, however
    it ends (its locals let go first)."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from method(*args, **kwargs)
            finally:
                _after()

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            _after()

    return unary  # type: ignore[return-value]


def _after() -> None:
    trim()  # (looked up at each call: a test counts the trims)


__all__ = ["TRIM", "trim", "trimmed"]
