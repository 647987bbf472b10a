"""Matching runs: compare -> solve -> links, executed off the request threads.

`match` is the whole computation as a plain function over arrays; `RunManager`
feeds it runs from the store, one at a time, records progress, and resumes
(restarts from scratch) any run a crash interrupted. A run uses an input only once its
file is found whole (`Store.verified_clks`) and stores its links only once the bytes it
compared still hash to what was acknowledged: a damaged input fails the run with a
message naming the member who must upload again, never a "done" over wrong data. A
two-server project's run is usecases/tworuns.py's, over S1 and S2, stored the same way.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import blocking as blocking_
from blindmatch.matcher.core import candidateload, crowd, fallbackpass
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core.cluster import ClusterError
from blindmatch.matcher.core.compare import CHUNK_COMPARISONS, concat, merge
from blindmatch.matcher.core.executor import (
    ClkFile,
    CompareJob,
    Executor,
    Progress,
    TaskProgress,
    ThreadExecutor,
)
from blindmatch.matcher.core.fieldlevel import scored_candidates
from blindmatch.matcher.core.runwords import OPERATOR_SIDE, for_members
from blindmatch.matcher.core.solve import (
    Links,
    PairScorer,
    complete,
    dice_scorer,
    links_from_groups,
    solve,
)
from blindmatch.matcher.domain import ACTIVE, TWO_SERVER
from blindmatch.matcher.errors import ServiceError
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases import tworuns

log = logging.getLogger("blindmatch.matcher")

# What members (and the audit log) are told of a run that failed for a reason of the
# matcher's own: the exception itself, which may name the matcher's files, is in its log.
INTERNAL_FAILURE = (
    "internal error on the matcher; nothing of this run was stored. The operator's log has "
    "the details (run {run_id})"
)
BLOCKING = ("auto", "exhaustive", "lsh")
# `auto` compares all pairs up to this many per pair of members (100k x 100k; the
# kernel's speed is in docs/performance.md) and blocks with LSH above it.
AUTO_LSH_PAIRS = 10_000_000_000


@dataclass
class MatchResult:
    links: Links
    groups: int
    comparisons: int
    method: str = "exhaustive"
    # The fallback pass (uploads with a fallback CLK): pairs of fallback CLKs compared, and
    # its blocks compared under an LSH plan (core.fallbackpass); not in `comparisons`.
    fallback_comparisons: int = 0
    fallback_banded: int = 0


def choose_method(sizes: Sequence[int], blocking: str = "auto") -> str:
    """`exhaustive` or `lsh` for these dataset sizes under the project's setting."""
    if blocking not in BLOCKING:
        raise ValueError(f"blocking must be one of {', '.join(BLOCKING)}, not {blocking!r}")
    if blocking != "auto":
        return blocking
    largest = max((x * y for i, x in enumerate(sizes) for y in sizes[i + 1 :]), default=0)
    return "lsh" if largest > AUTO_LSH_PAIRS else "exhaustive"


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
    rule: fallback_.Rule = fallback_.NO_RULE,
    executor: Executor | None = None,
    files: Sequence[ClkFile] | None = None,
    task_progress: TaskProgress | None = None,
) -> MatchResult:
    """Find the subjects shared between datasets (one per member).

    Compares every pair of datasets (all pairs in chunks, or the pairs LSH
    blocking proposes, per `blocking` and size) as tasks run by `executor`
    (default: `workers` threads here), keeping only candidate pairs at or above
    the threshold, solves them greedily (multi-party when there are more than
    two), completes the groups (core.solve.complete) and returns the links inside every
    matched group. `files` are the
    uploads the datasets were read from (for executors whose workers read them).
    With `field_bits` (field-level encodings), pairs are scored field by field
    instead, here (core.fieldlevel), and `threshold` is a match probability.
    With `fallback_bits` (record-level CLKs followed by a fallback CLK), pairs
    involving a record that lacks the fallback's left-out fields are rescored
    here on the fallback CLKs (core.fallback); with a `rule` as well, the first CLKs are
    compared down to its candidate floor and pairs where both records have the fields are
    kept and scored by the rule's score over both CLKs.
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
    executor = executor or ThreadExecutor(n_workers, chunk_comparisons)
    split = fallback_.Split.of(datasets, fallback_bits) if fallback_bits else None
    to_compare = split.first if split is not None else datasets
    if split is None:
        rule = fallback_.NO_RULE  # the rule is over a pair's two CLKs
    # With a rule, the first CLKs' candidates reach under the threshold (core.fallback).
    floor = rule.candidate_floor(threshold)
    # A threshold under what unrelated records score by chance (febrl06: Febrl4 at 0.6) makes
    # nearly every pair a candidate: said at the start, not after minutes of silence.
    if note := candidateload.warning(candidateload.estimate(to_compare, floor), floor):
        log.warning("%s", note)
    lsh = None
    banded = method == "lsh"  # the fallback pass plans its own LSH, whatever the first's
    if method == "lsh":
        # A plan per shape of pair of members. A plan below the target recall would lose
        # matches silently: a pair without one compares every pair of its rows.
        found = blocking_.plan_pairs(to_compare, floor)
        if isinstance(found, blocking_.NoPlan):
            log.warning("LSH blocking: %s", found.message)
            method = "exhaustive"
        else:
            for line in found.describe():
                log.info("LSH blocking: %s", line)
            lsh = found
    job = CompareJob(
        to_compare,
        floor,
        method,
        columns=split.first[0].shape[1] if split is not None and datasets else None,
        files=files,
        lsh=lsh,
    )
    parts, comparisons = executor.compare(job, report, task_progress or (lambda done, total: None))
    # Unsorted until the crowd cut has run (lowfloor): its cut does not depend on order, and
    # at a low floor it leaves a fraction of the candidates for `merge` to sort.
    candidates = concat(parts)
    del parts
    pair_scorer: PairScorer | None = None
    passed = None
    if split is not None:
        passed = _fallback_pass(split, threshold, n_workers, banded, report)
        # A stage of its own: under the rule each candidate is scored on both CLKs, about 2 us
        # a pair in numpy, minutes where an export's near-duplicates crowd the floor (freshwalk:
        # 6 minutes at 120,000 x 120,000 with the bar left at the fallback pass's 100%); since
        # 2026-12-07 by the native kernel, about 13x less (benchmarks/rulescore.py).
        scored = len(candidates)
        report("score", 0, scored)
        candidates = concat(fallback_.rescored(candidates, split, threshold, n_workers, rule,
                                               found=passed))  # fmt: skip
        pair_scorer = functools.partial(fallback_.pair_scores, split, rule=rule)
        method += "+fallback" + ("+rule" if rule.active else "")
    # Where chance candidates crowd the bands just over the threshold (a large partner), the
    # cut moves over them (core.crowd; docs/evaluation.md "Precision as the population grows").
    kept = len(candidates)
    candidates = crowd.lifted(
        candidates, threshold, [len(d) for d in datasets], split.lacking if split else None
    )
    if len(candidates) < kept:
        log.info(
            "crowded bands over the threshold: %d candidate pairs under their cut",
            kept - len(candidates),
        )
    candidates = merge([candidates])
    if split is not None:
        report("score", scored, scored)
    report("solve", 0, len(candidates))
    groups = complete(
        solve(candidates), candidates, pair_scorer or dice_scorer(datasets), threshold
    )
    report("solve", len(candidates), len(candidates))
    links = links_from_groups(groups, datasets, pair_scorer)
    return MatchResult(
        links=links, groups=len(groups), comparisons=comparisons, method=method,
        fallback_comparisons=passed.comparisons if passed else 0,
        fallback_banded=passed.banded if passed else 0,
    )  # fmt: skip


def _fallback_pass(
    split: fallback_.Split, threshold: float, workers: int, banded: bool, report: Progress
) -> fallbackpass.FallbackPass:
    """The fallback CLKs' pairs with a lacking record (core.fallbackpass): by LSH planned on
    them when the run is blocked by LSH, each block without a plan at the target recall
    compared exhaustively and logged as such; stage `fallback` of the run's progress."""
    passed = fallbackpass.find(
        split.second, split.lacking, threshold, workers, lsh=banded,
        progress=lambda done, total: report("fallback", done, total),
    )  # fmt: skip
    for line in passed.notes:
        (log.info if line.startswith("LSH") else log.warning)("fallback pass: %s", line)
    log.info("fallback pass: %d comparisons for %d pairs of rows", passed.comparisons,
             passed.pairs)  # fmt: skip
    return passed


