"""What each role of a two-server run learns (matcher/core/twoviews.py), from the run's own
roles: C only the links, S1 and S2 the candidates, S2 their shared bands and the rows of one
member it sees paired with one token of the other."""

from __future__ import annotations

import numpy as np

from blindmatch.client.encoding.sharing import BandPlan, shared_upload
from blindmatch.matcher.core.twoviews import role_views

SECRET = b"\x05" * 32
PLAN = BandPlan(bits=8, bands=10)


def _clks(rows: list[int], width: int = 16) -> np.ndarray:
    """One CLK a row: row k's bytes drawn from seed rows[k] (equal seeds, equal CLKs)."""
    return np.stack([np.random.default_rng(r).integers(0, 256, width, dtype=np.uint8)
                     for r in rows])  # fmt: skip


def test_each_role_sees_what_the_design_says() -> None:
    # A holds three copies of person 1 and person 2; B holds person 1 once and person 3.
    a = shared_upload(_clks([1, 1, 1, 2]), SECRET, PLAN)
    b = shared_upload(_clks([1, 3]), SECRET, PLAN)
    views = role_views([a, b], 0.8)
    s1_pairs, s1_values = views["S1"]
    assert sorted(map(tuple, s1_pairs.tolist())) == [(0, 0), (1, 0), (2, 0)]
    assert not s1_values.any()  # S1: the pairs, nothing else
    s2_pairs, s2_counts = views["S2"]
    assert sorted(map(tuple, s2_pairs.tolist())) == [(0, 0), (1, 0), (2, 0)]
    assert (s2_counts == PLAN.bands).all()  # identical CLKs share every band
    c_pairs, buckets = views["C"]
    assert sorted(map(tuple, c_pairs.tolist())) == [(0, 0), (1, 0), (2, 0)]
    assert (buckets == 0.95).all()  # Dice 1: the top bucket, not the Dice
    # A's key has 4 slots (three rows, padded), B's two copies: B's tokens go twice, and S2
    # sees two of A's three rows paired with one token, in every band.
    own, counts = views["S2 A:0"]
    assert len(own) == 1 and set(own[0].tolist()) <= {0, 1, 2}, own
    assert counts.tolist() == [PLAN.bands]


def test_no_candidates_no_view() -> None:
    views = role_views([shared_upload(_clks([1, 2]), SECRET, PLAN),
                        shared_upload(_clks([3, 4]), SECRET, PLAN)], 0.8)  # fmt: skip
    assert all(len(pairs) == 0 for pairs, _values in views.values())
