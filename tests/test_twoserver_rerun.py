"""A second two-server run over partly the same uploads (core/outcomes.py): the combiner
reuses what it learned of each pair of unchanged uploads, S1 proposes parts only for the
pairs of members with a new or changed upload, and the links are those of a run where every
member uploaded again, without S1 and S2 evaluating any pair twice (their pair budget,
core/pairbudget.py, would refuse it)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import linkbit, tworun, twoserver
from blindmatch.matcher.core.outcomes import Earlier, Outcome
from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.core.twoserver import PairBatch
from tests.support import MESSY_SECRET, in_process_servers

THRESHOLD = 0.8
PLAN = client.BandPlan(bits=20, bands=30)
Clks = npt.NDArray[np.uint8]


class Budgeted(tworun.InProcess):
    """S1 and S2 in this process, with the pair budget S1 and S2 keep over gRPC (by upload
    name, across runs): a pair evaluated twice since its uploads is refused."""

    def __init__(self, uploads: list[client.SharedUpload], names: list[str],
                 budget: PairBudget) -> None:  # fmt: skip
        super().__init__(*in_process_servers(uploads))
        self.names, self.budget = names, budget
        self.evaluated = 0

    def _run(self, part: PairBatch, circuit: linkbit.Circuit, dealt: linkbit.Deal,
             transcript: linkbit.Transcript, clock: dict[str, float], tagged: bool,
             drop: npt.NDArray[np.bool_] | None) -> tuple[bytes, bytes]:  # fmt: skip
        keep = np.ones(len(part), bool) if drop is None else ~drop
        a, b = self.names[part.member_a], self.names[part.member_b]
        if self.budget.spend(a, b, part.rows_a[keep], part.rows_b[keep]):
            raise ValueError(f"S1 refuses: a pair of {a} x {b} evaluated twice")
        self.evaluated += int(keep.sum())
        return super()._run(part, circuit, dealt, transcript, clock, tagged, drop)


@pytest.fixture(scope="module")
def members(messy_members: tuple[list[Clks], int]) -> dict[str, client.SharedUpload]:
    """Four members' uploads (a fourth holding some of the first's people, reordered) and
    the second member's changed upload (a fifth of its records left out)."""
    datasets, fallback_bits = messy_members
    fourth = datasets[0][np.random.default_rng(3).permutation(len(datasets[0]))[:600]]
    changed = datasets[1][: 4 * len(datasets[1]) // 5]
    clks = {"a": datasets[0], "b": datasets[1], "c": datasets[2], "d": fourth, "b2": changed}
    return {n: client.shared_upload(d, MESSY_SECRET, PLAN, fallback_bits) for n, d in clks.items()}


def run(
    members: dict[str, client.SharedUpload],
    names: list[str],
    budget: PairBudget,
    earlier: dict[tuple[str, str], Outcome] | None = None,
) -> tuple[tworun.TwoServerResult, Budgeted]:
    """A run over `names`' uploads reusing the `earlier` outcomes of pairs of them."""
    servers = Budgeted([members[n] for n in names], names, budget)
    reuse = {(i, j): earlier[a, b] for i, a in enumerate(names) for j, b in enumerate(names)
             if i < j and (a, b) in (earlier or {})}  # fmt: skip
    combiner = twoserver.Combiner(None, THRESHOLD, clks=2)
    got = tworun.drive(servers, combiner, earlier=Earlier(len(names), reuse))
    return got, servers


def by_name(result: tworun.TwoServerResult, names: list[str]) -> dict[tuple[str, str], Outcome]:
    return {(names[i], names[j]): o for (i, j), o in result.outcomes.items()}


def links(
    result: tworun.TwoServerResult, names: list[str]
) -> set[tuple[str, int, str, int, float]]:
    """The links, members by name, with their scores (the buckets' lower ends)."""
    got = result.links
    return {(names[d], int(r), names[p], int(q), float(s)) for d, r, p, q, s in zip(
        got.dset, got.row, got.partner, got.partner_row, got.score, strict=True)}  # fmt: skip


def test_a_member_joining_is_matched_against_the_others_outcomes_as_a_fresh_run(
    members: dict[str, client.SharedUpload],
) -> None:
    budget = PairBudget()
    first, _ = run(members, ["a", "b", "c"], budget)
    assert set(first.outcomes) == {(0, 1), (0, 2), (1, 2)}
    # "d" joins: only its pairs go through S1's proposal and the circuit.
    second, servers = run(members, ["a", "b", "c", "d"], budget, by_name(first, ["a", "b", "c"]))
    assert {(p.member_a, p.member_b) for p in second.proposed} <= {(0, 3), (1, 3), (2, 3)}
    fresh, everyone = run(members, ["a", "b", "c", "d"], PairBudget())
    assert links(second, ["a", "b", "c", "d"]) == links(fresh, ["a", "b", "c", "d"])
    assert len(fresh.links) > 1000 and fresh.groups == second.groups
    assert 0 < servers.evaluated < everyone.evaluated
    # The second run's outcomes are the fresh run's, pair by pair: a third run reuses them.
    for pair, outcome in fresh.outcomes.items():
        got = second.outcomes[pair]
        for part in ("candidates", "scored"):
            want_keys, want_scores = getattr(outcome, part)
            keys, scores = getattr(got, part)
            known = np.isin(want_keys, keys)
            assert known.all() or part == "scored", pair
            at = np.searchsorted(keys, want_keys[known])
            assert np.array_equal(scores[at], want_scores[known]), (pair, part)
    third, servers = run(members, ["a", "b", "c", "d"], budget, by_name(second, list("abcd")))
    assert links(third, list("abcd")) == links(fresh, list("abcd"))
    assert servers.evaluated == 0 and third.comparisons == 0


def test_a_changed_upload_has_its_pairs_evaluated_again_and_the_others_reused(
    members: dict[str, client.SharedUpload],
) -> None:
    budget = PairBudget()
    first, _ = run(members, ["a", "b", "c"], budget)
    kept = {k: o for k, o in by_name(first, ["a", "b", "c"]).items() if "b" not in k}
    second, _ = run(members, ["a", "b2", "c"], budget, kept)
    assert {(p.member_a, p.member_b) for p in second.proposed} == {(0, 1), (1, 2)}
    fresh, _ = run(members, ["a", "b2", "c"], PairBudget())
    assert links(second, ["a", "b2", "c"]) == links(fresh, ["a", "b2", "c"])


def test_without_reuse_the_second_run_is_refused_by_the_budget(
    members: dict[str, client.SharedUpload],
) -> None:
    budget = PairBudget()
    run(members, ["a", "b", "c"], budget)
    with pytest.raises(ValueError, match="evaluated twice"):
        run(members, ["a", "b", "c", "d"], budget)


def same(x: Outcome, y: Outcome) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(
        (*x.candidates, *x.scored), (*y.candidates, *y.scored), strict=True))  # fmt: skip


def test_an_outcome_keeps_its_pairs_through_bytes_and_either_order() -> None:
    keys = np.array([(5 << 32) | 7, (1 << 32) | 2], np.uint64)
    outcome = Outcome((np.sort(keys), np.array([0.9, 0.8])), (keys[:1], np.array([0.0])))
    assert same(Outcome.from_bytes(outcome.to_bytes()), outcome)
    assert same(outcome.flipped().flipped(), outcome)
    flipped = outcome.flipped().as_candidates(0, 1)
    got = zip(flipped.rec0.tolist(), flipped.rec1.tolist(), flipped.sims.tolist(), strict=True)
    assert sorted(got) == [(2, 1, 0.9), (7, 5, 0.8)]
    with pytest.raises(ValueError, match="bytes"):
        Outcome.from_bytes(outcome.to_bytes()[:-1])
