"""Matching runs: compare -> solve -> links, executed off the request threads.

`match` is the whole computation as a plain function over arrays; `RunManager`
feeds it runs from the store, one at a time, records progress, and resumes
(restarts from scratch) any run a crash interrupted.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from matcher.compare import CHUNK_COMPARISONS, compare_chunk, merge, plan_chunks
from matcher.fieldlevel import scored_candidates
from matcher.solve import Links, links_from_groups, solve
from matcher.store import Store

log = logging.getLogger("blindmatch.matcher")

Progress = Callable[[str, int, int], None]


@dataclass
class MatchResult:
    links: Links
    groups: int
    comparisons: int


def match(
    datasets: Sequence[npt.NDArray[np.uint8]],
    threshold: float,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    chunk_comparisons: int = CHUNK_COMPARISONS,
    field_bits: Sequence[int] = (),
) -> MatchResult:
    """Find the subjects shared between datasets (one per member).

    Compares every pair of datasets in chunks on `workers` threads, solves the
    candidate pairs greedily (multi-party when there are more than two), and
    returns the links inside every matched group. With `field_bits` (field-level
    encodings), pairs are scored field by field instead (matcher.fieldlevel) and
    `threshold` is a match probability.
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
        return MatchResult(links=links, groups=len(groups), comparisons=compared)
    chunks = plan_chunks([len(d) for d in datasets], chunk_comparisons)
    total = sum(c.comparisons for c in chunks)
    done = 0
    report("compare", 0, total)
    parts = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = [pool.submit(compare_chunk, c, datasets, threshold) for c in chunks]
        for chunk, fut in zip(chunks, futures, strict=True):
            parts.append(fut.result())
            done += chunk.comparisons
            report("compare", done, total)
    candidates = merge(parts)
    report("solve", 0, len(candidates))
    groups = solve(candidates)
    report("solve", len(candidates), len(candidates))
    links = links_from_groups(groups, datasets)
    return MatchResult(links=links, groups=len(groups), comparisons=total)


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
            except Exception as exc:  # a failed run must not stop the loop
                log.exception("run %s failed", run_id)
                self.store.fail_run(run_id, f"internal error: {exc}")
            self._notify()

    def _execute(self, run_id: str) -> None:
        run = self.store.run(run_id)
        inputs = self.store.run_inputs(run_id)
        members = [m for m, _ in inputs]
        datasets = [self.store.load_clks(u) for _, u in inputs]
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
        result = match(
            datasets, run.threshold, workers=self.workers, progress=progress, field_bits=field_bits
        )
        self.store.update_run(run_id, stage="store")
        self.store.finish_run(run_id, members, result.links, result.groups)
        log.info(
            "run %s done: %d comparisons, %d shared subjects",
            run_id,
            result.comparisons,
            result.groups,
        )
