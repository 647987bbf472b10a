"""What the combiner C learned of each pair of members' uploads in a finished two-server run,
kept so that a later run over the same uploads evaluates only what is new (docs/protocol.md
"A second run over the same uploads").

S1 and S2 evaluate each pair of records at most once since both its members uploaded
(core/pairbudget.py), so a second run over the same uploads cannot ask a pair again. It need
not: at the same cut-offs (the threshold, then the default buckets: public constants of the
circuit, core/proposal.py) a pair's link bits are what they were, so C reuses, for a pair of
members whose two uploads are unchanged, its `Outcome` of that pair of uploads: the candidate
pairs it learned (S1's proposed pairs at or above the threshold, with their buckets: what the
solver takes) and every other pair it scored (the extras inside groups, core/tworun.py, a
proposed pair among them answered 0). S1 proposes parts only for the pairs of members with
a new or changed upload (`Earlier.only`); an extra inside a group spanning old and new
members is taken from the outcome where C scored it before, and otherwise evaluated once
(S1 answers 0 for a pair it proposed: such a pair did not link). So the run's candidates,
groups and links are those of a run where every member uploaded again.

Keys are (row of the lower member) << 32 | row of the higher, sorted.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.compare import Candidates

Keys = npt.NDArray[np.uint64]
Scores = npt.NDArray[np.float64]
_HEADER = struct.Struct("<QQ")


def _sorted(keys: Keys, scores: Scores) -> tuple[Keys, Scores]:
    order = np.argsort(keys, kind="stable")
    return keys[order], scores[order]


@dataclass(frozen=True)
class Outcome:
    """One pair of uploads' outcome, as C learned it (keys of the lower member first)."""

    candidates: tuple[Keys, Scores]  # S1's proposed pairs at or above the threshold
    scored: tuple[Keys, Scores]  # the other pairs C scored (extras; 0.0: did not link)

    @classmethod
    def of(cls, candidates: Candidates, scored: tuple[Keys, Scores]) -> Outcome:
        """From a run's candidates of this pair of members and the other pairs it scored."""
        keys = (candidates.rec0.astype(np.uint64) << np.uint64(32)) | candidates.rec1.astype(
            np.uint64
        )
        return cls(_sorted(keys, candidates.sims.astype(np.float64)), _sorted(*scored))

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

        return Outcome(flip(self.candidates), flip(self.scored))

    def to_bytes(self) -> bytes:
        (ck, cs), (sk, ss) = self.candidates, self.scored
        return _HEADER.pack(len(ck), len(sk)) + b"".join(
            a.astype(t).tobytes() for a, t in ((ck, "<u8"), (cs, "<f8"), (sk, "<u8"), (ss, "<f8"))
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Outcome:
        nc, ns = _HEADER.unpack_from(data)
        if len(data) != _HEADER.size + 16 * (nc + ns):
            raise ValueError(f"an outcome of {len(data)} bytes for {nc} + {ns} pairs")
        at = _HEADER.size
        out = []
        for n, t in ((nc, "<u8"), (nc, "<f8"), (ns, "<u8"), (ns, "<f8")):
            out.append(np.frombuffer(data, t, n, at).astype(t[1:]))
            at += 8 * n
        return cls((out[0], out[1]), (out[2], out[3]))


@dataclass
class Earlier:
    """What a run reuses: the outcome of each pair of its members (datasets, the first lower)
    whose uploads are unchanged since a finished run at the same cut-offs; the run has
    `members` datasets."""

    members: int
    outcomes: Mapping[tuple[int, int], Outcome] = field(default_factory=dict)

    def only(self) -> list[tuple[int, int]]:
        """The pairs of members S1 proposes parts for: those with no outcome to reuse."""
        return [(a, b) for a in range(self.members) for b in range(a + 1, self.members)
                if (a, b) not in self.outcomes]  # fmt: skip


def learned(
    members: int,
    found: Mapping[tuple[int, int], list[Candidates]],
    scored: Mapping[tuple[int, int], list[tuple[Keys, Scores]]],
    earlier: Earlier | None,
) -> dict[tuple[int, int], Outcome]:
    """Each pair of members' outcome after a run: the candidates its parts found (or the
    earlier outcome's) and every pair scored outside them, this run's and the earlier's."""
    out = {}
    before = earlier.outcomes if earlier is not None else {}
    for a in range(members):
        for b in range(a + 1, members):
            old = before.get((a, b))
            parts = found.get((a, b), [])
            cands = old.as_candidates(a, b) if old is not None else _concat(parts)
            got = list(scored.get((a, b), [])) + ([old.scored] if old is not None else [])
            keys = np.concatenate([k for k, _ in got]) if got else np.empty(0, np.uint64)
            scores = np.concatenate([s for _, s in got]) if got else np.empty(0, np.float64)
            keys, first = np.unique(keys, return_index=True)
            out[a, b] = Outcome.of(cands, (keys, scores[first]))
    return out


def _concat(parts: list[Candidates]) -> Candidates:
    if not parts:
        return Candidates.empty()
    return Candidates(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("sims", "dset0", "dset1", "rec0", "rec1")))  # fmt: skip


__all__ = ["Earlier", "Outcome", "learned"]
