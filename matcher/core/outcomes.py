"""What the combiner C learned of each pair of members' uploads in a finished two-server run,
kept so that a later run over the same uploads evaluates only what is new (docs/protocol.md
"A second run over the same uploads").

S1 and S2 evaluate each pair of records at most once since both its members uploaded
(core/pairbudget.py), so a second run over the same uploads cannot ask a pair again. It need
not: at the same cut-offs (the threshold, then the default buckets: public constants of the
circuit, core/proposal.py) a pair's link bits are what they were, so C reuses, for a pair of
members whose two uploads are unchanged, its `Outcome` of that pair of uploads: the candidate
pairs it learned (S1's proposed pairs at or above the threshold, with their buckets: what the
solver takes), every other pair it scored (the extras inside groups, core/tworun.py, a
proposed pair among them answered 0) and every pair it asked at the reach cut-off to complete
its groups (core/twocomplete.py: a reach bit, which S1 and S2 also give once an upload; kept
as 1.0 or 0.0). S1 proposes parts only for the pairs of members with
a new or changed upload (`Earlier.only`); an extra inside a group spanning old and new
members is taken from the outcome where C scored it before, and otherwise evaluated once
(S1 answers 0 for a pair it proposed: such a pair did not link). So the run's candidates,
groups and links are those of a run where every member uploaded again.

Keys are (row of the lower member) << 32 | row of the higher, sorted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.compare import Candidates

Keys = npt.NDArray[np.uint64]
Scores = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Pair = tuple[int, int, int, int]  # (member, row, member, row), the lower member first
_HEADER = struct.Struct("<QQQ")


def _sorted(keys: Keys, scores: Scores) -> tuple[Keys, Scores]:
    order = np.argsort(keys, kind="stable")
    return keys[order], scores[order]


@dataclass(frozen=True)
class Outcome:
    """One pair of uploads' outcome, as C learned it (keys of the lower member first)."""

    candidates: tuple[Keys, Scores]  # S1's proposed pairs at or above the threshold
    scored: tuple[Keys, Scores]  # the other pairs C scored (extras; 0.0: did not link)
    reached: tuple[Keys, Scores] = (np.empty(0, np.uint64), np.empty(0))  # reach bits, 1.0/0.0

    @classmethod
    def of(
        cls, candidates: Candidates, scored: tuple[Keys, Scores], reached: tuple[Keys, Scores]
    ) -> Outcome:
        """From a run's candidates of this pair of members, the other pairs it scored and
        those it asked at the reach cut-off."""
        keys = keys_of(candidates.rec0, candidates.rec1)
        return cls(_sorted(keys, candidates.sims.astype(np.float64)), _sorted(*scored),
                   _sorted(*reached))  # fmt: skip

    def as_candidates(self, member_a: int, member_b: int) -> Candidates:
        """The candidate pairs, as the run's datasets `member_a` < `member_b` (the solver's)."""
        keys, scores = self.candidates
        n, low = len(keys), np.uint64(0xFFFFFFFF)
        return Candidates(
            scores.copy(), np.full(n, member_a, np.uint32), np.full(n, member_b, np.uint32),
            (keys >> np.uint64(32)).astype(np.uint32), (keys & low).astype(np.uint32),
        )  # fmt: skip

    def known(self) -> tuple[Keys, Scores]:
        """Every pair C knows the score of (candidates and scored), sorted by key."""
        return _sorted(np.concatenate([self.candidates[0], self.scored[0]]),
                       np.concatenate([self.candidates[1], self.scored[1]]))  # fmt: skip

    def flipped(self) -> Outcome:
        """The same outcome with the members the other way round."""

        def flip(part: tuple[Keys, Scores]) -> tuple[Keys, Scores]:
            keys = (part[0] << np.uint64(32)) | (part[0] >> np.uint64(32))
            return _sorted(keys, part[1])

        return Outcome(flip(self.candidates), flip(self.scored), flip(self.reached))

    def to_bytes(self) -> bytes:
        parts = (self.candidates, self.scored, self.reached)
        return _HEADER.pack(*(len(k) for k, _ in parts)) + b"".join(
            k.astype("<u8").tobytes() + v.astype("<f8").tobytes() for k, v in parts
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Outcome:
        counts = _HEADER.unpack_from(data)
        if len(data) != _HEADER.size + 16 * sum(counts):
            raise ValueError(f"an outcome of {len(data)} bytes for {sum(counts)} pairs")
        at, out = _HEADER.size, []
        for n in counts:
            keys = np.frombuffer(data, "<u8", n, at).astype(np.uint64)
            out.append((keys, np.frombuffer(data, "<f8", n, at + 8 * n).astype(np.float64)))
            at += 16 * n
        return cls(*out)


@dataclass
class Earlier:
    """What a run reuses: the outcome of each pair of its members (datasets, the first lower)
    whose uploads are unchanged since a finished run at the same cut-offs; the run has
    `members` datasets."""

    members: int
    outcomes: Mapping[tuple[int, int], Outcome] = field(default_factory=dict)
    # Pairs of members a failure cut mid-batch (core/batchresume.py): the links of their
    # batches S1 and S2 evaluated; S1 proposes them again without the pairs it counted.
    partial: Mapping[tuple[int, int], Outcome] = field(default_factory=dict)

    def only(self) -> list[tuple[int, int]]:
        """The pairs of members S1 proposes parts for: those with no outcome to reuse."""
        return [(a, b) for a in range(self.members) for b in range(a + 1, self.members)
                if (a, b) not in self.outcomes]  # fmt: skip


class Journal(Protocol):
    """Where a run keeps each pair of members' outcome as soon as it holds every pair S1 and
    S2 evaluated of them (usecases/tworuns.py: the matcher's SQLite), so that a run that
    fails part-way loses none of it, and a later run knows which pairs of members S1 and S2
    evaluated pairs of that no outcome holds (the members upload again)."""

    def pending(self, ends: tuple[int, int]) -> None:
        """S1 and S2 are about to evaluate pairs of these members that no kept outcome holds
        (durable before the batch goes)."""
        ...

    def keep(self, ends: tuple[int, int], outcome: Outcome) -> None:
        """The pair of members' outcome, holding every pair S1 and S2 evaluated of them."""
        ...

    def drop(self, ends: tuple[int, int]) -> None:
        """No outcome of the pair of members, and none of its pairs evaluated (its first
        batch failed before S1 and S2 evaluated any of it)."""
        ...


class Ledger:
    """What a run learns of each pair of members, from `earlier`'s outcomes on (core/tworun.py
    `drive` tells it each part's candidates, each pair it scored, each reach bit it asked;
    core/runjournal.py each batch sent, answered or failed). With a `journal`, each pair of
    members' outcome is kept there as soon as the pair is finished (its parts evaluated) and
    again once its reach pairs, and once its extras, are answered; while a batch of it is
    out, it is pending."""

    def __init__(self, earlier: Earlier | None, journal: Journal | None = None) -> None:
        self.earlier = earlier
        self.reused = dict(earlier.outcomes) if earlier is not None else {}
        self.journal = journal if earlier is not None else None
        self._found: dict[tuple[int, int], list[Candidates]] = {}
        self._scored: dict[tuple[int, int], list[tuple[Keys, Scores]]] = {}
        self._reached: dict[tuple[int, int], list[tuple[Keys, Scores]]] = {}
        for ends, o in self.reused.items():
            self._scored[ends], self._reached[ends] = [o.scored], [o.reached]
        self.partial = dict(earlier.partial) if earlier is not None else {}
        for ends, o in self.partial.items():
            self._found[ends] = [o.as_candidates(*ends)]
        self._left: dict[tuple[int, int], int] = {}  # parts of the proposal not evaluated
        self._kept: set[tuple[int, int]] = set(self.reused)  # an outcome in the journal
        self.open: set[tuple[int, int]] = set()  # pending in the journal
        # open, with a batch answered since (a resumed pair of members' from the start: its
        # earlier batches' answers stay in the journal whatever this run's first one does)
        self._answered: set[tuple[int, int]] = set(self.partial)

    def proposed(self, parts: Sequence[tuple[int, int]]) -> None:
        """S1's proposal, a pair of members a part: a pair of members is finished once its
        parts are; one S1 proposes no part for (among `earlier.only()`) is finished now."""
        for ends in parts:
            self._left[ends] = self._left.get(ends, 0) + 1
        if self.earlier is not None:
            for ends in self.earlier.only():
                if ends not in self._left:
                    self._keep(ends)

    def sending(self, ends: tuple[int, int]) -> None:
        """A batch of the pair of members goes to S1 and S2."""
        if self.journal is not None and ends not in self.open:
            self.journal.pending(ends)
            self.open.add(ends)

    def answered(self, ends: tuple[int, int]) -> None:
        if ends in self.open:
            self._answered.add(ends)

    def failed(self, ends: tuple[int, int], evaluated: bool) -> None:
        """A batch of the pair of members failed; `evaluated`: S1 and S2 may have evaluated
        its pairs. Nothing of the pair spent since its outcome was kept: no longer pending."""
        if self.journal is None or ends not in self.open or evaluated or ends in self._answered:
            return
        self.open.discard(ends)
        if ends in self._kept:
            self.journal.keep(ends, self._outcome(ends))
        else:
            self.journal.drop(ends)

    def _keep(self, ends: tuple[int, int]) -> None:
        if self.journal is not None:
            self.journal.keep(ends, self._outcome(ends))
            self.open.discard(ends)
            self._answered.discard(ends)
            self._kept.add(ends)

    def _settle(self, ends: tuple[int, int]) -> None:
        """Keep the pair of members' outcome where its parts are all evaluated and a batch of
        it went out since it was kept (or it was not kept yet: parts of no pairs)."""
        if (ends in self.open or ends not in self._kept) and not self._left.get(ends, 0):
            self._keep(ends)

    def parts(self) -> list[Candidates]:
        """The reused pairs of members' candidates, as the solver takes them."""
        return [o.as_candidates(a, b) for (a, b), o in (*self.reused.items(),
                                                         *self.partial.items())]  # fmt: skip

    def decided(self) -> dict[tuple[int, int], list[tuple[Keys, Scores]]]:
        """Every pair whose score C knows from the reused outcomes, by pair of members."""
        return {ends: [o.known()] for ends, o in (*self.reused.items(), *self.partial.items())}

    def found(self, member_a: int, member_b: int, candidates: Candidates) -> None:
        """A part's candidates (every part's, in the order S1 proposed them)."""
        ends = (member_a, member_b)
        self._found.setdefault(ends, []).append(candidates)
        self._left[ends] = self._left.get(ends, 1) - 1
        self._settle(ends)

    def scored(self, lo: int, hi: int, keys: Keys, scores: Scores) -> None:
        self._scored.setdefault((lo, hi), []).append((keys, scores))
        self._settle((lo, hi))

    def reach(self, pairs: list[Pair], ask: Callable[[list[Pair]], Bools]) -> Bools:
        """Each pair's reach bit: from an earlier run where asked there (S1 and S2 give it
        once an upload), otherwise asked now (`ask`, a pair of members at a time) and kept."""
        out = np.zeros(len(pairs), dtype=bool)
        new = []
        for n, (a, ra, b, rb) in enumerate(pairs):
            got = self.reused.get((a, b))
            key = np.uint64((ra << 32) | rb)
            keys, bits = got.reached if got is not None else (np.empty(0, np.uint64), None)
            at = int(np.searchsorted(keys, key))
            if bits is not None and at < len(keys) and keys[at] == key:
                out[n] = bits[at] > 0
            else:
                new.append(n)
        by_ends: dict[tuple[int, int], list[int]] = {}
        for n in new:  # asked a pair of members at a time, each kept once answered
            by_ends.setdefault((pairs[n][0], pairs[n][2]), []).append(n)
        for ends, group in sorted(by_ends.items()):
            asked = [pairs[n] for n in group]
            answers = ask(asked)
            out[group] = answers
            for (a, ra, b, rb), bit in zip(asked, answers, strict=True):
                self._reached.setdefault((a, b), []).append(
                    (np.array([(ra << 32) | rb], np.uint64), np.array([float(bit)]))
                )
            self._settle(ends)
        return out

    def outcomes(self) -> dict[tuple[int, int], Outcome]:
        """Each pair of the run's members' outcome (none without `earlier`)."""
        if self.earlier is None:
            return {}
        n = self.earlier.members
        return {ends: self._outcome(ends)
                for ends in ((a, b) for a in range(n) for b in range(a + 1, n))}  # fmt: skip

    def _outcome(self, ends: tuple[int, int]) -> Outcome:
        old = self.reused.get(ends)
        cands = old.as_candidates(*ends) if old is not None else _concat(self._found.get(ends, []))
        return Outcome.of(cands, _unique(self._scored.get(ends, [])),
                          _unique(self._reached.get(ends, [])))  # fmt: skip


def keys_of(rows_a: npt.NDArray[np.uint32], rows_b: npt.NDArray[np.uint32]) -> Keys:
    """A pair of rows as one number (row_a in the high 32 bits)."""
    out: Keys = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b.astype(np.uint64)
    return out


def sorted_known(got: list[tuple[Keys, Scores]]) -> tuple[Keys, Scores]:
    """Pairs and their scores from several lists, in one sorted by key."""
    return _sorted(np.concatenate([k for k, _ in got]), np.concatenate([v for _, v in got]))


def _unique(got: list[tuple[Keys, Scores]]) -> tuple[Keys, Scores]:
    if not got:
        return np.empty(0, np.uint64), np.empty(0, np.float64)
    keys, first = np.unique(np.concatenate([k for k, _ in got]), return_index=True)
    return keys, np.concatenate([v for _, v in got])[first]


def _concat(parts: list[Candidates]) -> Candidates:
    if not parts:
        return Candidates.empty()
    return Candidates(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("sims", "dset0", "dset1", "rec0", "rec1")))  # fmt: skip


__all__ = ["Earlier", "Journal", "Ledger", "Outcome", "keys_of", "sorted_known"]
