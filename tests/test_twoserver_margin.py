"""A two-server run's unblocked parts by the rule's margin (core/tworun.py `_dense`,
core/densemargin.py), in process (core/twoinprocess.py) and over gRPC on loopback
(rpc/twoserver_margin.py, core/marginrounds.py): the links and buckets of the same run by
core/gmwsum.py's circuit on the blocks and by pairs, with fewer bytes between S1 and S2; a
run's pairs at the rule's edges as the rule in the clear; a combiner dealing a record's
popcount or a batch's values wrong is refused before any output, naming the dealer (and
audited by S1 and S2 over gRPC)."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing
from blindmatch.matcher import errors
from blindmatch.matcher.core import (
    densearith,
    denseblock,
    densemargin,
    linkbit,
    ring64,
    ruleform,
    tworun,
    twoserver,
)
from blindmatch.matcher.core.margincircuit import Plan, plan
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_blocks import largest_batch
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_margin import margin_batch
from blindmatch.matcher.rpc.twoserver_service import RunningRole
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import MESSY_SECRET, in_process_servers
from tests.test_densearith import DEFAULT
from tests.test_densemargin import _edges, _off
from tests.test_twoserver import assert_same_links
from tests.test_twoserver_blocks import (  # noqa: F401 (fixtures)
    KEY,
    NAMES,
    RULE,
    SIZES,
    THRESHOLD,
    entries,
    every_part_by_blocks,
    roles,
    upload,
    uploads,
)

# These tests' parts are small, which core/partpath.py's rule takes by pairs: forced by blocks.
pytestmark = pytest.mark.usefixtures("every_part_by_blocks")
Bits = npt.NDArray[np.bool_]
Clks = npt.NDArray[np.uint8]
Uploads = list[sharing.SharedUpload]


def _uploads(messy_members: tuple[list[Clks], int], sizes: tuple[int, int]) -> Uploads:
    datasets, fallback_bits = messy_members
    plan = sharing.BandPlan(bits=20, bands=30)
    return [sharing.shared_upload(d[:n], MESSY_SECRET, plan, fallback_bits)
            for d, n in zip(datasets, sizes, strict=False)]  # fmt: skip


def _drive(shared: Uploads, mode: str, rule: Rule,
           cutoffs: tuple[float, ...] = (0.8,)) -> tworun.TwoServerResult:  # fmt: skip
    """The run in process, every pair unblocked: `mode` "margin", "gmwsum" (its blocks by
    the boolean circuit on the H shares) or "pairs"."""
    s1, s2 = in_process_servers(shared)
    s1.exhaustive = 10**9
    servers = tworun.InProcess(s1, s2)
    servers.dense, servers.margin = mode != "pairs", mode == "margin"
    combiner = twoserver.Combiner(None, cutoffs[0], clks=2, rule=rule, buckets=cutoffs[1:])
    return tworun.drive(servers, combiner)


@pytest.mark.parametrize("rule", [DEFAULT, Rule(0.3, 0.05, 0.0)])
def test_an_unblocked_run_by_the_margin_has_the_links_of_the_circuit_and_of_pairs(
    messy_members: tuple[list[Clks], int], rule: Rule
) -> None:
    """150 x 120 records, every pair, at four cut-offs (0.6 and its buckets): the same links and
    buckets by the margin as by gmwsum's circuit on the blocks and by pairs, and fewer bytes
    from S1 to S2 than gmwsum's (the margin was run: on the old code both were gmwsum's)."""
    shared = _uploads(messy_members, (150, 120))
    cutoffs = (0.6, 0.7, 0.8, 0.9)
    runs = {mode: _drive(shared, mode, rule, cutoffs) for mode in ("margin", "gmwsum", "pairs")}
    assert len(runs["margin"].links) > 20
    assert len(set(runs["margin"].links.score.tolist())) > 1  # more than one bucket
    for other in ("gmwsum", "pairs"):
        assert runs[other].comparisons == runs["margin"].comparisons == 150 * 120
        assert_same_links(runs["margin"].links, runs[other].links)
    sent = {mode: r.transcript.sent[("S1", "S2")] for mode, r in runs.items()}
    assert sent["margin"] < 0.8 * sent["gmwsum"]


def _dishonest(monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """C dealing a record's popcount daBit off (`pops_deal`), or a product of a batch's
    margin off (`deal`)."""
    if what == "popcount":
        honest_pops = densemargin.pops_deal

        def dishonest_pops(p: object, records: int, seeds: object = None) -> ring64.Deal:
            d = honest_pops(p, records)  # type: ignore[arg-type]
            return ring64.Deal(d.to_s1, _off(d.to_s2, d.size.dabits + 5, 2), d.size)

        monkeypatch.setattr(densemargin, "pops_deal", dishonest_pops)
    else:
        honest = densemargin.deal

        def dishonest(p: Plan, pairs: int) -> densemargin.Deal:
            d = honest(p, pairs)
            word = linkbit.dealt_rows(p.second) * linkbit.words_for(pairs) + 4
            return densemargin.Deal(d.to_s1, _off(d.to_s2, word + 7, 1), pairs)

        monkeypatch.setattr(densemargin, "deal", dishonest)


@pytest.mark.parametrize("what", ["popcount", "batch"])
def test_a_combiner_dealing_the_margin_wrong_in_a_run_is_refused_naming_the_dealer(
    messy_members: tuple[list[Clks], int], monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """A record's popcount daBit off (`pops_deal`), or a product of a batch's margin off
    (`deal`): S1 and S2 refuse the part before any output share goes to C."""
    _dishonest(monkeypatch, what)
    outputs = []
    real_output = densemargin.Side.output

    def output(self: densemargin.Side, *args: object) -> bytes:
        outputs.append(self.role)
        return real_output(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(densemargin.Side, "output", output)
    with pytest.raises(errors.PermissionDenied, match="dealer"):
        _drive(_uploads(messy_members, (24, 40)), "margin", DEFAULT)
    assert not outputs


def _pair(pa: int, pb: int, h: int, n: int) -> tuple[Clks, Clks] | None:
    """Two n-bit CLKs of popcounts pa and pb, h bits apart (None where none are)."""
    both = pa + pb - h
    if both % 2 or not 0 <= both // 2 <= min(pa, pb) or pa + pb - both // 2 > n:
        return None
    a, b = np.zeros(n, bool), np.zeros(n, bool)
    a[:pa] = True
    b[: both // 2] = True
    b[pa : pa + pb - both // 2] = True
    return np.packbits(a), np.packbits(b)


class _Seen(tworun.InProcess):
    """S1 and S2 in process, keeping each margin batch's rows and the bits C reveals."""

    def __init__(self, s1: twoserver.BlockingServer, s2: twoserver.ShareServer) -> None:
        super().__init__(s1, s2)
        self.seen: list[tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32], Bits]] = []

    def _margin(self, part: twoserver.PairBatch, circuit: linkbit.Circuit,
                dealt: densemargin.Deal, transcript: linkbit.Transcript,
                clock: dict[str, float], outputs: Any) -> tuple[bytes, bytes]:  # fmt: skip
        o1, o2 = super()._margin(part, circuit, dealt, transcript, clock, outputs)
        bits = linkbit.reveal(circuit, o1, o2, len(part), tagged=True)[: circuit.n_outputs]
        self.seen.append((part.rows_a, part.rows_b, bits))
        return o1, o2


