"""An unblocked pair of members' pairs made in slices (matcher/core/crosspart.py): the same
pairs as the explicit cross product, each once, in a fresh keyed order C does not hold; S1's
memory for them bounded by the members' rows, not their product; and a run whose unblocked
parts are sliced links as one whose parts are explicit row arrays."""

from __future__ import annotations

import tracemalloc
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.matcher.core import crosspart, exhaustive, twoserver
from blindmatch.matcher.core.crosspart import Cross, Order, cross_parts
from blindmatch.matcher.core.proposal import Proposal
from tests.test_twoserver_exhaustive import UNBLOCKED, in_process, small, uploads_of  # noqa: F401

Clks = npt.NDArray[np.uint8]
RECORD, FALLBACK = twoserver.RECORD, twoserver.FALLBACK


def pairs(batch: twoserver.PairBatch) -> list[tuple[int, int]]:
    return list(zip(batch.rows_a.tolist(), batch.rows_b.tolist(), strict=True))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 64, 1000, 4097])
def test_the_order_is_a_permutation_of_the_positions(size: int) -> None:
    order = Order.fresh(size, np.random.default_rng(size))
    got = order.at(np.arange(size, dtype=np.uint64))
    assert sorted(got.tolist()) == list(range(size))
    # Computed for any positions alone: a slice's indexes are the whole's at those positions.
    assert np.array_equal(order.at(np.arange(size // 3, size, dtype=np.uint64)), got[size // 3 :])


def test_a_fresh_order_is_not_the_row_order_nor_another_runs() -> None:
    first = Order.fresh(10_000, np.random.default_rng(1)).at(np.arange(10_000, dtype=np.uint64))
    second = Order.fresh(10_000, np.random.default_rng(2)).at(np.arange(10_000, dtype=np.uint64))
    assert np.mean(first == np.arange(10_000)) < 0.01
    assert np.mean(first == second) < 0.01
    assert abs(float(np.corrcoef(first.astype(float), np.arange(10_000))[0, 1])) < 0.05
    assert len(Order.fresh(7, np.random.default_rng(1)).keys) == crosspart.ROUNDS


def test_the_parts_are_the_cross_product_split_by_the_fallbacks_rule() -> None:
    rng = np.random.default_rng(3)
    n_a, n_b = 23, 17
    lacking = [rng.random(n_a) < 0.3, rng.random(n_b) < 0.3]
    record, fallback = cross_parts(0, 1, (n_a, n_b), lacking, RECORD, FALLBACK)
    either = {(a, b) for a in range(n_a) for b in range(n_b) if lacking[0][a] or lacking[1][b]}
    every = {(a, b) for a in range(n_a) for b in range(n_b)}
    assert sorted(pairs(record.whole())) == sorted(every - either)  # in row order too
    assert pairs(record.whole()) == sorted(every - either)
    assert sorted(pairs(fallback.whole())) == sorted(either) and len(fallback) == len(either)
    assert (record.clk, fallback.clk) == (RECORD, FALLBACK)
    (only,) = cross_parts(0, 1, (n_a, n_b), None, RECORD, FALLBACK)
    assert pairs(only.whole()) == sorted(every)
    # Shuffled: the same pairs, each once, sliced anyhow; S1's check knows each as its own.
    shuffled = fallback.shuffled(rng)
    cuts = [0, 1, 7, 40, len(fallback)]
    sliced = [p for lo, hi in pairwise(cuts)
              for p in pairs(shuffled.slice(lo, hi - lo))]  # fmt: skip
    assert sorted(sliced) == sorted(either) and sliced != sorted(either)
    assert [p for b in shuffled.split(10) for p in pairs(b)] == sliced
    a = np.array([x for x, _ in sorted(every)], np.uint32)
    b = np.array([y for _, y in sorted(every)], np.uint32)
    assert [bool(x) for x in shuffled.contains(a, b)] == [p in either for p in sorted(every)]


def test_s1_holds_an_unblocked_pair_of_members_by_its_rows_not_its_product() -> None:
    """4,000 x 4,000 (S1's default cap, 16 million pairs): explicit row arrays, the
    permutation and the sorted keys were 16 bytes a pair (256 MB); sliced, the proposal
    holds the rows of each side and makes a batch of pairs when C asks for it."""
    n = 4_000
    lacking = [np.arange(n) % 10 == 0, np.arange(n) % 7 == 0]
    tracemalloc.start()
    try:
        parts = exhaustive.every_pair(0, 1, (n, n), lacking)
        proposal = Proposal(["a", "b"], [n, n], parts, (0.8,), lacking)
        batch = proposal.part(0, 1_000_000, 16_384, (0.8,))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(p.pairs for p in proposal.described()) == n * n
    assert len(batch) == 16_384 and peak < 4_000_000  # not 256,000,000
    # Every pair C is handed is S1's: a proposed pair, answered 0 if C names it again.
    checked = proposal.check("a", "b", RECORD, batch.rows_a, batch.rows_b, (0.8,))
    assert checked.proposed.all() and checked.extras == 0
    assert not (lacking[0][batch.rows_a] | lacking[1][batch.rows_b]).any()


def test_a_sliced_run_links_as_one_with_explicit_rows(
    small: tuple[list[Clks], int],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uploads = uploads_of(small)[:2]
    sliced, servers = in_process(uploads, UNBLOCKED)
    assert servers.proposal is not None
    assert all(isinstance(p, Cross) for p in servers.proposal.parts)
    every_pair = exhaustive.every_pair

    def explicit(*args: object) -> list[twoserver.PairBatch]:
        return exhaustive.explicit(every_pair(*args))  # type: ignore[arg-type]

    monkeypatch.setattr(exhaustive, "every_pair", explicit)
    whole, servers = in_process(uploads, UNBLOCKED)
    assert servers.proposal is not None
    assert not any(isinstance(p, Cross) for p in servers.proposal.parts)
    assert sliced.comparisons == whole.comparisons == 150 * 120
    assert len(sliced.links) > 10
    for name in ("dset", "row", "partner", "partner_row", "score"):
        assert np.array_equal(getattr(sliced.links, name), getattr(whole.links, name)), name
