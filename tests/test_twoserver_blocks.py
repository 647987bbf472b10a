"""Unblocked parts by arithmetic sharing over real gRPC roles on loopback
(rpc/twoserver_blocks.py, docs/privacy-design.md "A whole block by arithmetic sharing"): the
same links and buckets as the boolean circuit on each pair, far fewer bytes between S1 and S2,
and a combiner dealing a wrong block refused by S1 and S2 before any output, naming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher import errors
from blindmatch.matcher.core import (
    densearith,
    denseblock,
    exhaustive,
    linkbit,
    partpath,
    tworun,
    twoserver,
)
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from tests.support import MESSY_SECRET
from tests.test_twoserver_batch_resume import Down, role_audit
from tests.test_twoserver_project import NAMES as PROJECT_NAMES
from tests.test_twoserver_project import create, encoded  # noqa: F401
from tests.test_twoserver_project_rerun import run_hits
from tests.test_twoserver_project_rerun import upload as project_upload
from tests.test_twoserver_project_resume import Resumable, _hits, world  # noqa: F401

# These tests' parts are small, which core/partpath.py's rule takes by pairs: forced by blocks.
pytestmark = [pytest.mark.server, pytest.mark.usefixtures("every_part_by_blocks")]
THRESHOLD = 0.8
RULE = (0.25, 0.03, 0.01)  # the default schema's: the record part's blocks read both CLKs
NAMES = ["north", "south", "west"]
SIZES = (120, 90, 60)  # every pair of members unblocked: 10,800 + 7,200 + 5,400 pairs
KEY, MEMBER_KEY = "the parties' key", "the members' key"
Clks = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def uploads(messy_members: tuple[list[Clks], int]) -> list[client.SharedUpload]:
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=20, bands=30)
    return [client.shared_upload(d[:n], MESSY_SECRET, plan, fallback_bits)
            for d, n in zip(datasets, SIZES, strict=True)]  # fmt: skip


@pytest.fixture
def every_part_by_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every unblocked part by blocks, however few its pairs (core/partpath.py `by_blocks`)."""
    monkeypatch.setattr(partpath, "PATH", "blocks")


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[dict[str, RunningRole]]:
    s2 = create_role("s2", "127.0.0.1:0", KEY, MEMBER_KEY, data_dir=tmp_path / "s2")
    s1 = create_role("s1", "127.0.0.1:0", KEY, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1", exhaustive=10**9)  # fmt: skip
    yield {"s1": s1, "s2": s2}
    for running in (s1, s2):
        running.stop(grace=None)


def upload(roles: dict[str, RunningRole], uploads: list[client.SharedUpload]) -> None:
    """Each member's upload to S1 and S2 (again: a fresh pair budget)."""
    for name, up in zip(NAMES, uploads, strict=True):
        for role, running in roles.items():
            with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as rc:
                rc.upload(name, up, RULE)


def remote(roles: dict[str, RunningRole], names: list[str],
           shares: list[client.SharedUpload]) -> RemoteServers:  # fmt: skip
    """Each of `names`' `shares` uploaded afresh to S1 and S2 (a fresh pair budget), then C's
    servers over them."""
    for name, up in zip(names, shares, strict=True):
        for role, running in roles.items():
            with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as rc:
                rc.upload(name, up, RULE)
    bits = [8 * int(x.shape[1]) for x in shares[0].s1.shares]
    return RemoteServers(f"127.0.0.1:{roles['s1'].port}", f"127.0.0.1:{roles['s2'].port}", KEY,
                         names, [len(up.s1.shares[0]) for up in shares], bits)  # fmt: skip


def drive(roles: dict[str, RunningRole], uploads: list[client.SharedUpload],
          dense: bool) -> tworun.TwoServerResult:  # fmt: skip
    """The combiner's run over S1 and S2 (by blocks, or by pairs where not `dense`)."""
    bits = [8 * int(x.shape[1]) for x in uploads[0].s1.shares]
    servers = RemoteServers(f"127.0.0.1:{roles['s1'].port}", f"127.0.0.1:{roles['s2'].port}",
                            KEY, NAMES, list(SIZES), bits)  # fmt: skip
    servers.dense = dense
    try:
        return tworun.drive(servers, twoserver.Combiner(None, THRESHOLD, clks=2, rule=Rule(*RULE)))
    finally:
        servers.close()


def entries(tmp_path: Path, role: str, action: str) -> list[dict[str, object]]:
    kept = RoleAudit(tmp_path / role, role)
    try:
        return [dict(e.detail) for e in kept.log.entries() if e.action == action]
    finally:
        kept.close()


@pytest.mark.parametrize("rows", [denseblock.ROWS, 32])
def test_blocks_over_grpc_give_the_pairs_links_with_under_75_percent_of_the_bytes(
    tmp_path: Path, roles: dict[str, RunningRole], uploads: list[client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch, rows: int,
) -> None:  # fmt: skip
    """`rows`: a block's larger side cut into runs of at most this many rows (32: each part's
    blocks cut into several, each converted and checked in turn)."""
    monkeypatch.setattr(denseblock, "ROWS", rows)
    upload(roles, uploads)
    got = drive(roles, uploads, dense=True)
    upload(roles, uploads)  # (each pair is evaluated once an upload)
    want = drive(roles, uploads, dense=False)
    assert len(want.links) > 20
    for name in ("dset", "row", "partner", "partner_row", "score"):  # score: the bucket
        assert np.array_equal(getattr(got.links, name), getattr(want.links, name)), name
    assert got.groups == want.groups and got.comparisons == want.comparisons == 23_400
    between = [r.transcript.sent[("S1", "S2")] + r.transcript.sent[("S2", "S1")]
               for r in (got, want)]  # fmt: skip
    # 0.69 here: the circuit on H shares has 1,902 AND gates a pair to 3,945, and the blocks'
    # conversion and openings (~6 bytes a record's CLK bit each way) amortize over blocks of
    # 60 to 120 rows (over 1,600 rows of B, docs/performance.md: 0.5); by pairs, 1.0.
    assert between[0] < (0.75 if rows > 120 else 1.0) * between[1], between
    # Each unblocked part (three pairs of members, on the record CLK and on the fallback's)
    # by blocks at S1 and at S2, each block's sizes audited; no deal refused.
    for role in ("s1", "s2"):
        blocks = entries(tmp_path, role, "twoserver.blocks")
        assert len(blocks) == len([p for p in got.proposed if p.pairs]) >= 3, role
        sizes = [b for e in blocks for b in e["blocks"]]  # type: ignore[attr-defined]
        assert all(min(b) <= rows for b in sizes)  # north's 120 rows cut where rows < 120
        assert max(max(b) for b in sizes) == (120 if rows >= 120 else 89)
        assert not entries(tmp_path, role, "twoserver.deal")


def test_after_a_run_by_blocks_s1_and_s2_hold_none_of_its_blocks(
    tmp_path: Path, roles: dict[str, RunningRole], uploads: list[client.SharedUpload],
) -> None:  # fmt: skip
    """Each part's blocks (every pair's H shares, up to 2^24 pairs' worth) let go once its
    last batch is answered, not held until they have been idle 20 minutes."""
    upload(roles, uploads)
    got = drive(roles, uploads, dense=True)
    assert len([p for p in got.proposed if p.pairs]) >= 3  # parts by blocks were held
    assert len(entries(tmp_path, "s1", "twoserver.blocks")) >= 3
    for role in ("s1", "s2"):
        assert roles[role].service.dense.held() == 0, role


def test_a_combiner_dealing_a_wrong_block_is_refused_over_grpc_naming_it(
    tmp_path: Path, roles: dict[str, RunningRole], uploads: list[client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """One product of the first CLK's matrix triple off by one: S1 and S2 find it (a random
    bilinear check) before any batch, and the run stops naming the dealer."""
    real = densearith.deal

    def dishonest(s: densearith.Shape, seeds: tuple[bytes, bytes] | None = None
                  ) -> densearith.BlockDeal:  # fmt: skip
        d = real(s, seeds)
        body = bytearray(d.to_s2)
        body[linkbit.SEED_BYTES + 4 * 2 * s.records * s.widths[0]] ^= 1  # Z[0, 0]'s low bit
        return densearith.BlockDeal(d.to_s1, bytes(body), s)

    monkeypatch.setattr(densearith, "deal", dishonest)
    upload(roles, uploads)
    with pytest.raises(errors.PermissionDenied, match=r"the dealer \(the combiner\)") as refused:
        drive(roles, uploads, dense=True)
    assert "fails check" in str(refused.value) and "part 0's blocks" in str(refused.value)
    for role in ("s1", "s2"):
        (deal,) = entries(tmp_path, role, "twoserver.deal")
        assert deal["members"] == ["north", "south"] and "fails check" in str(deal["reason"])
        assert not entries(tmp_path, role, "twoserver.blocks")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_batch_by_blocks_cut_during_its_rounds_runs_again_after_s2_restarts(
    world: Resumable,  # noqa: F811
    encoded: dict[str, Path],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A project's run by blocks (S1's shipped cap: every pair of members unblocked), S2 down
    at round 2 of a batch: restarted, it holds no blocks, and runs the batch again on the H
    shares both servers kept with its inputs; the links of a run never cut, each pair
    counted once."""
    monkeypatch.setattr(exhaustive, "DEFAULT_PAIRS", exhaustive.SHIPPED_PAIRS)
    monkeypatch.setattr(world.roles["s1"].service, "exhaustive", exhaustive.SHIPPED_PAIRS)
    budget = world.roles["s2"].service.budget
    before = budget.pairs()
    whole = _hits(world, create(world, "whole", "two-server"), encoded)
    whole_spent = budget.pairs() - before
    assert role_audit(world, "s1", "twoserver.blocks")  # by blocks
    project = create(world, "shares", "two-server")
    for name in PROJECT_NAMES:
        project_upload(world, project, name, encoded[name])
    down = Down(world, "s2")
    monkeypatch.setattr(linkbit.Party, "close", lambda party, other: down(party, other))
    before = world.roles["s2"].service.budget.pairs()
    assert world.cli("run", "--project", "shares", token=project.tokens["north"]) != 0
    assert not down.armed
    down.restart()
    assert not world.roles["s2"].service.dense._held  # S2's blocks went with it
    assert run_hits(world, project, encoded) == whole
    for role in ("s1", "s2"):  # the resumed run's parts' blocks let go as each part ended
        assert world.roles[role].service.dense.held() == 0, role
    assert world.roles["s2"].service.budget.pairs() - before == whole_spent
    (again,) = role_audit(world, "s2", "twoserver.rerun")
    assert again["pairs"] > 0
