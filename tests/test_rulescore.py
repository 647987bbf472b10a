"""The rule's S of a run's candidates (fallback._rule_scores, a run's `score` stage), and the
scores of the completion's and the links' pairs (fallback.pair_scores), by the
native kernel's `dice_each`: the same float64 scores, bit for bit, as the numpy path it
replaced (rows gathered, `solve.dice`), on every kernel path this CPU runs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.rulescore import kept
from blindmatch.matcher.core import fallback, kernel
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.solve import by_datasets, dice
from blindmatch.matcher.domain import Rule

DEFAULT = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
NATIVE_PATHS = [p for p in kernel.paths() if p != "numpy"]


def bits(seed: int, rows: int, nbytes: int, empty: float) -> npt.NDArray[np.uint8]:
    """Random CLK rows of any density, a share `empty` of them all-zero (and some full)."""
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.0, 1.0, size=(rows, 1))
    out = np.packbits(rng.random((rows, nbytes * 8)) < density, axis=1)
    out[rng.random(rows) < empty] = 0
    out[rng.random(rows) < 0.05] = 0xFF
    return out


@st.composite
def runs(draw: st.DrawFn) -> tuple[fallback.Split, Candidates]:
    """Datasets of whole CLKs (first and fallback CLKs of their own widths, from one 64-bit
    word to 20, 16 the default's), and candidate pairs between and within them."""
    seed = draw(st.integers(0, 2**32 - 1))
    count = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 40), min_size=count, max_size=count))
    w1, w2 = draw(st.sampled_from([1, 3, 8, 16, 20])), draw(st.sampled_from([1, 8, 16, 17]))
    empty = draw(st.sampled_from([0.0, 0.3, 1.0]))
    first = [bits(seed + k, n, 8 * w1, empty) for k, n in enumerate(sizes)]
    second = [bits(seed + 99 + k, n, 8 * w2, empty) for k, n in enumerate(sizes)]
    split = fallback.Split(first, second, [np.zeros(n, dtype=bool) for n in sizes])
    rng = np.random.default_rng(seed)
    m = draw(st.integers(0, 300))
    d0 = rng.integers(0, count, m).astype(np.uint32)
    d1 = rng.integers(0, count, m).astype(np.uint32)
    sizes_ = np.asarray(sizes)
    r0 = (rng.random(m) * sizes_[d0]).astype(np.uint32)
    r1 = (rng.random(m) * sizes_[d1]).astype(np.uint32)
    return split, Candidates(rng.random(m), d0, d1, r0, r1)


