"""The combiner's side of resuming a pair of members a failure cut mid-batch
(docs/privacy-design.md "Resuming a pair of members a failure cut", docs/protocol.md "A batch
cut mid-way, resumed"): each batch of S1's proposal journaled before it goes and once
answered (`BatchWatch`, usecases/twobatches.py keeps it in the matcher's SQLite), then
acknowledged to S1 and S2 (who keep its output shares until then, core/batchkeep.py); a
later run over the same uploads asks the batch that was out by its id alone (`Resume`: the
same shares again), takes the answered batches' links from the journal, and has S1 propose
only the pairs of that pair of members its budget has not counted.

A batch's answer is what `tworun.proposed_links` takes of it: the pairs whose link bit is
set, with their buckets and rows (`found`); nothing of the pairs that did not link."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.compare import Candidates


class BatchWatch(Protocol):
    """Told of each batch of S1's proposal (by the run's dataset indexes)."""

    def out(self, batch: str, member_a: int, member_b: int, clk: int, pairs: int) -> None:
        """The batch is about to go (durable before it does)."""
        ...

    def answered(self, batch: str, member_a: int, member_b: int, found: Candidates) -> None:
        """Its answer (durable before S1 and S2 are told they may drop it)."""
        ...

    def unsent(self, batch: str, member_a: int, member_b: int) -> None:
        """It failed before S1 had it: nothing of it evaluated."""
        ...

    def refused(self, batch: str, member_a: int, member_b: int) -> None:
        """S1 or S2 refused it (its pairs may be counted, no shares are kept): its pair of
        members cannot be resumed."""
        ...


def found(
    circuit: linkbit.Circuit, o1: bytes, o2: bytes, count: int, member_a: int, member_b: int
) -> Candidates:
    """A batch of the proposal's links from the two servers' output shares: each pair whose
    link bit is set, its bucket (the highest cut-off it reaches) and rows."""
    bits = linkbit.reveal(circuit, o1, o2, count, tagged=True)
    rows_a, rows_b = linkbit.untag(bits)
    keep = bits[0]
    n = int(keep.sum())
    scores = np.asarray((0.0, *circuit.cutoffs))[bits[: circuit.n_outputs, keep].sum(axis=0)]
    return Candidates(scores, np.full(n, member_a, np.uint32), np.full(n, member_b, np.uint32),
                      rows_a[keep], rows_b[keep])  # fmt: skip


__all__ = ["BatchWatch", "found"]
