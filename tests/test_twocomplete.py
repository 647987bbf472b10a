"""A two-server run completes the solver's groups as a CLK run does (core/twocomplete.py,
core/proposal.py `check_reach`; docs/evaluation.md "Completing groups")."""

from __future__ import annotations

import secrets

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import linkbit, proposal, tworun, twoserver
from blindmatch.matcher.core.solve import Links
from blindmatch.matcher.core.twoviews import role_views
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.usecases.runs import match
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import MESSY_SECRET, auth, in_process_servers

THRESHOLD = 0.8
BITS, ONES = 1024, 400
Clks = npt.NDArray[np.uint8]


def _moved(rng: np.random.Generator, base: npt.NDArray[np.bool_], free: list[int],
           k: int) -> npt.NDArray[np.bool_]:  # fmt: skip
    """`base` with k of its bits moved to k bits no other record of its subject moved to."""
    out = base.copy()
    out[rng.choice(np.flatnonzero(base), k, replace=False)] = False
    out[[free.pop() for _ in range(k)]] = True
    return out


def subjects(seed: int = 7, others: int = 150) -> list[Clks]:
    """Three members' CLKs: `others` unrelated records each, then subjects held by all three
    whose A-B pair scores 0.90 and A-C 0.86 (a bridge), so B-C scores 0.76: the greedy solver
    pairs A and B and leaves C out; completion joins C (B-C reaches 0.70)."""
    rng = np.random.default_rng(seed)
    members: list[list[npt.NDArray[np.bool_]]] = [[], [], []]
    for m in members:
        for _ in range(others):
            row = np.zeros(BITS, bool)
            row[rng.choice(BITS, ONES, replace=False)] = True
            m.append(row)
    for _ in range(3):
        a = np.zeros(BITS, bool)
        a[rng.choice(BITS, ONES, replace=False)] = True
        free = rng.permutation(np.flatnonzero(~a)).tolist()
        b = _moved(rng, a, free, 40)  # Dice 0.90 with a
        c = a.copy()  # moves bits b kept: b-c = 1 - 0.10 - 0.14
        c[rng.choice(np.flatnonzero(a & b), 56, replace=False)] = False
        c[[free.pop() for _ in range(56)]] = True
        for m, row in zip(members, (a, b, c), strict=True):
            m.insert(int(rng.integers(len(m) + 1)), row)
    return [np.packbits(np.array(m), axis=1, bitorder="little") for m in members]


def pairs_of(links: Links) -> set[tuple[int, int, int, int]]:
    return set(zip(links.dset.tolist(), links.row.tolist(), links.partner.tolist(),
                   links.partner_row.tolist(), strict=True))  # fmt: skip


def two_server(datasets: list[Clks], **combiner: object) -> tworun.TwoServerResult:
    plan = client.BandPlan(bits=4, bands=40)  # proposes every pair at or above 0.8
    uploads = [client.shared_upload(d, MESSY_SECRET, plan) for d in datasets]
    s1, s2 = in_process_servers(uploads, lacking=False)  # one CLK
    pops = [u.combiner.popcounts for u in uploads]
    return tworun.run(s1, s2, twoserver.Combiner(pops, THRESHOLD, **combiner))  # type: ignore[arg-type]


def test_a_two_server_run_completes_the_groups_a_clk_run_completes() -> None:
    datasets = subjects()
    clk = match(datasets, THRESHOLD, workers=1, blocking="exhaustive")
    got = two_server(datasets)
    # Each subject's three records are one group in the CLK run: 3 x 6 ordered links.
    assert len(clk.links) == 18
    assert pairs_of(got.links) == pairs_of(clk.links)
    assert got.completion["joins made"] == 3
    assert got.completion["pairs asked"] == 3  # each B-C pair, once, at the reach
    # Without completion the run leaves each C out, as the greedy solver does.
    before = two_server(datasets, complete=False)
    assert len(before.links) == 6 and pairs_of(before.links) < pairs_of(clk.links)
    assert before.completion == {}


def test_without_buckets_a_two_server_run_does_not_complete() -> None:
    got = two_server(subjects(), buckets=())
    assert len(got.links) == 6 and got.completion == {}