def same_floats(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> bool:
    return x.dtype == y.dtype == np.float64 and np.array_equal(x.view(np.uint64), y.view(np.uint64))


@settings(max_examples=300, deadline=None)
@given(run=runs(), rule=st.sampled_from([DEFAULT, Rule(4.0, -0.5, 0.0), Rule(0.0, 0.5, 0.5)]))
def test_the_rule_scores_by_the_native_kernel_are_the_numpy_paths_bit_for_bit(
    run: tuple[fallback.Split, Candidates], rule: Rule
) -> None:
    split, pairs = run
    sel = np.flatnonzero(np.random.default_rng(len(pairs)).random(len(pairs)) < 0.8)
    reference = fallback._rule_scores(pairs, split, sel, rule, "numpy")
    for path in ["auto", *NATIVE_PATHS]:
        assert same_floats(fallback._rule_scores(pairs, split, sel, rule, path), reference), path
    assert same_floats(fallback._rule_scores(pairs, split, sel, rule, workers=3), reference)


@settings(max_examples=300, deadline=None)
@given(
    run=runs(),
    rule=st.sampled_from([fallback.NO_RULE, DEFAULT, Rule(4.0, -0.5, 0.0)]),
    share=st.sampled_from([0.0, 0.4, 1.0]),
)
def test_pair_scores_by_the_native_kernel_are_the_numpy_paths_bit_for_bit(
    run: tuple[fallback.Split, Candidates], rule: Rule, share: float
) -> None:
    """The completion's and the links' scores (`pair_scores`): the first CLKs' Dice (S under a
    rule) where both records have the fields, the fallback CLKs' where either lacks them."""
    split, pairs = run
    rng = np.random.default_rng(len(pairs))
    lacking = [rng.random(len(f)) < share for f in split.first]
    split = fallback.Split(split.first, split.second, lacking)
    p = (pairs.dset0, pairs.rec0, pairs.dset1, pairs.rec1)
    reference = fallback.pair_scores(split, *p, rule=rule, path="numpy")
    for path in ["auto", *NATIVE_PATHS]:
        assert same_floats(fallback.pair_scores(split, *p, rule=rule, path=path), reference), path
    # the numpy path is the code before: each pair's score by the rule from the gathered rows
    for k in range(len(pairs)):
        a, ra, b, rb = (int(x[k]) for x in p)
        d1 = dice(split.first[a][[ra]], split.first[b][[rb]])
        d2 = dice(split.second[a][[ra]], split.second[b][[rb]])
        lacks = lacking[a][ra] or lacking[b][rb]
        assert same_floats(reference[[k]], d2 if lacks else rule.score(d1, d2)), k


@settings(max_examples=200, deadline=None)
@given(run=runs())
def test_dice_each_is_dice_of_the_gathered_rows_with_empty_pairs_zero(
    run: tuple[fallback.Split, Candidates],
) -> None:
    split, pairs = run
    for clks in (split.first, split.second):
        a, b = clks[0], clks[-1]
        ia = pairs.rec0 % len(a)
        ib = pairs.rec1 % len(b)
        want = dice(a[ia], b[ib])
        for path in ["auto", "numpy", *NATIVE_PATHS]:
            assert same_floats(kernel.dice_each(a, b, ia, ib, path=path), want), path


def test_two_empty_rows_score_zero_and_a_row_with_itself_one() -> None:
    a = np.zeros((2, 16), dtype=np.uint8)
    a[1, 3] = 0b1011
    for path in ["numpy", *NATIVE_PATHS]:
        got = kernel.dice_each(a, a, np.array([0, 1, 0]), np.array([0, 1, 1]), path=path)
        assert got.tolist() == [0.0, 1.0, 0.0], path


def test_the_chunks_of_a_long_run_each_land_on_their_own_pairs_on_one_thread_or_several(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    first = [bits(1, 50, 128, 0.1), bits(2, 30, 128, 0.1)]
    second = [bits(3, 50, 128, 0.1), bits(4, 30, 128, 0.1)]
    split = fallback.Split(first, second, [np.zeros(50, bool), np.zeros(30, bool)])
    m = 1000
    d0, d1 = rng.integers(0, 2, m).astype(np.uint32), rng.integers(0, 2, m).astype(np.uint32)
    r0 = rng.integers(0, 30, m).astype(np.uint32)
    r1 = rng.integers(0, 30, m).astype(np.uint32)
    pairs = Candidates(np.zeros(m), d0, d1, r0, r1)
    sel = np.arange(0, m, 3)
    whole = fallback._rule_scores(pairs, split, sel, DEFAULT)
    monkeypatch.setattr(fallback, "_SCORE_CHUNK", 7)
    assert same_floats(fallback._rule_scores(pairs, split, sel, DEFAULT), whole)
    assert same_floats(fallback._rule_scores(pairs, split, sel, DEFAULT, "numpy"), whole)
    for workers in (2, 5):  # chunks on threads, each writing its own pairs
        assert same_floats(fallback._rule_scores(pairs, split, sel, DEFAULT, workers=workers),
                           whole)  # fmt: skip


@pytest.mark.skipif(not NATIVE_PATHS, reason="the native kernel is not built")
def test_dice_each_refuses_rows_out_of_range_and_pairs_of_two_lengths() -> None:
    a = np.zeros((4, 8), dtype=np.uint8)
    with pytest.raises(IndexError, match="pair 1 is out of range"):
        kernel.dice_each(a, a, np.array([0, 4]), np.array([0, 0]))
    with pytest.raises(ValueError, match="one length"):
        kernel.dice_each(a, a, np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="not available"):
        kernel.dice_each(a, a, np.array([0]), np.array([0]), path="fastest")


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 300)), max_size=60),
)
def test_pairs_are_grouped_by_their_two_datasets_in_order_positions_ascending(
    keys: list[tuple[int, int]],
) -> None:
    d0 = np.array([a for a, _ in keys], dtype=np.uint32)
    d1 = np.array([b for _, b in keys], dtype=np.uint32)
    groups = list(by_datasets(d0, d1))
    assert [(a, b) for a, b, _ in groups] == sorted(set(keys))
    for a, b, sel in groups:
        assert type(a) is int and type(b) is int
        assert sel.tolist() == np.flatnonzero((d0 == a) & (d1 == b)).tolist()


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=4), want=st.integers(0, 120),
       block=st.integers(1, 16), seed=st.integers(0, 2**32 - 1))  # fmt: skip
def test_the_benchmarks_kept_pairs_are_want_distinct_positions_of_each_count_ascending(
    counts: list[int], want: int, block: int, seed: int
) -> None:
    """benchmarks/rulescore.py `kept` (leftovers): the benchmark keeps its `want` candidate
    pairs without holding every pair of every pair of datasets at once (4.6 GB before, at 143
    million of them): `want` positions in all (every one where fewer), distinct, ascending
    and within each pair of datasets' count, drawn a block at a time."""
    picks = kept(counts, want, np.random.default_rng(seed), block)
    assert len(picks) == len(counts)
    assert sum(len(p) for p in picks) == min(want, sum(counts))
    for p, n in zip(picks, counts, strict=True):
        assert p.dtype == np.intp and np.all(np.diff(p) > 0) and np.all((p >= 0) & (p < n))


def test_the_benchmarks_kept_pairs_fall_evenly_over_the_positions() -> None:
    """Each position as likely as any (a uniform sample, as the permutation before): over many
    draws of 10 of 2 x 25 positions in blocks of 4, each is kept about 10 / 50 of the time."""
    rng, seen = np.random.default_rng(7), np.zeros(50)
    for _ in range(4_000):
        a, b = kept([25, 25], 10, rng, 4)
        seen[a] += 1
        seen[25 + b] += 1
    assert np.all(np.abs(seen / 4_000 - 0.2) < 0.04)
