"""benchmarks/twoserver_lift.py's premises (docs/privacy-design.md, "The crowd lift in a
two-server run: what C would have to learn"): it scores candidates as a two-server run's C
holds them, and on C's buckets the lift cuts a whole bucket where crowd.py cuts a band."""

from __future__ import annotations

import numpy as np

from benchmarks.twoserver_lift import FINE, cutoffs, floored
from blindmatch.matcher.core import crowd
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.twoserver import Combiner


def _candidates(sims: list[float], rec0: list[int], rec1: list[int]) -> Candidates:
    n = len(sims)
    return Candidates(np.array(sims), np.zeros(n, np.uint32), np.ones(n, np.uint32),
                      np.array(rec0, np.uint32), np.array(rec1, np.uint32))  # fmt: skip


def test_candidates_are_scored_as_the_combiner_holds_them() -> None:
    combiner = Combiner(None, 0.8, clks=2)
    dice = np.random.default_rng(3).uniform(0.8, 1.0, 500)
    bits = np.stack([dice >= c for c in combiner.cutoffs])  # the circuit's outputs
    got = floored(_candidates(dice.tolist(), [0] * 500, [0] * 500), combiner.cutoffs)
    assert combiner.cutoffs == cutoffs(0.8)
    assert (got.sims == combiner.bucket_scores(bits)).all()
    assert cutoffs(0.8, FINE) == (*np.round(np.arange(0.8, 0.9, 0.01), 6).tolist(), 0.9, 0.95)


def test_on_the_runs_buckets_the_lift_cuts_a_whole_bucket() -> None:
    # 30 records of member 0 with their partner at 0.95 and 4 strangers each at 0.805 (the
    # band [0.80, 0.81) is chance), and 10 records whose partner scores 0.845 (true pairs).
    sims, rec0, rec1 = [], [], []
    for i in range(40):
        for score in [0.95, *[0.805] * 4] if i < 30 else [0.845]:
            sims.append(score)
            rec0.append(i)
            rec1.append(len(rec1))
    cands = _candidates(sims, rec0, rec1)
    sizes = [40, len(rec1)]
    fine = crowd.lifted(floored(cands, cutoffs(0.8, FINE)), 0.8, sizes)
    coarse = crowd.lifted(floored(cands, cutoffs(0.8)), 0.8, sizes)
    # crowd.py's bands: the strangers go, the 0.845 pairs stay (as on the exact Dice) ...
    assert sorted(set(fine.rec0.tolist())) == list(range(40))
    assert len(fine) == 40
    assert len(crowd.lifted(cands, 0.8, sizes)) == 40
    # ... C's bucket [0.80, 0.85) is one band to the lift: the true pairs go with it.
    assert sorted(set(coarse.rec0.tolist())) == list(range(30))
