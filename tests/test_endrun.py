"""A run in progress when the operator ends its project (`admin end-project` in the run's
compare stage), in a CLK and in a two-server project: the run stops, nothing of it is stored
(no run, no links, no batch of the pair journaled, no audit entry of its end), its watchers are
told the project ended (NOT_FOUND, with `blindmatch-status`), S1 and S2 forget the project,
the runs' thread goes on to the next run and nothing is left in the data dir's tmp folder.
The run is held at its first write of the "compare" stage until the project is ended, as a
slow compare would be; real matchers (and S1 and S2) on loopback, real SQLite files."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from benchmarks.knownclks import population, write
from blindmatch.client import MatcherClient
from blindmatch.matcher.storage.store import Store
from blindmatch.protos import blindmatch_pb2 as pb
from tests import twoserver_world
from tests.support import ADMIN_TOKEN, Matcher, auth, db_rows, stub
from tests.test_streamstatus import answered_as, ended
from tests.twoserver_world import World, create, held

pytestmark = pytest.mark.server

world = twoserver_world.world  # the fixture
shared = twoserver_world.encoded  # the fixture (the members' two-server encodings)
REASON = "ISA terminated by north's DPO"


class Held:
    """A matcher's `store.update_run`, its first write of the "compare" stage's progress
    (work done of the total) held until `release` is set (`comparing` set meanwhile); every
    write of that run from then on, with what it returned, in `after`."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = store.update_run
        self.comparing, self.release = threading.Event(), threading.Event()
        self.run_id = ""
        self.after: list[tuple[dict[str, object], bool]] = []
        monkeypatch.setattr(store, "update_run", self)

    def __call__(self, run_id: str, **fields: Any) -> bool:
        if (
            not self.comparing.is_set()
            and fields.get("stage") == "compare"
            and "work_total" in fields
        ):
            self.run_id = run_id
            self.comparing.set()
            assert self.release.wait(120)
        done = self.real(run_id, **fields)
        if run_id == self.run_id:
            self.after.append((fields, done))
        return done


def watch_run(target: str, project: str, run_id: str, token: str) -> grpc.Call:
    channel = grpc.insecure_channel(target)
    statuses = stub(channel).WatchRun(
        pb.WatchRunRequest(project=project, run_id=run_id), metadata=auth(token), timeout=120
    )
    next(statuses)
    return statuses


def ended_in_compare(target: str, project: str, tokens: dict[str, str], hold: Held) -> None:
    """Start a run of `project`, end the project in its compare stage, then let it go on:
    its watcher is told the project ended."""
    with MatcherClient(target, tokens["north"]) as north:
        run = north.start_run(project)
    statuses = watch_run(target, project, run.run_id, tokens["south"])
    assert hold.comparing.wait(120), "the run never reached its compare stage"
    with MatcherClient(target, ADMIN_TOKEN) as op:
        op.end_project(project, REASON)
    hold.release.set()
    answered_as(
        ended(statuses), grpc.StatusCode.NOT_FOUND, f"project {project!r} was ended by the operator"
    )


def next_run_finishes(target: str, tmp_path: Path) -> None:
    """A CLK project's run, queued after the ended one, is done: the runs' thread is free."""
    with MatcherClient(target, ADMIN_TOKEN) as op:
        tokens = op.create_project("kept", ["north", "south"], mode="clk").tokens
    for member, ds in zip(("north", "south"), population(2, 40, 0.3, seed=5), strict=True):
        with MatcherClient(target, tokens[member]) as client:
            client.upload("kept", write(ds, tmp_path / f"kept-{member}.encoded"))
    with MatcherClient(target, tokens["north"]) as north:
        run = north.start_run("kept")
        states = [p.state for p in north.watch_run("kept", run.run_id)]
    assert states[-1] == "done", states


def kept_of(data_dir: Path, project: str) -> dict[str, list[tuple[object, ...]]]:
    """What the data dir holds of `project`'s runs: runs, links, two-server outcomes and
    journaled batches, audit entries after its `project.expire` (but S1's and S2's
    forgetting it, which its end asks for); and the tmp folder's files."""
    audit = [r for r in db_rows(data_dir, "audit") if r[4] == project]
    expired = max(r[0] for r in audit if r[3] == "project.expire")
    runs = [r for r in db_rows(data_dir, "runs") if r[1] == project]
    ids = {r[0] for r in runs}
    tmp = data_dir / "tmp"
    return {
        "runs": runs,
        "links": [r for r in db_rows(data_dir, "links") if r[0] in ids],
        "outcomes": [r for r in db_rows(data_dir, "twoserver_outcomes") if r[0] == project],
        "batches": [r for r in db_rows(data_dir, "twoserver_batches") if r[0] == project],
        "entries after the end": [
            r[3:5] for r in audit if r[0] > expired and r[3] != "twoserver.forget"
        ],
        "tmp files": [(p.name,) for p in tmp.rglob("*") if p.is_file()] if tmp.exists() else [],
    }


NOTHING: dict[str, list[tuple[object, ...]]] = {
    k: [] for k in ("runs", "links", "outcomes", "batches", "entries after the end", "tmp files")
}


def test_a_clk_run_in_its_compare_stage_stops_when_its_project_is_ended(
    matcher: Matcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with matcher.operator() as op:
        tokens = op.create_project("pact", ["north", "south"], mode="clk").tokens
    for member, ds in zip(("north", "south"), population(2, 300, 0.3, seed=2), strict=True):
        with matcher.member(tokens[member]) as client:
            client.upload("pact", write(ds, tmp_path / f"{member}.encoded"))
    hold = Held(matcher.server.store, monkeypatch)
    ended_in_compare(matcher.target, "pact", tokens, hold)
    next_run_finishes(matcher.target, tmp_path)
    # The held write found the run gone, and the run wrote nothing after it: it stopped
    # (before fuzzend it compared and solved on, and only its links were not stored).
    assert [(f["stage"], done) for f, done in hold.after] == [("compare", False)]
    assert kept_of(matcher.data_dir, "pact") == NOTHING


def test_a_two_server_run_in_its_compare_stage_stops_and_leaves_nothing_of_the_project(
    world: World, shared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1 has proposed the pairs; no batch has gone through the circuit yet. Before fuzzend
    a batch answered after the end was journaled (the pair's link bits) in the data dir of a
    project whose data was deleted."""
    pact = create(world, "pact", "two-server")
    for member, token in pact.tokens.items():
        assert world.cli("upload", str(shared[member]), "--project", "pact", token=token) == 0
    names = sorted(r[1] for r in db_rows(world.data_dir, "upload_twoserver")
                   if r[1].startswith("pact/"))  # fmt: skip
    hold = Held(world.server.store, monkeypatch)
    ended_in_compare(world.target, "pact", pact.tokens, hold)
    assert held(world, "pact") == {"s1": [], "s2": []}
    next_run_finishes(world.target, tmp_path)
    assert hold.after == [({"stage": "compare", "work_done": 0, "work_total": hold.after[0][0]
                            ["work_total"], "tasks_done": 0, "tasks_total": 0}, False)]  # fmt: skip
    assert kept_of(world.data_dir, "pact") == NOTHING
    # A batch of the run answered as the project ended (its answer racing S1's and S2's
    # forgetting) is not journaled: its pair's link bits would outlive the project's data.
    assert not world.server.store.journal_two_server_batch("pact", *names[:2], "late", 0, 578)
    assert kept_of(world.data_dir, "pact") == NOTHING
    assert held(world, "pact") == {"s1": [], "s2": []}
