"""A two-server run that fails part-way loses nothing it learned (docs/protocol.md "A second
run over the same uploads"): the matcher keeps each pair of members' outcome as soon as the
pair is finished, so a plain rerun, without any member uploading again, sends only the
unfinished pairs of members through S1 and the circuit and gives the hits of a run that never
failed. A pair of members cut between its batches is resumed by the plain rerun too (its
answered batches journaled, S1 proposing the rest: usecases/twobatches.py; a batch cut
mid-way: tests/test_twoserver_batch_resume.py). Where a pair of members' batch was out and
cannot be asked again (the matcher died as it went), the failure and the next run name the
members, one of whom uploads again; then the run goes through.

Real S1, S2 and matcher on loopback; S2 is stopped for real (its gRPC server) at a chosen
batch of the matcher's run, and started again on the same port and data dir."""

from __future__ import annotations

import dataclasses
import queue
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindmatch.client import ProjectTokens
from blindmatch.client.remote.client import MatcherClient
from blindmatch.matcher.core import tworun
from blindmatch.matcher.core.twoserver import Proposed
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.server import create_server
from tests.portheld import HeldPorts
from tests.support import ADMIN_TOKEN, db_rows
from tests.test_twoserver_project import (
    MEMBER_KEY,
    NAMES,
    Ahead,
    World,
    create,
    encoded,
    flow,
    hits,
)
from tests.test_twoserver_project_rerun import last_run, run_hits, upload

pytestmark = pytest.mark.server
__all__ = ["encoded"]  # the fixture: the members' exports, encoded with --two-server


class Crash(BaseException):
    """The matcher's process dying mid-run: not an Exception, so no handler of the matcher's
    runs (its run stays `running`, as after a crash)."""


@dataclasses.dataclass
class Cut:
    """Where the matcher's next run stops `role`: just before batch `batch` (0: the first)
    of the `pair`-th pair of members whose proposal it evaluates (0: the first); `at`
    "collect": S2 stopped once S1 and S2 evaluated that batch, as the matcher asks S2 for
    its output shares (S1 gave its own); "evaluate": S1 stopped once the matcher found it
    connected, before its Evaluate goes; "answered": the matcher dies once it holds both
    servers' shares, before it journals the batch's answer (a role other than "matcher"
    stopped with it)."""

    pair: int
    batch: int
    role: str = "s2"
    at: str = "prepare"


class Cutting:
    """The matcher's S1 and S2 as it reaches them (rpc/twoserver_client.py RemoteServers),
    unchanged, but S2 is stopped (for real) where the world's `cut` says."""

    def __init__(self, servers: tworun.Servers, world: Resumable) -> None:
        self.servers, self.world = servers, world
        self.parts: list[Proposed] = []
        self.batches: dict[tuple[int, int], int] = {}  # by pair of members, in order
        self.armed: Cut | None = None  # a cut after the batch went (`Cut.at`)
        if getattr(servers, "_s2", None) is not None:  # S2 stopped at the batch's Collect
            servers._s2 = _Stub(servers._s2, self, "s2", "Collect", "collect")  # type: ignore[attr-defined]
        if getattr(servers, "_s1", None) is not None:  # S1 stopped at the batch's Evaluate
            servers._s1 = _Stub(servers._s1, self, "s1", "Evaluate", "evaluate")  # type: ignore[attr-defined]

    def watch_batches(self, watch: Any, resume_pairs: Any) -> None:
        self.servers.watch_batches(_Watch(watch, self), resume_pairs)  # type: ignore[attr-defined]

    def propose(self, *args: Any, **kwargs: Any) -> list[Proposed]:
        self.parts = self.servers.propose(*args, **kwargs)
        return self.parts

    def evaluate_part(self, index: int, *args: Any) -> tuple[bytes, bytes]:
        p = self.parts[index]
        ends = (p.member_a, p.member_b)
        self.batches.setdefault(ends, 0)
        cut = self.world.cut
        if cut and list(self.batches).index(ends) == cut.pair and self.batches[ends] == cut.batch:
            self.world.cut = None
            if cut.at != "prepare":
                self.armed = cut
            elif cut.role == "matcher":  # its process dying: no handler runs, nothing sent
                self.world.crashed.set()
                raise Crash()
            else:
                self.world.stop(cut.role)
        self.batches[ends] += 1
        return self.servers.evaluate_part(index, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.servers, name)


