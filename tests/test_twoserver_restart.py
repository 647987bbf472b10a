"""S1, S2 and the combiner keep what they hold across a restart (docs/operations.md "Two
servers and a combiner"): a role started with `--data-dir` keeps every upload and its pair
budget on disk (matcher/storage/role_store.py) and holds them again when it starts on the
same data dir. Real roles on loopback ports, real uploads from the realistic fixture sent
over gRPC: a run after a restart gives the in-process run's links; a second run is refused
after a restart as before it; a forgotten upload does not come back, nor any of its bytes; a
store that cannot be read whole refuses the start naming the file."""

from __future__ import annotations

import json
import re
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.cliflow import BLINDMATCH
from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing as client
from blindmatch.client.errors import RejectedError
from blindmatch.client.remote.twoserver import RoleClient, TwoServerLinks
from blindmatch.matcher.core import tickets, tworun, twoserver
from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.role_store import RoleStore
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.portheld import stopped_held
from tests.support import ADMIN_TOKEN, MESSY_SECRET, auth
from tests.test_twoserver_project import MEMBER_KEY as PROJECT_MEMBER_KEY
from tests.test_twoserver_project import NAMES as PROJECT_NAMES
from tests.test_twoserver_project import Ahead, World, create, encoded, flow, held, hits

pytestmark = [pytest.mark.server, pytest.mark.on_disk]  # (tests/conftest.py `tmp_path`)
__all__ = ["encoded"]  # the fixture: the members' exports, encoded with --two-server

THRESHOLD = 0.8
PLAN = client.BandPlan(bits=20, bands=30)
NAMES = ("north", "south", "west")
MEMBER_KEY = "the members' key"
ROLES = ("s2", "s1", "combiner")  # the order they start in
Clks = npt.NDArray[np.uint8]


class Roles:
    """S2, S1 and the combiner, each on its own data dir under `root`; `restart` stops them
    and starts them again on the same data dirs (new ports)."""

    def __init__(self, root: Path, key: str) -> None:
        self.root, self.key = root, key
        self.running: dict[str, RunningRole] = {}
        self.start()

    def start(self) -> None:
        s2 = create_role("s2", "127.0.0.1:0", self.key, MEMBER_KEY, data_dir=self.root / "s2")
        s1 = create_role("s1", "127.0.0.1:0", self.key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                         data_dir=self.root / "s1")  # fmt: skip
        self.running = {"s2": s2, "s1": s1}
        self.running["combiner"] = create_role(
            "combiner", "127.0.0.1:0", self.key, MEMBER_KEY, s1=f"127.0.0.1:{s1.port}",
            s2=f"127.0.0.1:{s2.port}", data_dir=self.root / "combiner",
        )  # fmt: skip

    def stop(self) -> None:
        for running in self.running.values():
            running.stop(grace=None)

    def restart(self) -> None:
        self.stop()
        self.start()

    def send(self, member: str, up: client.SharedUpload, ticket: str = MEMBER_KEY) -> None:
        for role, running in self.running.items():
            with RoleClient(role, f"127.0.0.1:{running.port}", ticket) as c:
                assert c.upload(member, up) == len(up)

    def run(self, members: tuple[str, ...] = NAMES) -> TwoServerLinks:
        with RoleClient("combiner", f"127.0.0.1:{self.running['combiner'].port}", self.key) as c:
            return c.run(THRESHOLD, members)

    def refused(self) -> str:
        """A run's refusal, its ports left out (they change with a restart)."""
        with pytest.raises(RejectedError) as refused:
            self.run()
        return re.sub(r"127\.0\.0\.1:\d+", "ADDRESS", str(refused.value))

    def entries(self, role: str, action: str) -> list[dict[str, object]]:
        kept = RoleAudit(self.root / role, role)
        try:
            assert kept.log.verify().ok
            return [dict(e.detail) for e in kept.log.entries() if e.action == action]
        finally:
            kept.close()


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[Roles]:
    running = Roles(tmp_path, secrets.token_urlsafe(16))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def uploads(messy_members: tuple[list[Clks], int]) -> list[client.SharedUpload]:
    datasets, fallback_bits = messy_members
    return [client.shared_upload(d, MESSY_SECRET, PLAN, fallback_bits) for d in datasets]


