"""A two-server project's erasure cut short before S1 and S2 were asked to forget the member's
shares: `admin check` says they may still hold them, and the matcher's next start asks them.

The state is the one a crash leaves (tests/test_erasure_crash.py kills a real process at the
same point): the erasure's transaction committed, through the matcher's own store, and
nothing after it ran; then the matcher stops. A start that cannot reach S2 completes the rest,
keeps the erasure's intent, and asks S2 again while it runs, until S2 forgets the shares.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from benchmarks.erasure_start import Hung
from blindmatch.cli.app import main
from blindmatch.client import MatcherClient
from blindmatch.client.encoding.sharing import BandPlan, shared_upload
from blindmatch.client.remote.twoserver import RoleClient, ticket
from blindmatch.matcher.rpc import twoserver_project
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.usecases.erasure import FOUND_IN_LOG_RETRIED
from tests.portheld import HeldPorts, stopped_held
from tests.support import ADMIN_TOKEN, QUICK_RETRIES, db_rows, short_check_grace
from tests.test_twoserver_project import MEMBER_KEY, encoded

pytestmark = pytest.mark.server
__all__ = ["encoded"]  # (the members' encoded folders, a fixture shared with that module)


def test_a_two_server_erasure_cut_short_has_s1_and_s2_asked_again_at_the_next_start(
    tmp_path: Path, encoded: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    short_check_grace(monkeypatch)  # (the matcher stopped: nothing in progress to wait for)
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=tmp_path / "s2-data")
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1-data")  # fmt: skip
    roles = {"s1": s1, "s2": s2}

    def held() -> dict[str, list[str]]:
        return {role: sorted(m.split("/")[1] for m in r.service.held if m.startswith("shares/"))
                for role, r in roles.items()}  # fmt: skip

    def serve() -> RunningServer:
        setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, MEMBER_KEY)
        return create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, two_server=setup)

    data_dir = tmp_path / "matcher-data"
    server = serve()
    try:
        target = f"127.0.0.1:{server.port}"
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("shares", ["north", "west"], mode="two-server").tokens
        for name in ("north", "west"):
            assert main(["upload", str(encoded[name]), "--project", "shares",
                         "--server", target, "--token", tokens[name]]) == 0  # fmt: skip
        assert held() == {"s1": ["north", "west"], "s2": ["north", "west"]}
        server.store.erase_member("shares", "west")  # the erasure's transaction, and no more
    finally:
        server.stop(grace=None)
    try:
        report = check_data_dir(data_dir)
        (finding,) = [p for p in report.problems if "shares/west" in p]
        assert "S1 and S2 may still hold its shares" in finding
        assert "start the matcher to complete the erasure" in finding
        assert held()["s1"] == ["north", "west"]  # (nobody asked them)

        serve().stop(grace=None)  # a plain start completes it
        assert held() == {"s1": ["north"], "s2": ["north"]}
        completed = completed_entries(data_dir)
        assert len(completed) == 1
        assert completed[0]["twoserver"] == {"S1": "dropped 1", "S2": "dropped 1"}
        assert check_data_dir(data_dir).problems == []
    finally:
        for role in roles.values():
            role.stop(grace=None)


def test_a_start_that_cannot_reach_s2_keeps_the_erasure_and_asks_s2_again_while_it_runs(
    tmp_path: Path, encoded: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    short_check_grace(monkeypatch)  # (checked with S2 down: the erasure cannot end meanwhile)
    world = Shares(tmp_path)
    roles, held, serve, data_dir = world.roles, world.held, world.serve, world.data_dir
    server = world.uploaded(encoded)
    try:
        server.store.erase_member("shares", "west")  # the erasure's transaction, and no more
    finally:
        server.stop(grace=None)
    try:
        world.s2_down()  # down when the matcher starts
        server = serve()
        try:
            assert held("s1") == ["north"]  # S1 forgot at the start
            assert server.store.cut_short_erasures() != []  # S2 has not: the intent stays
            (finding,) = [p for p in check_data_dir(data_dir).problems if "shares/west" in p]
            assert "S1 and S2 may still hold its shares" in finding
            world.s2_back_and_asked_again(server)
        finally:
            server.stop(grace=None)
        completed = completed_entries(data_dir)
        assert len(completed) == 1 and completed[0]["twoserver"] == {"S2": "dropped 1"}
        assert check_data_dir(data_dir).problems == []
    finally:
        world.down.close()
        for role in roles.values():
            role.stop(grace=None)


def test_an_old_code_erasure_found_while_s2_is_down_gets_an_intent_and_is_retried(
    tmp_path: Path, encoded: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A matcher from before erasure intents stopped after west's erasure was logged (its
    upload's file still in clks/, no intent); the start finds it from the audit log with S2
    down: S1 forgets, the erasure is not recorded complete with S2's error but given an
    intent, and the running matcher asks S2 again until it forgets."""
    short_check_grace(monkeypatch)  # (checked with S2 down or the matcher stopped)
    world = Shares(tmp_path)
    roles, held, serve, data_dir = world.roles, world.held, world.serve, world.data_dir
    server = world.uploaded(encoded)
    try:
        (upload,) = [u for u in server.store.current_uploads("shares").values()
                     if u.member == "west"]  # fmt: skip
        server.store.erase_member("shares", "west")  # the erasure, then the old code's state:
    finally:
        server.stop(grace=None)
    DataDir(data_dir).clk_file(upload.id).touch(0o600)  # its file not unlinked yet (empty)
    with closing(sqlite3.connect(data_dir / "blindmatch.sqlite")) as db:
        assert db.execute("DELETE FROM erasure_intents").rowcount == 1  # never written
        db.commit()
    assert any("from before erasure intents" in p for p in check_data_dir(data_dir).problems)
    try:
        world.s2_down()  # down when the matcher starts
        server = serve()
        try:
            assert held("s1") == ["north"]  # S1 forgot at the start
            assert [(c.project, c.member) for c in server.store.cut_short_erasures()] == [
                ("shares", "west")]  # an intent now: S2 has not forgotten  # fmt: skip
            assert completed_entries(data_dir) == []  # not recorded complete with S2's error
            (finding,) = [p for p in check_data_dir(data_dir).problems if "shares/west" in p]
            assert "S1 and S2 may still hold its shares" in finding
            assert not DataDir(data_dir).clk_file(upload.id).exists()
            world.s2_back_and_asked_again(server)
        finally:
            server.stop(grace=None)
        (detail,) = completed_entries(data_dir)
        assert detail["twoserver"] == {"S2": "dropped 1"} and detail["upload_files"] == 1
        assert detail["why"] == FOUND_IN_LOG_RETRIED
        assert check_data_dir(data_dir).problems == []
        serve().stop(grace=None)  # a later start finds nothing more to do
        assert len(completed_entries(data_dir)) == 1
    finally:
        world.down.close()
        for role in roles.values():
            role.stop(grace=None)


