"""A dishonest dealer: S1 and S2 as real roles on loopback (as tests/test_twoserver_rpc.py
starts them, with data dirs), a hand-driven combiner whose deal has one c2 row flipped (a
test-only stand-in for the attacker, core/triplecheck.py is what is tested): both servers
refuse the batch naming the dealer, send no output shares, audit it, and an honest batch
of the same run is answered."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, triplecheck, tworun, twoserver
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import auth, in_process_servers

pytestmark = pytest.mark.server

MEMBER_KEY = "the members' key"
RECORDS = 6


@pytest.fixture
def key() -> str:
    return secrets.token_urlsafe(16)


@pytest.fixture
def roles(tmp_path: Path, key: str) -> Iterator[dict[str, RunningRole]]:
    """S2 and S1 with data dirs (their audit logs), the members' uploads on both."""
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=tmp_path / "s2")
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1")  # fmt: skip
    running = {"s1": s1, "s2": s2}
    clks = np.random.default_rng(18).integers(0, 256, (RECORDS, 128), dtype=np.uint8)
    up = client.shared_upload(clks, b"s", client.BandPlan(4, 4))
    try:
        for member in ("north", "south"):
            for role, r in running.items():
                with RoleClient(role, f"127.0.0.1:{r.port}", MEMBER_KEY) as c:
                    c.upload(member, up)
        yield running
    finally:
        for r in running.values():
            r.stop(grace=None)


def flip_c2_row(to_s2: bytes, pairs: int, row: int) -> bytes:
    """The attacker's deal for S2: c2's row `row` flipped on every pair."""
    words = linkbit.words_for(pairs)
    c2 = np.frombuffer(to_s2[linkbit.SEED_BYTES :], "<u8").reshape(-1, words).copy()
    c2[row] ^= np.uint64(0xFFFF_FFFF_FFFF_FFFF)
    return to_s2[: linkbit.SEED_BYTES] + c2.tobytes()


def audit_entries(folder: Path, role: str) -> list[tuple[str, str, dict[str, object]]]:
    kept = RoleAudit(folder, role)
    try:
        assert kept.log.verify().ok, role
        return [(e.actor, e.action, dict(e.detail)) for e in kept.log.entries()]
    finally:
        kept.close()


def test_a_deal_with_one_c2_row_flipped_is_refused_by_both_servers_and_audited(
    roles: dict[str, RunningRole], key: str, tmp_path: Path
) -> None:
    channels = [grpc.insecure_channel(f"127.0.0.1:{roles[r].port}") for r in ("s1", "s2")]
    s1, s2 = pb_grpc.TwoServerBlockingStub(channels[0]), pb_grpc.TwoServerSharesStub(channels[1])
    request = pb.ProposeRequest(members=["north", "south"], records=[RECORDS] * 2, threshold=0.8)
    parts = list(s1.Propose(request, metadata=auth(key)))
    count = parts[0].pairs
    circuit = linkbit.circuit(1024, (0.8,))

    def batch(name: str, offset: int, n: int, setup: bytes) -> pb.CircuitBatch:
        return pb.CircuitBatch(batch=name, member_a="north", member_b="south",
                               records_a=RECORDS, records_b=RECORDS, cutoffs=[0.8],
                               setup=setup, proposed=True, part=0, offset=offset,
                               count=n)  # fmt: skip

    try:
        # The dishonest dealer: the first pair of the part, one c2 row flipped (a row C
        # chooses; S1 and S2's order decides whether it serves a gate, a spare or is opened).
        dealt = linkbit.deal(circuit, 1)
        bent = flip_c2_row(dealt.to_s2, 1, row=int(np.random.default_rng(1).integers(100)))
        s2.Prepare(batch("bent", 0, 1, bent), metadata=auth(key))
        with pytest.raises(grpc.RpcError) as got:
            s1.Evaluate(batch("bent", 0, 1, dealt.to_s1), metadata=auth(key))
        assert got.value.code() == grpc.StatusCode.PERMISSION_DENIED, got.value.details()
        details = str(got.value.details())
        assert "batch 'bent'" in details and "the dealer (the combiner)" in details
        assert "send no output shares" in details
        # No output shares for C on S2 either.
        with pytest.raises(grpc.RpcError) as none:
            s2.Collect(pb.CollectRequest(batch="bent"), metadata=auth(key))
        assert none.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # The refused pair stays spent: asked again (honestly), refused as a second evaluation.
        again = linkbit.deal(circuit, 1)
        with pytest.raises(grpc.RpcError) as twice:
            s1.Evaluate(batch("again", 0, 1, again.to_s1), metadata=auth(key))
        assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # An honest batch of the rest of the part is answered.
        if count > 1:
            honest = linkbit.deal(circuit, count - 1)
            s2.Prepare(batch("honest", 1, count - 1, honest.to_s2), metadata=auth(key))
            o1 = s1.Evaluate(batch("honest", 1, count - 1, honest.to_s1), metadata=auth(key))
            o2 = s2.Collect(pb.CollectRequest(batch="honest"), metadata=auth(key))
            bits = linkbit.reveal(circuit, o1.shares, o2.shares, count - 1, tagged=True)
            assert bits.shape == (1 + linkbit.TAG_BITS, count - 1)
    finally:
        for channel in channels:
            channel.close()
        for r in roles.values():
            r.stop(grace=None)
    for role in ("s1", "s2"):
        deals = [(a, d) for a, action, d in audit_entries(tmp_path / role, role)
                 if action == "twoserver.deal"]  # fmt: skip
        assert len(deals) == 1, role
        actor, detail = deals[0]
        assert actor == "combiner" and detail["batch"] == "bent", detail
        assert detail["members"] == ["north", "south"] and detail["role"] == role
        assert "sacrifice" in str(detail["reason"]) or "opened" in str(detail["reason"])


