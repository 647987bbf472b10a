"""Compare, solve, disclose: the core, checked against anonlink itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.matcher.core._anonlink import dice_coefficient_accelerated, greedy_solve
from blindmatch.matcher.core.compare import Candidates, compare_chunk, merge, plan_chunks
from blindmatch.matcher.core.disclose import Hit, disclose
from blindmatch.matcher.core.solve import REACH, complete, dice, solve
from blindmatch.matcher.domain import Level
from blindmatch.matcher.usecases.runs import match


def noisy_copies(rng: np.random.Generator, clks: np.ndarray, flips: int) -> np.ndarray:
    out = clks.copy()
    bits = np.unpackbits(out, axis=1)
    for row in bits:
        row[rng.choice(bits.shape[1], size=flips, replace=False)] ^= 1
    return np.packbits(bits, axis=1)


@pytest.fixture
def datasets() -> list[np.ndarray]:
    """Three datasets of 1024-bit CLKs with ~45% bits set; 40 subjects shared by all."""
    rng = np.random.default_rng(42)
    base = np.packbits(rng.random((300, 1024)) < 0.45, axis=1)
    a = base[:150]
    b = np.concatenate([noisy_copies(rng, base[:40], 60), base[150:250]])
    c = np.concatenate([noisy_copies(rng, base[:40], 80), base[250:300]])
    return [a, b, c]


def anonlink_pairs(x: np.ndarray, y: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    sims, (r0, r1) = dice_coefficient_accelerated(
        [[r.tobytes() for r in x], [r.tobytes() for r in y]], threshold
    )
    return {(int(i), int(j)): s for s, i, j in zip(sims, r0, r1, strict=True)}


def test_chunked_comparison_finds_exactly_anonlinks_pairs(datasets: list[np.ndarray]) -> None:
    a, b, _ = datasets
    chunks = plan_chunks([len(a), len(b)], chunk_comparisons=1000)
    assert len(chunks) > 10
    assert sum(c.comparisons for c in chunks) == len(a) * len(b)
    cands = merge([compare_chunk(c, [a, b], 0.7) for c in chunks])
    ours = {(int(i), int(j)): s for s, i, j in zip(cands.sims, cands.rec0, cands.rec1, strict=True)}
    assert ours == anonlink_pairs(a, b, 0.7)
    assert len(ours) >= 40


def test_merge_orders_candidates_as_the_solver_needs(datasets: list[np.ndarray]) -> None:
    chunks = plan_chunks([len(d) for d in datasets], chunk_comparisons=2000)
    cands = merge([compare_chunk(c, datasets, 0.6) for c in chunks])
    assert np.all(np.diff(cands.sims) <= 0)


def test_dice_matches_anonlink(datasets: list[np.ndarray]) -> None:
    a, b, _ = datasets
    expected = anonlink_pairs(a[:40], b[:40], 0.0)
    ours = dice(a[:40], b[:40])
    for i in range(40):
        assert ours[i] == pytest.approx(expected[(i, i)])


def test_multiparty_match_groups_the_shared_subjects(datasets: list[np.ndarray]) -> None:
    result = match(datasets, 0.8, workers=2, chunk_comparisons=5000)
    assert result.groups == 40
    assert result.comparisons == 150 * 140 + 150 * 90 + 140 * 90
    # Each subject links to both partners, in both directions: 40 * 6 links.
    assert len(result.links) == 240
    same_row = result.links.row == result.links.partner_row
    assert same_row.all()  # the shared subjects sit at rows 0..39 everywhere


def test_solver_is_anonlinks_greedy_solver(datasets: list[np.ndarray]) -> None:
    chunks = plan_chunks([len(d) for d in datasets])
    cands = merge([compare_chunk(c, datasets, 0.8) for c in chunks])
    ours = sorted(solve(cands))
    theirs = greedy_solve((cands.sims, (cands.dset0, cands.dset1), (cands.rec0, cands.rec1)))
    assert ours == sorted(tuple(sorted(g)) for g in theirs)


def test_nothing_in_common_gives_no_links() -> None:
    rng = np.random.default_rng(1)
    a = np.packbits(rng.random((50, 512)) < 0.4, axis=1)
    b = np.packbits(rng.random((60, 512)) < 0.4, axis=1)
    result = match([a, b], 0.8)
    assert result.groups == 0 and len(result.links) == 0


LINKS = [(0, "south", 7, 0.91), (0, "retail", 3, 0.85), (4, "south", 1, 0.88)]


def test_count_disclosure_reveals_no_rows() -> None:
    out = disclose(Level.COUNT, LINKS)
    assert out.counts == {"retail": 1, "south": 2}
    assert out.hits == []


def test_hits_disclosure_hides_partner_rows_and_scores() -> None:
    out = disclose(Level.HITS, LINKS)
    assert out.hits == [Hit(0, "retail"), Hit(0, "south"), Hit(4, "south")]
    assert all(h.partner_row == 0 and h.score == 0.0 for h in out.hits)


def test_mapping_disclosure_adds_partner_rows_not_scores() -> None:
    out = disclose(Level.MAPPING, LINKS)
    assert out.hits == [Hit(0, "retail", 3), Hit(0, "south", 7), Hit(4, "south", 1)]


def test_scores_disclosure_adds_similarity() -> None:
    out = disclose(Level.SCORES, LINKS)
    assert out.hits[0] == Hit(0, "retail", 3, 0.85)


def one_subject_three_times(off_b: int, off_c: int) -> list[np.ndarray]:
    """Three members' one-row datasets of one subject: B's CLK and C's each lose their own
    `off_b` / `off_c` of the first's 460 set bits, so A-B and A-C score high, B-C lower."""
    rng = np.random.default_rng(7)
    bits = np.zeros(1024, dtype=np.uint8)
    on = rng.choice(1024, size=460, replace=False)
    bits[on] = 1
    b, c = bits.copy(), bits.copy()
    b[on[:off_b]] = 0
    c[on[off_b : off_b + off_c]] = 0
    strangers = np.packbits(rng.random((30, 1024)) < 0.45, axis=1)
    return [np.concatenate([np.packbits(x)[None, :], strangers[10 * i : 10 * i + 10]])
            for i, x in enumerate((bits, b, c))]  # fmt: skip


