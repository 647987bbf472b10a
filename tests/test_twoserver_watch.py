"""Watches in a two-server project (docs/realtime.md "Watching in a two-server project"), with
a real matcher that is S1's and S2's combiner (three gRPC servers on loopback): a watch's
records go to S1 and S2 under a query ticket, each partner's later upload is compared with
them there, and the watch is told of an upload that holds one, as a CLK watch is of an index
change; an upload that holds none tells it nothing. The matcher's data dir and S1's and S2's
hold nothing of the watched records, and S1 and S2 forget them when the watch ends."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.exports import Export
from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import Encoded, read_encoded
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import RejectedError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import WatchEvent
from blindmatch.client.remote.twoserver import RoleClient, ticket
from blindmatch.matcher.core.querylimit import Limit, QueryLimits
from blindmatch.matcher.realtime.watches import Watch
from blindmatch.matcher.rpc.twoserver_queries import RoleQueries
from blindmatch.matcher.server import create_server
from tests.support import ADMIN_TOKEN, STRONG_SECRET
from tests.test_twoserver_project import SCHEMA, World, create, world  # noqa: F401

pytestmark = pytest.mark.server

ORGS = {"north": "north-police", "south": "south-police", "west": "retail-bcrp"}


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Export, Path]]:
    """The organisations' exports of 300 people, each encoded `--two-server`."""
    folder = tmp_path_factory.mktemp("members")
    (folder / "linkage.secret").write_text(STRONG_SECRET + "\n")
    exports = write_exports(folder, seed=7, size=300)
    out = {}
    for name, org in ORGS.items():
        encoded = folder / f"{name}.encoded"
        assert main(["encode", str(exports[org].csv), "--schema", str(SCHEMA), "--secret-file",
                     str(folder / "linkage.secret"), "--mapping", str(exports[org].mapping),
                     "--out", str(encoded), "--two-server", "--quiet"]) == 0  # fmt: skip
        out[name] = (exports[org], encoded)
    return out


def rows_of(encoded: Encoded, rows: list[int]) -> np.ndarray:
    clks = np.frombuffer(b"".join(encoded.iter_chunks(10_000)), np.uint8)
    return clks.reshape(-1, encoded.clk_bytes)[rows]


class Watching:
    """A member's watch (`token`'s) of `rows` of south's records (those of `folder`), open
    on a thread of its own, its events gathered; closed by `close`. In project `project`,
    encoded under `schema`."""

    def __init__(
        self,
        world: World,  # noqa: F811
        token: str,
        folder: Path,
        rows: list[int],
        project: str = "shares",
        schema: Path = SCHEMA,
        **options: Any,  # MatcherClient.watch's (on_notice, band_keys, allow_band_keys)
    ) -> None:
        self.world = world
        self.events: list[WatchEvent] = []
        self.error: Exception | None = None
        encoded = read_encoded(folder)
        secret = read_secret(folder.parent / "linkage.secret")
        upload = sharing.shared_upload(rows_of(encoded, rows), secret,
                                       sharing.plan_of(load_schema(schema)),
                                       encoded.fallback_bits)  # fmt: skip
        realtime = world.server.realtime
        before = realtime.watches.every()
        self.client = MatcherClient(world.target, token)
        self.stream: Iterator[WatchEvent] = self.client.watch(
            project, upload, clk_bits=encoded.clk_bits,
            fingerprint=encoded.fingerprint, purpose="case 24/118",
            schema_digest=encoded.schema_digest, rule=encoded.rule,
            **{"allow_band_keys": True, **options},  # (the suite's S1 asks for them)
        )  # fmt: skip
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

        def opened() -> list[Watch]:
            return [w for w in realtime.watches.every() if all(w is not b for b in before)]

        until(lambda: bool(opened()) or self.error is not None)
        if self.error is not None:
            self.client.close()
            raise self.error
        self.watch = opened()[0]

    def _follow(self) -> None:
        try:
            for event in self.stream:
                self.events.append(event)
        except Exception as exc:  # the watch refused or ended
            self.error = exc

    def close(self) -> None:
        self.client.close()  # the stream ends with its channel
        self.thread.join(30)
        realtime = self.world.server.realtime
        until(lambda: all(w is not self.watch for w in realtime.watches.every()))
        until(lambda: self.watch.name not in realtime.two_watches._names)


