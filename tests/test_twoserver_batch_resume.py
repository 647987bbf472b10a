"""A two-server run cut mid-batch is resumed by a plain rerun (docs/protocol.md "A batch cut
mid-way, resumed"): S1 and S2 keep each batch of the proposal's output shares until the
matcher acknowledges it (core/batchkeep.py, on disk with a data dir), the matcher journals
each batch before it goes and once answered (usecases/twobatches.py), and the rerun asks the
batch that was out again by its id alone (the same bytes; nothing evaluated again), takes
the answered batches' links from its journal and has S1 propose only the pairs its budget
has not counted. The links are those of a run never cut, and no pair is evaluated twice
(S1's budget, which refuses a second evaluation, counts as many pairs as the uncut run's).

Real S1, S2 and matcher on loopback (tests/test_twoserver_project_resume.py's world)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindmatch.client.remote.client import MatcherClient
from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.batchkeep import unpack
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import db_rows
from tests.test_twoserver_project import NAMES, create, encoded, hits
from tests.test_twoserver_project_rerun import last_run, run_hits, upload
from tests.test_twoserver_project_resume import (
    Cut,
    Resumable,
    _hits,
    failed_run,
    rows,
    world,
)

pytestmark = pytest.mark.server
__all__ = ["encoded", "world"]  # the fixtures


def role_audit(world: Resumable, role: str, action: str) -> list[dict[str, Any]]:
    path = world.folder / f"{role}-data" / f"twoserver-{role}.sqlite"
    with closing(sqlite3.connect(path)) as db:
        got = db.execute("SELECT action, detail FROM audit ORDER BY rowid").fetchall()
    return [json.loads(d) for a, d in got if a == action]


def test_a_batch_whose_shares_s2_never_sent_is_asked_again_by_its_id_after_s2_restarts(
    world: Resumable, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    s1 = world.roles["s1"].service.budget
    before = s1.pairs()
    whole = _hits(world, create(world, "whole", "two-server"), encoded)
    whole_spent = s1.pairs() - before
    project = create(world, "shares", "two-server")
    # S1 and S2 evaluate the first pair of members' second batch; S2 is stopped as the
    # matcher asks it for its shares (S1 gave its own), and starts again on its data dir.
    before = s1.pairs()
    err = failed_run(world, project, encoded, Cut(pair=0, batch=1, at="collect"), capsys)
    assert "is unreachable" in err and "a plain rerun" in err
    (batch,) = [r for r in db_rows(world.data_dir, "twoserver_batches") if not r[6]]
    got = run_hits(world, project, encoded)
    assert got == whole
    assert s1.pairs() - before == whole_spent  # each pair evaluated once over both runs
    detail = last_run(world, "shares")
    asked = detail["resumed"].pop("bytes")  # the `Resume` calls', in the run's bytes too
    assert detail["resumed"] == {"pairs_of_members": 1, "batches_asked_again": 1,
                                 "their_pairs": batch[5]}  # fmt: skip
    assert asked["S1->C"] > batch[5] and asked["S2->C"] > batch[5]  # the batch's shares
    assert asked["S1->S2"] == asked["S2->S1"] == 0  # given again, not run again
    assert all(detail["bytes"][way] >= n for way, n in asked.items())
    for role in ("s1", "s2"):  # the re-ask audited by both, granted
        (asked,) = role_audit(world, role, "twoserver.resume")
        assert asked["batch"] == batch[3] and asked["granted"] is True
        assert asked["pairs"] == batch[5]
    (run,) = [d for d in role_audit(world, "s1", "twoserver.run") if "resumed" in d]
    assert run["left_out"] > 0  # the pairs S1 counted, not proposed again
    assert not db_rows(world.data_dir, "twoserver_batches")
    # Acknowledged once its answer was journaled: asked again, it is refused with why.
    stub = pb_grpc.TwoServerBlockingStub(
        grpc.insecure_channel(f"127.0.0.1:{world.roles['s1'].port}")
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.Resume(pb.ResumeRequest(batch=batch[3]),
                    metadata=(("authorization", f"Bearer {world.key}"),))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "acknowledged: the combiner holds its answer" in refused.value.details()
    assert not world.roles["s1"].service.batches.held()
    assert not world.roles["s2"].service.batches.held()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("with_role", ["", "s1"])
def test_a_matcher_dying_with_a_batch_evaluated_resumes_the_run_when_it_starts_again(
    world: Resumable, encoded: dict[str, Path], with_role: str
) -> None:
    whole = _hits(world, create(world, "whole", "two-server"), encoded)
    project = create(world, "shares", "two-server")
    for name in NAMES:
        upload(world, project, name, encoded[name])
    # The matcher dies holding both servers' shares of the second pair of members' first
    # batch, before journaling its answer: S1 and S2 counted it and keep its shares (with
    # `with_role`, S1 goes down too, and starts again from its data dir).
    world.cut = Cut(pair=1, batch=0, role=with_role or "matcher", at="answered")
    with MatcherClient(world.target, project.tokens["north"]) as north:
        run_id = north.start_run("shares").run_id
    assert world.crashed.wait(120), "the run did not reach the cut"
    if with_role:
        world.restart()
    world.restart_matcher()
    # The matcher starts the interrupted run again: it resumes the pair of members.
    with MatcherClient(world.target, project.tokens["north"]) as north:
        final = list(north.watch_run("shares", run_id))[-1]
    assert final.state == "done", final.message
    detail = last_run(world, "shares")
    assert detail["resumed"]["batches_asked_again"] == 1
    assert [r[2] for r in rows(world, "shares")] == [0, 0, 0]
    out = {}
    for name in NAMES:
        path = world.folder / f"shares-{name}.csv"
        assert world.cli("results", "--project", "shares", "--encoded", str(encoded[name]),
                         "--out", str(path), token=project.tokens[name]) == 0  # fmt: skip
        out[name] = path
    assert {n: hits(p) for n, p in out.items()} == whole


def test_a_re_ask_names_a_batch_by_its_id_alone_and_an_unknown_one_is_refused_with_why(
    world: Resumable,
) -> None:
    # Nothing but the id: a batch with other pairs, cut-offs, rule or deal cannot be asked.
    assert [f.name for f in pb.ResumeRequest.DESCRIPTOR.fields] == ["batch"]
    metadata = (("authorization", f"Bearer {world.key}"),)
    for role, stub_of in (("s1", pb_grpc.TwoServerBlockingStub),
                          ("s2", pb_grpc.TwoServerSharesStub)):  # fmt: skip
        stub = stub_of(grpc.insecure_channel(f"127.0.0.1:{world.roles[role].port}"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Resume(pb.ResumeRequest(batch="no-such-batch"), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "batch 'no-such-batch': never evaluated here" in refused.value.details()
        (asked,) = role_audit(world, role, "twoserver.resume")
        assert asked["granted"] is False and "never evaluated here" in asked["reason"]
        with pytest.raises(grpc.RpcError) as denied:  # the combiner's call only
            stub.Resume(pb.ResumeRequest(batch="x"), metadata=(("authorization", "Bearer no"),))
        assert denied.value.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                       grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
        assert (
            stub.Acknowledge(pb.AcknowledgeRequest(batches=["x"]), metadata=metadata).dropped == 0
        )


def replayed(world: Resumable, first: pb.RoundMessage) -> grpc.RpcError:
    """S2's refusal of an exchange S1's first message `first` opens (sent as S1 would)."""
    stub = pb_grpc.TwoServerSharesStub(grpc.insecure_channel(f"127.0.0.1:{world.roles['s2'].port}"))
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Exchange(iter([first]), metadata=(("authorization", f"Bearer {world.key}"),)))
    return refused.value


class Down:
    """`role` stopped for real (as a process killed) at round `at` of the next batch of the
    proposal it evaluates: its rounds cut, no output shares anywhere, its pairs counted."""

    def __init__(self, world: Resumable, role: str, at: int = 2) -> None:
        self.world, self.role, self.at = world, role, at
        self.armed = True
        self.stopped: threading.Event | None = None
        self.close = linkbit.Party.close

    def __call__(self, party: linkbit.Party, other: bytes) -> None:
        if self.armed and party.role == ("s1", "s2").index(self.role) and party._round == self.at:
            self.armed = False
            # named before the stop: the run can fail, and its CLI return, while
            # `server.stop` is still being called on this thread
            self.world.stopped = self.role
            running = self.world.roles[self.role]
            stopped = running.server.stop(None)  # none answered
            self.world.held.hold(running.port)  # no other's until `restart` (tests/portheld.py)
            self.stopped = stopped  # (once held: `restart` lets it go)
            raise RuntimeError(f"{self.role} went down during the rounds")
        self.close(party, other)

    def restart(self) -> None:
        # (the run can fail, and its CLI return, while `server.stop` is still being called
        # on the rounds' thread: `stopped` is set once that call returns)
        deadline = time.monotonic() + 30
        while self.stopped is None:
            assert time.monotonic() < deadline, f"{self.role} was never stopped"
            time.sleep(0.05)
        assert self.stopped.wait(30)
        self.world.roles[self.role].service.close()
        self.world.restart()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("role", ["s2", "s1"])
def test_a_batch_cut_during_its_rounds_is_run_again_on_the_inputs_both_servers_kept(
    world: Resumable, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, role: str,
) -> None:  # fmt: skip
    s2 = world.roles["s2"].service.budget
    before = s2.pairs()
    whole = _hits(world, create(world, "whole", "two-server"), encoded)
    whole_spent = s2.pairs() - before
    project = create(world, "shares", "two-server")
    for name in NAMES:
        upload(world, project, name, encoded[name])
    # S2 (or S1) goes down at round 2 of the run's first batch: both servers counted it and
    # kept its inputs, neither holds output shares; it starts again on its data dir.
    down = Down(world, role)
    monkeypatch.setattr(linkbit.Party, "close", lambda party, other: down(party, other))
    before = world.roles["s2"].service.budget.pairs()
    capsys.readouterr()
    assert world.cli("run", "--project", "shares", token=project.tokens["north"]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert not down.armed and world.stopped == role, err
    assert "is unreachable" in err and "a plain rerun" in err, err
    down.restart()
    assert world.roles[role].service.inputs.held() == 1  # reloaded from its data dir
    assert world.roles[role].service.inputs.nbytes() == 0  # (there only: read back to rerun)
    assert not world.roles[role].service.batches.held()
    (batch,) = [r for r in db_rows(world.data_dir, "twoserver_batches") if not r[6]]
    # S2 runs again only the first message it kept: another pad, or a batch it kept no
    # inputs of, is refused before anything is evaluated or counted.
    spent = world.roles["s2"].service.budget.pairs()
    raw_first = unpack(world.roles["s1"].service.inputs.get(batch[3]).shares)[1]
    for change, code, why in (
        ({"mask": bytes(32)}, grpc.StatusCode.PERMISSION_DENIED, "other than the one S1 sent"),
        ({"batch": "no-such-batch"}, grpc.StatusCode.FAILED_PRECONDITION, "kept no inputs"),
    ):  # fmt: skip
        first = pb.RoundMessage.FromString(raw_first)
        first.replay = True
        for field, value in change.items():
            setattr(first, field, value)
        refused = replayed(world, first)
        assert refused.code() == code and why in refused.details(), refused.details()
    assert world.roles["s2"].service.budget.pairs() == spent
    got = run_hits(world, project, encoded)
    assert got == whole  # the links of a run never cut
    # Each pair counted once over both runs (S2's budget refuses a second evaluation).
    assert world.roles["s2"].service.budget.pairs() - before == whole_spent
    detail = last_run(world, "shares")
    assert detail["resumed"]["batches_asked_again"] == 1
    # The rounds run again between S1 and S2 are in the run's bytes.
    assert detail["resumed"]["bytes"]["S1->S2"] > 0 < detail["resumed"]["bytes"]["S2->S1"]
    (asked,) = role_audit(world, "s1", "twoserver.resume")
    assert asked["batch"] == batch[3] and asked["granted"] is True and asked["rerun"] is True
    (again,) = role_audit(world, "s2", "twoserver.rerun")
    assert again["batch"] == batch[3] and again["pairs"] == batch[5]
    for r in ("s1", "s2"):  # acknowledged: nothing kept
        assert not world.roles[r].service.inputs.held()
        assert not world.roles[r].service.batches.held()


def test_each_batch_acknowledges_the_last_so_an_honest_run_makes_one_acknowledge_call(
    world: Resumable, encoded: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, list[Any]] = {"batches": [], "acknowledge": []}
    run, acknowledge = RemoteServers._run, RemoteServers.acknowledge

    def counted_run(self: RemoteServers, to_s1: pb.CircuitBatch, *args: Any, **kw: Any) -> Any:
        try:
            return run(self, to_s1, *args, **kw)
        finally:  # (as it went: `_run` adds the ids it acknowledges)
            calls["batches"].append((to_s1.batch, to_s1.proposed, list(to_s1.acknowledged)))

    def counted_acknowledge(self: RemoteServers, batches: Any) -> None:
        calls["acknowledge"].append(list(batches))
        acknowledge(self, batches)

    monkeypatch.setattr(RemoteServers, "_run", counted_run)
    monkeypatch.setattr(RemoteServers, "acknowledge", counted_acknowledge)
    _hits(world, create(world, "whole", "two-server"), encoded)
    batches = calls["batches"]
    proposed = [b for b, of_proposal, _ in batches if of_proposal]
    assert len(proposed) >= 2
    # Each batch carries the ids of the batches of the proposal answered (journaled) since
    # the one before it; the last ones go in the one `Acknowledge` call at the run's end.
    carried = [b for _, _, acked in batches for b in acked]
    (last,) = calls["acknowledge"]
    assert carried + last == proposed
    assert not batches[0][2] and len(carried) >= 1
    for role in ("s1", "s2"):  # nothing kept after an honest run
        assert not world.roles[role].service.batches.held()
        assert not world.roles[role].service.inputs.held()
