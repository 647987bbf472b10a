"""LSH blocking: far fewer comparisons, the same matches as comparing every pair."""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.realclks import realistic_pair
from benchmarks.synthclks import member_pair, members
from blindmatch.matcher.core import blocking, kernel
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.core.tasks import plan_tasks, run_task
from blindmatch.matcher.usecases.runs import AUTO_LSH_PAIRS, choose_method, match
from tests.support import Matcher


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    p = member_pair(20_000, overlap=0.1, seed=5)
    return p.a, p.b


@pytest.fixture(scope="module")
def realistic() -> tuple[np.ndarray, np.ndarray]:
    """Real clkhash encodings (default schema) of 3,000 + 3,000 realistic records."""
    p = realistic_pair(3_000, 3_000, seed=11, workers=1, cache=False, quiet=True)
    return p.a, p.b


def as_dict(sims: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> dict[tuple[int, int], float]:
    return dict(zip(zip(ia.tolist(), ib.tolist(), strict=True), sims.tolist(), strict=True))


def test_lsh_keeps_the_matches_with_far_fewer_comparisons(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = pair
    exhaustive = as_dict(*dice_candidates(a, b, 0.8))
    plan = blocking.plan([a, b], 0.8)
    assert isinstance(plan, blocking.LshPlan) and plan.design_recall >= 0.999
    found = blocking.compare_bands(a, b, plan.positions, 0.8)
    blocked = as_dict(found.sims, found.rows_a, found.rows_b)
    assert len(blocked) == len(found.sims)  # each pair once
    assert all(exhaustive[p] == v for p, v in blocked.items())  # same pairs, same scores
    assert len(blocked) >= 0.999 * len(exhaustive) and len(exhaustive) >= 2000
    assert found.comparisons * 5 <= len(a) * len(b)


def test_the_native_bands_find_what_the_numpy_bands_find(
    realistic: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = realistic
    plan = blocking.plan([a, b], 0.8, sizes=[1_000_000] * 2)
    assert isinstance(plan, blocking.LshPlan)
    part = dataclasses.replace(plan, positions=plan.positions[:40])
    keys_a, keys_b = blocking.band_keys(a, part), blocking.band_keys(b, part)
    bands = [blocking.compare_band(a, b, keys_a[k], keys_b[k], 0.8) for k in range(40)]
    numpy = as_dict(*blocking.dedupe(
        np.concatenate([r.sims for r in bands]),
        np.concatenate([r.rows_a for r in bands]),
        np.concatenate([r.rows_b for r in bands]),
    ))  # fmt: skip
    native = blocking.compare_bands(a, b, part.positions, 0.8)
    assert as_dict(native.sims, native.rows_a, native.rows_b) == numpy and len(numpy) > 100
    assert native.comparisons == sum(r.comparisons for r in bands)


@pytest.mark.parametrize("bits", [64, 192, 512, 1024, 2048])
def test_the_native_bands_agree_with_numpy_at_every_width(bits: int) -> None:
    # 1024 bits takes the AVX-512 path for two vectors a row (narrow and wide tiles), other
    # multiples of 512 the general vector path, the rest scalar POPCNT; all-zero rows too.
    rng = np.random.default_rng(bits)
    people = rng.random((900, bits)) < 0.4
    a = np.packbits(people[:600], axis=1)
    b = np.packbits(people[300:] ^ (rng.random((600, bits)) < 0.02), axis=1)
    a[:5] = 0
    b[-5:] = 0
    r = min(12, bits // 4)
    positions = np.stack([rng.choice(bits, r, replace=False) for _ in range(30)])
    plan = blocking.LshPlan(positions.astype(np.int32), 0.8, 0.999)
    keys_a, keys_b = blocking.band_keys(a, plan), blocking.band_keys(b, plan)
    bands = [blocking.compare_band(a, b, keys_a[k], keys_b[k], 0.8) for k in range(30)]
    numpy = as_dict(*blocking.dedupe(
        np.concatenate([x.sims for x in bands]),
        np.concatenate([x.rows_a for x in bands]),
        np.concatenate([x.rows_b for x in bands]),
    ))  # fmt: skip
    native = blocking.compare_bands(a, b, plan.positions, 0.8)
    assert as_dict(native.sims, native.rows_a, native.rows_b) == numpy and len(numpy) > 200
    assert native.comparisons == sum(x.comparisons for x in bands)


def test_dedupe_keeps_each_pair_once_in_the_order_np_unique_gave() -> None:
    """Pairs found again (as in several bands, with their score) come out once each, ordered
    by (row of A, row of B), exactly as `np.unique(..., return_index=True)` had them; none
    and one pair too."""
    rng = np.random.default_rng(11)
    rows_a = rng.integers(0, 300, 5_000, dtype=np.uint32)
    rows_b = rng.integers(0, 300, 5_000, dtype=np.uint32)
    rows_b[:100] = np.uint32(2**32 - 1)  # the top bit of the key's low half
    sims = (rows_a.astype(np.float64) * 7 + rows_b) % 1000 / 1000  # one score a pair
    again = rng.integers(0, 5_000, 20_000)
    a, b, s = rows_a[again], rows_b[again], sims[again]
    key = (a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64)
    _, first = np.unique(key, return_index=True)
    got = blocking.dedupe(s, a, b)
    for mine, theirs in zip(got, (s[first], a[first], b[first]), strict=True):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    assert len(got[0]) == len(set(zip(a.tolist(), b.tolist(), strict=True))) < len(a)
    none = np.empty(0, dtype=np.uint32)
    assert [len(x) for x in blocking.dedupe(np.empty(0), none, none)] == [0, 0, 0]
    one = np.ones(1, dtype=np.uint32)
    assert [x.tolist() for x in blocking.dedupe(np.ones(1) / 2, one, one)] == [[0.5], [1], [1]]


@pytest.mark.skipif(not kernel.NATIVE, reason="the native kernel did not build")
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1) | st.integers(0, 40),
            st.integers(0, 2**32 - 1) | st.integers(0, 40),
        ),
        max_size=300,
    ),
    st.randoms(use_true_random=False),
)
def test_the_native_dedupe_gives_what_the_numpy_dedupe_gives(
    pairs: list[tuple[int, int]], rand: object
) -> None:
    """`blocking.dedupe` (native radix sort) against `dedupe_numpy`, the oracle: the same
    pairs, scores, dtypes and order, for repeats, rows near 2^32 and none at all."""
    again = pairs + [pairs[i] for i in range(0, len(pairs), 3)]
    rand.shuffle(again)  # type: ignore[attr-defined]
    rows_a = np.array([p[0] for p in again], dtype=np.uint32)
    rows_b = np.array([p[1] for p in again], dtype=np.uint32)
    sims = ((rows_a.astype(np.float64) * 7 + rows_b) % 1000) / 1000  # one score a pair
    got, want = blocking.dedupe(sims, rows_a, rows_b), blocking.dedupe_numpy(sims, rows_a, rows_b)
    for mine, theirs in zip(got, want, strict=True):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    assert len(got[0]) == len(set(pairs))


