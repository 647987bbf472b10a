"""S1's per-upload cap on a combiner's extra and reach pairs, and its reach quota
(core/rowledger.py; docs/privacy-design.md "A dishonest combiner's reach pairs, attacked"),
survive a restart of S1 on its data dir (storage/role_store.py, table `ledger`): the real
roles on loopback, a real run over gRPC, S1 restarted on the same data dir, then a new
proposal over the same uploads caps a record's other partner as it did before the restart,
and the quota counts the reach pairs asked before it. A new upload drops its entries."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import twoserver
from blindmatch.matcher.core.rowledger import RowLedger
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.storage.role_store import RoleStore
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import MESSY_SECRET, auth
from tests.test_twocomplete import subjects

pytestmark = pytest.mark.server
THRESHOLD = 0.8
NAMES = ("north", "south", "west")
MEMBER_KEY = "the members' key"
RECORDS = 153  # subjects(): 150 others and 3 subjects a member
PLAN = client.BandPlan(bits=4, bands=40)


class Roles:
    """S2, S1 and the combiner on data dirs under `root` (`restart`: the same dirs)."""

    def __init__(self, root: Path) -> None:
        self.root, self.key = root, secrets.token_urlsafe(16)
        self.running: dict[str, RunningRole] = {}
        self.start()

    def start(self) -> None:
        s2 = create_role("s2", "127.0.0.1:0", self.key, MEMBER_KEY, data_dir=self.root / "s2")
        s1 = create_role("s1", "127.0.0.1:0", self.key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                         data_dir=self.root / "s1")  # fmt: skip
        c = create_role("combiner", "127.0.0.1:0", self.key, MEMBER_KEY,
                        s1=f"127.0.0.1:{s1.port}", s2=f"127.0.0.1:{s2.port}",
                        data_dir=self.root / "combiner")  # fmt: skip
        self.running = {"s2": s2, "s1": s1, "combiner": c}

    def stop(self) -> None:
        for running in self.running.values():
            running.stop(grace=None)

    def restart(self) -> None:
        self.stop()
        self.start()

    def send(self, name: str, up: client.SharedUpload) -> None:
        for role, running in self.running.items():
            with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as rc:
                rc.upload(name, up)

    @property
    def ledger(self) -> RowLedger:
        return self.running["s1"].service.proposals.rows  # type: ignore[no-any-return]

    def propose(self) -> None:
        """A new proposal over the three uploads, as the combiner asks for a run."""
        with grpc.insecure_channel(f"127.0.0.1:{self.running['s1'].port}") as channel:
            request = pb.ProposeRequest(members=NAMES, records=[RECORDS] * 3,
                                        threshold=THRESHOLD,
                                        buckets=twoserver.default_buckets(THRESHOLD))  # fmt: skip
            stub = pb_grpc.TwoServerBlockingStub(channel)
            for _ in stub.Propose(request, metadata=auth(self.key)):
                pass

    def stored(self) -> list[tuple[str, str, str]]:
        """The ledger's batches in S1's held store (names, kind)."""
        db = sqlite3.connect(self.root / "s1" / "twoserver-s1-held.sqlite")
        try:
            return db.execute(
                "SELECT a.name, b.name, l.kind FROM ledger l JOIN uploads a ON a.id = "
                "l.upload_a JOIN uploads b ON b.id = l.upload_b ORDER BY l.seq"
            ).fetchall()
        finally:
            db.close()


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[Roles]:
    running = Roles(tmp_path)
    try:
        uploads = [client.shared_upload(d, MESSY_SECRET, PLAN) for d in subjects()]
        for name, up in zip(NAMES, uploads, strict=True):
            running.send(name, up)
        with RoleClient("combiner", f"127.0.0.1:{running.running['combiner'].port}",
                        running.key) as rc:  # fmt: skip
            rc.run(THRESHOLD, NAMES)  # completes the groups: 3 reach pairs (test_twocomplete)
        yield running
    finally:
        running.stop()


def _reach_entries(ledger: RowLedger) -> dict[int, tuple[int, str]]:
    by_lo, _ = ledger._rows.get(("south", "west", "reach"), ({}, {}))
    return dict(by_lo)


def test_a_restarted_s1_caps_a_record_paired_before_it_and_keeps_the_reach_quota(
    roles: Roles,
) -> None:
    before = _reach_entries(roles.ledger)
    assert before and ("south", "west", "reach") in roles.stored()
    row_b, (row_c, run) = next(iter(before.items()))
    other = np.array([(row_c + 1) % RECORDS], np.uint32)
    roles.restart()
    assert _reach_entries(roles.ledger) == before  # each record's partner and run, as held
    # a later run over the same uploads: the record's other partner is answered 0, without
    # evaluating it (the batch's drop mask, nothing asked), as without the restart
    roles.propose()
    later = roles.running["s1"].service.proposals.of("south", "west")
    assert later is not None and later.id != run and later.ledger is roles.ledger
    checked = later.check_reach("south", "west", 0, np.array([row_b], np.uint32), other,
                                [THRESHOLD, *twoserver.default_buckets(THRESHOLD)])  # fmt: skip
    assert checked.proposed.tolist() == [True] and checked.extras == 0
    # the reach quota counts the pairs asked before the restart: with room for one more,
    # the first of two fresh records' pairs is evaluated, the second answered 0
    fresh = [r for r in range(RECORDS) if r not in before][:2]
    quota = len(before) + 1
    capped = roles.ledger.capped("south", "west", "reach", np.array(fresh, np.uint32),
                                 np.array(fresh, np.uint32), "a later run", quota)  # fmt: skip
    assert capped.tolist() == [False, True]


def test_a_new_upload_drops_its_entries_from_the_store(roles: Roles) -> None:
    assert any("west" in k[:2] for k in roles.stored())
    roles.send("west", client.shared_upload(subjects()[2], MESSY_SECRET, PLAN))
    assert not any("west" in k[:2] for k in roles.stored())
    roles.restart()
    assert not [k for k in roles.ledger._rows if "west" in k[:2]]


def test_without_a_data_dir_s1_keeps_the_ledger_in_memory() -> None:
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    try:
        assert s1.service.proposals.rows._record is None
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)


def test_a_data_dir_from_before_the_ledger_opens_and_gains_the_table(tmp_path: Path) -> None:
    store = RoleStore(tmp_path, "s1")
    store.db.close()
    db = sqlite3.connect(store.path)
    db.execute("DROP TABLE ledger")  # as a data dir written before the ledger was kept
    db.commit()
    db.close()
    store = RoleStore(tmp_path, "s1")
    try:
        assert store.load(lambda meta, arrays: meta).ledger == []
    finally:
        store.close()