def in_process(uploads: list[client.SharedUpload]) -> tworun.TwoServerResult:
    s1 = twoserver.BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads],
                                  b"", [u.s1.popcounts for u in uploads])  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in uploads], b"",
                               [u.s2.popcounts for u in uploads],
                               [u.s2.seal_key for u in uploads])  # fmt: skip
    pops = [u.combiner.popcounts for u in uploads]
    return tworun.run(s1, s2, twoserver.Combiner(pops, THRESHOLD))


def test_after_a_restart_the_run_needs_no_upload_and_a_second_run_is_still_refused(
    roles: Roles, uploads: list[client.SharedUpload]
) -> None:
    for name, up in zip(NAMES, uploads, strict=True):
        roles.send(name, up)
    roles.restart()
    # What each role holds again is what it was sent, array by array.
    s1 = roles.running["s1"].service.held["north"]
    s2 = roles.running["s2"].service.held["north"]
    for clk in range(2):
        assert np.array_equal(s1.shares[clk], uploads[0].s1.shares[clk])
        assert np.array_equal(s2.shares[clk], uploads[0].s2.shares[clk])
        assert np.array_equal(s1.sealed[clk].sealed, uploads[0].s1.bands[clk].sealed)
    assert s2.seal_key == uploads[0].s2.seal_key and s1.lacking is not None
    got = roles.run()
    want = in_process(uploads)
    assert len(want.links) > 300
    for name in ("dset", "row", "partner", "partner_row", "score"):
        assert np.array_equal(getattr(got, name), getattr(want.links, name)), name
    # A second run over the same uploads: refused, before a restart and after it alike.
    pairs = {r: roles.running[r].service.budget.pairs() for r in ("s1", "s2")}
    assert pairs["s1"] > 0
    before = roles.refused()
    assert "would be evaluated more than once since 'north' and 'south' uploaded" in before
    roles.restart()
    assert roles.refused() == before
    # Each role's log says what it held again at each start (S1 and S2: the pairs spent).
    for role in ("s1", "s2"):
        restored = roles.entries(role, "twoserver.restored")
        assert [e["uploads"] for e in restored] == [sorted(NAMES), sorted(NAMES)]
        records = {n: len(u) for n, u in zip(NAMES, uploads, strict=True)}
        assert restored[0]["records"] == records and restored[0]["pairs"] == 0
        assert restored[1]["pairs"] == pairs[role]
    # A member uploading again starts its pairs afresh, after a restart too.
    for name, up in zip(NAMES, uploads, strict=True):
        roles.send(name, up)
    roles.restart()
    again = roles.run()
    assert np.array_equal(again.partner_row, got.partner_row)


def test_a_forgotten_upload_stays_gone_after_a_restart_and_leaves_no_byte_on_disk(
    roles: Roles,
) -> None:
    rng = np.random.default_rng(7)
    names = ["p/west/0000000a", "p/north/0000000b", "q/west/0000000c"]
    ups = {n: client.shared_upload(rng.integers(0, 256, (6, 128), dtype=np.uint8), b"s",
                                   client.BandPlan(4, 4)) for n in names}  # fmt: skip
    for name, up in ups.items():
        roles.send(name, up, tickets.issue(MEMBER_KEY, name, int(time.time()) + 600))
    for role in ("s1", "s2"):
        with grpc.insecure_channel(f"127.0.0.1:{roles.running[role].port}") as channel:
            stub = (pb_grpc.TwoServerBlockingStub if role == "s1" else
                    pb_grpc.TwoServerSharesStub)(channel)  # fmt: skip
            reply = stub.Forget(pb.ForgetRequest(project="p", member="west"),
                                metadata=auth(roles.key))  # fmt: skip
            assert reply.dropped == 1
    # Off the disk before the reply: none of west's shares' bytes is in any file.
    west = [ups[names[0]].s1.shares[0][:2].tobytes(), ups[names[0]].s2.shares[0][:2].tobytes()]
    for path in roles.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(w in data for w in west), path
    roles.restart()
    for role in ("s1", "s2"):
        assert sorted(roles.running[role].service.held) == sorted(names[1:])
    # A run over the forgotten upload names it.
    with grpc.insecure_channel(f"127.0.0.1:{roles.running['s1'].port}") as channel:
        request = pb.ProposeRequest(members=names[:2], records=[6, 6], threshold=THRESHOLD)
        stub = pb_grpc.TwoServerBlockingStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Propose(request, metadata=auth(roles.key)))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "S1 holds no upload of 'p/west/0000000a'" in str(refused.value.details())


