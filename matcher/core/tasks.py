"""A run's comparing, cut into tasks: pure functions an executor can run anywhere.

A task names the rows it needs (`Rows`: a slice of one member's CLKs), and
`run_task` turns (task, those rows, threshold, LSH plan) into the candidate
pairs it finds, with row numbers of the whole dataset. No storage, no gRPC, no
threads: the in-process executor (core.executor) runs tasks on its threads,
the Dask executor (core.cluster) on a cluster's workers. `combine` puts the
results together, in whatever order they arrive, into the same candidates.

- `DenseTask`: all pairs of a slice of one dataset and a slice of another (a
  compare.Chunk), decided by the exact Dice kernel.
- `BandTask`: two whole datasets, the pairs that collide in a range of LSH
  bands (core.blocking), decided by the same kernel. A pair found in several
  bands is kept once (`combine`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import blocking as blocking_
from blindmatch.matcher.core.compare import (
    CHUNK_COMPARISONS,
    Candidates,
    Chunk,
    compare_slices,
    plan_chunks,
)

Clks = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Rows:
    """Rows [start, stop) of dataset `dataset`."""

    dataset: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class DenseTask:
    """Every pair of `chunk`'s two slices."""

    chunk: Chunk

    @property
    def inputs(self) -> tuple[Rows, Rows]:
        c = self.chunk
        return Rows(c.a, c.a_start, c.a_stop), Rows(c.b, c.b_start, c.b_stop)

    @property
    def units(self) -> int:
        """Work units for progress: comparisons."""
        return self.chunk.comparisons


@dataclass(frozen=True)
class BandTask:
    """Pairs of datasets `a` and `b` (all rows) colliding in bands [band_start, band_stop)
    of the run's plan number `plan` (blocking.PairPlans: a plan per shape of pair)."""

    a: int
    size_a: int
    b: int
    size_b: int
    band_start: int
    band_stop: int
    plan: int = 0

    @property
    def inputs(self) -> tuple[Rows, Rows]:
        return Rows(self.a, 0, self.size_a), Rows(self.b, 0, self.size_b)

    @property
    def units(self) -> int:
        """Work units for progress: bands of one pair of datasets."""
        return self.band_stop - self.band_start


Task = DenseTask | BandTask


@dataclass
class TaskResult:
    """What one task found: candidate pairs (global rows) and how many pairs it compared."""

    task: Task
    candidates: Candidates
    comparisons: int


