"""Under the default's rule the LSH planners plan the first CLKs for the rule's candidate
floor (t - reach: 0.79 at 0.8), not the threshold: the rule links pairs whose first CLKs'
Dice is under the threshold (a typo and a move, the date of birth holding up), and a plan
designed for the threshold finds those less often than the design recall promises. Real
clkhash encodings of realistic people (the default schema, messy exports), plans forced to
1,000,000 rows as tests/test_rtplan.py and tests/test_blocking.py force them."""

from __future__ import annotations

import functools
import json
import logging

import numpy as np
import pytest

from benchmarks import realclks
from blindmatch.matcher.core import blocking, fallback, rtplan, segment
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.executor import CompareJob, ThreadExecutor
from blindmatch.matcher.core.fallbackindex import FallbackIndex
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.usecases.runs import match
from tests.support import PERSON_SCHEMA

raw = json.loads(PERSON_SCHEMA.read_text())["blindmatch"]["rule"]
RULE = fallback.Rule(raw["gap"], raw["offset"], raw["reach"])  # the default schema's
T = 0.8
FLOOR = RULE.candidate_floor(T)
MILLION = 1_000_000


@pytest.fixture(scope="module")
def split(real_pair_4000: realclks.RealPair) -> tuple[fallback.Split, int]:
    """4,000 + 4,000 whole CLKs as uploaded (first CLK, fallback CLK), 30% shared people
    (tests/conftest.py `real_pair_4000`)."""
    pair = real_pair_4000
    _, fallback_bits = realclks.layout()
    return fallback.Split.of([pair.a, pair.b], fallback_bits), fallback_bits


def ruled_pairs(split: fallback.Split, first_pairs: Candidates) -> dict[tuple[int, int], float]:
    """(row of A, row of B) -> S of the pairs the rule links among first-CLK candidates of
    two records that have the fields (as a batch run rescores them)."""
    both = fallback.rescored(first_pairs, split, T, rule=RULE)[0]
    return dict(zip(zip(both.rec0.tolist(), both.rec1.tolist(), strict=True),
                    both.sims.tolist(), strict=True))  # fmt: skip


