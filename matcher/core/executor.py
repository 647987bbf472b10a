"""Executors: who runs a run's comparison tasks (core.tasks).

`ThreadExecutor` runs them on the matcher's own threads (the default, and what
`blindmatch serve` did before executors existed). `core.cluster.DaskExecutor`
sends them to a Dask cluster. Either way the matcher keeps everything else:
planning, solving, disclosure and storage. An executor gets a `CompareJob` and
returns the run's candidate parts and comparison count, as `tasks.combine`
makes them; the candidates are the same pair for pair and score for score
whichever executor found them.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import blocking as blocking_
from blindmatch.matcher.core.compare import CHUNK_COMPARISONS, Candidates
from blindmatch.matcher.core.memory import release_free_memory
from blindmatch.matcher.core.tasks import (
    BandTask,
    Rows,
    Task,
    TaskResult,
    combine,
    plan_tasks,
    run_task,
)

Clks = npt.NDArray[np.uint8]
# (stage, done, total): work units of a stage (comparisons, or bands of pairs with LSH).
Progress = Callable[[str, int, int], None]
# (done, total): comparison tasks finished, wherever they ran.
TaskProgress = Callable[[int, int], None]
T = TypeVar("T")
R = TypeVar("R")

# Fewest bands in a band task (the native kernel computes 16 bands' keys in one pass).
BANDS_PER_TASK = 16
# Results between returns of freed memory to the OS (see core.memory).
TRIM_EVERY = 32


@dataclass(frozen=True)
class ClkFile:
    """The stored upload behind a dataset: `upload_id`.bin, `rows` CLKs of `width` bytes."""

    upload_id: str
    rows: int
    width: int
    sha256: str


@dataclass
class CompareJob:
    """What a run compares: `datasets` (one per member, in run order) at `threshold`.

    `method` is `exhaustive` or `lsh`. `columns`: compare only each CLK's first
    `columns` bytes (a fallback upload's first CLK); None: all of it. `files`: the
    uploads the datasets were read from, for executors whose workers read them
    themselves.
    """

    datasets: Sequence[Clks]
    threshold: float
    method: str
    columns: int | None = None
    files: Sequence[ClkFile] | None = None
    # Planned already (usecases.runs: a plan per shape of pair), or one plan for every pair;
    # else planned here.
    lsh: blocking_.LshPlan | blocking_.PairPlans | None = None

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.datasets]

    def lsh_plan(self) -> blocking_.LshPlan | blocking_.PairPlans | None:
        """The LSH plans of an `lsh` job; an error when no pair has a plan reaching the
        target recall (usecases.runs.match plans first and compares exhaustively then)."""
        if self.method != "lsh":
            return None
        found = self.lsh or blocking_.plan_pairs(self.datasets, self.threshold)
        if isinstance(found, blocking_.NoPlan):
            raise blocking_.LshPlanError(found.message)
        return found

    def band_rows(self, lsh: blocking_.LshPlan | blocking_.PairPlans | None, workers: int) -> int:
        """Rows of keys per band task: runs of bands long enough to amortise reading the
        rows (keys are computed for `blocking` groups of bands in one pass), short enough
        for about 8 tasks a worker."""
        if lsh is None:
            return 0
        per_task = max(BANDS_PER_TASK, math.ceil(lsh.bands / (8 * max(1, workers))))
        sizes = self.sizes
        rows = max((x + y for i, x in enumerate(sizes) for y in sizes[i + 1 :]), default=0)
        return per_task * rows


class Executor(Protocol):
    name: str

    def compare(
        self, job: CompareJob, progress: Progress, tasks: TaskProgress
    ) -> tuple[list[Candidates], int]:
        """The run's candidate parts (unordered) and how many pairs were compared."""
        ...

    def describe(self) -> str:
        """One line for the log: where tasks run."""
        ...


def rows_of(datasets: Sequence[Clks], rows: Rows) -> Clks:
    return datasets[rows.dataset][rows.start : rows.stop]


def run_bounded(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Sequence[T], window: int
) -> Iterator[tuple[T, R]]:
    """fn(item) on the pool, at most `window` in flight, results in order."""
    pending: deque[tuple[T, Future[R]]] = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            done, fut = pending.popleft()
            yield done, fut.result()
    while pending:
        done, fut = pending.popleft()
        yield done, fut.result()


def work_units(tasks: Sequence[Task]) -> Callable[[Task], int]:
    """A task's work units for progress: its own (comparisons, or bands), except in a run
    that mixes both (a plan per shape of pair comparing some pairs exhaustively), where a
    band counts as the comparisons its keys cost, about the planner's row cost over its
    dense cost for each row of the two members."""
    kinds = {type(t) for t in tasks}
    if BandTask not in kinds or len(kinds) == 1:
        return lambda t: t.units
    per_row = round(blocking_.COST_ROW / blocking_.COST_DENSE)
    return lambda t: (
        t.units * (t.size_a + t.size_b) * per_row if isinstance(t, BandTask) else t.units
    )


class Tally:
    """Progress of a run's tasks: work units and tasks done, reported as results come in."""

    def __init__(self, tasks: Sequence[Task], progress: Progress, task_progress: TaskProgress):
        self.units = work_units(tasks)
        self.total = sum(self.units(t) for t in tasks)
        self.count = len(tasks)
        self.done = 0
        self.finished = 0
        self.progress = progress
        self.task_progress = task_progress
        task_progress(0, self.count)
        progress("compare", 0, self.total)

    def add(self, result: TaskResult) -> None:
        self.done += self.units(result.task)
        self.finished += 1
        self.task_progress(self.finished, self.count)
        self.progress("compare", self.done, self.total)
        if self.finished % TRIM_EVERY == 0:
            release_free_memory()


class ThreadExecutor:
    """Tasks on `workers` threads of the matcher (default: one per core)."""

    name = "threads"

    def __init__(
        self, workers: int | None = None, chunk_comparisons: int = CHUNK_COMPARISONS
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.chunk_comparisons = chunk_comparisons

    def describe(self) -> str:
        return f"batch runs compare on {self.workers} threads of the matcher"

    def compare(
        self, job: CompareJob, progress: Progress, tasks: TaskProgress
    ) -> tuple[list[Candidates], int]:
        datasets, t = job.datasets, job.threshold
        lsh = job.lsh_plan()
        planned = plan_tasks(
            job.sizes,
            job.method,
            lsh,
            chunk_comparisons=self.chunk_comparisons,
            band_rows=job.band_rows(lsh, self.workers),
        )
        results = []
        with ThreadPoolExecutor(max_workers=self.workers) as pool:

            def one(task: Task) -> TaskResult:
                a, b = (rows_of(datasets, r) for r in task.inputs)
                return run_task(task, a, b, t, lsh)

            tally = Tally(planned, progress, tasks)
            for _, res in run_bounded(pool, one, planned, 2 * self.workers):
                results.append(res)
                tally.add(res)
        return combine(results)
