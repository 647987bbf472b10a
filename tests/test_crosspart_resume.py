"""A resumed unblocked pair of members (rpc/twoserver_resume.py `leave_out_counted`) cut down
in slices (matcher/core/crosspart.py `Cross.leaving_out`): the pairs S1's budget did not count,
in the order the whole part less the counted pairs had when it was made whole as explicit
rows (16 bytes a pair), at a bit a pair; what C can ask of it as before."""

from __future__ import annotations

import tracemalloc
from functools import partial
from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import pytest

from blindmatch.matcher.core import crosspart, exhaustive, linkbit, pairbudget, twoserver
from blindmatch.matcher.core.crosspart import Cross, Order, cross_parts
from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.core.proposal import Proposal
from blindmatch.matcher.rpc.twoserver_resume import leave_out_counted
from tests.test_crosspart import pairs

RECORD, FALLBACK = twoserver.RECORD, twoserver.FALLBACK
CUTOFFS = (0.8,)


def whole_less(part: Cross, budget: PairBudget) -> twoserver.PairBatch:
    """The part as resumed before: made whole, the counted pairs dropped (order kept)."""
    w = part.whole()
    counted = budget.counted("a", "b", w.rows_a, w.rows_b)
    return twoserver.PairBatch(w.member_a, w.member_b, w.clk, w.rows_a[~counted],
                               w.rows_b[~counted])  # fmt: skip


def spent(proposal: Proposal, budget: PairBudget, share: float, seed: int, size: int = 700) -> None:
    """A `share` of each part's batches of `size`, in a run that a failure cut, counted."""
    rng = np.random.default_rng(seed)
    for k, p in enumerate(proposal.described()):
        for offset in range(0, p.pairs, size):
            if rng.random() < share:
                b = proposal.part(k, offset, min(size, p.pairs - offset), CUTOFFS)
                assert not budget.spend("a", "b", b.rows_a, b.rows_b)


@pytest.mark.parametrize("size", [1, 2, 3, 17, 1000, 4097, 70_000])
def test_the_order_undone_gives_each_index_its_position(size: int) -> None:
    order = Order.fresh(size, np.random.default_rng(size))
    positions = np.arange(size, dtype=np.uint64)
    assert np.array_equal(order.position(order.at(positions)), positions)


