"""S1's per-upload cap on a combiner's extra and reach pairs (docs/privacy-design.md, "A
dishonest combiner's reach pairs, attacked").

S1 bounds each run's extras and reach pairs (core/proposal.py: each record in at most one of
each with each other member over the run), but a combiner may have S1 propose again over the
same uploads, and each run's bound starts afresh: over enough runs it would learn every pair's
bit at the reach cut-off (and every pair's bucket), each pair once an upload (the pair
budget, core/pairbudget.py), which re-identifies 3% of a member with 50 known pairs where one
run's pairs gave nothing measurable. So S1 keeps, for each pair of uploads and kind (extra or
reach), each record's first partner over every run since both uploaded (`RowLedger`), and a
run answers 0, without evaluating it, a pair whose record had another partner in an earlier
run (`capped`): as a pair S1 proposed or one on the other CLK, C cannot tell it from an
evaluated 0. Within a run the proposal's own bound refuses instead, as before. An honest
combiner reuses what it learned of unchanged uploads (core/outcomes.py) and asks again only
where its groups changed, which the cap then answers 0 (a join not made, an extra scored 0).
A new upload of either member starts its pairs afresh (`forget`).

S1 with a data dir keeps the ledger on disk (storage/role_store.py, table `ledger`): `record`
makes each batch's new entries durable before they count (and before the batch is
evaluated), and `restore` reads them back at start, so that a restarted S1 still caps the
records paired, and counts the reach pairs asked, before it stopped. `record` is called for
every batch noted, with no entry where it adds none (a batch S1 answered all 0), so that such
a batch costs S1 the same commit as one it evaluated: C, timing S1, cannot tell them apart.

One matching of reach pairs an upload still gives a C that guessed each record's near
neighbour in the other member right up to 1.3% of a member of 1,000 with 50 known pairs
(docs/privacy-design.md), where an honest run asks a few reach pairs (0-5 a run on members
of about 3,000, 52 on four members of up to 5,000). So S1 also answers 0 reach pairs beyond
a quota a pair of uploads (`reach_quota`: 1% of the smaller upload's records, at least
REACH_FLOOR), over every run: a join beyond it is not made. The quota counts records, not
CLKs: a pair is evaluated on one CLK only (the other answers 0), so one reach bit a record
counted, whichever CLK gives it. C, which does not know who lacks the fallback's fields,
names each reach pair on both CLKs; a pair named within the quota holds its place on both
(core/proposal.py `check_reach` notes it whichever CLK evaluates it), so the pairs S1
evaluates are the first the quota admits in C's order whatever CLK each is scored by: which
of its pairs come back 1 tells C nothing of the other pairs' CLK, and an honest C, naming
its pairs on both CLKs in one order, has the whole quota evaluated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.uint32]
Record = Callable[[str, str, str, Rows, Rows, str], None]
KINDS = ("extra", "reach")
REACH_SHARE = 0.01  # reach pairs a pair of uploads may have, as a share of the smaller's records
REACH_FLOOR = 16  # ... and at least this many


def reach_quota(records_a: int, records_b: int) -> int:
    """The reach pairs S1 evaluates a pair of uploads, over every run (the rest answered 0)."""
    return max(REACH_FLOOR, int(np.ceil(REACH_SHARE * min(records_a, records_b))))


class RowLedger:
    """Each record's first extra and reach partner with each other upload, and the run that
    paired them, by upload names. `record(name_lo, name_hi, kind, rows_lo, rows_hi, run)`, if
    given, is called with each batch's pairs that add an entry (the names in order, the rows
    the same way) before they count; if it raises, nothing is counted."""

    def __init__(self, record: Record | None = None) -> None:
        # (name lo, name hi, kind) -> (lo's row -> (hi's row, run), hi's row -> (lo's, run))
        self._rows: dict[tuple[str, str, str], tuple[dict[int, tuple[int, str]], ...]] = {}
        self._lock = threading.Lock()
        self._record = record

    def _side(self, name_a: str, name_b: str, kind: str, rows_a: Rows, rows_b: Rows
              ) -> tuple[tuple[dict[int, tuple[int, str]], ...], list[int], list[int]]:  # fmt: skip
        if kind not in KINDS:
            raise ValueError(f"kind: {kind!r}")
        if name_a > name_b:
            name_a, name_b, rows_a, rows_b = name_b, name_a, rows_b, rows_a
        held = self._rows.setdefault((name_a, name_b, kind), ({}, {}))
        return held, rows_a.tolist(), rows_b.tolist()

    def capped(self, name_a: str, name_b: str, kind: str, rows_a: Rows, rows_b: Rows,
               run: str, quota: int | None = None) -> npt.NDArray[np.bool_]:  # fmt: skip
        """The pairs one of whose records had another partner in a run other than `run`, and
        (with `quota`) those beyond the first `quota` of the pair of uploads' records paired
        so far, over every run, the batch's in its order."""
        paired, over = self.limits(name_a, name_b, kind, rows_a, rows_b, run, quota)
        return paired | over

    def limits(self, name_a: str, name_b: str, kind: str, rows_a: Rows, rows_b: Rows,
               run: str, quota: int | None = None
               ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:  # fmt: skip
        """`capped`'s pairs apart, by the limit that answers them 0: the per-upload cap (a
        record paired otherwise in an earlier run), then the quota (none in both). Every
        pair of the batch within the cap takes a place in the quota, on whichever CLK S1
        scores it (the caller notes them all: a pair named within the quota keeps it)."""
        with self._lock:
            (by_a, by_b), ta, tb = self._side(name_a, name_b, kind, rows_a, rows_b)
            paired = np.zeros(len(ta), dtype=bool)
            over = np.zeros(len(ta), dtype=bool)
            room = None if quota is None else quota - len(by_a)
            for n, (x, y) in enumerate(zip(ta, tb, strict=True)):
                pa, pb = by_a.get(x), by_b.get(y)
                paired[n] = (pa is not None and pa[1] != run and pa[0] != y) or (
                    pb is not None and pb[1] != run and pb[0] != x
                )
                if room is not None and not paired[n] and pa is None:
                    over[n] = room <= 0
                    room -= 1
            return paired, over

    def count(self, name_a: str, name_b: str, kind: str) -> int:
        """The records of the pair of uploads paired so far (`kind`), over every run: what
        the reach quota counts."""
        with self._lock:
            lo, hi = sorted((name_a, name_b))
            return len(self._rows.get((lo, hi, kind), ({}, {}))[0])

    def note(self, name_a: str, name_b: str, kind: str, rows_a: Rows, rows_b: Rows,
             run: str) -> None:  # fmt: skip
        """Pairs asked in `run` (each record's first partner is kept): `record` is called
        once whatever they add, none included, so that a batch S1 answered all 0 writes as
        one it evaluated."""
        self._add(name_a, name_b, kind, rows_a, rows_b, run, self._record)

    def restore(self, name_a: str, name_b: str, kind: str, rows_a: Rows, rows_b: Rows,
                run: str) -> None:  # fmt: skip
        """Pairs noted before a restart (storage/role_store.py), in the order noted."""
        self._add(name_a, name_b, kind, rows_a, rows_b, run, None)

    def _add(self, name_a: str, name_b: str, kind: str, rows_a: Rows, rows_b: Rows, run: str,
             record: Record | None) -> None:  # fmt: skip
        with self._lock:
            (by_a, by_b), ta, tb = self._side(name_a, name_b, kind, rows_a, rows_b)
            if record is not None:  # every batch, its new entries or none (the same write)
                new = [n for n, (x, y) in enumerate(zip(ta, tb, strict=True))
                       if x not in by_a or y not in by_b]  # fmt: skip
                lo, hi = sorted((name_a, name_b))
                at = np.asarray(new, dtype=np.intp)
                held_a, held_b = np.asarray(ta, np.uint32)[at], np.asarray(tb, np.uint32)[at]
                record(lo, hi, kind, held_a, held_b, run)
            for x, y in zip(ta, tb, strict=True):
                by_a.setdefault(x, (y, run))
                by_b.setdefault(y, (x, run))

    def forget(self, names: Iterable[str]) -> None:
        """A new upload (or none) of `names`: their pairs start afresh."""
        gone = set(names)
        with self._lock:
            for key in [k for k in self._rows if gone & set(k[:2])]:
                del self._rows[key]


__all__ = ["KINDS", "REACH_FLOOR", "REACH_SHARE", "Record", "RowLedger", "reach_quota"]
