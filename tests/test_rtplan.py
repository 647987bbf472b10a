"""The real-time index's LSH plan, made from real clkhash encodings (matcher/core/rtplan.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from benchmarks import realclks
from blindmatch.matcher.core import rtplan, segment
from blindmatch.matcher.core.lshindex import LshTable, bit_agreement, plan_tables
from blindmatch.matcher.core.segment import Segment, as_words, search

THRESHOLD = 0.8
MILLION = 1_000_000


@pytest.fixture(scope="module")
def real(real_pair_4000: realclks.RealPair) -> realclks.RealPair:
    """4,000 + 4,000 real encodings (the shipped schema, messy exports), 30% shared people:
    their record-level CLKs, the first part of tests/conftest.py's `real_pair_4000` (as
    `realclks.realistic_pair` cuts them without `whole`)."""
    whole = real_pair_4000
    clk_bits, fallback_bits = realclks.layout()
    if not fallback_bits:
        return whole
    cut = (clk_bits - fallback_bits) // 8
    a, b = (np.ascontiguousarray(x[:, :cut]) for x in (whole.a, whole.b))
    return realclks.RealPair(a, b, whole.truth_a, whole.truth_b)


@pytest.fixture(scope="module")
def indexed(real: realclks.RealPair) -> Segment:
    words = as_words(real.a, 1024)
    return Segment.build(words, [str(i) for i in range(len(words))])


def test_a_plan_for_a_million_real_clks_reaches_its_design_recall(indexed: Segment) -> None:
    planned = rtplan.plan(indexed.words, indexed.popcounts, THRESHOLD, size=MILLION)
    assert planned.plan is not None, planned.reason
    plan = planned.plan
    # Worked out again here, band by band, for the positions the plan drew: the chance
    # that at least `hits` of them hit (a sum over which bands do, not the planner's DP).
    design = planned.stats.design_differ(THRESHOLD)
    hit = np.array([rtplan.band_hit(design[p], plan.radius) for p in plan.positions])
    none = np.prod(1 - hit)
    one = sum(hit[k] * np.prod(np.delete(1 - hit, k)) for k in range(len(hit)))
    found = {1: 1 - none, 2: 1 - none - one}[plan.hits]
    assert plan.design_recall == pytest.approx(found) and found >= rtplan.RECALL
    # At a million rows a row must share keys in two bands (collision counting): rows met
    # in one band are by far the most, and reading each costs a random line.
    assert plan.hits == 2 and plan.expected_rows < 20_000
    # Only informative bits are sampled: none set in more than 80% of the rows.
    assert planned.stats.frequency[plan.positions].max() <= rtplan.INFORMATIVE[1]
    assert (planned.stats.frequency > 0.8).mean() > 0.05  # real CLKs have such bits
    # The plan made from sizes and independence claims more than real pairs give it:
    # under this module's model its bands find a pair at the threshold far less often.
    high = float(np.quantile(indexed.popcounts, 0.99))
    old = plan_tables(MILLION, 1024, high, bit_agreement(indexed.words), THRESHOLD)
    assert old is not None
    old_miss = np.prod([1 - rtplan.band_hit(design[p], old.radius) for p in old.positions])
    assert 1 - old_miss < rtplan.RECALL < old.design_recall + 0.01


def test_the_plan_finds_every_real_pair_the_scan_finds(
    real: realclks.RealPair, indexed: Segment
) -> None:
    planned = rtplan.plan(indexed.words, indexed.popcounts, THRESHOLD, size=MILLION)
    assert planned.plan is not None
    sketch = rtplan.sketch_plan(planned.stats, THRESHOLD, int(indexed.popcounts[-1]))
    table = LshTable.build(indexed.words, planned.plan, THRESHOLD, sketch)
    queries = as_words(real.b, 1024)
    pairs = found = 0
    for q in queries:
        rows, sims = search(indexed.words, indexed.popcounts, q, THRESHOLD)
        lrows, lsims, _, _ = table.search_counted(indexed.words, indexed.popcounts, q, THRESHOLD)
        got = dict(zip(lrows.tolist(), lsims.tolist(), strict=True))
        want = dict(zip(rows.tolist(), sims.tolist(), strict=True))
        assert all(want[r] == s for r, s in got.items())  # exact scores, nothing extra
        pairs += len(want)
        found += sum(1 for r in want if r in got)
    assert pairs > 1000  # the shared people, and the near strangers
    assert found == pairs


def test_no_plan_within_the_memory_cap_means_a_full_scan_said_out_loud(
    real: realclks.RealPair,
    indexed: Segment,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = rtplan.plan(
        indexed.words, indexed.popcounts, THRESHOLD, size=MILLION, bytes_per_row=64
    )
    assert refused.plan is None and "no plan" in refused.reason
    # A segment that big gets no tables then: it is scanned, and the log says why.
    monkeypatch.setattr(segment, "MIN_ROWS", 1000)
    monkeypatch.setattr(rtplan, "BYTES_PER_ROW", 4)
    monkeypatch.setattr(rtplan, "MIN_BUDGET", 0)
    caplog.set_level(logging.WARNING, logger="blindmatch.matcher.index")
    scanned = Segment.build(indexed.words, indexed.refs, threshold=THRESHOLD)
    assert scanned.lsh is None
    assert "it is scanned in full" in caplog.text
    q = as_words(real.b[:1], 1024)[0]
    rows, _ = scanned.search(q, THRESHOLD)
    assert sorted(rows.tolist()) == sorted(search(indexed.words, indexed.popcounts, q,
                                                  THRESHOLD)[0].tolist())  # fmt: skip


def test_both_plans_find_every_pair_of_the_held_out_generators_encodings() -> None:
    """households.py's people (the generator the planners were not developed on: households,
    twins, its own names and corruptions; issue 19's outside check), planned as for
    1,000,000 rows from 4,000 of them: the real-time plan and the batch plan each reach
    the design recall and find every pair at or above the threshold the scan finds."""
    from blindmatch.matcher.core import blocking, kernel

    pair = realclks.realistic_pair(4_000, 4_000, seed=3, overlap=0.3, workers=1, cache=False,
                                   quiet=True, generator="households")  # fmt: skip
    held = Segment.build(as_words(pair.a, 1024), [str(i) for i in range(4_000)])
    planned = rtplan.plan(held.words, held.popcounts, THRESHOLD, size=MILLION)
    assert planned.plan is not None and planned.plan.design_recall >= rtplan.RECALL
    assert planned.stats.frequency[planned.plan.positions].max() <= rtplan.INFORMATIVE[1]
    sketch = rtplan.sketch_plan(planned.stats, THRESHOLD, int(held.popcounts[-1]))
    table = LshTable.build(held.words, planned.plan, THRESHOLD, sketch)
    pairs = found = 0
    for q in as_words(pair.b, 1024):
        want = search(held.words, held.popcounts, q, THRESHOLD)[0].tolist()
        got = set(table.search_counted(held.words, held.popcounts, q, THRESHOLD)[0].tolist())
        pairs += len(want)
        found += sum(1 for r in want if r in got)
    assert pairs > 1000 and found == pairs
    batch = blocking.plan_pairs([pair.a, pair.b], THRESHOLD, sizes=[MILLION] * 2)
    assert isinstance(batch, blocking.PairPlans)
    lsh = batch.plans[0]
    assert lsh.design_recall >= blocking.TARGET_RECALL
    _, ia, ib = kernel.dice_candidates(pair.a, pair.b, THRESHOLD)
    banded = blocking.compare_bands(pair.a, pair.b, lsh.positions, THRESHOLD)
    truth = set(zip(ia.tolist(), ib.tolist(), strict=True))
    assert len(truth) > 1000
    assert truth <= set(zip(banded.rows_a.tolist(), banded.rows_b.tolist(), strict=True))
