"""A two-server run under the default schema's gap rule (core/gmwrule.py on the shares): its
links are a clk-mode run's under the rule, on the realistic fixture (three organisations'
exports of 1,000 people, the default schema: a record-level CLK and a fallback CLK)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import fallback, tworun, twoserver
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.kernel import dice_pairs
from blindmatch.matcher.core.solve import Links, links_from_groups, solve
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.usecases.runs import match
from tests.support import MESSY_SECRET, in_process_servers

DEFAULT = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
THRESHOLD = 0.8
Clks = npt.NDArray[np.uint8]


def _servers(
    datasets: list[Clks], fallback_bits: int, plan: client.BandPlan
) -> tuple[twoserver.BlockingServer, twoserver.ShareServer, list[client.SharedUpload]]:
    uploads = [client.shared_upload(d, MESSY_SECRET, plan, fallback_bits) for d in datasets]
    return (*in_process_servers(uploads), uploads)


def clk_mode_on(
    proposed: list[twoserver.PairBatch], datasets: list[Clks], fallback_bits: int, rule: Rule
) -> Links:
    """A clk-mode run's decisions (core/fallback.py `rescored`) on the pairs S1 proposed: on
    the first CLKs the kernel's test at the candidate floor, then S >= t in float64; on the
    fallback CLKs Dice >= t; solved, links scored as a clk-mode run scores them."""
    split = fallback.Split.of(datasets, fallback_bits)
    parts = []
    for batch in proposed:
        first = batch.clk == twoserver.RECORD
        clks = split.first if first else split.second
        floor = rule.candidate_floor(THRESHOLD) if first else THRESHOLD
        _, keep = dice_pairs(
            clks[batch.member_a], clks[batch.member_b], batch.rows_a, batch.rows_b, floor
        )
        n = len(batch.rows_a[keep])
        found = Candidates(
            np.zeros(n), np.full(n, batch.member_a, np.uint32),
            np.full(n, batch.member_b, np.uint32), batch.rows_a[keep], batch.rows_b[keep],
        )  # fmt: skip
        scores = fallback.pair_scores(split, found.dset0, found.rec0, found.dset1, found.rec1,
                                      rule=rule if first else NO_RULE)  # fmt: skip
        ok = np.flatnonzero(scores >= THRESHOLD)
        parts.append(Candidates(scores[ok], found.dset0[ok], found.dset1[ok], found.rec0[ok],
                                found.rec1[ok]))  # fmt: skip
    groups = solve(merge(parts))
    return links_from_groups(
        groups, datasets, lambda *p: fallback.pair_scores(split, *p, rule=rule)
    )


def _bucket(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    cuts = np.array([0.0, *twoserver.Combiner(None, THRESHOLD, clks=2).cutoffs])
    out: npt.NDArray[np.float64] = cuts[np.searchsorted(cuts, scores, side="right") - 1]
    return out


def _same(got: Links, want: Links) -> None:
    for name in ("dset", "row", "partner", "partner_row"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.array_equal(got.score, _bucket(want.score))


def test_under_the_default_rule_the_link_bits_links_are_the_clk_mode_runs_on_the_proposal(
    messy_members: tuple[list[Clks], int],
) -> None:
    """C as deployed (no popcount), the rule's circuit on the first CLKs' pairs, the kernel's
    on the fallback's: the links are a clk-mode run's under the rule on the pairs S1 proposed,
    scored by bucket of S (D2 on the fallback); and the rule changes links."""
    datasets, fallback_bits = messy_members
    s1, s2, _ = _servers(datasets, fallback_bits, client.BandPlan(bits=20, bands=30))
    servers = tworun.InProcess(s1, s2)
    got = tworun.drive(servers, twoserver.Combiner(None, THRESHOLD, clks=2, rule=DEFAULT))
    assert servers.proposal is not None
    proposed = servers.proposal.parts
    want = clk_mode_on(proposed, datasets, fallback_bits, DEFAULT)
    assert got.method == "two-server+fallback" and len(want) > 300
    _same(got.links, want)
    plain = clk_mode_on(proposed, datasets, fallback_bits, NO_RULE)
    assert not np.array_equal(_bucket(plain.score), _bucket(want.score))


@pytest.mark.parametrize("rule", [DEFAULT, NO_RULE])
def test_where_blocking_proposes_every_candidate_the_links_are_the_exhaustive_clk_runs(
    messy_members: tuple[list[Clks], int], rule: Rule
) -> None:
    """The first 300 records of each member, blocking that proposes every pair at the
    candidate floor (4 bits x 40 bands): the two-server links under the rule (or none) are
    the exhaustive clk-mode run's, their scores the buckets of its scores."""
    datasets, fallback_bits = messy_members
    datasets = [d[:300] for d in datasets]
    s1, s2, _ = _servers(datasets, fallback_bits, client.BandPlan(bits=4, bands=40))
    got = tworun.run(s1, s2, twoserver.Combiner(None, THRESHOLD, clks=2, rule=rule))
    want = match(datasets, THRESHOLD, workers=1, blocking="exhaustive",
                 fallback_bits=fallback_bits, rule=rule)  # fmt: skip
    assert len(want.links) > 100
    _same(got.links, want.links)


def test_the_rule_needs_link_bits_and_a_fallback_clk() -> None:
    with pytest.raises(ValueError, match="gap rule"):
        twoserver.Combiner(None, THRESHOLD, clks=1, rule=DEFAULT)
    with pytest.raises(ValueError, match="gap rule"):
        twoserver.Combiner([[np.zeros(1, np.int64)] * 2], THRESHOLD, reveal="dice", rule=DEFAULT)