def test_s1_asks_a_pair_at_the_reach_cut_off_only_within_what_a_join_can_hold() -> None:
    """core/proposal.py `check_reach` on three members: both records in proposed pairs, each
    record in one reach pair a member over the run (so each pair once), the run's cut-offs
    with buckets, three members or more; with a fallback CLK the other CLK answered 0."""
    rows = np.arange(4, dtype=np.uint32)
    proposed = [twoserver.PairBatch(0, 1, twoserver.RECORD, rows[:3], rows[:3]),
                twoserver.PairBatch(1, 2, twoserver.RECORD, rows[:3], rows[:3])]  # fmt: skip
    names = ["north", "south", "west"]
    cuts = (0.8, *twoserver.default_buckets(0.8))
    p = proposal.Proposal(names, [4, 4, 4], proposed, cuts, None)
    assert p.reach == 0.7 and twoserver.bridge_cutoff(cuts) == 0.85
    one, two = np.array([1], np.uint32), np.array([2], np.uint32)
    # A proposed pair (north 1, south 1) decided under the threshold, re-asked at the reach.
    checked = p.check_reach("south", "north", 0, one, one, cuts)
    assert checked.extras == 1 and not checked.proposed.any()
    p.commit_reach(checked)
    with pytest.raises(proposal.Refused, match=r"rows_a/rows_b: .* asked at the reach cut-off"):
        p.check_reach("north", "south", 0, one, one, cuts)
    with pytest.raises(proposal.Refused, match=r"rows_a/rows_b: .* two reach pairs with one"):
        p.check_reach("north", "south", 0, one, two, cuts)  # north 1 with a second south
    with pytest.raises(proposal.Refused, match=r"rows_a/rows_b: .* two reach pairs with one"):
        p.check_reach("north", "west", 0, np.array([0, 0], np.uint32), rows[:2], cuts)
    with pytest.raises(proposal.Refused, match="with a record in no proposed pair"):
        p.check_reach("north", "west", 0, np.array([3], np.uint32), one, cuts)
    with pytest.raises(proposal.Refused, match=r"cutoffs: \[0.7\], but the run's are"):
        p.check_reach("north", "west", 0, one, one, (0.7,))
    fine = p.check_reach("north", "west", 0, one, one, cuts)  # another member: its own bound
    assert fine.extras == 1
    with pytest.raises(proposal.Refused, match="reach: the run has no reach cut-off"):
        proposal.Proposal(names, [4, 4, 4], proposed, (0.8,), None).check_reach(
            "north", "west", 0, one, one, (0.8,)
        )
    with pytest.raises(proposal.Refused, match="reach: a run of two members"):
        proposal.Proposal(names[:2], [4, 4], proposed[:1], cuts, None).check_reach(
            "north", "south", 0, one, one, cuts
        )
    # With a fallback CLK, a pair named on the CLK it is not scored by is answered 0 and
    # counts for nothing.
    lacking = [np.array([False, True, False, False])] * 3
    p = proposal.Proposal(names, [4, 4, 4], proposed, cuts, lacking)
    both = np.array([0, 1], np.uint32)
    on_record = p.check_reach("north", "west", 0, both, both, cuts)
    assert on_record.proposed.tolist() == [False, True] and on_record.extras == 1
    p.commit_reach(on_record)
    on_fallback = p.check_reach("north", "west", 1, both, both, cuts)
    assert on_fallback.proposed.tolist() == [True, False] and on_fallback.extras == 1


def test_the_reach_cut_off_is_a_constant_of_the_threshold() -> None:
    assert twoserver.reach_cutoff((0.8, 0.85, 0.9, 0.95)) == 0.7
    assert twoserver.reach_cutoff((0.7, *twoserver.default_buckets(0.7))) == 0.6
    assert twoserver.bridge_cutoff((0.7, *twoserver.default_buckets(0.7))) == 0.775
    assert twoserver.reach_cutoff((0.8,)) is None  # no buckets: no bridge, no completion
    assert twoserver.reach_cutoff((0.95, *twoserver.default_buckets(0.95))) is None


