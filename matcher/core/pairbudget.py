"""How many times S1 and S2 evaluate each pair of records (docs/privacy-design.md "What a
dishonest combiner can still learn").

The circuit's cut-offs are now public constants S1 fixes for a run (core/proposal.py), so
evaluating a pair again tells C nothing new at the same cut-offs; the budget still bounds what
a combiner colluding with no one can get from one upload (each pair's bits once, at one run's
cut-offs) and costs nothing to the honest run, which evaluates a pair once. (Before, C dealt
the bounds, and a C that evaluated the same pair again and again with new bounds would
binary-search its exact distance in about 11 evaluations.) The honest run (core/tworun.py
`drive`) evaluates a pair once: a pair blocking proposed when deciding it (each pair on one CLK
only), and a link's pair is scored from that decision; a pair inside a group that blocking did
not propose is evaluated once, to score it. So S1 and S2 each count the evaluations of every
pair since both its members uploaded, and refuse a batch holding a pair that would go over
`EVALUATIONS`: a second run over the same uploads cannot ask a pair again. The honest
combiner does not need to: it reuses what it learned of each pair of unchanged uploads
(core/outcomes.py) and asks only the new uploads' pairs; a run at other cut-offs needs the
members to upload again.

Completing groups (core/twocomplete.py) asks some pairs once more, at the run's reach cut-off
alone (core/proposal.py `check_reach`): those evaluations are counted apart (`reach=True`), each
pair at most `EVALUATIONS` times at the reach as well, so a pair's bits reach C at most once at
the run's cut-offs and once at its reach cut-off an upload.

A role with a data dir keeps the budget on disk (storage/role_store.py): `record` makes a
batch's keys durable before they count (reach evaluations marked as such; a batch whose pairs
S1 all answered 0 is recorded too, with no key, so that S1's and S2's work on it has the shape
of an evaluated batch's and C cannot time which it was), and `restore` reads
them back at start, so that a restarted role still refuses the pairs it evaluated before it
stopped, at either cut-off. A role restored from a backup cannot know which pairs were
evaluated after the backup was taken, so the uploads it restores are *sealed* (`seal`): every
pair of two sealed uploads counts as evaluated, at either cut-off, until one of the two
members uploads again (docs/operations.md "Backing up S1 and S2")."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

EVALUATIONS = 1  # a pair's evaluations per upload: its decision (a link's score reuses it)
LOOKUP = 1 << 20  # keys `counted` sorts and looks up at a time
Keys = npt.NDArray[np.uint64]


def distinct(keys: Keys) -> Keys:
    """`keys` sorted, each once: a sort and a comparison of neighbours. Not `np.unique`,
    whose hashing path (numpy 2.3 and later, taken without `return_counts`) took 10.6 s of
    S2's 11.7 s restart on 8.8 million restored pair keys, against 0.1 s this way."""
    out = np.sort(keys)
    keep = np.empty(len(out), dtype=bool)
    keep[:1] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


