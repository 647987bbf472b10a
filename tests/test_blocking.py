"""LSH blocking: far fewer comparisons, the same matches as comparing every pair."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.synthclks import member_pair, members
from blindmatch.matcher.core import blocking
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.usecases.runs import AUTO_LSH_PAIRS, choose_method, match
from tests.conftest import Matcher


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    p = member_pair(20_000, overlap=0.1, seed=5)
    return p.a, p.b


def test_lsh_keeps_the_matches_with_far_fewer_comparisons(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = pair
    sims, ia, ib = dice_candidates(a, b, 0.8)
    exhaustive = dict(zip(zip(ia.tolist(), ib.tolist(), strict=True), sims.tolist(), strict=True))
    plan = blocking.plan([a, b], 0.8)
    keys_a, keys_b = blocking.band_keys(a, plan), blocking.band_keys(b, plan)
    results = [
        blocking.compare_band(a, b, keys_a[band], keys_b[band], 0.8) for band in range(plan.bands)
    ]
    s, ra, rb = blocking.dedupe(
        np.concatenate([r.sims for r in results]),
        np.concatenate([r.rows_a for r in results]),
        np.concatenate([r.rows_b for r in results]),
    )
    blocked = dict(zip(zip(ra.tolist(), rb.tolist(), strict=True), s.tolist(), strict=True))
    assert len(blocked) == len(s)  # each pair once
    assert all(exhaustive[p] == v for p, v in blocked.items())  # same pairs, same scores
    assert len(blocked) >= 0.995 * len(exhaustive) and len(exhaustive) >= 2000
    comparisons = sum(r.comparisons for r in results)
    assert comparisons * 20 <= len(a) * len(b)


def test_blocked_multiparty_match_finds_the_exhaustive_groups() -> None:
    datasets = members(3, 4000, overlap=0.2, seed=9)
    full = match(datasets, 0.8, blocking="exhaustive")
    lsh = match(datasets, 0.8, blocking="lsh")
    assert (full.method, lsh.method) == ("exhaustive", "lsh")
    assert lsh.comparisons < full.comparisons
    link = lambda r: set(  # noqa: E731
        zip(r.links.dset.tolist(), r.links.row.tolist(), r.links.partner.tolist(), strict=True)
    )
    assert len(link(lsh) & link(full)) >= 0.995 * len(link(full))
    assert full.groups >= 800


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
        assert client.describe("big").blocking == 3  # BLOCKING_LSH