def test_a_subject_held_by_three_members_stays_one_group_when_one_pair_scores_just_under() -> None:
    # A-B and A-C score 0.878, B-C 0.722: the greedy solver makes a pair and leaves the
    # third record out (it would need B-C at the threshold); completing the groups joins
    # it, since B-C is within REACH (0.1) of the threshold and A-B is BRIDGE (0.05) over it.
    datasets = one_subject_three_times(100, 100)
    chunks = plan_chunks([len(d) for d in datasets])
    cands = merge([compare_chunk(c, datasets, 0.8) for c in chunks])
    assert [len(g) for g in solve(cands)] == [2]
    result = match(datasets, 0.8, workers=1)
    assert result.groups == 1 and len(result.links) == 6  # every member knows both others
    assert sorted(set(result.links.row.tolist())) == [0]
    b_c = (result.links.dset == 1) & (result.links.partner == 2)
    assert result.links.score[b_c][0] == pytest.approx(2 * 260 / 720)  # its own score, shown


def test_groups_are_not_completed_over_a_pair_far_under_the_threshold() -> None:
    # A-B and A-C 0.857, B-C 0.667: more than REACH under the threshold, so the third
    # record stays out, as the greedy solver left it.
    datasets = one_subject_three_times(115, 115)
    result = match(datasets, 0.8, workers=1)
    assert result.groups == 1 and len(result.links) == 2


def test_a_pair_at_exactly_the_bridge_and_reach_cut_offs_completes_a_group() -> None:
    # 0.8 + 0.05 and 0.8 - 0.1 are 0.8500000000000001 and 0.7000000000000001 in floating
    # point; a Dice of exactly 0.85 (612/720) and 0.7 must count, as in a two-server run.
    score = {(0, 1): 0.9, (0, 2): 612 / 720, (1, 2): 0.7}
    d0, d1 = np.array([0], dtype=np.uint32), np.array([1], dtype=np.uint32)
    zero = np.zeros(1, dtype=np.uint32)
    cands = merge(
        [
            Candidates(np.array([0.9]), d0, d1, zero, zero),
            Candidates(np.array([612 / 720]), d0, np.array([2], np.uint32), zero, zero),
        ]
    )

    def scorer(a: np.ndarray, _r0: np.ndarray, b: np.ndarray, _r1: np.ndarray) -> np.ndarray:
        return np.array([score[(int(x), int(y))] for x, y in zip(a, b, strict=True)])

    greedy = solve(cands)
    assert [len(g) for g in greedy] == [2]
    assert [len(g) for g in complete(greedy, cands, scorer, 0.8)] == [3]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 5), st.integers(2, 6))
def test_completing_only_joins_whole_groups_over_pairs_near_the_threshold(
    seed: int, members: int, rows: int
) -> None:
    # Any scores: completion keeps every greedy group whole, never puts two records of one
    # member together, and every pair it newly puts together scores within REACH of the
    # threshold.
    rng = np.random.default_rng(seed)
    score = rng.uniform(0.5, 1.0, (members, rows, members, rows))
    score = np.maximum(score, score.transpose(2, 3, 0, 1))  # one score a pair, either way

    def scorer(d0: np.ndarray, r0: np.ndarray, d1: np.ndarray, r1: np.ndarray) -> np.ndarray:
        return score[d0, r0, d1, r1]

    pairs = [(a, i, b, j) for a in range(members) for b in range(a + 1, members)
             for i in range(rows) for j in range(rows) if score[a, i, b, j] >= 0.8]  # fmt: skip
    if not pairs:
        return
    d0, r0, d1, r1 = (np.array(c, dtype=np.uint32) for c in zip(*pairs, strict=True))
    cands = merge([Candidates(score[d0, r0, d1, r1], d0, d1, r0, r1)])
    greedy = solve(cands)
    done = complete(greedy, cands, scorer, 0.8)
    home = {record: g for g in done for record in g}
    assert sum(len(g) for g in done) == len(home)  # no record in two groups
    for g in done:
        assert len({d for d, _ in g}) == len(g)  # at most one record a member
    for g in greedy:
        assert all(home[record] == home[g[0]] for record in g)  # greedy groups stay whole
    together = {(x, y) for g in greedy for x in g for y in g}
    for g in done:
        for x in g:
            for y in g:
                if x < y and (x, y) not in together:
                    assert score[x[0], x[1], y[0], y[1]] >= 0.8 - REACH
