"""The blindmatch a Dask worker runs, checked against the matcher's before it compares.

A worker finds a task's candidates with its own installed blindmatch. One with an older or
otherwise different build (an upgrade that missed a host, a local change) can find other
candidates or other scores, and the run would store links the matcher's own threads would
not find, with nothing to say so. So a run first asks every worker for its build
(`check_workers`), and every task carries the matcher's (`refuse_other_build`, on the
worker): a worker whose build differs, one that joins mid-run included, fails the run with a
message naming it and both builds, before anything is stored.

A build is blindmatch's version, a digest of the Python source of the comparing code
(`matcher/core`), and a digest of what a fixed set of comparison tasks (exhaustive and LSH
bands, through `tasks.run_task`) finds on fixed CLKs: the native kernels, whose source a
wheel does not carry, are checked by their answers.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from blindmatch.matcher.core import blocking as blocking_
from blindmatch.matcher.core.compare import Chunk
from blindmatch.matcher.core.tasks import BandTask, DenseTask, Task, run_task
from blindmatch.matcher.domain import counted

if TYPE_CHECKING:
    from distributed import Client

HELP = (
    "install the matcher's blindmatch (with its native kernel) on every worker "
    "(docs/operations.md#running-on-a-cluster); the run failed and nothing was stored"
)


class ClusterError(Exception):
    """The cluster is misconfigured, unreachable or lost, or a worker runs another blindmatch:
    the run fails with this message and nothing it would have stored is stored."""


def _version() -> str:
    try:
        return metadata.version("blindmatch")
    except metadata.PackageNotFoundError:
        return "unknown"


def _source_digest() -> str:
    """sha256 of the comparing code's Python source (this package folder's modules)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _answer_digest() -> str:
    """sha256 of what fixed exhaustive and band tasks find on fixed CLKs, scores included."""
    rng = np.random.default_rng(20261207)
    a = rng.integers(0, 256, (96, 128), dtype=np.uint8)
    b = a.copy()
    flips = rng.integers(0, 128 * 8, (96, 300))  # pairs from Dice 1 down to well under 0.8
    for row, bits in enumerate(flips):
        for bit in bits[: 3 * row]:
            b[row, bit // 8] ^= np.uint8(1 << (bit % 8))
    plan = blocking_.LshPlan(rng.integers(0, 1024, (24, 6), dtype=np.int32), 0.8, 1.0)
    tasks: list[Task] = [DenseTask(Chunk(0, 0, 96, 1, 0, 96)), BandTask(0, 96, 1, 96, 0, 24)]
    digest = hashlib.sha256()
    for task in tasks:
        found = run_task(task, a, b, 0.8, plan).candidates
        for column in (found.sims, found.rec0, found.rec1):
            digest.update(np.ascontiguousarray(column).tobytes())
    return digest.hexdigest()[:12]


# Read as the comparing code is imported (core.cluster imports this module), not when a run
# asks: a worker upgraded in place but not restarted runs the code it imported before.
_SOURCE = _source_digest()


@functools.cache
def build() -> str:
    """This process's blindmatch build, as `check_workers` compares it (computed once)."""
    return f"blindmatch {_version()}, code {_SOURCE}, answers {_answer_digest()}"


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "a worker"


def refuse_other_build(expected: str) -> None:
    """On a worker, before a task: refuse it unless this worker's build is `expected`."""
    own = build()
    if own != expected:
        raise ClusterError(
            f"the Dask worker at {_worker_address()} runs another blindmatch ({own}) than "
            f"the matcher ({expected}): its comparisons could differ; {HELP}"
        )


def check_workers(client: Client) -> str:
    """The matcher's build, once every worker now connected has been seen to run it."""
    own = build()
    try:
        found = client.run(build)
    except Exception as exc:  # an older blindmatch has no `build`; none at all no module
        raise ClusterError(
            f"a Dask worker could not tell its blindmatch build ({type(exc).__name__}: "
            f"{exc}), so it runs an older blindmatch or none; {HELP}"
        ) from None
    other = {address: theirs for address, theirs in found.items() if theirs != own}
    if other:
        named = "; ".join(f"{address}: {theirs}" for address, theirs in sorted(other.items()))
        raise ClusterError(
            f"{len(other):,} of the {counted(len(found), 'Dask worker')} "
            f"{'runs' if len(other) == 1 else 'run'} another "
            f"blindmatch than the matcher ({own}): {named}; their comparisons could differ; "
            f"{HELP}"
        )
    return own


__all__ = ["ClusterError", "build", "check_workers", "refuse_other_build"]