def test_the_native_dedupe_refuses_arrays_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="as long"):
        blocking.dedupe(np.ones(3), np.ones(3, dtype=np.uint32), np.ones(2, dtype=np.uint32))


def test_on_real_encodings_lsh_finds_a_subset_of_the_exhaustive_pairs_with_their_scores(
    realistic: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = realistic
    exhaustive = as_dict(*dice_candidates(a, b, 0.8))
    # The plan a 1M x 1M run of these encodings gets, applied to the small set.
    plan = blocking.plan([a, b], 0.8, sizes=[1_000_000] * 2)
    assert isinstance(plan, blocking.LshPlan)
    found = blocking.compare_bands(a, b, plan.positions, 0.8)
    blocked = as_dict(found.sims, found.rows_a, found.rows_b)
    assert blocked.keys() <= exhaustive.keys()
    assert all(exhaustive[p] == v for p, v in blocked.items())
    assert len(blocked) >= 0.999 * len(exhaustive) and len(exhaustive) >= 300


def test_at_1m_the_planner_widens_past_the_old_band_cap_or_refuses(
    realistic: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = realistic
    sizes = [1_000_000] * 2
    # What the old planner did at 1M on real encodings: 22 bits a band, capped at 160
    # bands, design recall ~0.8. The planner refuses it, naming the design recall.
    old = blocking.plan([a, b], 0.8, sizes=sizes, bits_per_band=22, max_bands=160)
    assert isinstance(old, blocking.NoPlan)
    assert old.design_recall < 0.95
    assert re.fullmatch(
        r"plan design recall 0\.\d{4} below target 0\.999: comparing exhaustively \(.*\)",
        old.message,
    )
    # Left to choose, it widens: more bands than the old cap, design recall on target.
    plan = blocking.plan([a, b], 0.8, sizes=sizes)
    assert isinstance(plan, blocking.LshPlan)
    assert plan.design_recall >= blocking.TARGET_RECALL and plan.bands > 160
    # Every band width it may choose at 1M either reaches the target or is refused.
    for r in range(blocking.MIN_BITS, blocking.MAX_BITS + 1):
        got = blocking.plan([a, b], 0.8, sizes=sizes, bits_per_band=r, max_bands=3_000)
        assert isinstance(got, blocking.NoPlan) or got.design_recall >= 0.999, r
    # A plan below the target never compares anything.
    weak = dataclasses.replace(plan, positions=plan.positions[:160], design_recall=0.8)
    task = plan_tasks([len(a), len(b)], "lsh", weak)[0]
    with pytest.raises(blocking.LshPlanError, match=r"below target 0\.999"):
        run_task(task, a, b, 0.8, weak)


def test_each_shape_of_pair_gets_the_plan_that_costs_it_least(
    realistic: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = realistic
    datasets = [a, b, a[:1_500], b[:1_500]]

    def cost(lsh: blocking.LshPlan, shapes: list[tuple[int, int]]) -> float:
        """The planner's estimate of comparing these pairs of sizes under `lsh`."""
        rows = sum(x + y for x, y in shapes)
        return lsh.bands * rows * blocking.COST_ROW + lsh.expected_comparisons * blocking.COST_PAIR

    # Members all of one size: one plan, the one `plan` gives, band for band.
    same = blocking.plan_pairs(datasets, 0.8, sizes=[1_000_000] * 4)
    one = blocking.plan(datasets, 0.8, sizes=[1_000_000] * 4)
    assert isinstance(same, blocking.PairPlans) and isinstance(one, blocking.LshPlan)
    assert len(same.plans) == 1 and np.array_equal(same.plans[0].positions, one.positions)
    # Two forces of 1M, a national agency of 50k and a retailer of 10k: the forces' pair
    # keeps the forces' plan, the agency's pairs get shorter keys, the retailer's pairs
    # compare every pair (cheaper than any plan for 10k rows: every band pays for the
    # partner's rows), every plan at the target recall, and together they cost less than
    # the one plan a run would have.
    sizes = [1_000_000, 1_000_000, 50_000, 10_000]
    plans = blocking.plan_pairs(datasets, 0.8, sizes=sizes)
    assert isinstance(plans, blocking.PairPlans) and len(plans.plans) == 2
    forces, agency = plans.plans
    assert (forces.bands, forces.bits_per_band) == (one.bands, one.bits_per_band)
    assert agency.bits_per_band < forces.bits_per_band
    assert plans.pairs == {(0, 1): 0, (0, 2): 1, (1, 2): 1}
    assert set(plans.exhaustive) == {(0, 3), (1, 3), (2, 3)}
    assert all(p.design_recall >= blocking.TARGET_RECALL for p in plans.plans)
    shape = {(x, y): (sizes[x], sizes[y]) for x in range(4) for y in range(x + 1, 4)}
    whole = blocking.plan(datasets, 0.8, sizes=sizes)
    assert isinstance(whole, blocking.LshPlan)
    per_pair = (
        cost(forces, [shape[0, 1]])
        + cost(agency, [shape[0, 2], shape[1, 2]])
        + sum(shape[p][0] * shape[p][1] * blocking.COST_DENSE for p in plans.exhaustive)
    )
    assert per_pair < cost(whole, list(shape.values()))
    # What the per-pair plans find on these rows is what comparing every pair finds.
    for (x, y), k in plans.pairs.items():
        found = blocking.compare_bands(datasets[x], datasets[y], plans.plans[k].positions, 0.8)
        exhaustive = as_dict(*dice_candidates(datasets[x], datasets[y], 0.8))
        blocked = as_dict(found.sims, found.rows_a, found.rows_b)
        assert blocked.keys() <= exhaustive.keys()
        assert len(blocked) >= 0.99 * len(exhaustive)


def test_a_run_without_a_cheap_plan_compares_every_pair_and_says_so(
    realistic: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = realistic
    assert isinstance(blocking.plan([a, b], 0.8), blocking.NoPlan)  # 3k x 3k: all pairs is cheaper
    with caplog.at_level(logging.WARNING, logger="blindmatch.matcher"):
        lsh = match([a, b], 0.8, blocking="lsh")
    full = match([a, b], 0.8, blocking="exhaustive")
    assert lsh.method == "exhaustive" and lsh.comparisons == len(a) * len(b)
    assert "comparing exhaustively" in caplog.text
    assert lsh.links.row.tolist() == full.links.row.tolist()


def test_blocked_multiparty_match_finds_the_exhaustive_groups() -> None:
    datasets = members(3, 20_000, overlap=0.2, seed=9)
    full = match(datasets, 0.8, blocking="exhaustive")
    lsh = match(datasets, 0.8, blocking="lsh")
    assert (full.method, lsh.method) == ("exhaustive", "lsh")
    assert lsh.comparisons * 5 < full.comparisons
    link = lambda r: set(  # noqa: E731
        zip(r.links.dset.tolist(), r.links.row.tolist(), r.links.partner.tolist(), strict=True)
    )
    assert len(link(lsh) & link(full)) >= 0.999 * len(link(full))
    assert full.groups >= 4000


def test_auto_blocks_only_large_inputs() -> None:
    assert choose_method([1000, 1000]) == "exhaustive"
    assert choose_method([200_000, 200_000]) == "lsh"
    assert choose_method([10, 10], "lsh") == "lsh"
    assert choose_method([10**6, 10**6], "exhaustive") == "exhaustive"
    assert AUTO_LSH_PAIRS >= 100_000 * 100_000
    with pytest.raises(ValueError, match="blocking"):
        choose_method([1, 1], "fast")


def test_the_project_keeps_its_blocking_setting(matcher: Matcher) -> None:
    with matcher.operator() as op:
        made = op.create_project("big", ["a", "b"], blocking="lsh")
        default = op.create_project("small", ["a", "b"])
    assert (made.blocking, default.blocking) == ("lsh", "auto")
    with matcher.member(made.tokens["a"]) as client:
        assert client.describe("big").blocking == "lsh"
