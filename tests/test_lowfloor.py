"""A low floor's run without its superlinear stages (lowfloor): two members' greedy solve in one
native pass, the merge's sort by one packed index key, the crowd cut before the merge. Each
gives exactly what it replaced: anonlink's greedy solver, the five-key lexsort, the cut after
the merge, checked here on random candidate sets with tied scores."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.matcher.core import crowd
from blindmatch.matcher.core._anonlink import greedy_solve
from blindmatch.matcher.core.compare import Candidates, _one_sort, _packed, concat, merge
from blindmatch.matcher.core.kernel import NATIVE
from blindmatch.matcher.core.solve import _two_members, solve


def _anonlink(c: Candidates) -> list[tuple[tuple[int, int], ...]]:
    groups = greedy_solve((c.sims, (c.dset0, c.dset1), (c.rec0, c.rec1)))
    return sorted(tuple(sorted((int(d), int(r)) for d, r in g)) for g in groups)


def _lexsorted(c: Candidates) -> Candidates:
    """merge as it was: one lexsort by score (decreasing), datasets, rows."""
    order = np.lexsort((c.rec1, c.rec0, c.dset1, c.dset0, -c.sims))
    return Candidates(c.sims[order], c.dset0[order], c.dset1[order], c.rec0[order],
                      c.rec1[order])  # fmt: skip


FIELDS = ("sims", "dset0", "dset1", "rec0", "rec1")


def _same(a: Candidates, b: Candidates) -> bool:
    return all(getattr(a, f).tobytes() == getattr(b, f).tobytes() for f in FIELDS)


def _take(c: Candidates, rows: npt.NDArray[np.intp]) -> Candidates:
    return Candidates(*(getattr(c, f)[rows] for f in FIELDS))


@st.composite
def two_members(draw: st.DrawFn, *, twice: bool = False) -> Candidates:
    """Candidates between members 0 and 2 (either way round), scores from a few values (ties),
    each pair once (or, with `twice`, some pairs given again)."""
    n_x, n_y = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    cells = draw(st.lists(st.integers(0, n_x * n_y - 1), min_size=1, max_size=60, unique=True))
    if twice:
        cells += draw(st.lists(st.sampled_from(cells), min_size=1, max_size=5))
    m = len(cells)
    x = np.array([c // n_y for c in cells], dtype=np.uint32)
    y = np.array([c % n_y for c in cells], dtype=np.uint32)
    flip = np.array(draw(st.lists(st.booleans(), min_size=m, max_size=m)))
    sims = np.array(draw(st.lists(st.sampled_from([0.6, 0.7, 0.75, 0.8, 1.0]), min_size=m,
                                  max_size=m)))  # fmt: skip
    return Candidates(
        sims,
        np.where(flip, 2, 0).astype(np.uint32),
        np.where(flip, 0, 2).astype(np.uint32),
        np.where(flip, y, x).astype(np.uint32),
        np.where(flip, x, y).astype(np.uint32),
    )


@pytest.mark.skipif(not NATIVE, reason="the native module is not built")
@settings(max_examples=300, deadline=None)
@given(two_members())
def test_two_members_are_solved_natively_into_anonlinks_groups(c: Candidates) -> None:
    ordered = merge([c])
    assert _two_members(ordered) is not None  # the one-pass path answered
    assert sorted(solve(ordered)) == _anonlink(ordered)


@settings(max_examples=200, deadline=None)
@given(two_members(twice=True))
def test_a_pair_given_twice_is_solved_as_anonlink_solves_it(c: Candidates) -> None:
    ordered = merge([c])
    assert sorted(solve(ordered)) == _anonlink(ordered)


def test_a_pair_given_twice_joins_a_third_record_as_in_anonlink() -> None:
    # (0,0)-(2,0) join first; (0,0)-(2,1) is met twice: anonlink counts both and joins (2,1).
    c = Candidates(
        np.array([0.9, 0.8, 0.7]), np.zeros(3, dtype=np.uint32), np.full(3, 2, dtype=np.uint32),
        np.zeros(3, dtype=np.uint32), np.array([0, 1, 1], dtype=np.uint32),
    )  # fmt: skip
    assert _two_members(c) is None
    assert solve(c) == [((0, 0), (2, 0), (2, 1))] == _anonlink(c)


def test_three_members_are_left_to_anonlink() -> None:
    c = Candidates(
        np.array([0.9, 0.85, 0.8]), np.array([0, 0, 1], dtype=np.uint32),
        np.array([1, 2, 2], dtype=np.uint32), np.zeros(3, dtype=np.uint32),
        np.zeros(3, dtype=np.uint32),
    )  # fmt: skip
    assert _two_members(c) is None
    assert solve(c) == [((0, 0), (1, 0), (2, 0))] == _anonlink(c)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.6, 0.7, float(np.nextafter(0.7, 1.0)), 1.0]),
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(0, 2**31),
            st.integers(0, 9),
        ),
        min_size=1,
        max_size=50,
    ),
    st.integers(1, 4),
)
def test_the_merge_orders_as_the_five_key_lexsort_did(rows: list, chunks: int) -> None:
    # Rows up to 2^31 need more than 64 bits packed (the lexsort path); small ones do not (one
    # sort, or two where 0.7 and the next float share a step of the scores' scale).
    for wide in (True, False):
        cols = [np.array([r[k] for r in rows]) for k in range(5)]
        if not wide:
            cols[3] %= 50
        c = Candidates(cols[0].astype(np.float64), *(x.astype(np.uint32) for x in cols[1:]))
        cut = np.linspace(0, len(c), chunks + 1).astype(int)
        parts = [_take(c, np.arange(lo, hi)) for lo, hi in itertools.pairwise(cut)]
        assert _same(merge(parts), _lexsorted(c))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_crowd_cut_before_the_merge_keeps_what_it_kept_after(seed: int) -> None:
    # Crowded bands just over 0.6: most records' best candidate at 0.9 (anchored), the rest
    # chance pairs at 0.6-0.7 that the cut lifts over, on unsorted chunks.
    rng = np.random.default_rng(seed)
    n = 60
    sims = np.round(rng.uniform(0.6, 0.72, n * n), 2)
    sims[:: n + 1] = 0.9
    rows = np.arange(n * n, dtype=np.uint32)
    c = Candidates(sims, np.zeros(n * n, dtype=np.uint32), np.ones(n * n, dtype=np.uint32),
                   rows // n, rows % n)  # fmt: skip
    order = rng.permutation(n * n)
    parts = [_take(c, order[k::3]) for k in range(3)]
    before = crowd.lifted(_lexsorted(concat(parts)), 0.6, [n, n])
    now = merge([crowd.lifted(concat(parts), 0.6, [n, n])])
    assert len(before) < n * n  # the cut moved
    assert _same(now, before)


def test_scores_sharing_a_step_of_the_merges_scale_are_still_ordered_by_score() -> None:
    # Rows near 2^23 leave the score's rank 16 bits: 0.700001 and 0.7 share a step, and the
    # row key alone would put the lower score first; the merge sorts again by score.
    rows = np.array([2**23, 2**23 + 1, 5, 0], dtype=np.uint32)
    zero = np.zeros(4, dtype=np.uint32)
    c = Candidates(np.array([0.7, 0.700001, 0.0, 1.0]), zero, zero.copy(), rows, rows.copy())
    key, bits = _packed(c.dset0, c.dset1, c.rec0, c.rec1) or (None, 0)
    assert key is not None and bits == 48
    assert _one_sort(c.sims, key, bits) is None  # one sort came out the wrong way round
    got = merge([c])
    assert got.sims.tolist() == [1.0, 0.700001, 0.7, 0.0]
    assert _same(got, _lexsorted(c))