class _Stub:
    """S1's or S2's stub, stopping its party (for real) as the armed batch's `method` goes:
    S2's Collect (`Cut.at` "collect"), or S1's Evaluate ("evaluate": after the matcher saw
    S1 connected, S1 is gone, and the matcher's channel has noticed by the time it is
    called: gRPC fails the call unsent)."""

    def __init__(self, stub: Any, cutting: Cutting, role: str, method: str, at: str) -> None:
        self.stub, self.cutting, self.role, self.method, self.at = stub, cutting, role, method, at

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.stub, name)
        if name != self.method:
            return call

        def cut_first(*args: Any, **kwargs: Any) -> Any:
            cut = self.cutting.armed
            if cut is not None and cut.at == self.at:
                self.cutting.armed = None
                self.cutting.world.stop(self.role)
                if self.role == "s1":
                    _noticed_down(self.cutting.servers._channels[0])  # type: ignore[attr-defined]
            return call(*args, **kwargs)

        return cut_first


def _noticed_down(channel: grpc.Channel) -> None:
    """Return once `channel` is no longer READY (its party stopped)."""
    states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
    channel.subscribe(states.put, try_to_connect=False)
    try:
        while states.get(timeout=60) is grpc.ChannelConnectivity.READY:
            pass
    finally:
        channel.unsubscribe(states.put)


class _Watch:
    """The matcher's batch journal (usecases/twobatches.py), the matcher dying at the armed
    batch's answer, before it is journaled."""

    def __init__(self, watch: Any, cutting: Cutting) -> None:
        self.watch, self.cutting = watch, cutting

    def answered(self, *args: Any) -> None:
        cut = self.cutting.armed
        if cut is not None and cut.at == "answered":
            self.cutting.armed = None
            if cut.role != "matcher":  # that role goes down with the matcher
                self.cutting.world.stop(cut.role)
            self.cutting.world.crashed.set()
            raise Crash()
        self.watch.answered(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.watch, name)


def _set_event() -> threading.Event:
    done = threading.Event()
    done.set()
    return done


@dataclasses.dataclass
class Resumable(World):
    """The world of tests/test_twoserver_project.py, its matcher reaching S1 and S2 through
    `Cutting`; `restart` starts a stopped role again where it was (its port and data dir)."""

    key: str = ""
    cut: Cut | None = None
    stopped: str = ""
    crashed: threading.Event = dataclasses.field(default_factory=threading.Event)
    down: threading.Event = dataclasses.field(default_factory=_set_event)  # no stop under way
    setup: Any = None  # the matcher's TwoServerSetup (`Cutting`), for `restart_matcher`
    # a stopped role's port, no other's until `restart` (tests/portheld.py)
    held: HeldPorts = dataclasses.field(default_factory=HeldPorts)

    def restart_matcher(self) -> None:
        """The matcher stopped and started again on its data dir (a new port)."""
        self.server.stop(grace=None)
        self.server = create_server("127.0.0.1:0", self.data_dir, ADMIN_TOKEN, workers=2,
                                    two_server=self.setup, clock=self.clock)  # fmt: skip

    def stop(self, role: str) -> None:
        # named first, and `down` set once the stop returns: the run can fail, and its CLI
        # return, while the stop is still being called on the run's thread
        self.down.clear()
        self.stopped = role
        running = self.roles[role]
        self.held.stop(running.port, lambda: running.stop(grace=None))
        self.down.set()

    def restart(self) -> None:
        assert self.down.wait(30), f"{self.stopped} was never stopped"
        role, port = self.stopped, self.roles[self.stopped].port
        peer = {"s2": f"127.0.0.1:{self.roles['s2'].port}"} if role == "s1" else {}
        self.held.release(port)
        self.roles[role] = create_role(role, f"127.0.0.1:{port}", self.key, MEMBER_KEY,
                                       data_dir=self.folder / f"{role}-data",
                                       **peer)  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Resumable]:
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=tmp_path / "s2-data")
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1-data")  # fmt: skip
    roles: dict[str, RunningRole] = {"s1": s1, "s2": s2}
    setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, MEMBER_KEY)
    data_dir = tmp_path / "matcher-data"
    holder: list[Resumable] = []
    cutting = dataclasses.replace(
        setup, servers=lambda n, r, b: Cutting(setup.servers(n, r, b), holder[0])
    )
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2, two_server=cutting,
                           clock=Ahead())  # fmt: skip
    world = Resumable(roles, server, data_dir, tmp_path, Ahead(), key=key, setup=cutting)
    holder.append(world)
    try:
        yield world
    finally:
        server.stop(grace=None)
        world.held.close()
        for role in world.roles.values():
            role.stop(grace=None)