@pytest.mark.parametrize(("share", "seed"), [(0.0, 1), (0.3, 2), (1.0, 4)])
def test_a_resumed_part_is_the_whole_part_less_the_counted_pairs_in_the_same_order(
    share: float, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 x 450 (180,000 pairs, cut down 16,384 positions at a time here: many steps and
    chunks), 10% of A's and 5% of B's records lacking the fallback's fields: the record part
    and the fallback's two blocks, a share of their batches counted in the run cut."""
    monkeypatch.setattr(crosspart, "STEP", 2 * crosspart.CHUNK)
    rng = np.random.default_rng(seed)
    n_a, n_b = 400, 450
    lacking = [rng.random(n_a) < 0.1, rng.random(n_b) < 0.05]
    parts = exhaustive.every_pair(0, 1, (n_a, n_b), lacking)
    budget = PairBudget()
    spent(Proposal(["a", "b"], [n_a, n_b], parts, CUTOFFS, lacking, rng), budget, share, seed)
    again = Proposal(["a", "b"], [n_a, n_b], parts, CUTOFFS, lacking, rng)
    before = list(again.parts)
    assert all(isinstance(p, Cross) for p in before) and len(before[0]) > 2 * crosspart.STEP
    left = leave_out_counted(SimpleNamespace(budget=budget), again, {(0, 1)})  # type: ignore[arg-type]
    assert left == budget.pairs() == sum(len(p) for p in before) - sum(
        p.pairs for p in again.described())  # fmt: skip
    every = {(a, b) for a in range(n_a + 2) for b in range(n_b + 2)}
    all_a = np.array([a for a, _ in sorted(every)], np.uint32)
    all_b = np.array([b for _, b in sorted(every)], np.uint32)
    for k, (whole, cut) in enumerate(zip(before, again.parts, strict=True)):
        assert isinstance(cut, Cross)
        want = pairs(whole_less(whole, budget))
        assert len(cut) == len(want) and pairs(cut.whole()) == want  # the same, in order
        cuts = sorted({0, len(want), *rng.integers(0, len(want) + 1, 6).tolist()})
        assert [p for lo, hi in pairwise(cuts) for p in pairs(cut.slice(lo, hi - lo))] == want
        assert [p for b in cut.split(linkbit.BATCH) for p in pairs(b)] == want
        if want:  # what C is handed, batch by batch (`Proposal.part`)
            at = int(rng.integers(0, len(want)))
            got = again.part(k, at, min(1000, len(want) - at), CUTOFFS)
            assert pairs(got) == want[at : at + 1000]
        kept = set(want)
        assert cut.contains(all_a, all_b).tolist() == [p in kept for p in sorted(every)]
    # A pair of the whole part not left (counted), named as an extra: answered 0, as before.
    whole = before[0].whole()
    gone = budget.counted("a", "b", whole.rows_a, whole.rows_b)
    if gone.any():
        named = again.check("a", "b", RECORD, whole.rows_a[gone][:500], whole.rows_b[gone][:500],
                            CUTOFFS)  # fmt: skip
        assert named.proposed.all() and named.extras == 0


def test_a_part_cut_down_twice_keeps_the_first_cuts_order_and_a_cut_one_is_not_reshuffled() -> None:
    rng = np.random.default_rng(9)
    (part,) = cross_parts(0, 1, (90, 80), None, RECORD, FALLBACK)
    part = part.shuffled(rng)
    first = part.leaving_out(lambda a, b: (a + b) % 3 == 0)
    second = first.leaving_out(lambda a, b: a % 5 == 0)
    want = [(a, b) for a, b in pairs(part.whole()) if (a + b) % 3 and a % 5]
    assert pairs(second.whole()) == want and len(second) == len(want)
    with pytest.raises(ValueError, match="keeps the order"):
        first.shuffled(rng)


def test_s1_resumes_an_unblocked_pair_of_members_at_a_bit_a_pair_not_16_bytes() -> None:
    """2,000 x 2,000 (4 million pairs), a tenth of it counted in the run cut: made whole as
    explicit rows, the part was 64 MB while the run lasted (and its permutation's and the
    budget look-up's arrays over it while cut down: 160 MB traced); cut down in slices, 0.5
    MB of bits and a step's arrays (18 MB)."""
    n = 2_000
    lacking = [np.arange(n) % 10 == 0, np.arange(n) % 7 == 0]
    parts = exhaustive.every_pair(0, 1, (n, n), lacking)
    budget = PairBudget()
    spent(Proposal(["a", "b"], [n, n], parts, CUTOFFS, lacking), budget, 0.1, 5, linkbit.BATCH)
    again = Proposal(["a", "b"], [n, n], parts, CUTOFFS, lacking)
    tracemalloc.start()
    try:
        left = leave_out_counted(SimpleNamespace(budget=budget), again, {(0, 1)})  # type: ignore[arg-type]
        batch = again.part(0, 1_000_000, linkbit.BATCH, CUTOFFS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert left == budget.pairs() > 0
    assert sum(p.pairs for p in again.described()) == n * n - left
    assert len(batch) == linkbit.BATCH and peak < 24_000_000  # not 64,000,000 and more
    counted = partial(budget.counted, "a", "b")
    assert not counted(batch.rows_a, batch.rows_b).any()


def test_the_budgets_look_up_answers_each_pair_in_its_place_in_either_member_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`PairBudget.counted` looks the keys up in ascending order (fewer cache misses), 1,000
    at a time here: each answer goes back to its pair."""
    monkeypatch.setattr(pairbudget, "LOOKUP", 1000)
    rng = np.random.default_rng(11)
    budget = PairBudget()
    a, b = (
        rng.integers(0, 300, 5000).astype(np.uint32),
        rng.integers(0, 300, 5000).astype(np.uint32),
    )
    spent_pairs = set(zip(a[:2000].tolist(), b[:2000].tolist(), strict=True))
    for lo in range(0, 2000, 500):
        keys = {
            (x, y)
            for x, y in zip(a[lo : lo + 500].tolist(), b[lo : lo + 500].tolist(), strict=True)
        }
        budget.restore("a", "b", np.array([(x << 32) | y for x, y in keys], np.uint64))
    want = [p in spent_pairs for p in zip(a.tolist(), b.tolist(), strict=True)]
    assert budget.counted("a", "b", a, b).tolist() == want
    assert budget.counted("b", "a", b, a).tolist() == want