class Shares:
    """S1 and S2 on loopback with data dirs, and a matcher (`serve`) of a two-server project
    `shares` of north and west: what the tests of an erasure with S2 down share."""

    def __init__(self, tmp_path: Path) -> None:
        self.key, self.tmp = secrets.token_urlsafe(16), tmp_path
        s2 = self.start_s2()
        self.s2_address = f"127.0.0.1:{s2.port}"
        s1 = create_role("s1", "127.0.0.1:0", self.key, MEMBER_KEY, s2=self.s2_address,
                         data_dir=tmp_path / "s1-data")  # fmt: skip
        self.roles = {"s1": s1, "s2": s2}
        self.data_dir = tmp_path / "matcher-data"
        self.down = HeldPorts()  # S2's port while it is down (`s2_down`): tests/portheld.py

    def s2_down(self) -> None:
        """S2 stopped, its port no other's until it starts again."""
        s2 = self.roles["s2"]
        self.down.stop(s2.port, lambda: s2.stop(grace=None))

    def start_s2(self, address: str = "127.0.0.1:0") -> RunningRole:
        return create_role("s2", address, self.key, MEMBER_KEY, data_dir=self.tmp / "s2-data")

    def held(self, role: str) -> list[str]:
        service = self.roles[role].service
        return sorted(m.split("/")[1] for m in service.held if m.startswith("shares/"))

    def serve(self) -> RunningServer:
        setup = combiner_setup(f"127.0.0.1:{self.roles['s1'].port}", self.s2_address, self.key,
                               MEMBER_KEY)  # fmt: skip
        return create_server("127.0.0.1:0", self.data_dir, ADMIN_TOKEN, two_server=setup,
                             retry_waits=QUICK_RETRIES)  # fmt: skip

    def uploaded(self, encoded: dict[str, Path]) -> RunningServer:
        """A matcher serving the project, north and west uploaded through the CLI."""
        server = self.serve()
        target = f"127.0.0.1:{server.port}"
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("shares", ["north", "west"], mode="two-server").tokens
        for name in ("north", "west"):
            assert main(["upload", str(encoded[name]), "--project", "shares",
                         "--server", target, "--token", tokens[name]]) == 0  # fmt: skip
        return server

    def s2_back_and_asked_again(self, server: RunningServer) -> None:
        """S2 started again on its address, still holding west's shares, until the running
        matcher asks it again and it forgets them."""
        self.down.release(int(self.s2_address.rsplit(":", 1)[1]))
        self.roles["s2"] = self.start_s2(self.s2_address)
        assert self.held("s2") == ["north", "west"]
        deadline = time.monotonic() + 60
        while server.store.cut_short_erasures():
            assert time.monotonic() < deadline, "S2 was not asked again"
            time.sleep(0.2)
        assert self.held("s2") == ["north"]


