"""The look-ups of the queries that arrive together, answered in one pass.

Every query searches every partner's standing index (`core.fallbackindex.search_batch`:
an index with a fallback CLK is a look-up of each half it needs, batched like any other;
`core.segment.search_batch` underneath). Run
one by one, each query releases the GIL for its look-up and hands it to the look-up pool
and back (matcher/placement.py): two thread switches, and a chance for every other
request thread to take the GIL in between, per query. Under load most of a query's CPU
went there rather than into the look-up (docs/performance.md, *Real-time queries*).

So look-ups are combined: a query that finds no look-up running runs its own at once,
on its own thread (a lone query waits for nothing and is handed to no other Python
thread). Queries that arrive while one runs wait; when it ends, the first of them runs
all that are waiting, in one native call (one GIL release, one hand-over to the pool for
the lot), then wakes the others with their answers. Nothing is delayed on purpose: a
batch is whatever arrived during the previous one.

A query can hand the rest of its answer to the pass too (`answer`): what to make of its
hits (`finish`: the disclosure and the query's log record), and the one write that
records every query of the pass (`commit`: the audit log's group commit). Then the
thread that ran the pass, once it has handed the look-ups on to the next one, finishes
each of its queries, commits their records in one write, and wakes each waiting query
once, with its reply made and its record durable: one wait a query instead of one for
the look-up and another for the commit, and no herd of threads woken at once to learn
whether their write was the one that finished. A query whose `finish` fails fails alone;
a failed commit fails every query of the pass (none of them is answered unrecorded).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.fallbackindex import AnySnapshot, search_batch
from blindmatch.matcher.core.segment import Hits

Answer = list[dict[str, Hits]]
# What a query makes of its hits, on the thread that ran the pass: (its reply, its record).
Finish = Callable[[Answer], tuple[Any, Any]]


@dataclass(eq=False)
class _Ask:
    snapshots: Mapping[str, AnySnapshot]
    queries: npt.NDArray[np.uint64]
    threshold: float
    # Held until the ask is answered, or its thread is to run the next batch.
    gate: threading.Lock = field(default_factory=threading.Lock)
    finish: Finish | None = None
    answer: Answer | None = None
    reply: Any = None  # what `finish` made of the answer
    error: BaseException | None = None
    batch: list[_Ask] | None = None  # set when this ask's thread runs the next batch


class Lookups:
    """Combines the look-ups of concurrent queries; safe to call from any thread."""

    def __init__(self, commit: Callable[[Sequence[Any]], None] | None = None) -> None:
        """`commit`: writes the records of a pass's finished queries, in one call (see
        `answer`); it must return only once they are durable, or raise."""
        self._commit = commit
        self._lock = threading.Lock()
        self._waiting: list[_Ask] = []
        self._running = False
        self.batches = 0  # batches run, and the queries in them (for the benchmarks)
        self.asks = 0

    def search(
        self,
        snapshots: Mapping[str, AnySnapshot],
        queries: npt.NDArray[np.uint64],
        threshold: float,
    ) -> Answer:
        """For each row of `queries`: each snapshot's (ref, score) hits, best first."""
        ask = self._ask(_Ask(snapshots, queries, threshold))
        assert ask.answer is not None
        return ask.answer

    def answer(
        self,
        snapshots: Mapping[str, AnySnapshot],
        queries: npt.NDArray[np.uint64],
        threshold: float,
        finish: Finish,
    ) -> Any:
        """`finish`'s reply to the hits `search` would return, made on the thread that
        runs the pass; returns once the record `finish` made is committed, with the
        other queries of the pass, by the `commit` this was made with (the module
        docstring). Raises what `finish` raised, or what the commit raised."""
        return self._ask(_Ask(snapshots, queries, threshold, finish=finish)).reply

    def _ask(self, ask: _Ask) -> _Ask:
        ask.gate.acquire()
        with self._lock:
            lead = not self._running
            if lead:
                self._running = True
            else:
                self._waiting.append(ask)
        if lead:
            self._run([ask])
        else:
            ask.gate.acquire()  # released with our answer, or to run the next batch
            if ask.batch is not None:
                self._run(ask.batch)
        if ask.error is not None:
            raise ask.error
        return ask

    def _run(self, batch: list[_Ask]) -> None:
        """Answer `batch`, appoint the next leader, finish and commit the batch, and wake
        the rest of it."""
        try:
            self._search(batch)
        finally:
            try:
                self._finish(batch)
            finally:
                for a in batch[1:]:
                    a.gate.release()

    def _search(self, batch: list[_Ask]) -> None:
        """Look `batch` up, then hand the look-ups on to the queries waiting meanwhile."""
        try:
            try:
                answers = search_batch([(a.snapshots, a.queries, a.threshold) for a in batch])
                for a, answer in zip(batch, answers, strict=True):
                    a.answer = answer
            except Exception:
                if len(batch) == 1:
                    raise
                for a in batch:  # one bad ask must not fail the others: each on its own
                    self._alone(a)
        except BaseException as exc:  # each waiting query raises it on its own thread
            for a in batch:
                a.error = exc
        finally:
            with self._lock:
                self.batches += 1
                self.asks += len(batch)
                waiting, self._waiting = self._waiting, []
                self._running = bool(waiting)
            if waiting:
                waiting[0].batch = waiting
                waiting[0].gate.release()

    def _finish(self, batch: list[_Ask]) -> None:
        """Each looked-up query's `finish`, then one commit of their records."""
        done: list[tuple[_Ask, Any]] = []
        for a in batch:
            if a.finish is None or a.error is not None:
                continue
            assert a.answer is not None
            try:
                a.reply, record = a.finish(a.answer)
            except BaseException as exc:  # this query's own failure: the others go on
                a.error = exc
            else:
                done.append((a, record))
        if not done:
            return
        try:
            if self._commit is None:
                raise RuntimeError("Lookups.answer needs a commit")
            self._commit([record for _, record in done])
        except BaseException as exc:  # nothing answered without its record
            for a, _ in done:
                a.reply, a.error = None, exc

    @staticmethod
    def _alone(ask: _Ask) -> None:
        try:
            ask.answer = search_batch([(ask.snapshots, ask.queries, ask.threshold)])[0]
        except Exception as exc:
            ask.error = exc