def test_a_runs_pairs_at_the_rules_edges_get_the_rule_in_the_clear() -> None:
    """Records made so that pair (i, i) sits at the rule's edges (tests/test_densemargin.py
    `_edges`: the floor test's bound +-1, the first cut-off's margin near 0, exact ties),
    every pair of A x B unblocked through a run by the margin: each pair's bits are the
    rule's in the clear (ruleform.py `rule_bounds`), ties at the cut-off included."""
    n, cutoffs = 1024, (0.8, 0.85)
    form = ruleform.integer_form(DEFAULT, cutoffs, n, n)
    made: list[list[Clks]] = [[], []]
    for pa1, pb1, h1, pa2, pb2, h2 in zip(*(c.tolist() for c in _edges(form, n, n, 2000)),
                                          strict=True):  # fmt: skip
        one, two = _pair(pa1, pb1, h1, n), _pair(pa2, pb2, h2, n)
        if one is not None and two is not None and len(made[0]) < 160:
            made[0].append(np.concatenate([one[0], two[0]]))
            made[1].append(np.concatenate([one[1], two[1]]))
    members = [np.vstack(m) for m in made]
    plan = sharing.BandPlan(bits=20, bands=30)
    shared = [sharing.shared_upload(m, MESSY_SECRET, plan, n) for m in members]
    s1, s2 = in_process_servers(shared, lacking=False)
    s1.exhaustive = 10**9
    servers = _Seen(s1, s2)
    tworun.drive(servers, twoserver.Combiner(None, 0.8, clks=2, rule=DEFAULT, buckets=(0.85,)))
    rows_a = np.concatenate([s[0] for s in servers.seen]).astype(np.intp)
    rows_b = np.concatenate([s[1] for s in servers.seen]).astype(np.intp)
    got = np.hstack([s[2] for s in servers.seen])
    assert len(rows_a) == len(members[0]) * len(members[1])  # every pair by the margin
    cols = []
    for clk in (0, 1):
        bits = [np.unpackbits(m[:, clk * n // 8 : (clk + 1) * n // 8], axis=1).astype(bool)
                for m in members]  # fmt: skip
        pops = [b.sum(axis=1) for b in bits]
        h = (bits[0][rows_a] != bits[1][rows_b]).sum(axis=1)
        cols += [pops[0][rows_a], pops[1][rows_b], h]
    want = ruleform.rule_bounds(form, n, *cols)
    ties = (ruleform.integer_margin(form, 0, *cols) == 0) & want[0]
    assert ties.sum() >= 5 and want[0].sum() > 50 and (~want[0]).sum() > 50
    assert (got == want).all()


def _over_grpc(running: dict[str, RunningRole], shared: Uploads,
               margin: bool) -> tworun.TwoServerResult:  # fmt: skip
    """tests/test_twoserver_blocks.py's run over S1 and S2 on loopback, by the margin or by
    gmwsum's circuit on the blocks; each member uploaded again first (a fresh pair budget)."""
    upload(running, shared)
    bits = [8 * int(x.shape[1]) for x in shared[0].s1.shares]
    servers = RemoteServers(f"127.0.0.1:{running['s1'].port}", f"127.0.0.1:{running['s2'].port}",
                            KEY, NAMES, list(SIZES), bits)  # fmt: skip
    servers.margin = margin
    try:
        return tworun.drive(servers, twoserver.Combiner(None, THRESHOLD, clks=2,
                                                        rule=Rule(*RULE)))  # fmt: skip
    finally:
        servers.close()


@pytest.mark.server
def test_the_margin_over_grpc_gives_gmwsums_links_with_fewer_bytes(
    tmp_path: Path,
    roles: dict[str, RunningRole],  # noqa: F811
    uploads: Uploads,  # noqa: F811
) -> None:
    """The record CLK's parts by the margin (BlockDeal.margin, CircuitBatch.margin: the
    popcounts converted in BlockExchange, each batch's rounds core/marginrounds.py's): the
    links and buckets of gmwsum's circuit on the same blocks, fewer bytes between S1 and S2
    (on the old code both runs were gmwsum's: the same bytes)."""
    got = _over_grpc(roles, uploads, margin=True)
    want = _over_grpc(roles, uploads, margin=False)
    assert len(want.links) > 20
    assert_same_links(got.links, want.links)
    assert got.comparisons == want.comparisons == 23_400
    between = [r.transcript.sent[("S1", "S2")] + r.transcript.sent[("S2", "S1")]
               for r in (got, want)]  # fmt: skip
    assert between[0] < 0.85 * between[1], between
    for role in ("s1", "s2"):
        assert not entries(tmp_path, role, "twoserver.deal")


@pytest.mark.server
@pytest.mark.parametrize("what", ["popcount", "batch"])
def test_a_combiner_dealing_the_margin_wrong_over_grpc_is_refused_and_audited(
    tmp_path: Path,
    roles: dict[str, RunningRole],  # noqa: F811
    uploads: Uploads,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    what: str,
) -> None:
    """A popcount daBit off (S1 and S2 refuse the part's blocks in BlockExchange) or a
    product of a batch's margin (they refuse the batch between its circuits): refused
    naming the dealer, a `twoserver.deal` entry at S1 and at S2, no output share to C."""
    _dishonest(monkeypatch, what)
    with pytest.raises(errors.PermissionDenied, match=r"the dealer \(the combiner\)") as refused:
        _over_grpc(roles, uploads, margin=True)
    assert ("part 0's blocks" in str(refused.value)) == (what == "popcount")
    for role in ("s1", "s2"):
        (deal,) = entries(tmp_path, role, "twoserver.deal")
        assert deal["members"] == ["north", "south"], role
        assert ("blocks" in deal) == (what == "popcount") and "mod 2^64" in str(deal["reason"])


def test_a_margin_batch_not_of_its_deals_size_or_not_the_proposals_is_refused() -> None:
    """S1's and S2's checks of a `CircuitBatch.margin` before any party is built: C's setup
    of the margin's size for the server (S1: three seeds), a batch of the proposal naming
    its blocks (a reach batch is not)."""
    m = pb.CircuitBatch(blocks="bk", proposed=True, count=10, clk=0, setup=bytes(31))
    with pytest.raises(
        errors.InvalidArgument, match="the margin: 31 bytes, S1's deal of 10 pairs is 96"
    ):
        margin_batch("s1", m, (1024, 1024), (0.8,), DEFAULT, 10)
    p = plan(1024, 1024, (0.8,), DEFAULT)
    m.setup = densemargin.deal(p, 10).to_s2
    assert margin_batch("s2", m, (1024, 1024), (0.8,), DEFAULT, 10) is p.second
    with pytest.raises(errors.InvalidArgument, match="S2's deal of 9 pairs is"):
        margin_batch("s2", m, (1024, 1024), (0.8,), DEFAULT, 9)
    m.reach = True
    with pytest.raises(errors.InvalidArgument, match="a batch of the proposal naming its blocks"):
        margin_batch("s2", m, (1024, 1024), (0.8,), DEFAULT, 10)


@pytest.mark.server
def test_the_combiner_holds_one_blocks_deal_at_a_time_over_grpc(
    roles: dict[str, RunningRole],  # noqa: F811
    uploads: Uploads,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parts cut into blocks of at most 32 rows (several a part): C makes each block's deal
    (and its popcounts') as S2's stream reaches it, once, and lets it go before the next
    (core/densearith.py `Lazy`); on the old code a part's deals were all made first."""
    monkeypatch.setattr(denseblock, "ROWS", 32)
    alive: weakref.WeakSet[densearith.BlockDeal] = weakref.WeakSet()
    made, most = [0], [0]
    honest = densearith.deal

    def watched(s: densearith.Shape, seeds: tuple[bytes, bytes] | None = None
                ) -> densearith.BlockDeal:  # fmt: skip
        most[0] = max(most[0], len(alive))
        d = honest(s, seeds)
        alive.add(d)
        made[0] += 1
        return d

    monkeypatch.setattr(densearith, "deal", watched)
    got = _over_grpc(roles, uploads, margin=True)
    assert len(got.links) > 20
    blocks = sum(len(p.blocks) for p in got.proposed)
    assert blocks > 2 * len(got.proposed) and made[0] == blocks and most[0] == 0


@pytest.mark.server
def test_batches_on_blocks_as_large_as_both_servers_take_give_the_same_links(
    roles: dict[str, RunningRole],  # noqa: F811
    uploads: Uploads,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of 2,048 pairs by pairs, and on a part's blocks as many as S1's and S2's
    `PrepareBlocks` replies allow (`largest_batch`, 8,192 here; by the margin and by
    gmwsum's circuit): the links and buckets of the run whose every batch has 2,048, in
    fewer batches (on the old code every batch had at most linkbit.BATCH pairs)."""
    sizes: list[int] = []
    honest = RemoteServers.evaluate_part

    def counted(self: RemoteServers, index: int, offset: int, count: int, *rest: Any
                ) -> tuple[bytes, bytes]:  # fmt: skip
        sizes.append(count)
        return honest(self, index, offset, count, *rest)

    monkeypatch.setattr(RemoteServers, "evaluate_part", counted)
    monkeypatch.setattr(linkbit, "BATCH", 2048)
    monkeypatch.setattr(linkbit, "BLOCK_BATCH", 2048, raising=False)
    want = _over_grpc(roles, uploads, margin=True)
    small, sizes[:] = list(sizes), []
    monkeypatch.setattr(linkbit, "BLOCK_BATCH", 8192, raising=False)
    got = _over_grpc(roles, uploads, margin=True)
    parts = [p.pairs for p in got.proposed]
    assert all(p.blocks for p in got.proposed) and max(parts) > 8192
    assert small == [min(2048, n - k) for n in parts for k in range(0, n, 2048)]
    assert sizes == [min(8192, n - k) for n in parts for k in range(0, n, 8192)]
    assert len(want.links) > 20 and got.comparisons == want.comparisons == 23_400
    assert_same_links(got.links, want.links)


def test_a_role_leaving_largest_batch_unset_keeps_a_parts_batches_at_16384() -> None:
    """C takes the least of its own limit and S1's and S2's `largest_batch`, a role older
    than the field (unset, 0) counting as linkbit.BATCH, the limit it enforces."""
    assert linkbit.BATCH == 16_384 and linkbit.BLOCK_BATCH == 65_536
    assert largest_batch(0, 0) == largest_batch(65_536, 0) == largest_batch(0, 65_536) == 16_384
    assert largest_batch(65_536, 32_768) == 32_768
    assert largest_batch(65_536, 65_536) == largest_batch(1 << 20, 1 << 20) == 65_536