def completed_entries(data_dir: Path) -> list[dict]:
    return [json.loads(r[8]) for r in db_rows(data_dir, "audit") if r[3] == "erase.complete"]


def test_a_start_asks_s1_and_s2_for_every_erasure_cut_short_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three erasures cut short, and S2 hung (it takes each call and answers none, as an S2
    stuck under load does: each Forget waits its 5 s deadline): the start asks for all three
    at once, so S2 holds the three calls together (one after the other before: 5 s each, in
    turn, before the matcher served), keeps the three intents, and the running matcher
    finishes them once S2 answers again."""
    # Each Forget's deadline 2 s, not FORGET_SECONDS' 5 s: the start waited 5 s on the hung S2
    # (6.3-6.5 s alone, now ~3.3 s). Asked one after the other, the first call would still
    # end before the second arrived; asked at once, they arrive within milliseconds.
    monkeypatch.setattr(twoserver_project, "FORGET_SECONDS", 2.0)
    key, member_key = secrets.token_urlsafe(16), MEMBER_KEY
    s2 = create_role("s2", "127.0.0.1:0", key, member_key, data_dir=tmp_path / "s2-data")
    s2_address = f"127.0.0.1:{s2.port}"
    s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=s2_address)
    data_dir = tmp_path / "matcher-data"

    def serve() -> RunningServer:
        setup = combiner_setup(f"127.0.0.1:{s1.port}", s2_address, key, member_key)
        return create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, two_server=setup,
                             retry_waits=QUICK_RETRIES)  # fmt: skip

    names = ["m0", "m1", "m2"]
    server = serve()
    hang = None
    try:
        target = f"127.0.0.1:{server.port}"
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("shares", [*names, "stays"], mode="two-server").tokens
        up = shared_upload(np.zeros((20, 128), np.uint8), b"s", BandPlan(4, 4))
        for name in names:
            with MatcherClient(target, tokens[name]) as member:
                t = ticket(member, "shares")
            for role, address in (("s1", t.s1), ("s2", t.s2)):
                with RoleClient(role, address, t.ticket) as rc:
                    rc.upload(t.name, up)
        for name in names:  # the erasure's transaction, and no more
            server.store.erase_member("shares", name)
        server.stop(grace=None)
        with stopped_held(s2.port, lambda: s2.stop(grace=None)):
            pass  # (its port no other's until the hung S2 takes it: tests/portheld.py)
        hang = Hung(s2.port)
        server = serve()
        assert hang.first_together(names)  # all asked at once (before: one after the other)
        assert len(server.store.cut_short_erasures()) == len(names)  # S2 did not answer
        with stopped_held(s2.port, hang.close):
            pass  # (nor until S2 is back there)
        hang = None
        s2 = create_role("s2", s2_address, key, member_key, data_dir=tmp_path / "s2-data")
        deadline = time.monotonic() + 90
        while server.store.cut_short_erasures():  # asked again by the running matcher
            assert time.monotonic() < deadline, "S2 was not asked again"
            time.sleep(0.2)
        assert not [m for m in s2.service.held if m.startswith("shares/")]
    finally:
        server.stop(grace=None)
        if hang is not None:
            hang.close()
        s1.stop(grace=None)
        s2.stop(grace=None)
    assert check_data_dir(data_dir).problems == []
