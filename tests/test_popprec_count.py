"""benchmarks/popprec.py counts hits as `blindmatch evaluate` does (docs/evaluation.md, "The
recall gap between the CLI walk and popprec"): a record linked to another person's record
while the partner holds its own is a true hit, though a false pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.popprec import as_evaluated
from blindmatch.client.tools.evaluate import quality
from blindmatch.client.tools.truth import read_truth


def test_popprecs_hit_count_is_evaluates(tmp_path: Path) -> None:
    # small: s0..s3 of people 1, 2, 3, 4; big: b0..b3 of people 1, 9, 3, 2.
    small, big = [1, 2, 3, 4], [1, 9, 3, 2]
    rows = [f"small,s{i},{e}" for i, e in enumerate(small)]
    rows += [f"big,b{i},{e}" for i, e in enumerate(big)]
    (tmp_path / "truth.csv").write_text("member,record_id,entity_id\n" + "\n".join(rows) + "\n")
    truth = read_truth(tmp_path / "truth.csv")
    # s0-b1: s0's person is held (b0), but linked to another's record; s2-b2: the right
    # pair; s3-b3: s3's person is not held, b3's (person 2) is held by small (s1).
    r0, r1 = np.array([0, 2, 3]), np.array([1, 2, 3])
    hits = {("small", f"s{a}", "big") for a in r0.tolist()}
    hits |= {("big", f"b{b}", "small") for b in r1.tolist()}
    q = quality(hits, truth)
    got = as_evaluated(r0, r1, np.array(small), np.array(big))
    assert got == (q.true_positives, q.predicted, q.actual) == (4, 6, 6)
    pairs_true = int((np.array(small)[r0] == np.array(big)[r1]).sum())
    assert pairs_true == 1  # the stricter count: s2-b2 only