def candidates(sims: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> Candidates:
    k = len(sims)
    return Candidates(sims.astype(np.float64), np.zeros(k, np.uint32), np.ones(k, np.uint32),
                      ia.astype(np.uint32), ib.astype(np.uint32))  # fmt: skip


def test_the_floor_is_what_the_default_rule_says() -> None:
    assert RULE.active
    assert RULE.candidate_floor(T) == pytest.approx(0.79)


def test_a_batch_plan_for_the_floor_finds_the_candidates_under_the_threshold(
    split: tuple[fallback.Split, int],
) -> None:
    s, _ = split
    exhaustive = candidates(*dice_candidates(s.first[0], s.first[1], FLOOR))
    # The candidates the rule scores that a plan for the threshold is not designed for.
    low = exhaustive.sims < T
    under = set(zip(exhaustive.rec0[low].tolist(), exhaustive.rec1[low].tolist(), strict=True))
    assert len(under) >= 20
    planned = blocking.plan_pairs(s.first, FLOOR, sizes=[MILLION] * 2)
    at_t = blocking.plan_pairs(s.first, T, sizes=[MILLION] * 2)
    assert isinstance(planned, blocking.PairPlans) and isinstance(at_t, blocking.PairPlans)
    plan = planned.plans[0]
    assert plan.design_dice == pytest.approx(FLOOR) and plan.design_recall >= 0.999
    assert plan.bands > at_t.plans[0].bands  # the floor costs bands: it is not free
    # A run's bands (the thread executor, as usecases.runs.match) at the floor.
    job = CompareJob(s.first, FLOOR, "lsh", lsh=planned)
    parts, _ = ThreadExecutor(1).compare(job, lambda *_: None, lambda *_: None)
    lsh = merge(parts)
    found = set(zip(lsh.rec0.tolist(), lsh.rec1.tolist(), strict=True))
    assert len(found & under) >= 0.99 * len(under)
    # Rescored by the rule, the pairs linked are the exhaustive run's, with the same scores.
    linked, want = ruled_pairs(s, lsh), ruled_pairs(s, exhaustive)
    assert linked.items() <= want.items() and len(linked) >= 0.99 * len(want)


def test_a_run_under_the_rule_plans_for_the_floor(
    split: tuple[fallback.Split, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s, fallback_bits = split
    datasets = [np.hstack([s.first[k], s.second[k]]) for k in (0, 1)]
    sized = functools.partial(blocking.plan_pairs, sizes=[MILLION] * 2)
    monkeypatch.setattr(blocking, "plan_pairs", sized)  # plan as for 1M x 1M
    caplog.set_level(logging.INFO, logger="blindmatch")
    ruled = match(datasets, T, blocking="lsh", fallback_bits=fallback_bits, rule=RULE, workers=1)
    assert ruled.method == "lsh+fallback+rule"
    assert f"at Dice {FLOOR:g}" in caplog.text
    caplog.clear()
    plain = match(datasets, T, blocking="lsh", fallback_bits=fallback_bits, workers=1)
    assert f"at Dice {T:g}" in caplog.text and f"at Dice {FLOOR:g}" not in caplog.text
    full = match(datasets, T, blocking="exhaustive", fallback_bits=fallback_bits, rule=RULE)

    def links(r):  # type: ignore[no-untyped-def]
        return set(zip(r.links.row.tolist(), r.links.partner_row.tolist(), strict=True))

    assert links(ruled) <= links(full) and len(links(ruled)) >= 0.99 * len(links(full))
    assert links(plain) != links(ruled)  # the rule decides otherwise somewhere


def test_a_standing_index_under_the_rule_has_first_half_tables_for_the_floor(
    split: tuple[fallback.Split, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, fallback_bits = split
    monkeypatch.setattr(segment, "MIN_ROWS", 1_000)  # tables for this small index,
    monkeypatch.setattr(rtplan, "plan", functools.partial(rtplan.plan, size=MILLION))  # at 1M
    south = np.hstack([s.first[1], s.second[1]])
    clk_bits = 8 * south.shape[1]
    refs = [str(i) for i in range(len(south))]
    words = as_words(south, clk_bits)
    index = FallbackIndex.load(clk_bits, fallback_bits, refs, words, threshold=T, rule=RULE)
    first = index.first.snapshot.main
    assert first.lsh is not None and first.lsh_threshold == pytest.approx(FLOOR)
    assert first.lsh.plan.design_recall >= rtplan.RECALL
    # Designed for pairs at the floor: the plan for the threshold finds those less often
    # than the design recall (worked out band by band for the positions it drew).
    planned_t = rtplan.plan(first.words, first.popcounts, T)
    assert planned_t.plan is not None
    design = planned_t.stats.design_differ(FLOOR)
    at_t = planned_t.plan
    hit = [rtplan.band_hit(design[p], at_t.radius) for p in at_t.positions]
    assert rtplan.shared_hit(hit, at_t.hits) < rtplan.RECALL
    # Every query answers what the exhaustive scan scored by the rule answers, and the
    # first halves' look-up at the floor finds the candidates under the threshold.
    scanned = FallbackIndex.load(clk_bits, fallback_bits, refs, words, rule=RULE).snapshot
    snap = index.snapshot
    assert snap.first.main.lsh is not None and scanned.first.main.lsh is None
    cut = index.cut
    pairs = under = under_found = 0
    for q in as_words(np.hstack([s.first[0], s.second[0]]), clk_bits):
        want = scanned.search(q, T)
        assert snap.search(q, T) == want
        pairs += len(want)
        low = {r for r, v in scanned.first.search(q[:cut], FLOOR) if v < T}
        got = dict(snap.first.search(q[:cut], FLOOR))
        under += len(low)
        under_found += len(low & got.keys())
    assert pairs > 1000 and under >= 20 and under_found >= 0.99 * under
