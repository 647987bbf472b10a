"""A dishonest combiner's reach questions, asked through S1's own checks (docs/privacy-design.md
"What a dishonest combiner can still learn"; benchmarks/reach_attack.py attacks with them).

After a run (core/tworun.py `drive` over `InProcess`), C may name reach pairs of its choosing
rather than those completing its groups would ask (core/twocomplete.py). `ReachOracle` asks
them as the run asks its own: each batch checked whole by S1's proposal (core/proposal.py
`check_reach`: a run of three or more members with buckets, both records in some proposed
pair, each record in at most one reach pair with each other member over the run), counted in
a reach budget as S1 and S2 count it (core/pairbudget.py `PairBudget`, `reach=True`: each pair
once an upload), then evaluated by the circuit at the run's reach cut-off
(twocomplete.py `reach_bits`). `next_run` has S1 propose again over the same uploads, as a
`Propose` from C does (rpc/twoserver_proposals.py `Proposals.hold`: a new proposal over two of the
members ends the earlier one, and with it the run's own per-record bound; S1's per-upload cap,
core/rowledger.py, and the budget stay). A refused batch raises `Refused` and costs nothing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.core.proposal import Refused
from blindmatch.matcher.core.rowledger import RowLedger
from blindmatch.matcher.core.twocomplete import reach_bits
from blindmatch.matcher.core.twoinprocess import InProcess
from blindmatch.matcher.core.twoserver import Combiner

Rows = npt.NDArray[np.uint32]


class ReachOracle:
    """A dishonest C's reach questions between members 0 and 1 of a finished run."""

    def __init__(self, servers: InProcess, combiner: Combiner, cap: bool = True) -> None:
        """`cap` False: S1 without its per-upload cap (each run's bound alone, as S1 was
        before core/rowledger.py). The oracle starts as fresh uploads would: no pair asked."""
        if servers.proposal is None:
            raise ValueError("reach oracle: S1 has proposed no run")
        self.servers, self.combiner, self.cap = servers, combiner, cap
        servers.rows = RowLedger()
        servers.proposal.ledger = servers.rows if cap else None
        self.lacking = combiner.lacking()
        self.budget = PairBudget()
        self.runs = 1  # S1's proposals over these uploads so far
        self.asked = 0  # pairs named at the reach cut-off
        self.evaluated = 0  # of those, evaluated (the rest answered 0: S1's cap, the CLK)
        self.refused = 0  # batches S1 (or the budget) refused
        self.transcript = linkbit.Transcript()
        self.seconds: dict[str, float] = {}

    def proposed(self, member: int) -> npt.NDArray[np.bool_]:
        """Which records of `member` are in some pair S1 proposed in the current run (a
        batch naming another is refused: C learns which, from the refusal)."""
        assert self.servers.proposal is not None
        return self.servers.proposal._seen[member].copy()

    def check(self, rows_a: Rows, rows_b: Rows) -> tuple[Rows, Rows]:
        """The pairs S1 would evaluate of this batch (row of member 0, row of member 1), the
        rest answered 0 (on the other CLK, or capped: core/rowledger.py); `Refused` unless S1
        and the reach budget would admit the batch whole."""
        proposal = self.servers.proposal
        assert proposal is not None
        clks = (0, 1) if proposal.lacking is not None else (0,)  # as reach_bits asks
        try:
            checked = [proposal.check_reach("0", "1", c, rows_a, rows_b, proposal.cutoffs)
                       for c in clks]  # fmt: skip
        except Refused:
            self.refused += 1
            raise
        ra = np.concatenate([c.rows_a for c in checked]).astype(np.uint32)
        rb = np.concatenate([c.rows_b for c in checked]).astype(np.uint32)
        keys = (ra.astype(np.uint64) << np.uint64(32)) | rb.astype(np.uint64)
        seen = self.budget._seen.get(("0", "1", True))
        if len(np.unique(keys)) < len(keys) or (
            seen is not None and seen.contains(np.sort(keys)).any()
        ):
            self.refused += 1
            raise Refused("rows_a/rows_b: a pair evaluated at the reach cut-off already")
        return ra, rb

    def ask(self, rows_a: npt.ArrayLike, rows_b: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Whether each pair reaches the run's reach cut-off, through S1's checks, the budget
        and the circuit (a pair S1 answers 0 is not evaluated, nor counted); `Refused`
        (nothing asked) where S1 or the budget refuses."""
        ra, rb = np.asarray(rows_a, np.uint32), np.asarray(rows_b, np.uint32)
        if not len(ra):
            return np.zeros(0, bool)
        ea, eb = self.check(ra, rb)
        if self.budget.spend("0", "1", ea, eb, reach=True):
            raise Refused("rows_a/rows_b: a pair evaluated at the reach cut-off already")
        pairs = [(0, int(x), 1, int(y)) for x, y in zip(ra, rb, strict=True)]
        bits = reach_bits(self.servers, self.combiner, pairs, self.lacking, self.transcript,
                          self.seconds)  # fmt: skip
        self.asked += len(pairs)
        self.evaluated += len(ea)
        return bits

    def next_run(self) -> None:
        """S1 proposes again over the same uploads (a new run: its per-record reach bound
        starts afresh; the reach budget, per upload, does not)."""
        self.servers.propose(self.lacking, self.combiner.cutoffs, self.combiner.rule)
        if not self.cap:
            assert self.servers.proposal is not None
            self.servers.proposal.ledger = None
        self.runs += 1


__all__ = ["ReachOracle"]