NAMES = ("north", "south", "west")
MEMBER_KEY = "the members' key"


@pytest.mark.server
def test_over_grpc_the_run_completes_and_s1_refuses_a_reach_pair_asked_again() -> None:
    """The deployed roles (matcher/rpc/twoserver_service.py): the run's links are the CLK
    run's, completed; a combiner asking one of the run's reach pairs again is refused by S1
    (PERMISSION_DENIED naming rows_a/rows_b), and S1 and S2 each counted each reach pair; S1
    keeps them past the run (its per-upload cap)."""
    datasets = subjects()
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    c = create_role("combiner", "127.0.0.1:0", key, MEMBER_KEY, s1=f"127.0.0.1:{s1.port}",
                    s2=f"127.0.0.1:{s2.port}")  # fmt: skip
    roles = {"s1": s1, "s2": s2, "combiner": c}
    channel = grpc.insecure_channel(f"127.0.0.1:{s1.port}")
    try:
        plan = client.BandPlan(bits=4, bands=40)
        for name, d in zip(NAMES, datasets, strict=True):
            up = client.shared_upload(d, MESSY_SECRET, plan)
            for role, running in roles.items():
                with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as rc:
                    rc.upload(name, up)
        with RoleClient("combiner", f"127.0.0.1:{c.port}", key) as rc:
            got = rc.run(THRESHOLD, NAMES)
        clk = match(datasets, THRESHOLD, workers=1, blocking="exhaustive")
        assert len(clk.links) == 18
        assert set(zip(got.dset.tolist(), got.row.tolist(), got.partner.tolist(),
                       got.partner_row.tolist(), strict=True)) == pairs_of(clk.links)  # fmt: skip
        proposal_ = s1.service.proposal
        assert proposal_ is not None and proposal_.reached == 3
        (south, west), (by_south, _) = next(iter(proposal_._reach_rows.items()))
        assert (NAMES[south], NAMES[west]) == ("south", "west")
        row_b, row_c = next(iter(by_south.items()))
        circuit = linkbit.circuit(1024, (0.7,))
        dealt = linkbit.deal(circuit, 1)
        again = pb.CircuitBatch(
            batch="again", member_a="south", member_b="west", records_a=153, records_b=153,
            rows_a=np.array([row_b], "<u4").tobytes(), rows_b=np.array([row_c], "<u4").tobytes(),
            cutoffs=[0.8, *twoserver.default_buckets(0.8)], setup=dealt.to_s1, reach=True,
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.TwoServerBlockingStub(channel).Evaluate(again, metadata=auth(key))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "rows_a/rows_b: 1 of the batch's 1 pairs at the reach cut-off" in str(
            refused.value.details()
        )
        assert "asked at the reach cut-off already" in str(refused.value.details())
        # S1's per-upload cap (core/rowledger.py): the run's reach pairs are in S1's ledger,
        # which outlives the proposal, so a later run over the same uploads has a second
        # partner of the record answered 0, not evaluated
        ledger = s1.service.proposals.rows
        assert proposal_.ledger is ledger
        other = np.array([(row_c + 1) % 153], np.uint32)
        assert ledger.capped("south", "west", "reach", np.array([row_b], np.uint32), other,
                             "a later run").tolist() == [True]  # fmt: skip
    finally:
        channel.close()
        for role in roles.values():
            role.stop(grace=None)


def test_cs_view_in_the_privacy_check_holds_the_reach_bits_it_learned() -> None:
    """matcher/core/twoviews.py `role_views`, which privacy-check --mode two-server attacks:
    with the subjects' B records as member 0 and C records as member 1, C learns nothing of
    their pairs in a run of the two (0.76: no link); with the A records as a third member it
    learns each B-C pair's reach bit (valued at the reach cut-off, 0.7) and nothing else."""
    a, b, c = (client.shared_upload(d, MESSY_SECRET, client.BandPlan(bits=4, bands=40))
               for d in subjects())  # fmt: skip
    assert len(role_views([b, c], THRESHOLD)["C"][0]) == 0
    pairs, values = role_views([b, c, a], THRESHOLD)["C"]
    assert len(pairs) == 3 and (values == 0.7).all()