def test_the_store_is_owner_only_and_an_unfinished_upload_is_discarded_at_start(
    roles: Roles,
) -> None:
    up = client.shared_upload(np.zeros((4, 128), np.uint8), b"s", client.BandPlan(4, 4))
    roles.send("north", up)
    folder = roles.root / "s1" / "twoserver-s1-held"
    assert folder.stat().st_mode & 0o777 == 0o700
    files = [roles.root / "s1" / "twoserver-s1-held.sqlite", *folder.iterdir()]
    assert len(files) == 2 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    # What a crash mid-upload leaves (a file being written, a file no row names) goes.
    for name, data in (("0123.tmp", b"half an upload"), ("4567.bin", b"never committed")):
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o600)
    roles.restart()
    assert sorted(p.name for p in folder.iterdir()) == [files[1].name]
    assert sorted(roles.running["s1"].service.held) == ["north"]
    assert roles.entries("s1", "twoserver.restored")[-1]["discarded"] == 2
    # A store others can read refuses the start, saying how to fix it.
    roles.stop()
    files[1].chmod(0o644)
    with pytest.raises(StartupRefused) as refused:
        create_role("s1", "127.0.0.1:0", roles.key, MEMBER_KEY, s2="127.0.0.1:1",
                    data_dir=roles.root / "s1")  # fmt: skip
    assert f"{files[1]} (mode 0644): open to other users" in str(refused.value)
    assert "chmod -R go-rwx" in str(refused.value)
    roles.running = {}