def plan_tasks(
    sizes: Sequence[int],
    method: str,
    lsh: blocking_.LshPlan | blocking_.PairPlans | None = None,
    *,
    chunk_comparisons: int = CHUNK_COMPARISONS,
    band_rows: int = 0,
    min_bands: int = 1,
) -> list[Task]:
    """The tasks of a run over datasets of these sizes.

    `exhaustive`: chunks of about `chunk_comparisons` pairs. `lsh`: for every pair
    of datasets, runs of consecutive bands of its plan (one plan for all, or
    `blocking.PairPlans`: a plan per shape of pair, and chunks as for `exhaustive`
    for a pair it compares exhaustively) holding about `band_rows` rows of keys
    (both datasets' rows times bands), split evenly in runs of at most that many and
    at least `min_bands` (the native band path computes 16 bands' keys in one pass over
    the rows; runs of 15 and 16 are one pass each); `band_rows` 0 means one band a task.
    """
    if method == "exhaustive":
        return [DenseTask(c) for c in plan_chunks(sizes, chunk_comparisons)]
    if method != "lsh" or lsh is None:
        raise ValueError(f"no tasks for method {method!r} without an LSH plan")
    plans = (
        lsh if isinstance(lsh, blocking_.PairPlans) else blocking_.PairPlans.single(lsh, len(sizes))
    )
    tasks: list[Task] = []
    for x in range(len(sizes)):
        for y in range(x + 1, len(sizes)):
            k = plans.pairs.get((x, y))
            if k is None:  # this pair compares every pair of rows
                tasks.extend(
                    DenseTask(dataclasses.replace(c, a=(x, y)[c.a], b=(x, y)[c.b]))
                    for c in plan_chunks([sizes[x], sizes[y]], chunk_comparisons)
                )
                continue
            bands = plans.plans[k].bands
            rows = sizes[x] + sizes[y]
            step = max(1, band_rows // rows) if band_rows and rows else 1
            step = max(step, min_bands)
            step = min(step, bands)
            # Even runs of bands: 134 bands at most 50 a task are 45/45/44, not 50/50/34.
            count = math.ceil(bands / step)
            bounds = np.linspace(0, bands, count + 1).round().astype(int)
            tasks.extend(
                BandTask(x, sizes[x], y, sizes[y], int(lo), int(hi), k)
                for lo, hi in itertools.pairwise(bounds)
            )
    return tasks


def plan_of(
    task: Task, lsh: blocking_.LshPlan | blocking_.PairPlans | None
) -> blocking_.LshPlan | None:
    """The plan `task` compares under (None for a dense task)."""
    if isinstance(task, DenseTask) or lsh is None:
        return None
    return lsh.plans[task.plan] if isinstance(lsh, blocking_.PairPlans) else lsh


def run_task(
    task: Task,
    a: Clks,
    b: Clks,
    threshold: float,
    lsh: blocking_.LshPlan | blocking_.PairPlans | None = None,
) -> TaskResult:
    """The candidate pairs `task` finds: `a` and `b` are the rows `task.inputs` names;
    `lsh` the run's plan, or its plans (a band task takes the one it names)."""
    lsh = plan_of(task, lsh)
    ra, rb = task.inputs
    if (len(a), len(b)) != (len(ra), len(rb)):
        raise ValueError(
            f"task needs {len(ra)} and {len(rb)} rows, was given {len(a)} and {len(b)}"
        )
    if isinstance(task, DenseTask):
        found = compare_slices(task.chunk, a, b, threshold)
        return TaskResult(task, found, task.chunk.comparisons)
    if lsh is None:
        raise ValueError("a band task needs the run's LSH plan")
    if lsh.design_recall < blocking_.TARGET_RECALL:
        raise blocking_.LshPlanError(
            f"plan design recall {lsh.design_recall:.4f} below target {blocking_.TARGET_RECALL}"
        )
    res = blocking_.compare_bands(a, b, lsh.positions[task.band_start : task.band_stop], threshold)
    found = _deduped(task.a, task.b, [res.sims], [res.rows_a], [res.rows_b])
    return TaskResult(task, found, res.comparisons)


def _deduped(
    x: int,
    y: int,
    sims: list[npt.NDArray[np.float64]],
    rows_x: list[npt.NDArray[np.uint32]],
    rows_y: list[npt.NDArray[np.uint32]],
) -> Candidates:
    """Pairs of datasets x and y found in several bands (or tasks) as candidates, each once."""
    if not sims:
        return Candidates.empty()
    s, ra, rb = blocking_.dedupe(
        np.concatenate(sims), np.concatenate(rows_x), np.concatenate(rows_y)
    )
    n = len(s)
    return Candidates(s, np.full(n, x, dtype=np.uint32), np.full(n, y, dtype=np.uint32), ra, rb)


def combine(results: Iterable[TaskResult]) -> tuple[list[Candidates], int]:
    """The run's candidates (one part per dense task, one per pair of datasets for bands)
    and its comparisons; the same whatever order the results come in."""
    parts: list[Candidates] = []
    banded: dict[tuple[int, int], list[Candidates]] = {}
    comparisons = 0
    for res in results:
        comparisons += res.comparisons
        if isinstance(res.task, BandTask):
            banded.setdefault((res.task.a, res.task.b), []).append(res.candidates)
        else:
            parts.append(res.candidates)
    for (x, y), found in sorted(banded.items()):
        parts.append(
            _deduped(
                x, y, [c.sims for c in found], [c.rec0 for c in found], [c.rec1 for c in found]
            )
        )
    return parts, comparisons


__all__ = [
    "BandTask",
    "DenseTask",
    "Rows",
    "Task",
    "TaskResult",
    "combine",
    "plan_of",
    "plan_tasks",
    "run_task",
]