def failed_run(
    world: Resumable, project: ProjectTokens, encoded: dict[str, Path], cut: Cut, capsys: Any
) -> str:
    """Every member uploads; north's run fails where `cut` stops a role, which starts
    again. The run's failure, as north's `run` prints it."""
    for name in NAMES:
        upload(world, project, name, encoded[name])
    world.cut = cut
    capsys.readouterr()
    assert world.cli("run", "--project", project.project, token=project.tokens["north"]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert world.stopped == cut.role and world.cut is None, "the run did not reach the cut"
    world.restart()
    return err


def rows(world: Resumable, project: str) -> list[tuple[Any, ...]]:
    """The matcher's twoserver_outcomes rows of `project`: (member_a, member_b, pending)."""
    return sorted((r[3], r[4], r[9]) for r in db_rows(world.data_dir, "twoserver_outcomes")
                  if r[0] == project)  # fmt: skip


@pytest.mark.parametrize(("role", "at"), [("s2", "prepare"), ("s1", "prepare"),
                                          ("s1", "evaluate")])  # fmt: skip
def test_a_run_that_fails_between_pairs_of_members_is_resumed_by_a_plain_rerun(
    world: Resumable, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str], role: str,
    at: str,
) -> None:  # fmt: skip
    whole = _hits(world, create(world, "whole", "two-server"), encoded)
    full = last_run(world, "whole")["pairs"]
    project = create(world, "shares", "two-server")
    # S2 (or S1) goes down just before the second pair of members' first batch: the first
    # pair of members is finished (its outcome kept), nothing of the others was evaluated.
    # S1 gone after the matcher found it connected (a race the matcher cannot avoid): gRPC
    # fails the Evaluate unsent (rpc/status.py `never_sent`), so nothing of it was evaluated.
    cut = Cut(pair=1, batch=0, role=role, at=at)
    err = failed_run(world, project, encoded, cut, capsys)
    assert "run shares-run-1 failed:" in err and f"{role.upper()} (127.0.0.1:" in err
    assert "is unreachable" in err
    assert (
        "Nothing this run learned is lost: the outcomes of the 1 pair of members it "
        "finished are kept, and a plain rerun (`blindmatch run`, no upload needed)" in err
    )
    kept = rows(world, "shares")
    assert len(kept) == 1 and kept[0][2] == 0  # one pair of members kept, none pending
    s1 = world.roles["s1"].service.budget  # (restarted: restored from its data dir)
    spent = s1.pairs()
    # The rerun, no member uploading again: the finished pair of members is reused, the
    # others go through S1 and the circuit once; the hits are the uninterrupted run's.
    got = run_hits(world, project, encoded)
    assert got == whole
    detail = last_run(world, "shares")
    assert detail["reused"] == 1
    assert isinstance(detail["pairs"], int) and isinstance(full, int)
    assert 0 < detail["pairs"] < full
    assert s1.pairs() > spent  # S1 never refused a pair as evaluated before
    assert [r[2] for r in rows(world, "shares")] == [0, 0, 0]