def until(done: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def watched_names(world: World) -> dict[str, list[str]]:  # noqa: F811
    """What S1 and S2 hold under a query's or a watch's name (`@`): uploads, proposals, runs,
    pairs evaluated."""
    out = {}
    for role in ("s1", "s2"):
        s = world.roles[role].service
        out[role] = [n for n in s.held if "@" in n] + [
            n for k in s.proposals._held for n in k if "@" in n
        ] + [n for r in s.runs for n in r if "@" in n]  # fmt: skip
    return out


def test_a_watch_is_told_of_a_partners_later_upload_that_holds_a_watched_record(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
) -> None:
    south, south_folder = members["south"]
    west = members["west"][0]
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    # North's own upload (so the ticket's header is checked against an upload); then north
    # watches two of south's records that west does not hold.
    assert world.cli("upload", str(members["north"][1]), "--project", "shares",
                     token=two.tokens["north"]) == 0  # fmt: skip
    south_ids = read_encoded(south_folder).read_ids()
    in_west = set(west.truth.values())
    rows = [i for i, r in enumerate(south_ids) if south.truth[r] not in in_west][:2]
    uploads_before = sorted(world.roles["s1"].service.held)
    realtime = world.server.realtime
    # With its band keys at once (S1 blocks every pair in the suite: a keyless watch would
    # be opened again at west's upload; tests/test_twoserver_watch_keys.py).
    watch = Watching(world, two.tokens["north"], south_folder, rows, band_keys=True)
    assert watched_names(world)["s1"] and watched_names(world)["s2"]  # held, at S1 and S2
    try:
        # West's upload holds neither: compared, and nothing is told.
        compared = realtime.two_watches.compared
        assert world.cli("upload", str(members["west"][1]), "--project", "shares",
                         token=two.tokens["west"]) == 0  # fmt: skip
        until(lambda: realtime.two_watches.compared == compared + 1)
        time.sleep(0.2)
        assert watch.events == [] and watch.error is None
        # South's upload holds both: an event for each, at the default level (hits).
        assert world.cli("upload", str(south_folder), "--project", "shares",
                         token=two.tokens["south"]) == 0  # fmt: skip
        until(lambda: len(watch.events) == 2 or watch.error is not None)
        assert watch.error is None
        assert sorted(e.index or 0 for e in watch.events) == [0, 1]
        assert {e.partner for e in watch.events} == {"south"}
        # North's own upload again: its own watch is not compared with it.
        compared = realtime.two_watches.compared
        assert world.cli("upload", str(members["north"][1]), "--project", "shares",
                         token=two.tokens["north"]) == 0  # fmt: skip
        time.sleep(0.5)
        assert realtime.two_watches.compared == compared and len(watch.events) == 2
        # Nothing of the watched records is kept: not in the matcher's data dir (no upload
        # of north's beyond its own, no index record), nor in S1's and S2's.
        with closing(sqlite3.connect(world.data_dir / "blindmatch.sqlite")) as db:
            names = [r[0] for r in db.execute("SELECT member FROM uploads")]
        assert sorted(names) == ["north", "north", "south", "west"]
        with closing(sqlite3.connect(f"file:{world.data_dir / 'index.sqlite'}?mode=ro",
                                     uri=True)) as db:  # fmt: skip
            assert not db.execute("SELECT * FROM index_records").fetchall()
        for role in ("s1", "s2"):
            data = world.folder / f"{role}-data"
            with closing(sqlite3.connect(data / f"twoserver-{role}-held.sqlite")) as db:
                kept = [r[0] for r in db.execute("SELECT name FROM uploads")]
            assert kept and not [n for n in kept if "@" in n]
            with closing(sqlite3.connect(data / f"twoserver-{role}.sqlite")) as db:
                rows_ = db.execute("SELECT member, detail FROM audit "
                                   "WHERE action = 'twoserver.upload'")  # fmt: skip
                digests = {m: json.loads(d)["sha256"] for m, d in rows_}
            assert [d for n, d in digests.items() if "@" in n] == [""]  # held, never written
    finally:
        watch.close()
    # Ended: S1 and S2 hold nothing under its name (records, proposal, pairs).
    assert watched_names(world) == {"s1": [], "s2": []}
    assert not [n for n in world.roles["s1"].service.held if n not in uploads_before
                and "@" in n]  # fmt: skip
    for role in ("s1", "s2"):
        assert not [k for k in world.roles[role].service.budget._seen if "@" in k[0] + k[1]]
    # Audited as a CLK watch's: the watch, a notification each, purpose and who was told.
    with world.operator() as op:
        entries = [e for e in op.audit("shares") if str(e["action"]).startswith("watch")]
    assert [e["action"] for e in entries] == ["watch", "watch.notify", "watch.notify"]
    assert all(e["member"] == "north" and "case 24/118" in json.dumps(e) for e in entries)


def test_a_watch_ends_with_its_member_token_or_project_and_s1_and_s2_forget_it(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
) -> None:
    south_folder = members["south"][1]
    two = create(world, "shares", "two-server")
    # Not allowed: refused as in a CLK project, nothing sent to S1 and S2 is kept.
    with pytest.raises(RejectedError, match="watching is not allowed"):
        Watching(world, two.tokens["north"], south_folder, [0])
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    watch = Watching(world, two.tokens["north"], south_folder, [0, 1, 2])
    assert watched_names(world)["s1"]
    # North erases its data: the stream ends, S1 and S2 forget the watched records.
    assert world.cli("erase", "--project", "shares", "--yes", token=two.tokens["north"]) == 0
    watch.thread.join(30)
    assert isinstance(watch.error, RejectedError) and "erased" in str(watch.error)
    assert "this watch, open before that, is closed" in str(watch.error)
    until(lambda: watched_names(world) == {"s1": [], "s2": []})
    watch.close()
    # South's token rotated: its watch ends (UNAUTHENTICATED), its records forgotten.
    watch = Watching(world, two.tokens["south"], south_folder, [0, 1])
    assert watched_names(world)["s1"]
    with world.operator() as op:
        op.rotate_token("shares", "south")
    watch.thread.join(30)
    assert (
        watch.error is not None
        and "was rotated; this watch, open before that, is closed" in str(watch.error)
    )
    until(lambda: watched_names(world) == {"s1": [], "s2": []})
    watch.close()
    # The project expires: west's watch ends (NOT_FOUND), its records forgotten.
    watch = Watching(world, two.tokens["west"], south_folder, [0])
    assert watched_names(world)["s1"]
    world.clock.advance(400 * 86400)
    assert world.server.sweeper.sweep() == ["shares"]
    watch.thread.join(30)
    assert watch.error is not None and "expired" in str(watch.error)
    until(lambda: watched_names(world) == {"s1": [], "s2": []})
    watch.client.close()


def test_a_watch_whose_records_s1_lost_ends_saying_to_open_it_again(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
) -> None:
    """Found on loopback: S1 restarted while a watch was open (S1 and S2 hold a watch's
    records in memory only), and the next partner upload ended the watch with `the watch's
    records are not at S1 and S2 (the query's records are not at S1 and S2 (...)): send them
    again under a fresh query ticket): open it again under a fresh query ticket`, which named
    neither the likely cause nor the command. Here S1 drops them as its restart would."""
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    watch = Watching(world, two.tokens["north"], members["south"][1], [0, 1])
    s1 = world.roles["s1"].service
    with s1.lock:
        for name in [n for n in s1.held if "@" in n]:
            del s1.held[name]  # as a restart on its data dir: a watch's records are not kept
    assert world.cli("upload", str(members["west"][1]), "--project", "shares",
                     token=two.tokens["west"]) == 0  # fmt: skip
    watch.thread.join(30)
    message = str(watch.error)
    assert (
        "the watch's records are no longer at S1 and S2, which hold a watch's records in "
        "memory only (S1 or S2 restarted since the watch was opened?): open it again "
        "(`blindmatch watch`" in message
    ), message
    watch.close()


def test_s1_counts_a_watch_once_at_its_first_comparison_and_refuses_one_beyond_its_limit(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
) -> None:
    south_folder = members["south"][1]
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    # S1's own limit: 3 records a day a member (the matcher's quota is far above it).
    world.roles["s1"].service.queries = RoleQueries("S1", QueryLimits(Limit(3, "day")))
    realtime = world.server.realtime
    # With their band keys at once: S1 blocks every pair in the suite (a keyless watch would
    # be opened again, and counted again, at its first comparison).
    first = Watching(world, two.tokens["north"], south_folder, [0, 1], band_keys=True)
    try:
        for n in (1, 2):  # south uploads twice: 2 records counted once, the second free
            compared = realtime.two_watches.compared
            assert world.cli("upload", str(south_folder), "--project", "shares",
                             token=two.tokens["south"]) == 0  # fmt: skip
            until(lambda: realtime.two_watches.compared == compared + 1)  # noqa: B023
            until(lambda: len(first.events) == 2 * n)  # noqa: B023
        assert first.error is None
        second = Watching(world, two.tokens["north"], south_folder, [2, 3], band_keys=True)
        compared = realtime.two_watches.compared
        assert world.cli("upload", str(south_folder), "--project", "shares",
                         token=two.tokens["south"]) == 0  # fmt: skip
        until(lambda: realtime.two_watches.compared == compared + 1)
        second.thread.join(30)
        # The second watch's 2 records would make 4: refused, its watch ended saying so; the
        # first, counted already, is told of south's third upload too.
        assert isinstance(second.error, RejectedError)
        assert "query limit" in str(second.error) and "--query-limit 3/day" in str(second.error)
        until(lambda: len(first.events) == 6)
        second.client.close()
        # The second's records forgotten; the first's held.
        assert len({n for n in world.roles["s1"].service.held if "@" in n}) == 1
    finally:
        first.close()
    with world.operator() as op:
        actions = [e["action"] for e in op.audit("shares") if e["member"] == "north"]
    assert actions.count("query.refused") == 1 and actions.count("watch") == 2
    with closing(sqlite3.connect(world.folder / "s1-data" / "twoserver-s1.sqlite")) as db:
        counted = [r[0] for r in db.execute("SELECT action FROM audit WHERE action LIKE "
                                            "'twoserver.query%'")]  # fmt: skip
    assert counted == ["twoserver.query", "twoserver.query.refused"]


def test_the_matcher_stopping_has_s1_and_s2_forget_the_watched_records(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
) -> None:
    stop_with_a_watch_open(world, members)


def stop_with_a_watch_open(world: World, members: dict[str, tuple[Export, Path]]) -> None:  # noqa: F811
    """North watches one record in a two-server project; the matcher stops: the watch ends
    with an error and S1 and S2 hold none of its records."""
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    watch = Watching(world, two.tokens["north"], members["south"][1], [0])
    assert watched_names(world)["s1"] and watched_names(world)["s2"]
    world.server.stop(grace=None)
    watch.thread.join(30)
    assert watch.error is not None
    assert watched_names(world) == {"s1": [], "s2": []}
    watch.client.close()


def test_a_watch_the_stop_ended_is_forgotten_at_s1_and_s2_before_the_stop_returns(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stop ends the watch at once; its stream leaves the registry, then asks S1 and S2
    # to forget. Here the stream never gets as far as its Forget (as when the stop returns
    # first, or the process exits): the stop forgets the records itself.
    realtime = world.server.realtime
    monkeypatch.setattr(realtime, "unwatch", realtime.watches.remove)  # no Forget of its own
    stop_with_a_watch_open(world, members)


def test_a_matcher_started_again_has_s1_and_s2_forget_what_one_killed_left_there(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
) -> None:
    """A matcher killed with a watch open cannot tell S1 and S2 to forget its records; the
    next one to start on its data dir does, before it serves (and only queries' and
    watches' records: the members' uploads stay)."""
    two = create(world, "shares", "two-server")
    assert world.cli("upload", str(members["south"][1]), "--project", "shares",
                     token=two.tokens["south"]) == 0  # fmt: skip
    encoded = read_encoded(members["north"][1])
    upload = sharing.shared_upload(rows_of(encoded, [0, 1]), read_secret(
        members["north"][1].parent / "linkage.secret"), sharing.plan_of(load_schema(SCHEMA)),
        encoded.fallback_bits)  # fmt: skip
    with MatcherClient(world.target, two.tokens["north"]) as north:
        t = ticket(north, "shares", query=True)
    for role in ("s1", "s2"):  # as a killed matcher's open watch left them
        with RoleClient(role, getattr(t, role), t.ticket) as c:
            c.upload(t.name, upload)
    uploads = sorted(n for n in world.roles["s1"].service.held if "@" not in n)
    assert watched_names(world)["s1"] == [t.name]
    world.server.stop(grace=None)  # no watch open at it: it tells S1 and S2 nothing
    assert watched_names(world)["s1"] == [t.name]
    again = create_server("127.0.0.1:0", world.data_dir, ADMIN_TOKEN, workers=2,
                          two_server=world.server.runs.two_server, clock=world.clock)  # fmt: skip
    try:
        assert watched_names(world) == {"s1": [], "s2": []}
        assert sorted(world.roles["s1"].service.held) == uploads
    finally:
        again.stop(grace=None)


def test_at_mapping_a_watch_event_names_request_references_only_the_partner_resolves(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As a two-server query's answer at `mapping` (tests/test_twoserver_query_refs.py): the
    partner's rows come back as references to the upload compared, which south resolves to
    its records from the folder it uploaded."""
    south_folder = members["south"][1]
    with world.operator() as op:
        tokens = op.create_project("shares", ["north", "south", "west"], "mapping",
                                   mode="two-server").tokens  # fmt: skip
        op.set_query_limits("shares", allow_watch=True)
    watch = Watching(world, tokens["north"], south_folder, [0, 1])
    try:
        assert world.cli("upload", str(south_folder), "--project", "shares",
                         token=tokens["south"]) == 0  # fmt: skip
        until(lambda: len(watch.events) == 2 or watch.error is not None)
        assert watch.error is None
    finally:
        watch.close()
    refs = [ref for e in watch.events if e.match is not None for ref in e.match.refs]
    assert len(refs) >= 2 and all(re.fullmatch(r"bmr-[a-z2-7]{26}", ref) for ref in refs)
    capsys.readouterr()
    assert world.cli("resolve", *refs, "--project", "shares", "--encoded", str(south_folder),
                     "--purpose", "answering case 24/118", "--json",
                     token=tokens["south"]) == 0  # fmt: skip
    resolved = json.loads(capsys.readouterr().out)
    ids = read_encoded(south_folder).read_ids()
    assert {i for r in resolved for i in r["record_ids"]} >= {ids[0], ids[1]}
    assert all(r["requester"] == "north" for r in resolved)
    assert world.cli("resolve", refs[0], "--project", "shares", "--encoded", str(south_folder),
                     "--purpose", "answering case 24/118", token=tokens["south"]) == 0  # fmt: skip
    said = capsys.readouterr().out  # (was "a query's answer, `blindmatch query`" alone)
    assert "(a query's or a watch's answer, `blindmatch query` or `watch`; reference" in said
    # `resolve` asked the project's mode alone (DescribeProject settings_only): south was not
    # recorded looking at its partners' upload status (it was, once a resolve, walk2s).
    with world.operator() as op:
        assert not [e for e in op.audit("shares") if e["action"] == "project.describe"]
