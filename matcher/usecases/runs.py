"""Matching runs: compare -> solve -> links, executed off the request threads.

`match` is the whole computation as a plain function over arrays; `RunManager`
feeds it runs from the store, one at a time, records progress, and resumes
(restarts from scratch) any run a crash interrupted. A run uses an input only once its
file is found whole (`Store.verified_clks`) and stores its links only once the bytes it
compared still hash to what was acknowledged: a damaged input fails the run with a
message naming the member who must upload again, never a "done" over wrong data.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import blocking as blocking_
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core.compare import (
    CHUNK_COMPARISONS,
    Candidates,
    Chunk,
    compare_chunk,
    merge,
    plan_chunks,
)
from blindmatch.matcher.core.fieldlevel import scored_candidates
from blindmatch.matcher.core.memory import release_free_memory
from blindmatch.matcher.core.solve import Links, PairScorer, links_from_groups, solve
from blindmatch.matcher.errors import DataLoss
from blindmatch.matcher.storage.store import Store

log = logging.getLogger("blindmatch.matcher")

Progress = Callable[[str, int, int], None]
T = TypeVar("T")
R = TypeVar("R")


BLOCKING = ("auto", "exhaustive", "lsh")
# `auto` compares all pairs up to this many per pair of members (100k x 100k; the
# kernel's speed is in docs/performance.md) and blocks with LSH above it.
AUTO_LSH_PAIRS = 10_000_000_000


# Chunks between returns of freed memory to the OS (see core.memory).
TRIM_EVERY = 32


@dataclass
class MatchResult:
    links: Links
    groups: int
    comparisons: int
    method: str = "exhaustive"


def choose_method(sizes: Sequence[int], blocking: str = "auto") -> str:
    """`exhaustive` or `lsh` for these dataset sizes under the project's setting."""
    if blocking not in BLOCKING:
        raise ValueError(f"blocking must be one of {', '.join(BLOCKING)}, not {blocking!r}")
    if blocking != "auto":
        return blocking
    largest = max((x * y for i, x in enumerate(sizes) for y in sizes[i + 1 :]), default=0)
    return "lsh" if largest > AUTO_LSH_PAIRS else "exhaustive"