class RunEnded(Exception):
    """A run's progress found it no longer queued or running (its project ended, or a
    member's erasure cancelled it): it stops at once, in the stage named, rather than
    computing what would not be stored (before fuzzend it ran to its end; `finish_run`
    then stored nothing)."""


class RunManager:
    """Executes queued runs on one background thread, in order."""

    def __init__(
        self,
        store: Store,
        workers: int | None = None,
        executor: Executor | None = None,
        two_server: tworuns.TwoServerSetup | None = None,
    ) -> None:
        self.store = store
        self.two_server = two_server  # S1 and S2, for two-server projects' runs
        self.workers = workers
        self.executor = executor or ThreadExecutor(workers)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._changed = threading.Condition()
        self._followers = 0  # followers of runs' progress (WatchRun streams) now
        self._followers_ended: ServiceError | None = None  # why, once the matcher stops
        self._thread = threading.Thread(target=self._loop, name="blindmatch-runs", daemon=True)

    def start(self) -> None:
        for run in self.store.unfinished_runs():
            log.info("resuming interrupted run %s from the start", run.id)
            self.store.update_run(
                run.id, state="queued", stage="", work_done=0, work_total=0, tasks_done=0,
                tasks_total=0,
            )  # fmt: skip
            self._queue.put(run.id)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def submit(self, run_id: str) -> None:
        self._queue.put(run_id)

    def wait_for_change(self, timeout: float) -> None:
        """Block until some run's progress changes, or `timeout` seconds pass (not at all
        once followers are ended, `end_followers`)."""
        with self._changed:
            if self._followers_ended is None:
                self._changed.wait(timeout)

    @contextmanager
    def following(self) -> Iterator[None]:
        """Count a follower of runs' progress (a WatchRun stream) in while it follows;
        `still_following` raises once `end_followers` has ended it."""
        with self._changed:
            self._followers += 1
        try:
            yield
        finally:
            with self._changed:
                self._followers -= 1

    def still_following(self) -> None:
        """Raise why followers were ended (`end_followers`), if they were."""
        with self._changed:
            if self._followers_ended is not None:
                raise self._followers_ended

    def end_followers(self, why: ServiceError) -> int:
        """End every follower at once, and any that starts later: each raises `why` at its
        next look (the matcher is stopping: server.py `RunningServer.stop`; a follower waits
        for nothing the stop's grace would bring). How many were following."""
        with self._changed:
            self._followers_ended = why
            self._changed.notify_all()
            return self._followers

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _loop(self) -> None:
        while (run_id := self._queue.get()) is not None:
            try:
                self._execute(run_id)
            except RunEnded as ended:
                log.info("run %s stopped in its %s stage: its project was ended or a member "
                         "erased its data; nothing of it is stored", run_id, ended)  # fmt: skip
            except ClusterError as exc:  # the operator's to fix: only its log says how
                log.error("run %s failed on the Dask cluster: %s", run_id, exc)
                self.store.fail_run(run_id, OPERATOR_SIDE, cause=str(exc))
            except ServiceError as exc:  # its message says what to do
                log.error("run %s failed: %s", run_id, exc)
                self.store.fail_run(run_id, for_members(str(exc)))
            except Exception:  # a failed run must not stop the loop
                log.exception("run %s failed", run_id)
                self.store.fail_run(run_id, INTERNAL_FAILURE.format(run_id=run_id))
            self._notify()

    def _execute(self, run_id: str) -> None:
        run = self.store.run(run_id)
        if run.state not in ACTIVE:  # cancelled by an erasure while it was queued
            log.info("run %s was cancelled before it started: %s", run_id, run.message)
            return
        inputs = self.store.run_inputs(run_id)
        members = [m for m, _ in inputs]
        two_server = self.store.project(run.project).mode == TWO_SERVER  # no CLKs here
        datasets = [] if two_server else [self.store.verified_clks(u) for _, u in inputs]
        # A two-server run blocks first (S1 proposes the pairs, usecases/tworuns.py): its
        # first stage is "block", not "compare" (which `blindmatch run` said before "block").
        first = "block" if two_server else "compare"
        if not self.store.update_run(run_id, state="running", stage=first):
            raise RunEnded("queued")  # ended or cancelled as it was taken from the queue
        self._notify()
        last = [0.0]
        tasks = [0, 0]  # comparison tasks done, of this many: written with the progress

        def progress(stage: str, done: int, total: int) -> None:
            # At most ~100 progress writes per stage.
            if done in (0, total) or (total and (done - last[0]) / total >= 0.01):
                last[0] = done
                if not self.store.update_run(
                    run_id, stage=stage, work_done=done, work_total=total, tasks_done=tasks[0],
                    tasks_total=tasks[1],
                ):  # fmt: skip
                    raise RunEnded(stage)  # its project ended, or an erasure cancelled it
                self._notify()

        def task_progress(done: int, total: int) -> None:
            tasks[:] = [done, total]

        if two_server:
            two = tworuns.run(self.store, self.two_server, run_id, inputs, progress)
            self._finish(run_id, members, two.links, two.groups, two.comparisons, two.method)
            return
        layouts = {self.store.field_bits(u.id) for _, u in inputs}
        field_bits = layouts.pop() if len(layouts) == 1 else ()  # mixed: record-level
        fallbacks = {self.store.fallback_bits(u.id) for _, u in inputs}
        fallback_bits = fallbacks.pop() if len(fallbacks) == 1 else 0  # mixed: plain Dice
        rules = {self.store.score_rule(u.id) for _, u in inputs}
        rule = rules.pop() if len(rules) == 1 else fallback_.NO_RULE  # (one fingerprint: one)
        result = match(
            datasets,
            run.threshold,
            workers=self.workers,
            progress=progress,
            blocking=self.store.project(run.project).blocking,
            field_bits=field_bits,
            fallback_bits=fallback_bits,
            rule=rule,
            executor=self.executor,
            files=[ClkFile(u.id, u.record_count, u.clk_bits // 8, u.sha256) for _, u in inputs],
            task_progress=task_progress,
        )
        for (_, upload), clks in zip(inputs, datasets, strict=True):
            self.store.verify_again(upload, clks)  # no file changed under the run
        self._finish(
            run_id, members, result.links, result.groups, result.comparisons, result.method
        )

    def _finish(
        self, run_id: str, members: list[str], links: Links, groups: int, compared: int,
        method: str,
    ) -> None:  # fmt: skip
        self.store.update_run(run_id, stage="store")
        if not self.store.finish_run(run_id, members, links, groups):
            log.info("run %s finished after it was cancelled: nothing of it is stored", run_id)
            return
        log.info("run %s done: %d comparisons (%s), %d shared subjects", run_id, compared,
                 method, groups)  # fmt: skip
