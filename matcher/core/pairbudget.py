"""How many times S1 and S2 evaluate each pair of records (docs/privacy-design.md "What a
dishonest combiner can still learn").

C deals every circuit, and with it the Hamming bounds the circuit compares each pair's
distance with; S1 and S2 never see them. A C that evaluated the same pair again and again
with new bounds would binary-search its exact distance (and with the popcounts it holds,
its Dice) in about 11 evaluations. The honest run (core/tworun.py `drive`) evaluates a pair
once: a pair blocking proposed when deciding it (each pair on one CLK only), and a link's
pair is scored from that decision; a pair inside a group that blocking did not propose is
evaluated once, to score it. So S1 and S2 each count the evaluations of every pair since
both its members uploaded, and refuse a batch holding a pair that would go over
`EVALUATIONS`: a second run over the same uploads needs the members to upload again.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

EVALUATIONS = 1  # a pair's evaluations per upload: its decision (a link's score reuses it)


class PairBudget:
    """Each pair's evaluations, by pair of members (by name, either order); a member's
    counts are forgotten when it uploads again (`forget`)."""

    def __init__(self, evaluations: int = EVALUATIONS) -> None:
        self.evaluations = evaluations
        self._counts: dict[tuple[str, str], dict[int, int]] = {}
        self._lock = threading.Lock()

    def forget(self, member: str) -> None:
        with self._lock:
            for pair in [p for p in self._counts if member in p]:
                del self._counts[pair]

    def spend(
        self,
        member_a: str,
        member_b: str,
        rows_a: npt.NDArray[np.uint32],
        rows_b: npt.NDArray[np.uint32],
    ) -> int:
        """Count one evaluation of each pair (rows_a[i] of member_a, rows_b[i] of member_b),
        all or none: the number of pairs that would go over the budget (nothing counted
        then), or 0."""
        if member_a > member_b:
            member_a, member_b, rows_a, rows_b = member_b, member_a, rows_b, rows_a
        keys = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b.astype(np.uint64)
        unique, times = np.unique(keys, return_counts=True)
        with self._lock:
            counts = self._counts.setdefault((member_a, member_b), {})
            pairs = unique.tolist()
            after = [counts.get(k, 0) + int(t) for k, t in zip(pairs, times.tolist(), strict=True)]
            over = sum(1 for n in after if n > self.evaluations)
            if over:
                return over
            counts.update(zip(pairs, after, strict=True))
        return 0


__all__ = ["EVALUATIONS", "PairBudget"]
