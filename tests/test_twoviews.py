"""What each role of a two-server run learns (matcher/core/twoviews.py), from the run's own
roles: C only the links, S1 and S2 the candidates, S2 their shared bands and the rows of one
member it sees paired with one token of the other; members small enough to be compared
without blocking (core/exhaustive.py) give S1 and S2 nothing. The tests of blocking's views
block every pair (`exhaustive=0`)."""

from __future__ import annotations

import numpy as np

from blindmatch.client.encoding.sharing import BandPlan, shared_upload
from blindmatch.client.tools.privacy.twocheck import UNBLOCKED_VIEW
from blindmatch.matcher.core.twoviews import NOT_BLOCKED, role_views

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
    views = role_views([a, b], 0.8, exhaustive=0)
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
                        shared_upload(_clks([3, 4]), SECRET, PLAN)], 0.8, exhaustive=0)  # fmt: skip
    assert all(len(pairs) == 0 for pairs, _values in views.values())


def test_dummy_pairs_noise_s2s_counts_and_leave_the_links() -> None:
    # Eight people in A, their copies in B: each pair of copies shares every band. S1's dummy
    # pairs of tokens (core/twoblocking.py `join`) pair random tokens of A and B: S2 opens
    # more pairs than the bands explain, the candidates grow, the links stay the eight.
    a = shared_upload(_clks(list(range(8))), SECRET, PLAN)
    b = shared_upload(_clks(list(range(7, -1, -1))), SECRET, PLAN)
    plain = role_views([a, b], 0.8, exhaustive=0)
    noised = role_views([a, b], 0.8, dummies=2.0, exhaustive=0)
    truth = sorted((i, 7 - i) for i in range(8))
    for views in (plain, noised):
        assert sorted(map(tuple, views["C"][0].tolist())) == truth
    counts = dict(zip(map(tuple, plain["S2"][0].tolist()), plain["S2"][1].tolist(), strict=True))
    assert all(counts[p] == PLAN.bands for p in truth)  # a chance collision or two besides
    # Twice as many dummy pairs of tokens as real ones (some on padding, dropped).
    assert noised["S2"][1].sum() > 1.5 * plain["S2"][1].sum()
    assert len(noised["S1"][0]) > len(plain["S1"][0])
    assert set(truth) <= set(map(tuple, noised["S1"][0].tolist()))


def test_small_members_compared_without_blocking_give_s1_and_s2_no_view() -> None:
    # The first test's members under a cap of their 8 pairs (core/exhaustive.py): every pair goes
    # through the circuit, S2 opens no band, so it counts none; C learns the same links.
    a = shared_upload(_clks([1, 1, 1, 2]), SECRET, PLAN)
    b = shared_upload(_clks([1, 3]), SECRET, PLAN)
    views = role_views([a, b], 0.8, exhaustive=4 * 2)
    blocked = role_views([a, b], 0.8, exhaustive=0)
    for role in ("S1", "S2", "S2 A:0"):
        assert len(views[role][0]) == 0 and len(views[role][1]) == 0, role
    assert sorted(map(tuple, views["C"][0].tolist())) == [(0, 0), (1, 0), (2, 0)]
    assert np.array_equal(views["C"][1], blocked["C"][1])
    # One pair over the cap: blocked, S2's counts back.
    capped = role_views([a, b], 0.8, exhaustive=4 * 2 - 1)
    assert (capped["S2"][1] == PLAN.bands).all() and len(capped["S2"][0]) == 3
    # The views say which pairs of members were not blocked, rather than leaving it to S1's
    # and S2's views being empty (client/tools/privacy/twocheck.py reads this).
    assert views[NOT_BLOCKED][0].tolist() == [[0, 1]]
    assert capped[NOT_BLOCKED][0].tolist() == blocked[NOT_BLOCKED][0].tolist() == []
    # Of three members, only the pairs under the cap: A x C (4 x 1) and B x C (2 x 1).
    c = shared_upload(_clks([1]), SECRET, PLAN)
    three = role_views([a, b, c], 0.8, exhaustive=4)
    assert three[NOT_BLOCKED][0].tolist() == [[0, 2], [1, 2]]
    assert (three["S2"][1] == PLAN.bands).all() and len(three["S2"][0]) == 3  # A, B blocked
    assert NOT_BLOCKED == UNBLOCKED_VIEW  # the client's name for it, the same


def test_dummies_out_of_range_are_refused() -> None:
    a = shared_upload(_clks([1, 2]), SECRET, PLAN)
    try:
        role_views([a, a], 0.8, dummies=-1.0)
    except ValueError as e:
        assert "dummies" in str(e)
    else:
        raise AssertionError("negative dummies accepted")