def _run_bounded(
    pool: ThreadPoolExecutor,
    fn: Callable[[T], R],
    items: Sequence[T],
    window: int,
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


def _compare_exhaustive(
    datasets: Sequence[npt.NDArray[np.uint8]],
    threshold: float,
    pool: ThreadPoolExecutor,
    workers: int,
    report: Progress,
    chunk_comparisons: int,
) -> tuple[list[Candidates], int]:
    chunks = plan_chunks([len(d) for d in datasets], chunk_comparisons)
    total = sum(c.comparisons for c in chunks)
    done = 0
    report("compare", 0, total)
    parts = []
    run = functools.partial(_compare_one, datasets=datasets, threshold=threshold)
    for k, (chunk, part) in enumerate(_run_bounded(pool, run, chunks, 2 * workers), start=1):
        parts.append(part)
        done += chunk.comparisons
        report("compare", done, total)
        if k % TRIM_EVERY == 0:
            release_free_memory()
    return parts, total


def _compare_one(
    chunk: Chunk, *, datasets: Sequence[npt.NDArray[np.uint8]], threshold: float
) -> Candidates:
    return compare_chunk(chunk, datasets, threshold)


def _compare_lsh(
    datasets: Sequence[npt.NDArray[np.uint8]],
    threshold: float,
    pool: ThreadPoolExecutor,
    workers: int,
    report: Progress,
) -> tuple[list[Candidates], int]:
    lsh = blocking_.plan(datasets, threshold)
    report("index", 0, len(datasets))
    keys = list(pool.map(lambda d: blocking_.band_keys(d, lsh), datasets))
    report("index", len(datasets), len(datasets))
    tasks = [
        (x, y, band)
        for x in range(len(datasets))
        for y in range(x + 1, len(datasets))
        for band in range(lsh.bands)
    ]

    def one(task: tuple[int, int, int]) -> blocking_.BandResult:
        x, y, band = task
        return blocking_.compare_band(
            datasets[x], datasets[y], keys[x][band], keys[y][band], threshold
        )

    found: dict[tuple[int, int], list[blocking_.BandResult]] = {}
    comparisons = 0
    report("compare", 0, len(tasks))
    for i, ((x, y, _), res) in enumerate(_run_bounded(pool, one, tasks, 2 * workers)):
        found.setdefault((x, y), []).append(res)
        comparisons += res.comparisons
        report("compare", i + 1, len(tasks))
        if (i + 1) % TRIM_EVERY == 0:
            release_free_memory()
    parts = []
    for (x, y), results in found.items():
        sims, ra, rb = blocking_.dedupe(
            np.concatenate([r.sims for r in results]),
            np.concatenate([r.rows_a for r in results]),
            np.concatenate([r.rows_b for r in results]),
        )
        n = len(sims)
        parts.append(
            Candidates(
                sims,
                np.full(n, x, dtype=np.uint32),
                np.full(n, y, dtype=np.uint32),
                ra,
                rb,
            )
        )
    return parts, comparisons


def match(
    datasets: Sequence[npt.NDArray[np.uint8]],
    threshold: float,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    chunk_comparisons: int = CHUNK_COMPARISONS,
    blocking: str = "auto",
    field_bits: Sequence[int] = (),
    fallback_bits: int = 0,
) -> MatchResult:
    """Find the subjects shared between datasets (one per member).

    Compares every pair of datasets (all pairs in chunks, or the pairs LSH
    blocking proposes, per `blocking` and size) on `workers` threads, keeping
    only candidate pairs at or above the threshold, solves them greedily
    (multi-party when there are more than two), and returns the links inside
    every matched group. With `field_bits` (field-level encodings), pairs are
    scored field by field instead (core.fieldlevel) and `threshold` is a
    match probability. With `fallback_bits` (record-level CLKs followed by a
    fallback CLK), pairs involving a record that lacks the fallback's left-out
    fields are scored on the fallback CLKs (core.fallback).
    """
    report = progress or (lambda stage, done, total: None)
    if field_bits:
        report("compare", 0, 1)
        candidates, compared, scorer = scored_candidates(datasets, field_bits, threshold)
        report("compare", 1, 1)
        report("solve", 0, len(candidates))
        groups = solve(candidates)
        report("solve", len(candidates), len(candidates))
        links = links_from_groups(groups, datasets, scorer)
        return MatchResult(
            links=links, groups=len(groups), comparisons=compared, method="field-level"
        )
    method = choose_method([len(d) for d in datasets], blocking)
    n_workers = workers or os.cpu_count() or 1
    split = fallback_.Split.of(datasets, fallback_bits) if fallback_bits else None
    first = split.first if split is not None else datasets
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        if method == "lsh":
            parts, comparisons = _compare_lsh(first, threshold, pool, n_workers, report)
        else:
            parts, comparisons = _compare_exhaustive(
                first, threshold, pool, n_workers, report, chunk_comparisons
            )
    candidates = merge(parts)
    del parts
    pair_scorer: PairScorer | None = None
    if split is not None:
        candidates = merge(fallback_.rescored(candidates, split, threshold, n_workers))
        pair_scorer = functools.partial(fallback_.pair_scores, split)
        method += "+fallback"
    report("solve", 0, len(candidates))
    groups = solve(candidates)
    report("solve", len(candidates), len(candidates))
    links = links_from_groups(groups, datasets, pair_scorer)
    return MatchResult(links=links, groups=len(groups), comparisons=comparisons, method=method)


class RunManager:
    """Executes queued runs on one background thread, in order."""

    def __init__(self, store: Store, workers: int | None = None) -> None:
        self.store = store
        self.workers = workers
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="blindmatch-runs", daemon=True)

    def start(self) -> None:
        for run in self.store.unfinished_runs():
            log.info("resuming interrupted run %s from the start", run.id)
            self.store.update_run(run.id, state="queued", stage="", work_done=0, work_total=0)
            self._queue.put(run.id)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def submit(self, run_id: str) -> None:
        self._queue.put(run_id)

    def wait_for_change(self, timeout: float) -> None:
        """Block until some run's progress changes, or `timeout` seconds pass."""
        with self._changed:
            self._changed.wait(timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _loop(self) -> None:
        while (run_id := self._queue.get()) is not None:
            try:
                self._execute(run_id)
            except DataLoss as exc:  # a damaged input: the message says who must do what
                log.error("run %s failed: %s", run_id, exc)
                self.store.fail_run(run_id, str(exc))
            except Exception as exc:  # a failed run must not stop the loop
                log.exception("run %s failed", run_id)
                self.store.fail_run(run_id, f"internal error: {exc}")
            self._notify()

    def _execute(self, run_id: str) -> None:
        run = self.store.run(run_id)
        inputs = self.store.run_inputs(run_id)
        members = [m for m, _ in inputs]
        datasets = [self.store.verified_clks(u) for _, u in inputs]
        self.store.update_run(run_id, state="running", stage="compare")
        self._notify()
        last = [0.0]

        def progress(stage: str, done: int, total: int) -> None:
            # At most ~100 progress writes per stage.
            if done in (0, total) or (total and (done - last[0]) / total >= 0.01):
                last[0] = done
                self.store.update_run(run_id, stage=stage, work_done=done, work_total=total)
                self._notify()

        layouts = {self.store.field_bits(u.id) for _, u in inputs}
        field_bits = layouts.pop() if len(layouts) == 1 else ()  # mixed: record-level
        fallbacks = {self.store.fallback_bits(u.id) for _, u in inputs}
        fallback_bits = fallbacks.pop() if len(fallbacks) == 1 else 0  # mixed: plain Dice
        result = match(
            datasets,
            run.threshold,
            workers=self.workers,
            progress=progress,
            blocking=self.store.project(run.project).blocking,
            field_bits=field_bits,
            fallback_bits=fallback_bits,
        )
        for (_, upload), clks in zip(inputs, datasets, strict=True):
            self.store.verify_again(upload, clks)  # no file changed under the run
        self.store.update_run(run_id, stage="store")
        self.store.finish_run(run_id, members, result.links, result.groups)
        log.info(
            "run %s done: %d comparisons (%s), %d shared subjects",
            run_id,
            result.comparisons,
            result.method,
            result.groups,
        )