class _Seen:
    """A set of pair keys as sorted runs of halving sizes (merged like a binary counter):
    8 bytes a pair, a batch looked up in a few binary searches."""

    def __init__(self) -> None:
        self.runs: list[Keys] = []

    def contains(self, keys: Keys) -> npt.NDArray[np.bool_]:
        found = np.zeros(len(keys), dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            found |= run[at] == keys
        return found

    def add(self, keys: Keys) -> None:
        """Add sorted keys none of which is in the set."""
        if not len(keys):
            return  # (an empty run would break `contains`: a batch S1 answered all 0)
        run = keys
        while self.runs and len(self.runs[-1]) <= len(run):
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")  # two runs
        self.runs.append(run)


class PairBudget:
    """The pairs evaluated, by pair of members (by name, either order); a member's pairs
    are forgotten when it uploads again (`forget`). `record(member_a, member_b, keys, reach)`,
    if given, is called with each batch's new keys (the members in name order, the keys
    sorted) before they count; if it raises, nothing is counted."""

    evaluations = EVALUATIONS

    def __init__(self, record: Callable[[str, str, Keys, bool], None] | None = None) -> None:
        self._seen: dict[tuple[str, str, bool], _Seen] = {}
        self._sealed: set[str] = set()
        self._lock = threading.Lock()
        self._record = record

    def restore(self, member_a: str, member_b: str, keys: Keys, *, reach: bool = False) -> None:
        """Count the pairs `keys` (as `record` was given them) evaluated already."""
        with self._lock:
            pair = (min(member_a, member_b), max(member_a, member_b), reach)
            seen = self._seen.setdefault(pair, _Seen())
            new = distinct(keys)
            seen.add(new[~seen.contains(new)] if seen.runs else new)

    def seal(self, member: str) -> None:
        """Count every pair of `member`'s upload with another sealed one (itself included)
        as evaluated, at either cut-off: an upload restored from a backup."""
        with self._lock:
            self._sealed.add(member)

    def sealed(self, member_a: str, member_b: str) -> bool:
        with self._lock:
            return member_a in self._sealed and member_b in self._sealed

    def pairs(self) -> int:
        """How many pairs have been evaluated (since their members uploaded)."""
        with self._lock:
            return sum(len(r) for s in self._seen.values() for r in s.runs)

    def counted(
        self,
        member_a: str,
        member_b: str,
        rows_a: npt.NDArray[np.uint32],
        rows_b: npt.NDArray[np.uint32],
    ) -> npt.NDArray[np.bool_]:
        """Which pairs have been evaluated (at the run's cut-offs) since their members
        uploaded: S1 leaves them out of a resumed pair of members' parts."""
        if member_a > member_b:
            member_a, member_b, rows_a, rows_b = member_b, member_a, rows_b, rows_a
        keys = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b.astype(np.uint64)
        with self._lock:
            if member_a in self._sealed and member_b in self._sealed:
                return np.ones(len(keys), dtype=bool)
            seen = self._seen.get((member_a, member_b, False))
            if seen is None:
                return np.zeros(len(keys), bool)
            found = np.empty(len(keys), bool)
            for lo in range(0, len(keys), LOOKUP):  # ascending: fewer cache misses, a fifth
                part = keys[lo : lo + LOOKUP]  # of the time (in slices: 24 bytes a key more)
                order = np.argsort(part)
                found[lo : lo + len(part)][order] = seen.contains(part[order])
            return found

    def forget(self, member: str) -> None:
        with self._lock:
            self._sealed.discard(member)
            for pair in [p for p in self._seen if member in p[:2]]:
                del self._seen[pair]

    def spend(
        self,
        member_a: str,
        member_b: str,
        rows_a: npt.NDArray[np.uint32],
        rows_b: npt.NDArray[np.uint32],
        *,
        reach: bool = False,
    ) -> int:
        """Count one evaluation of each pair (rows_a[i] of member_a, rows_b[i] of member_b),
        all or none: the number of pairs that would be evaluated again (nothing counted
        then: a pair evaluated before, or twice in the batch), or 0; with `reach`, at the
        reach cut-off (counted apart). A batch with no pair (S1 answered them all 0) goes the
        same way, recorded with no key: the same work and write as one evaluated."""
        if member_a > member_b:
            member_a, member_b, rows_a, rows_b = member_b, member_a, rows_b, rows_a
        keys = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b.astype(np.uint64)
        unique, times = np.unique(keys, return_counts=True)
        with self._lock:
            if member_a in self._sealed and member_b in self._sealed and len(unique):
                return len(unique)  # every one: none may be evaluated again
            seen = self._seen.setdefault((member_a, member_b, reach), _Seen())
            over = int(np.count_nonzero(seen.contains(unique) | (times > 1)))
            if not over:
                if self._record is not None:
                    self._record(member_a, member_b, unique, reach)
                seen.add(unique)
        return over


__all__ = ["EVALUATIONS", "PairBudget"]