def _damage(root: Path, how: str) -> Path:
    folder = root / "s1" / "twoserver-s1-held"
    held = next(folder.iterdir())
    if how == "flipped":
        data = bytearray(held.read_bytes())
        data[len(data) // 2] ^= 1
        held.write_bytes(bytes(data))
        return held
    if how == "short":
        held.write_bytes(held.read_bytes()[:-1])
        return held
    if how == "missing":
        held.unlink()
        return held
    db = root / "s1" / "twoserver-s1-held.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(b"not a database at all" * 400)
    return db


@pytest.mark.parametrize("how", ["flipped", "short", "missing", "garbage"])
def test_a_store_that_cannot_be_read_whole_refuses_the_start_naming_the_file(
    roles: Roles, how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    up = client.shared_upload(np.zeros((4, 128), np.uint8), b"s", client.BandPlan(4, 4))
    roles.send("north", up)
    roles.stop()
    damaged = _damage(roles.root, how)
    s2 = roles.running["s2"].port
    with pytest.raises(StartupRefused) as refused:
        create_role("s1", "127.0.0.1:0", roles.key, MEMBER_KEY, s2=f"127.0.0.1:{s2}",
                    data_dir=roles.root / "s1")  # fmt: skip
    assert str(damaged) in str(refused.value)
    assert "will not start on part of what it held" in str(refused.value)
    # The command line: exit 2 naming the file, nothing served.
    keys = {}
    for name in ("parties", "members"):
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_text(secrets.token_urlsafe(16) + "\n")
        keys[name].chmod(0o600)
    code = main(["two-server", "role", "--role", "s1", "--listen", "127.0.0.1:0", "--s2",
                 f"127.0.0.1:{s2}", "--key-file", str(keys["parties"]), "--member-key-file",
                 str(keys["members"]), "--data-dir", str(roles.root / "s1")])  # fmt: skip
    assert code == 2
    assert str(damaged) in capsys.readouterr().err
    roles.running = {}  # stopped already


def test_without_a_data_dir_nothing_is_written_and_a_restart_holds_nothing(
    tmp_path: Path,
) -> None:
    up = client.shared_upload(np.zeros((4, 128), np.uint8), b"s", client.BandPlan(4, 4))
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    try:
        with RoleClient("s2", f"127.0.0.1:{s2.port}", MEMBER_KEY) as c:
            c.upload("north", up)
        assert s2.service.store is None and list(s2.service.held) == ["north"]
    finally:
        s2.stop(grace=None)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    try:
        assert not s2.service.held
    finally:
        s2.stop(grace=None)


def test_the_pair_budget_is_kept_by_the_upload_it_was_spent_on(tmp_path: Path) -> None:
    """S1's store, read as a file: a batch's pairs are rows of the two uploads they were
    evaluated on, and go with either upload."""
    roles = Roles(tmp_path, secrets.token_urlsafe(16))
    try:
        clks = np.random.default_rng(3).integers(0, 256, (5, 128), dtype=np.uint8)
        up = client.shared_upload(clks, b"s", client.BandPlan(4, 4))
        for member in ("north", "south"):
            roles.send(member, up)
        got = roles.run(("north", "south"))
        db = tmp_path / "s1" / "twoserver-s1-held.sqlite"
        with sqlite3.connect(db) as conn:
            spent = conn.execute("SELECT sum(length(keys)) FROM spent").fetchone()[0]
        assert 0 < spent <= 8 * got.comparisons
        assert spent == 8 * roles.running["s1"].service.budget.pairs()
        roles.send("north", up)  # north uploads again: its pairs start afresh
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM spent").fetchone()[0] == 0
    finally:
        roles.stop()


def _serve(root: Path, key: str, ports: dict[str, int]) -> dict[str, RunningRole]:
    """S2 and S1 of a matcher's two-server projects, on their data dirs (on `ports`, or
    free ones)."""
    s2 = create_role("s2", f"127.0.0.1:{ports.get('s2', 0)}", key, PROJECT_MEMBER_KEY,
                     data_dir=root / "s2")  # fmt: skip
    s1 = create_role("s1", f"127.0.0.1:{ports.get('s1', 0)}", key, PROJECT_MEMBER_KEY,
                     s2=f"127.0.0.1:{s2.port}", data_dir=root / "s1")  # fmt: skip
    return {"s1": s1, "s2": s2}


def test_a_two_server_project_runs_after_s1_and_s2_restart_with_the_clk_projects_hits(
    tmp_path: Path, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The matcher as the combiner: every member uploads, S1 and S2 restart (same data dirs,
    same addresses), and the run and `results` need no upload again; a second run reuses the
    matcher's outcomes (S1 and S2 evaluate nothing), and without them is refused alike before
    and after a restart; an erased member's shares do not come back."""
    key = secrets.token_urlsafe(16)
    roles = _serve(tmp_path, key, {})
    ports = {r: roles[r].port for r in roles}
    setup = combiner_setup(f"127.0.0.1:{ports['s1']}", f"127.0.0.1:{ports['s2']}", key,
                           PROJECT_MEMBER_KEY)  # fmt: skip
    data_dir = tmp_path / "matcher-data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2, two_server=setup,
                           clock=Ahead())  # fmt: skip
    world = World(roles, server, data_dir, tmp_path, Ahead())
    try:
        clk = flow(world, create(world, "clks", "clk"), encoded)
        two = create(world, "shares", "two-server")
        for name in PROJECT_NAMES:
            assert world.cli("upload", str(encoded[name]), "--project", "shares",
                             token=two.tokens[name]) == 0  # fmt: skip

        def restart() -> None:
            with ExitStack() as down:  # (their ports no other's meanwhile: tests/portheld.py)
                for running in world.roles.values():
                    down.enter_context(stopped_held(running.port, partial(running.stop, None)))
            world.roles = _serve(tmp_path, key, ports)

        restart()
        assert held(world, "shares") == {"s1": sorted(PROJECT_NAMES), "s2": sorted(PROJECT_NAMES)}
        assert world.cli("run", "--project", "shares", token=two.tokens["north"]) == 0
        for name in PROJECT_NAMES:
            out = tmp_path / f"{name}-hits.csv"
            assert world.cli("results", "--project", "shares", "--encoded", str(encoded[name]),
                             "--out", str(out), token=two.tokens[name]) == 0  # fmt: skip
            assert hits(out) == hits(clk[name]), name
        # A second run over the same uploads reuses what the matcher learned of each pair
        # (core/outcomes.py): S1 and S2 evaluate nothing, after a restart too.
        spent = world.roles["s1"].service.budget.pairs()
        for again in (False, True):
            if again:
                restart()
            assert world.cli("run", "--project", "shares", token=two.tokens["north"]) == 0
            assert world.roles["s1"].service.budget.pairs() == spent
        # Without those outcomes (dropped here by hand), the run would ask S1 for pairs it
        # evaluated: refused alike before and after a restart.
        with world.server.store.db.tx() as tx:
            tx.execute("DELETE FROM twoserver_outcomes")
        capsys.readouterr()
        assert world.cli("run", "--project", "shares", token=two.tokens["north"]) != 0
        # (without the progress lines, `run: STAGE`: which stages the watch catches is timing)
        before = refusal(capsys.readouterr().err)
        assert "would be evaluated more than once" in before
        assert "north or south must upload again, then run" in " ".join(before.split())
        # (The refused batch's pair of members is kept pending: dropped by hand again, so
        # that S1 is asked, and refuses, after its restart.)
        with world.server.store.db.tx() as tx:
            tx.execute("DELETE FROM twoserver_outcomes")
        restart()
        assert world.cli("run", "--project", "shares", token=two.tokens["north"]) != 0
        assert refusal(capsys.readouterr().err) == before
        # An erasure: off S1's and S2's disks, not back after a restart.
        assert world.cli("erase", "--project", "shares", "--yes", token=two.tokens["west"]) == 0
        assert "S1 dropped 1 upload, S2 dropped 1 upload" in capsys.readouterr().out
        restart()
        assert held(world, "shares") == {"s1": ["north", "south"], "s2": ["north", "south"]}
    finally:
        server.stop(grace=None)
        for running in world.roles.values():
            running.stop(grace=None)


def test_a_killed_role_process_holds_every_acknowledged_upload_when_started_again(
    tmp_path: Path,
) -> None:
    """`blindmatch two-server role --data-dir` as a process, killed (SIGKILL, no clean
    stop) right after acknowledging uploads: started again, it holds them (its audit log
    says so) and a `Forget` drops them."""
    key, data = secrets.token_urlsafe(16), tmp_path / "s2"
    files = {"parties": key, "members": MEMBER_KEY}
    for name, text in files.items():
        (tmp_path / f"{name}.key").write_text(text + "\n")
        (tmp_path / f"{name}.key").chmod(0o600)
    command = [*BLINDMATCH, "two-server", "role", "--role", "s2", "--listen",
               "127.0.0.1:0", "--key-file", str(tmp_path / "parties.key"),
               "--member-key-file", str(tmp_path / "members.key"),
               "--data-dir", str(data)]  # fmt: skip

    def started() -> tuple[subprocess.Popen[bytes], int]:
        """The role on a port the kernel picks (each start its own), read from its log's
        listening line: no port picked and let go before it listens."""
        log = tmp_path / f"s2-{secrets.token_hex(4)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the role exited"
            if listening := re.search(r"listening on [\d.]+:(\d+)", log.read_text()):
                return proc, int(listening[1])
            time.sleep(0.1)
        proc.kill()
        raise AssertionError("the role never listened")

    ups = [client.shared_upload(np.random.default_rng(n).integers(0, 256, (5, 128), np.uint8),
                                b"s", client.BandPlan(4, 4)) for n in range(2)]  # fmt: skip
    names = ["p/north/0000000a", "p/south/0000000b"]
    proc, port = started()
    try:
        for name, up in zip(names, ups, strict=True):
            ticket = tickets.issue(MEMBER_KEY, name, int(time.time()) + 600)
            with RoleClient("s2", f"127.0.0.1:{port}", ticket) as c:
                assert c.upload(name, up) == 5
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    proc, port = started()
    try:
        with sqlite3.connect(f"file:{data / 'twoserver-s2.sqlite'}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT detail FROM audit WHERE action = 'twoserver.restored'")
            restored = [json.loads(r[0]) for r in rows]
        assert [r["uploads"] for r in restored] == [names]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.TwoServerSharesStub(channel).Forget(pb.ForgetRequest(project="p"),
                                                                metadata=auth(key))  # fmt: skip
        assert reply.dropped == 2
        assert not list((data / "twoserver-s2-held").iterdir())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def test_pairs_evaluated_at_the_reach_cut_off_are_refused_again_after_a_restart(
    tmp_path: Path,
) -> None:
    """A completing run's reach evaluations (core/pairbudget.py `reach=True`) are kept apart
    from the run's and restored as such: after a restart a pair asked at the reach is refused
    at the reach again, but may still be evaluated once at the run's cut-offs."""
    store = RoleStore(tmp_path, "s1")
    arrays = [("x", np.zeros(4, np.uint8))]
    for name in ("p/north/t1", "p/south/t1"):
        file, digest = store.write(arrays)
        store.put(name, file, 4, {}, arrays, digest)
    budget = PairBudget(store.spend)
    rows = np.array([1, 2], np.uint32)
    assert budget.spend("p/north/t1", "p/south/t1", rows, rows, reach=True) == 0
    store.close()

    store = RoleStore(tmp_path, "s1")
    restored = store.load(lambda meta, arrays: meta)
    assert set(restored.spent) == {("p/north/t1", "p/south/t1", True)}
    again = PairBudget(store.spend)
    for (a, b, reach), keys in restored.spent.items():
        again.restore(a, b, keys, reach=reach)
    assert again.spend("p/south/t1", "p/north/t1", rows, rows, reach=True) == 2
    assert again.spend("p/north/t1", "p/south/t1", rows, rows) == 0
    store.close()


def test_the_pair_budget_is_restored_without_numpy_s_hashing_unique(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restarted S1 or S2 reads its pairs evaluated back through `PairBudget.restore`.
    `np.unique` without `return_counts` takes numpy's hashing path (2.3 and later): 10.6 s of
    S2's restart on 8.8 million pair keys (a run of 2,400 x 2,400 households), where a sort
    takes 0.1 s. The keys, duplicates and all, are restored each once all the same."""

    def hashing_unique(*args: object, **kwargs: object) -> object:
        raise AssertionError("np.unique on the restored pair keys")

    monkeypatch.setattr(np, "unique", hashing_unique)
    budget = PairBudget()
    keys = np.array([7 << 32 | 3, 1 << 32 | 2, 7 << 32 | 3, 5], dtype=np.uint64)
    budget.restore("a", "b", keys)
    budget.restore("a", "b", np.array([5, 9 << 32], dtype=np.uint64))
    assert budget.pairs() == 4
    rows_a = np.array([7, 1, 0, 9, 2], dtype=np.uint32)
    rows_b = np.array([3, 2, 5, 0, 2], dtype=np.uint32)
    assert budget.counted("a", "b", rows_a, rows_b).tolist() == [True, True, True, True, False]


def refusal(err: str) -> str:
    """A refused run's error output, its run's name as RUN, without the progress lines."""
    lines = [line for line in err.splitlines() if not line.startswith("run: ")]
    return re.sub(r"shares-run-\d+", "RUN", "\n".join(lines))
