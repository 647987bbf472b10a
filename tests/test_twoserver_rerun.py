"""A second two-server run over partly the same uploads (core/outcomes.py): the combiner
reuses what it learned of each pair of unchanged uploads, S1 proposes parts only for the
pairs of members with a new or changed upload, and the links are those of a run where every
member uploaded again, without S1 and S2 evaluating any pair twice (their pair budget,
core/pairbudget.py, would refuse it)."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.twoserver_rerun import Budgeted, Budgets, rerun
from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import linkbit, tworun, twoserver
from blindmatch.matcher.core.outcomes import Earlier, Outcome
from blindmatch.matcher.core.proposal import Proposal, Refused
from blindmatch.matcher.core.twoserver import PairBatch
from blindmatch.matcher.errors import ServiceError
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from tests.support import MESSY_SECRET
from tests.test_twocomplete import pairs_of, subjects
from tests.test_twoserver_restart import NAMES as RESTART_NAMES
from tests.test_twoserver_restart import Roles

THRESHOLD = 0.8
PLAN = client.BandPlan(bits=20, bands=30)
Clks = npt.NDArray[np.uint8]


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
    budget: Budgets,
    earlier: dict[tuple[str, str], Outcome] | None = None,
) -> tuple[tworun.TwoServerResult, Budgeted]:
    """A run over `names`' uploads reusing the `earlier` outcomes of pairs of them, S1 and S2
    spending `budget` (by upload name)."""
    got, servers, _ = rerun(members, names, budget, earlier)
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
    budget = Budgets()
    first, _ = run(members, ["a", "b", "c"], budget)
    assert set(first.outcomes) == {(0, 1), (0, 2), (1, 2)}
    # "d" joins: only its pairs go through S1's proposal and the circuit.
    second, servers = run(members, ["a", "b", "c", "d"], budget, by_name(first, ["a", "b", "c"]))
    assert {(p.member_a, p.member_b) for p in second.proposed} <= {(0, 3), (1, 3), (2, 3)}
    fresh, everyone = run(members, ["a", "b", "c", "d"], Budgets())
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
    budget = Budgets()
    first, _ = run(members, ["a", "b", "c"], budget)
    kept = {k: o for k, o in by_name(first, ["a", "b", "c"]).items() if "b" not in k}
    second, _ = run(members, ["a", "b2", "c"], budget, kept)
    assert {(p.member_a, p.member_b) for p in second.proposed} == {(0, 1), (1, 2)}
    fresh, _ = run(members, ["a", "b2", "c"], Budgets())
    assert links(second, ["a", "b2", "c"]) == links(fresh, ["a", "b2", "c"])


def test_without_reuse_the_second_run_is_refused_by_the_budget(
    members: dict[str, client.SharedUpload],
) -> None:
    budget = Budgets()
    run(members, ["a", "b", "c"], budget)
    with pytest.raises(ValueError, match="evaluated twice"):
        run(members, ["a", "b", "c", "d"], budget)


def test_completion_reuses_the_reach_bits_of_unchanged_uploads_and_asks_the_rest_once() -> None:
    """The fixture of tests/test_twocomplete.py (A-B 0.90, A-C 0.86, B-C 0.76: completion
    joins C through a B-C pair at the reach cut-off). A uploads again: B x C's outcome,
    reach bits included, is reused (S1 and S2 give a reach bit once an upload: asking it again
    would be refused), A's pairs are evaluated again; the links are a fresh run's."""
    plan = client.BandPlan(bits=4, bands=40)
    datasets = subjects()
    ups = {n: client.shared_upload(d, MESSY_SECRET, plan)
           for n, d in zip(("A", "B", "C"), datasets, strict=True)}  # fmt: skip
    ups["A2"] = client.shared_upload(datasets[0], MESSY_SECRET, plan)
    budget = Budgets()
    first, servers, outcomes = rerun(ups, ["A", "B", "C"], budget, clks=1)
    assert first.completion["joins made"] > 0 and servers.reached > 0
    assert len(outcomes["B", "C"].reached[0]) == servers.reached
    kept = {k: o for k, o in outcomes.items() if "A" not in k}
    second, servers, _ = rerun(ups, ["A2", "B", "C"], budget, kept, clks=1)
    assert servers.reached == 0  # every reach pair was B x C's, reused
    fresh, _, _ = rerun(ups, ["A2", "B", "C"], Budgets(), clks=1)
    assert links(second, ["A", "B", "C"]) == links(fresh, ["A", "B", "C"])
    assert second.completion == fresh.completion


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


def test_s1_blocks_a_reused_pair_of_members_only_when_c_names_an_extra_of_its_members() -> None:
    """S1's proposal for a run where C reuses north x south (members 0 and 1): no part of
    it, and its pairs blocked (`later`) only at the first extra naming north or south; a pair
    blocking proposed there is then answered 0 (never evaluated again), a record in no
    proposed pair is refused."""
    rows = np.array([0, 1], np.uint32)
    now = [PairBatch(0, 2, 0, rows, rows), PairBatch(1, 2, 0, rows, rows)]
    blocked: list[set[tuple[int, int]]] = []

    def later(pairs: set[tuple[int, int]]) -> list[PairBatch]:
        blocked.append(pairs)
        return [PairBatch(0, 1, 0, np.array([0, 5], np.uint32), np.array([1, 5], np.uint32))]

    made = Proposal(["north", "south", "west"], [8, 8, 8], now, (0.8,), None,
                    only={(0, 2), (1, 2)}, later=later)  # fmt: skip
    assert [(p.member_a, p.member_b) for p in made.described()] == [(0, 2), (1, 2)]
    assert not blocked
    checked = made.check("north", "south", 0, np.array([0, 1], np.uint32),
                         np.array([1, 0], np.uint32), (0.8,))  # fmt: skip
    assert blocked == [{(0, 1)}]
    assert checked.proposed.tolist() == [True, False] and checked.extras == 1
    with pytest.raises(Refused, match="a record in no proposed pair"):
        made.check("north", "south", 0, np.array([7], np.uint32), np.array([1], np.uint32),
                   (0.8,))  # fmt: skip
    assert blocked == [{(0, 1)}]  # once


def test_over_grpc_s1_blocks_a_reused_pair_only_for_an_extra_and_answers_its_proposed_pairs_0(
    tmp_path: Path, members: dict[str, client.SharedUpload]
) -> None:
    """S1 and S2 as gRPC services (their budget on disk): a first run over three uploads; then
    a proposal where C reuses every pair of members (no part), and C names north x south pairs
    as extras (four pairs that linked in the first run, and four pairs across them, as inside
    groups spanning the three). S1 blocks north x south then (S2 expands once more: without
    it every record would be in no proposed pair, refused), answers 0 the pairs it proposed
    (not evaluated again: the budget would refuse them) and evaluates the others once; the
    same batch again is refused."""
    roles = Roles(tmp_path, secrets.token_urlsafe(16))
    try:
        ups = [members[n] for n in ("a", "b", "c")]
        for name, up in zip(RESTART_NAMES, ups, strict=True):
            roles.send(name, up)
        s1, s2 = (f"127.0.0.1:{roles.running[r].port}" for r in ("s1", "s2"))
        bits = [8 * s.shape[1] for s in ups[0].s1.shares]
        combiner = twoserver.Combiner(None, THRESHOLD, clks=2)

        def servers() -> RemoteServers:
            return RemoteServers(s1, s2, roles.key, list(RESTART_NAMES), [len(u) for u in ups],
                                 bits)  # fmt: skip

        first = tworun.drive(servers(), combiner, earlier=Earlier(3))
        budget = roles.running["s1"].service.budget
        spent, expanded = budget.pairs(), len(roles.entries("s2", "twoserver.expand"))
        linked = first.outcomes[0, 1].candidates[0][:4]
        assert len(linked) == 4
        rows_a = (linked >> np.uint64(32)).astype(np.uint32)
        rows_b = (linked & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        named_a, named_b = (
            np.concatenate([rows_a, rows_a]),
            np.concatenate([rows_b, np.roll(rows_b, 1)]),
        )
        again = servers()
        assert again.propose(None, combiner.cutoffs, combiner.rule, only=[]) == []
        got = [tworun.link_bits(again, combiner, PairBatch(0, 1, clk, named_a, named_b),
                                linkbit.Transcript(), {}) for clk in (0, 1)]  # fmt: skip
        assert not any(bits[:, :4].any() for bits in got)  # linked, so proposed: answered 0
        assert len(roles.entries("s2", "twoserver.expand")) == expanded + 2
        assert budget.pairs() - spent == 4  # the four across, once (on the CLK that scores them)
        with pytest.raises(ServiceError, match="a record in two extra pairs with one member"):
            tworun.link_bits(again, combiner, PairBatch(0, 1, 0, named_a, named_b),
                             linkbit.Transcript(), {})  # fmt: skip
        again.close()
    finally:
        roles.stop()


def test_over_grpc_completion_reuses_reach_bits_and_s1_logs_its_reach_batches(
    tmp_path: Path,
) -> None:
    """test_completion_reuses_... over gRPC, S1 and S2 with data dirs (their audit logs): the
    first run's reach batches are logged at S1 (`twoserver.reach`); after A uploads again, the
    run asks none of B x C's reach pairs again (S1 would refuse them) and gives a fresh run's
    links."""
    plan = client.BandPlan(bits=4, bands=40)
    datasets = subjects()
    roles = Roles(tmp_path, secrets.token_urlsafe(16))
    try:
        for name, d in zip(RESTART_NAMES, datasets, strict=True):
            roles.send(name, client.shared_upload(d, MESSY_SECRET, plan))
        s1, s2 = (f"127.0.0.1:{roles.running[r].port}" for r in ("s1", "s2"))
        combiner = twoserver.Combiner(None, THRESHOLD, clks=1)
        records, bits = [len(d) for d in datasets], [8 * datasets[0].shape[1]]

        def drive(earlier: Earlier) -> tworun.TwoServerResult:
            servers = RemoteServers(s1, s2, roles.key, list(RESTART_NAMES), records, bits)
            try:
                return tworun.drive(servers, combiner, earlier=earlier)
            finally:
                servers.close()

        first = drive(Earlier(3))
        assert first.completion["pairs asked"] > 0
        assert roles.entries("s1", "twoserver.reach")
        roles.send("north", client.shared_upload(datasets[0], MESSY_SECRET, plan))
        kept = {k: o for k, o in first.outcomes.items() if 0 not in k}
        second = drive(Earlier(3, kept))
        assert second.completion == first.completion
        assert pairs_of(second.links) == pairs_of(first.links)
    finally:
        roles.stop()