def test_the_check_costs_a_deal_twice_as_long_and_one_message_each_way_more() -> None:
    """What the check adds to a batch (core/triplecheck.py): C deals 2G + OPENED rows; the
    S1-S2 stream carries rho and sigma of every gate (as much as the rounds), the opened
    rows, a nonce and a digest each way, in the rounds' messages but the first."""
    c = linkbit.circuit(1024, (0.8,))
    pairs, words = 1000, linkbit.words_for(1000)
    t = linkbit.Transcript(keep=True)
    rng = np.random.default_rng(2)
    d = rng.integers(0, 256, (pairs, 128), dtype=np.uint8)
    pops = rng.integers(0, 1025, pairs)
    z = np.zeros(pairs, np.uint32)
    linkbit.compare(d, d ^ d, (pops, pops), (z, z), (0.8,), 1024, t)
    g = c.and_gates
    assert t.sent[("C", "S2")] == 32 + 8 * words * (2 * g + triplecheck.OPENED)
    checks = [len(m[3]) for m in t.messages if m[2] == "check"]
    assert checks == [8 * words * (2 * g + 3 * triplecheck.OPENED)] * 2
    assert [len(m[3]) for m in t.messages if m[2] == "digest"] == [32, 32]


class BentDealer(twoserver.Combiner):
    """The attacker in process: every batch's deal with one c2 row flipped (a test-only
    stand-in; core/triplecheck.py is what is tested)."""

    def deal_count(
        self, pairs: int, n_bits: int, clk: int = 0, n_bits2: int = 0
    ) -> tuple[linkbit.Circuit, linkbit.Deal]:
        circuit, dealt = super().deal_count(pairs, n_bits, clk, n_bits2)
        return circuit, replace(dealt, to_s2=flip_c2_row(dealt.to_s2, pairs, row=3))


def test_a_deal_refused_in_process_is_the_projects_permission_denied_naming_the_dealer() -> None:
    """S1 and S2 in this process (core/twoinprocess.py, what tests, benchmarks and
    `privacy-check --mode two-server` drive) refuse a bent deal as the roles over gRPC do:
    `errors.PermissionDenied` (PERMISSION_DENIED at the gRPC edge, a refusal to a client),
    naming the batch's members and the dealer, never the bare `triplecheck.DealRefused`."""
    clks = np.random.default_rng(18).integers(0, 256, (RECORDS, 128), dtype=np.uint8)
    up = client.shared_upload(clks, b"s", client.BandPlan(4, 4))
    s1, s2 = in_process_servers(
        [up, up], lacking=False
    )  # the same records twice: every pair proposed
    with pytest.raises(errors.PermissionDenied) as refused:
        tworun.run(s1, s2, BentDealer([up.combiner.popcounts] * 2, 0.8))
    message = str(refused.value)
    assert message.startswith("setup: batch '0/1': ")
    assert "the dealer (the combiner) dealt triples that are not Beaver triples" in message
    assert "send no output shares" in message
    assert refused.value.status_name == "PERMISSION_DENIED"
    honest = tworun.run(s1, s2, twoserver.Combiner([up.combiner.popcounts] * 2, 0.8))
    # The same S1 and S2 answer an honest dealer: each record linked to its twin (both sides).
    assert len(honest.links.row) == 2 * RECORDS