def test_a_pair_of_members_cut_between_its_batches_is_resumed_by_a_plain_rerun(
    world: Resumable, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    s1 = world.roles["s1"].service.budget
    before = s1.pairs()
    whole = _hits(world, create(world, "whole", "two-server"), encoded)
    whole_spent = s1.pairs() - before
    project = create(world, "shares", "two-server")
    # S2 goes down after the first pair of members' first batch, before its second: S1 and
    # S2 evaluated part of that pair of members, whose answer the matcher journaled
    # (usecases/twobatches.py): a plain rerun resumes it, no member uploading again.
    before = s1.pairs()
    err = failed_run(world, project, encoded, Cut(pair=0, batch=1), capsys)
    assert "run shares-run-1 failed:" in err and "is unreachable" in err
    pending = [(a, b) for a, b, p in rows(world, "shares") if p]
    assert len(pending) == 1
    a, b = pending[0]
    assert f"The matcher journaled every batch of {a} and {b} that S1 and S2 evaluated" in err
    assert "a plain rerun (`blindmatch run`, no upload needed)" in err
    got = run_hits(world, project, encoded)
    assert got == whole
    # Every pair evaluated once over the two runs (S1 refuses a second evaluation), as many
    # as the uncut run evaluated: the resumed run proposed only the pairs not counted.
    s1 = world.roles["s1"].service.budget  # (S1 was not restarted)
    assert s1.pairs() - before == whole_spent
    detail = last_run(world, "shares")
    assert detail["resumed"] == {"pairs_of_members": 1, "batches_asked_again": 0,
                                 "their_pairs": 0, "bytes": {}}  # fmt: skip
    assert [r[2] for r in rows(world, "shares")] == [0, 0, 0]
    assert not db_rows(world.data_dir, "twoserver_batches")  # dropped once kept


def _hits(world: Resumable, project: ProjectTokens, encoded: dict[str, Path]) -> dict[str, list]:
    """An uninterrupted run's hits (every member uploads, north runs)."""
    return {n: hits(p) for n, p in flow(world, project, encoded).items()}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_matcher_restarted_mid_run_names_the_pair_of_members_it_had_out_and_keeps_the_rest(
    world: Resumable, encoded: dict[str, Path]
) -> None:
    whole = _hits(world, create(world, "whole", "two-server"), encoded)
    project = create(world, "shares", "two-server")
    for name in NAMES:
        upload(world, project, name, encoded[name])
    # The matcher dies as the second pair of members' first batch goes (marked pending,
    # durably, before it goes: S1 and S2 may have it), the first pair of members finished.
    world.cut = Cut(pair=1, batch=0, role="matcher")
    with MatcherClient(world.target, project.tokens["north"]) as north:
        run_id = north.start_run("shares").run_id
    assert world.crashed.wait(120), "the run did not reach the cut"
    world.restart_matcher()
    # The matcher starts the interrupted run again from the start: refused before S1 is
    # asked, naming the pair of members it had out; the finished one is kept.
    with MatcherClient(world.target, project.tokens["north"]) as north:
        final = list(north.watch_run("shares", run_id))[-1]
    assert final.state == "failed"
    message = " ".join(final.message.split())
    kept = [(a, b) for a, b, p in rows(world, "shares") if not p]
    pending = [(a, b) for a, b, p in rows(world, "shares") if p]
    assert len(kept) == 1 and len(pending) == 1
    a, b = pending[0]
    assert f"run {run_id} failed part-way while S1 and S2 evaluated pairs of {a} and {b}" in message
    assert f"{a} or {b} must upload again, then run" in message
    # The member of that pair outside the finished one uploads again: the run reuses the
    # finished pair of members, with the hits of a run that never failed.
    again = a if a not in kept[0] else b
    upload(world, project, again, encoded[again])
    assert run_hits(world, project, encoded) == whole
    assert last_run(world, "shares")["reused"] == 1
