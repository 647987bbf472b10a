"""The standing indexes spread over look-up servers (docs/scale.md): a matcher started
with `lookup_servers` answers every query as the in-process index does, sees every
change, and refuses (UNAVAILABLE, naming the server) rather than answer without a shard."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks.cliflow import BLINDMATCH, ROOT, STOP_SECONDS, Served, lookup_server, serve
from benchmarks.erasure_start import Hung
from benchmarks.ports import on_free_addresses, on_free_ports
from benchmarks.synthclks import CLK_BITS, members
from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.errors import RejectedError, UnavailableError
from blindmatch.client.remote import tls
from blindmatch.client.remote.model import QueryAnswer
from blindmatch.client.tools.certs import make_certs
from blindmatch.matcher.core import segment
from blindmatch.matcher.core.fallbackindex import FallbackIndex
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.domain import Encoding
from blindmatch.matcher.errors import Unavailable
from blindmatch.matcher.realtime import shards as shards_module
from blindmatch.matcher.realtime.shards import (
    ERASE_MEMBER,
    Fence,
    ShardChange,
    Shards,
    shard_of,
)
from blindmatch.matcher.rpc import lookup_wire
from blindmatch.matcher.rpc.lookup_client import LookupServers
from blindmatch.matcher.rpc.lookup_service import RunningLookupServer, create_lookup_server
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.shard_source import ShardRecords, lookup_epoch, lookup_key
from tests.portheld import HeldPorts, said_taken, taken_port
from tests.support import (
    ADMIN_TOKEN,
    GRACE,
    NORTH_CSV,
    PETER,
    PURPOSE,
    Matcher,
    Org,
    encode,
    index_all,
    person,
)

# In-process servers on loopback: the server tier (the tests that start processes are slow).
pytestmark = pytest.mark.server

FINGERPRINT = b"lookup-server test fingerprint!!"
NAMES = ("north", "south", "west")
ROWS = 3_000


@pytest.fixture(scope="module")
def clks() -> list[np.ndarray]:
    """Three members' CLKs; a fifth of the people held by all three (noisy copies)."""
    return members(len(NAMES), ROWS, overlap=0.2, seed=7)


@dataclass
class Cluster:
    data_dir: Path
    addresses: list[str]
    lookups: list[RunningLookupServer | None]
    matcher: Matcher | None = None
    loaded: bool = False  # servers without a data dir, loaded by the matcher
    # a stopped look-up server's port, no other's until it starts again (tests/portheld.py)
    held: HeldPorts = field(default_factory=HeldPorts)

    def start_matcher(self, *, sharded: bool = True) -> Matcher:
        server = create_server(
            "127.0.0.1:0",
            self.data_dir,
            ADMIN_TOKEN,
            workers=1,
            lookup_servers=self.addresses if sharded else (),
        )
        self.matcher = Matcher(server, self.data_dir, ADMIN_TOKEN)
        return self.matcher

    def start_lookup(self, i: int) -> RunningLookupServer:
        self.release(i)
        if self.loaded:  # on another machine: only the matcher's look-up key, copied
            key = lookup_key(self.data_dir)
            server = create_lookup_server(self.addresses[i], None, i, len(self.addresses), key=key)
        else:
            server = create_lookup_server(
                self.addresses[i], self.data_dir, i, len(self.addresses), wait=True
            )
        self.lookups[i] = server
        return server

    def stop_lookup(self, i: int) -> None:
        server = self.lookups[i]
        assert server is not None
        self.held.stop(server.port, lambda: server.stop(grace=None))
        self.lookups[i] = None

    def release(self, i: int) -> None:
        """Server `i`'s port let go (held since `stop_lookup`), for a server started there."""
        self.held.release(int(self.addresses[i].rsplit(":", 1)[1]))

    def stop(self) -> None:
        if self.matcher is not None:
            self.matcher.server.stop(grace=None)
            self.matcher = None
        for i, server in enumerate(self.lookups):
            if server is not None:
                self.stop_lookup(i)
        self.held.close()


def start_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loaded: bool) -> Cluster:
    monkeypatch.setattr(segment, "MIN_ROWS", 1000)
    # The matcher and its servers share one process (and its GIL) here, on a loaded host: a
    # forward's deadline as long as before, lest a slow apply read as a hung server (a test
    # of that sets its own).
    monkeypatch.setattr(lookup_wire, "FORWARD_FLOOR_SECONDS", 60.0)

    def started(ports: list[int]) -> Cluster:
        """Ports picked before the matcher starts: it names its servers, and makes the data
        dir they read (or its key). A port taken meanwhile: all stopped, picked again."""
        addresses = [f"127.0.0.1:{port}" for port in ports]
        found = Cluster(tmp_path / "data", addresses, [None, None], loaded=loaded)
        found.start_matcher()
        try:
            for i in range(2):
                found.start_lookup(i)
        except OSError:
            found.stop()
            raise
        return found

    return on_free_ports(2, started)


@pytest.fixture
def sharded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A matcher and two look-up servers on loopback, sharing its data dir. Indexes of a
    thousand rows or more get LSH tables (as a million-row one would), so the shards'
    tables, planned from their own rows, are what is compared."""
    found = start_cluster(tmp_path, monkeypatch, loaded=False)
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """`sharded`, but the look-up servers have no data dir (as on another machine): they
    start empty and the matcher loads them."""
    found = start_cluster(tmp_path, monkeypatch, loaded=True)
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(params=["data-dir", "loaded"])
def either(request: pytest.FixtureRequest) -> Cluster:
    """Each kind of cluster in turn: servers reading the data dir, servers loaded."""
    found: Cluster = request.getfixturevalue("sharded" if request.param == "data-dir" else "remote")
    return found


def refs_of(name: str, rows: range) -> list[str]:
    return [f"{name}-{i}" for i in rows]


def put(matcher: Matcher, token: str, name: str, clks: np.ndarray, rows: range) -> None:
    with matcher.member(token) as member:
        member.change_index(
            "trial",
            clk_bits=CLK_BITS,
            fingerprint=FINGERPRINT,
            puts=list(zip(refs_of(name, rows), (clks[i].tobytes() for i in rows), strict=True)),
        )


def remove(matcher: Matcher, token: str, refs: list[str]) -> None:
    with matcher.member(token) as member:
        member.change_index("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, removes=refs)


def query(matcher: Matcher, token: str, clks: np.ndarray) -> QueryAnswer:
    with matcher.member(token) as member:
        return member.query(
            "trial", clks.tobytes(), clk_bits=CLK_BITS, fingerprint=FINGERPRINT, purpose=PURPOSE
        )


def current(matcher: Matcher) -> None:
    """Wait until no look-up server is behind, being loaded or reading its shards again
    (meanwhile their shards are searched in the matcher's own copy), so that a query is
    answered through the servers themselves."""
    remote = matcher.server.realtime.remote
    assert isinstance(remote, LookupServers)
    deadline = time.monotonic() + 60
    remote.catch_up()  # (one behind: asked to read its shards again, as a query would)
    while remote.loading or remote.behind():
        assert time.monotonic() < deadline
        time.sleep(0.05)
        remote.catch_up()


def once_read(matcher: Matcher, token: str, clks: np.ndarray) -> QueryAnswer:
    """`query`, once every look-up server holds current shards (`current`; one found empty
    by a query is loaded then, its shards searched in the matcher's copy meanwhile), and
    asked again while one says it is reading its shards: refused, never answered from part
    of them. Asked one CLK at a time (queries count against the member's rate limit) until
    one is answered through every server, then whole."""
    remote = matcher.server.realtime.remote
    assert isinstance(remote, LookupServers)
    current(matcher)
    deadline = time.monotonic() + 60
    asked = clks[:1]  # (a server found empty by it is loaded: asked again)
    while True:
        try:
            answer = query(matcher, token, asked)
        except UnavailableError as exc:
            if not being_read(exc) or time.monotonic() > deadline:
                raise
            asked = clks[:1]
            time.sleep(0.1)
            continue
        if remote.loading or remote.behind():  # (found empty, say: loaded; ask again)
            current(matcher)
            asked = clks[:1]
            continue
        if asked is clks:
            return answer
        asked = clks


def being_read(exc: UnavailableError) -> bool:
    """Refused while a look-up server reads its shards, or the matcher loads it."""
    return any(s in str(exc) for s in ("is being read from index.sqlite", "is being loaded"))


def answers(answer: QueryAnswer) -> list[list[tuple[str, tuple[str, ...], tuple[float, ...]]]]:
    return [[(m.partner, m.refs, m.scores) for m in result] for result in answer.results]


def project_of(matcher: Matcher) -> ProjectTokens:
    with matcher.operator() as op:
        return op.create_project("trial", list(NAMES), disclosure="scores")


def test_sharded_answers_equal_the_in_process_index(
    either: Cluster, clks: list[np.ndarray]
) -> None:
    sharded = either
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    for name, member_clks in zip(NAMES, clks, strict=True):
        put(sharded.matcher, tokens[name], name, member_clks, range(ROWS))
    # North asks for its shared people (held by the others too) and some of its own.
    asked = clks[0][np.r_[0:300, 1000:1100]]
    found = answers(once_read(sharded.matcher, tokens["north"], asked))
    # Both servers hold a part of every index, split by ref.
    held = [server.shards.records for server in sharded.lookups if server is not None]
    assert sum(held) == len(NAMES) * ROWS and min(held) > ROWS
    assert sum(1 for result in found if result) >= 290  # the shared people are found
    assert {p for result in found for p, _, _ in result} == {"south", "west"}
    sharded.stop()  # the same data dir, served in-process
    alone = sharded.start_matcher(sharded=False)
    assert answers(query(alone, tokens["north"], asked)) == found


def test_a_change_is_visible_through_the_shards(sharded: Cluster, clks: list[np.ndarray]) -> None:
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    put(sharded.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:50]  # people south holds as south-0 .. south-49
    before = answers(query(sharded.matcher, tokens["north"], asked))
    assert all(result and result[0][1][0] == f"south-{i}" for i, result in enumerate(before))
    gone = refs_of("south", range(0, 50, 2))
    remove(sharded.matcher, tokens["south"], gone)
    after = answers(query(sharded.matcher, tokens["north"], asked))
    assert [bool(result) for result in after] == [i % 2 == 1 for i in range(50)]
    # Both shards took part: the removed refs fall on both.
    assert {shard_of(r, 2) for r in gone} == {0, 1}
    put(sharded.matcher, tokens["south"], "south", clks[1], range(0, 50, 2))  # back again
    assert answers(query(sharded.matcher, tokens["north"], asked)) == before


def test_a_query_session_is_answered_through_the_shards(
    sharded: Cluster, clks: list[np.ndarray]
) -> None:
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    put(sharded.matcher, tokens["south"], "south", clks[1], range(200))
    with (
        sharded.matcher.member(tokens["north"]) as north,
        north.query_session("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT) as session,
    ):
        for i in (0, 5, 199, 2999):  # 2999: a person south does not hold
            single = query(sharded.matcher, tokens["north"], clks[0][i : i + 1])
            assert session.query(clks[0][i].tobytes(), purpose=PURPOSE) == single
            assert [m.refs for m in single.results[0]] == ([] if i > 199 else [(f"south-{i}",)])


def test_a_stopped_look_up_server_is_an_error_naming_it_not_no_match(
    sharded: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sharded.matcher is not None
    monkeypatch.setattr(lookup_wire, "BACKOFF_SECONDS", 0.2)  # (a server resting: probed)
    remote = sharded.matcher.server.realtime.remote
    assert isinstance(remote, LookupServers)
    tokens = project_of(sharded.matcher).tokens
    put(sharded.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]
    before = answers(query(sharded.matcher, tokens["north"], asked))
    sharded.stop_lookup(1)
    with pytest.raises(UnavailableError, match=rf"look-up server {sharded.addresses[1]}") as down:
        query(sharded.matcher, tokens["north"], asked)
    assert str(down.value).count("[UNAVAILABLE]") == 1, down.value  # (said once, not twice)
    # A change while it is down is acknowledged (durable in index.sqlite) ...
    remove(sharded.matcher, tokens["south"], refs_of("south", range(20)))
    # ... and, asked to read its shards again, it is not reached in RELOAD_SECONDS: it
    # rests, its shard searched in the matcher's own copy (before: refused, "missed an
    # index change"), which holds the change ...
    assert answers(query(sharded.matcher, tokens["north"], asked)) == [[]] * 20
    assert remote._name(1) in remote.behind()
    # ... and a restarted server, found by the probe, reads it from index.sqlite: nothing
    # acknowledged is lost.
    sharded.start_lookup(1)
    deadline = time.monotonic() + 30
    while remote.behind() or remote._resting:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert answers(once_read(sharded.matcher, tokens["north"], asked)) == [[]] * 20
    put(sharded.matcher, tokens["south"], "south", clks[1], range(20))
    assert answers(query(sharded.matcher, tokens["north"], asked)) == before
    # A hung one (it takes the search and never answers) costs one query its search's
    # deadline: it rests, and its shard's hits come from the matcher's own copy, not lost.
    monkeypatch.setattr(lookup_wire, "SEARCH_SECONDS", 0.5)
    monkeypatch.setattr(lookup_wire, "BACKOFF_SECONDS", 600.0)  # (no probe meanwhile)
    sharded.stop_lookup(1)
    sharded.release(1)
    hole = Hung(int(sharded.addresses[1].rsplit(":", 1)[1]))
    try:
        assert answers(query(sharded.matcher, tokens["north"], asked)) == before
        assert answers(query(sharded.matcher, tokens["north"], asked)) == before
        assert hole.methods.count("Search") == 1  # the second did not ask it
    finally:
        hole.close()


def test_a_query_refused_for_a_stopped_look_up_server_costs_no_quota(
    sharded: Cluster, clks: list[np.ndarray]
) -> None:
    """A query the matcher could not answer (a look-up server down) is not counted against
    the member's rate limit: asked again and again while the server is down, then once it
    is back, it is answered, not refused for the quota."""
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    with sharded.matcher.operator() as op:
        op.set_query_limits("trial", per_minute=20, per_day=1000)
    put(sharded.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]  # the whole minute's quota in one query
    sharded.stop_lookup(1)
    for _ in range(3):
        with pytest.raises(UnavailableError, match=rf"look-up server {sharded.addresses[1]}"):
            query(sharded.matcher, tokens["north"], asked)
    sharded.start_lookup(1)
    deadline = time.monotonic() + 30
    while True:  # until its channel has found the server again
        try:
            answer = query(sharded.matcher, tokens["north"], asked)
            break
        except UnavailableError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert [r[0][1] for r in answers(answer)] == [(f"south-{i}",) for i in range(20)]
    with pytest.raises(RejectedError, match="query rate limit"):  # that one counted
        query(sharded.matcher, tokens["north"], asked[:1])


def test_a_query_refused_for_a_stopped_look_up_server_is_audited_and_reported(
    sharded: Cluster,
    clks: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every query attempt is auditable: one the matcher could not answer is in the audit
    log (`query.refused`, `unavailable: ...` naming the server, nothing disclosed; an
    outage's later attempts counted into one entry) and on the operator's query report,
    apart from the quota refusals and not flagged."""
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    put(sharded.matcher, tokens["south"], "south", clks[1], range(100))
    asked = clks[0][0:5]
    query(sharded.matcher, tokens["north"], asked)
    sharded.stop_lookup(1)
    for _ in range(2):
        with pytest.raises(UnavailableError, match=rf"look-up server {sharded.addresses[1]}"):
            query(sharded.matcher, tokens["north"], asked)
    with sharded.matcher.operator() as op:
        entries = [e for e in op.audit("trial") if str(e["action"]).startswith("query")]
        report = {v.member: v for v in op.query_report("trial")}
    # The second attempt is within the outage window the first opened: counted (in the
    # report, below), audited with the window's one entry when it ends (tests/test_outages.py).
    assert [e["action"] for e in entries] == ["query", "query.refused"]
    for refused in entries[1:]:
        assert refused["member"] == "north" and refused["purpose"] == PURPOSE
        assert refused["disclosed"] == {}
        detail = refused["detail"]
        assert isinstance(detail, dict) and detail["records"] == 5
        assert detail["refused"].startswith("unavailable: ")
        assert f"look-up server {sharded.addresses[1]}" in detail["refused"]
    north = report["north"]
    assert (north.queries, north.records, north.refused, north.unanswered) == (1, 5, 0, 2)
    assert not any("refused" in flag for flag in north.flags)
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    capsys.readouterr()
    assert main(["admin", "query-report", "trial", "--server", sharded.matcher.target]) == 0
    shown = capsys.readouterr().out
    assert "not answered: 2 queries refused UNAVAILABLE (a look-up server down" in shown
    assert "UNUSUAL" not in shown


def test_a_server_missing_a_forward_reads_its_shards_again(
    sharded: Cluster, clks: list[np.ndarray]
) -> None:
    """Still running, but a change did not reach it (stopped and started on the same port
    between two changes): the matcher has it read its shards again before answering."""
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    put(sharded.matcher, tokens["south"], "south", clks[1], range(ROWS))
    sharded.stop_lookup(0)
    remove(sharded.matcher, tokens["south"], refs_of("south", range(10)))
    sharded.start_lookup(0)
    asked = clks[0][0:10]
    assert answers(once_read(sharded.matcher, tokens["north"], asked)) == [[]] * 10


def test_a_restarted_server_without_a_data_dir_is_loaded_again(
    remote: Cluster, clks: list[np.ndarray]
) -> None:
    """A look-up server without a data dir comes back empty: the matcher loads it again
    (its shards searched in the matcher's own copy meanwhile, never answered from part of
    them; before: refused), with the changes made while it was down, and the changes made
    after."""
    assert remote.matcher is not None
    tokens = project_of(remote.matcher).tokens
    put(remote.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]
    before = answers(once_read(remote.matcher, tokens["north"], asked))
    assert [r[0][1] for r in before] == [(f"south-{i}",) for i in range(20)]
    remote.stop_lookup(1)
    with pytest.raises(UnavailableError, match=rf"look-up server {remote.addresses[1]}"):
        query(remote.matcher, tokens["north"], asked)
    remove(remote.matcher, tokens["south"], refs_of("south", range(10)))  # while it is down
    remote.start_lookup(1)
    assert remote.lookups[1] is not None and not remote.lookups[1].shards.loaded
    assert answers(query(remote.matcher, tokens["north"], asked)) == [[]] * 10 + before[10:]
    assert answers(once_read(remote.matcher, tokens["north"], asked)) == [[]] * 10 + before[10:]
    assert remote.lookups[1].shards.records + remote.lookups[0].shards.records == ROWS - 10
    put(remote.matcher, tokens["south"], "south", clks[1], range(10))  # forwarded as before
    assert answers(query(remote.matcher, tokens["north"], asked)) == before


def test_a_server_without_a_data_dir_restarted_between_changes_is_loaded(
    remote: Cluster, clks: list[np.ndarray]
) -> None:
    """Stopped and started with no change between (nothing told the matcher): it says it
    holds nothing, and is loaded, rather than answer "no match" (its shards searched in
    the matcher's own copy meanwhile; before: refused)."""
    assert remote.matcher is not None
    tokens = project_of(remote.matcher).tokens
    put(remote.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]
    before = answers(once_read(remote.matcher, tokens["north"], asked))
    remote.stop_lookup(0)
    remote.start_lookup(0)
    assert answers(query(remote.matcher, tokens["north"], asked)) == before
    # A change made as the load starts is queued for it, then replayed: not lost.
    remove(remote.matcher, tokens["south"], refs_of("south", range(5)))
    assert answers(once_read(remote.matcher, tokens["north"], asked)) == [[]] * 5 + before[5:]


def test_a_change_made_during_a_load_is_acknowledged_at_once_and_replayed_after_it(
    clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matcher's side alone (`LookupServers`, a real server without a data dir): a
    change stored while a load is gathering its rows does not wait for the load (writes
    never wait for one); the server answers nothing until the load is in and the change
    replayed to it, then holds both the load's rows and the change."""
    # The load's Describe (after its rows) waits up to RELOAD_SECONDS: on a loaded host 2 s
    # could pass, the load fail, and a second load be made (from what is stored by then,
    # as the matcher's memory holds it: `stored`, below).
    monkeypatch.setattr(lookup_wire, "RELOAD_SECONDS", 30.0)
    key = "bm_lookup_" + "k" * 43
    server = create_lookup_server("127.0.0.1:0", None, 0, 1, key=key)
    address = f"127.0.0.1:{server.port}"
    remote = LookupServers([address], key)
    encoding = Encoding(CLK_BITS, FINGERPRINT)
    gathering, go_on = threading.Event(), threading.Event()
    stored = 10  # south's records the matcher holds (the change below stores one more)

    def source(
        shard: int, shards: int
    ) -> tuple[dict[tuple[str, str], ShardRecords], dict[str, float]]:
        held = stored  # (gathered as of now: a change stored after is not in these rows)
        gathering.set()
        go_on.wait(30)
        rows = ShardRecords(encoding, refs_of("south", range(held)), clks[1][:held].tobytes())
        return {("trial", "south"): rows}, {"trial": 0.8}

    asked = as_words(clks[1][:11].tobytes(), CLK_BITS)
    try:
        remote.attach(source)
        with pytest.raises(Unavailable, match="is being loaded"):
            remote.search("trial", ["south"], asked, 0.8)
        assert gathering.wait(30)
        put = ShardChange("trial", "south", encoding, 0.8, [("south-10", clks[1][10].tobytes())])
        stored = 11  # (stored in index.sqlite and the matcher's memory, then forwarded)
        forwarded = threading.Thread(target=remote.forward, args=(put,))
        forwarded.start()
        forwarded.join(30)  # (the load waits for `go_on`: a forward waiting for it never ends)
        assert not forwarded.is_alive()  # done while the load is still gathering its rows
        assert not server.shards.loaded
        with pytest.raises(Unavailable, match="is being loaded"):
            remote.search("trial", ["south"], asked, 0.8)
        go_on.set()
        deadline = time.monotonic() + 30
        while True:
            try:
                found = remote.search("trial", ["south"], asked, 0.8)
                break
            except Unavailable:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        # south-10 is not in the load's rows: it is there because it was replayed after.
        assert [[ref for ref, _ in f["south"]][:1] for f in found] == [
            [ref] for ref in refs_of("south", range(11))
        ]
        assert server.shards.records == 11
    finally:
        go_on.set()
        remote.close()
        server.stop(grace=None)


def test_an_erasure_to_a_server_behind_is_not_waited_for_under_the_writers_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The matcher's side alone (`LookupServers`, a real server without a data dir): a
    server behind (it failed a change) is sent a member's erasure all the same, but
    `forward` (run under the matcher's index writer lock) returns without waiting for its
    answer; `holding`, which the erasure asks after, waits for it: the server took it. One
    it fails is named by `holding` (the erasure is retried: usecases/erasure_retry.py)."""
    monkeypatch.setattr(lookup_wire, "RELOAD_SECONDS", 30.0)  # (the old wait: 30 s, not 2)
    key = "bm_lookup_" + "k" * 43
    server = create_lookup_server("127.0.0.1:0", None, 0, 1, key=key)
    address = f"127.0.0.1:{server.port}"
    remote = LookupServers([address], key)
    entered, go_on = threading.Event(), threading.Event()
    applied = server.shards.apply
    seen: list[ShardChange] = []

    def apply(change: ShardChange, sent: Fence | None = None) -> bool:  # (after a fault, a wait)
        seen.append(change)
        if len(seen) in (1, 3):
            raise OSError("no space left on device")
        entered.set()
        go_on.wait(30)
        return applied(change, sent)

    monkeypatch.setattr(server.shards, "apply", apply)
    encoding = Encoding(CLK_BITS, FINGERPRINT)
    try:
        remote.forward(ShardChange("trial", "south", encoding, 0.8, [("south-0", b"x" * 128)]))
        assert remote.behind() and remote.holding("trial", "north") == [remote._name(0)]
        erase = ShardChange("trial", "north", erase=ERASE_MEMBER)
        forwarded = threading.Thread(target=remote.forward, args=(erase,))
        forwarded.start()
        assert entered.wait(10)  # the server has it ...
        forwarded.join(10)
        assert not forwarded.is_alive()  # ... and `forward` returned before its answer
        go_on.set()
        assert remote.holding("trial", "north") == []  # waited for: taken
        remote.forward(ShardChange("trial", "west", erase=ERASE_MEMBER))  # fails at the server
        assert remote.holding("trial", "west") == [remote._name(0)]
        assert remote.behind()  # behind all along (it missed south's change)
    finally:
        go_on.set()
        remote.close()
        server.stop(grace=None)


def test_a_hung_look_up_server_holds_other_members_changes_only_for_a_forwards_deadline(
    sharded: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Look-up server 1 takes south's change and never answers (hung). The matcher waits for
    that forward, under its index writer lock, only for the forward's deadline (a floor, 1 s
    here, plus the change's size at a conservative rate; 60 s before, whatever the size): then
    server 1 is behind, and west's change, made meanwhile, is stored and acknowledged too.
    South then removes its records. No query is answered through server 1 until it has read
    its shards again; south's put, arriving there late (after that read), is dropped: the read
    held it (pb.ShardFence), and server 1 does not hold south's records again."""
    monkeypatch.setattr(lookup_wire, "FORWARD_FLOOR_SECONDS", 1.0)
    matcher = sharded.matcher
    assert matcher is not None and sharded.lookups[1] is not None
    tokens = project_of(matcher).tokens
    put(matcher, tokens["south"], "south", clks[1], range(20, 40))  # (south stays a partner)
    server = sharded.lookups[1].shards
    entered, go_on, taken = threading.Event(), threading.Event(), []
    applied = server.apply

    def apply(change: ShardChange, sent: Fence | None = None) -> bool:  # (the first: hung)
        if not entered.is_set():
            entered.set()
            go_on.wait(60)
            taken.append(applied(change, sent))
            return taken[-1]
        return applied(change, sent)

    monkeypatch.setattr(server, "apply", apply)
    south = threading.Thread(
        target=put, args=(matcher, tokens["south"], "south", clks[1], range(20))
    )
    try:
        south.start()
        assert entered.wait(30)  # server 1 holds south's change
        west = threading.Thread(
            target=put, args=(matcher, tokens["west"], "west", clks[2], range(20))
        )
        west.start()
        west.join(30)
        south.join(30)
        assert not west.is_alive() and not south.is_alive()  # both stored (before: 60 s each)
        remote = matcher.server.realtime.remote
        assert isinstance(remote, LookupServers)
        assert remote._name(1) in remote.behind()
        remove(matcher, tokens["south"], refs_of("south", range(20)))  # server 1 behind: skipped
        asked = clks[0][0:20]
        found = answers(once_read(matcher, tokens["north"], asked))  # server 1 reads its shards
        assert [[p for p, _, _ in r] for r in found] == [["west"]] * 20
    finally:
        go_on.set()
        south.join(30)
    deadline = time.monotonic() + 30
    while not taken:  # south's put, arriving late at server 1
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert taken == [False]  # dropped
    assert answers(query(matcher, tokens["north"], asked)) == found


def test_a_change_is_not_held_up_by_asking_a_hung_server_to_read_its_shards_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The matcher's side alone: a look-up server that takes every call and answers none
    (benchmarks/erasure_start.py `Hung`) misses a change (its forward's deadline passes) and is
    behind; the matcher asks it to read its shards again, outside its lock: a change
    forwarded while that asking hangs returns at once (before: it waited for the lock, up to
    RELOAD_SECONDS), and the asking, void now (the server skipped that change), leaves it
    behind even had it been answered."""
    monkeypatch.setattr(lookup_wire, "FORWARD_FLOOR_SECONDS", 0.3)
    monkeypatch.setattr(lookup_wire, "RELOAD_SECONDS", 60.0)
    hole = Hung(0)
    port = hole.port
    remote = LookupServers([f"127.0.0.1:{port}"], "bm_lookup_" + "k" * 43)
    encoding = Encoding(CLK_BITS, FINGERPRINT)
    change = ShardChange("trial", "south", encoding, 0.8, [("south-0", b"x" * 128)])
    try:
        remote.forward(change)  # not answered within its deadline
        assert remote.behind() == [remote._name(0)]
        asking = threading.Thread(target=remote.catch_up)
        asking.start()
        deadline = time.monotonic() + 30
        while [e for e, _ in hole.events].count("in") < 2:  # the Reload has reached it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        forwarded = threading.Thread(target=remote.forward, args=(change,))
        forwarded.start()
        forwarded.join(10)
        assert not forwarded.is_alive() and asking.is_alive()
    finally:
        hole.close()  # (every call held is refused now)
        remote.close()
    asking.join(30)
    assert not asking.is_alive()
    assert remote.behind() == [remote._name(0)]


def test_a_hung_server_rests_and_its_shards_are_searched_in_the_matchers_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The matcher's side alone: a look-up server that misses a search's deadline (`Hung`)
    costs that query the deadline, not every query after: it rests. The query is answered,
    its shard's hits taken from the matcher's own copy (`local`), so no match is lost; the
    next one does not ask it; one with no copy to search is refused at once, naming it. A
    probe in the background asks it again, and once it answers (here: refused at once,
    stopped) queries ask it again (before: every query waited SEARCH_SECONDS, then was
    refused)."""
    monkeypatch.setattr(lookup_wire, "SEARCH_SECONDS", 0.5)
    monkeypatch.setattr(lookup_wire, "BACKOFF_SECONDS", 0.05)  # probed, and not answered ...
    monkeypatch.setattr(lookup_wire, "RELOAD_SECONDS", 0.2)  # ... in time, till it is stopped
    hole = Hung(0)
    port = hole.port
    remote = LookupServers([f"127.0.0.1:{port}"], "bm_lookup_" + "k" * 43)
    asked = np.zeros((2, CLK_BITS // 64), dtype=np.uint64)
    mine = [{"south": [("south-1", 0.9), ("south-0", 0.85)]}, {"south": []}]
    try:
        assert remote.search("trial", ["south"], asked, 0.8, local=lambda: mine) == mine
        assert remote.search("trial", ["south"], asked, 0.8, local=lambda: mine) == mine
        with pytest.raises(Unavailable, match=r"did not answer a search.*not asked by queries"):
            remote.search("trial", ["south"], asked, 0.8)
        assert hole.methods.count("Search") == 1  # only the first asked it
        hole.close()  # (it refuses every call now, at once)
        deadline = time.monotonic() + 30
        while remote._resting:  # until the probe has found it answering
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(Unavailable, match=r"did not answer: ") as down:
            remote.search("trial", ["south"], asked, 0.8, local=lambda: mine)  # asked again
        assert "[UNAVAILABLE]" not in str(down.value)  # (the refusal carries it, said once)
    finally:
        hole.close()
        remote.close()


def test_a_change_forwarded_before_a_read_or_load_is_dropped_if_it_arrives_after() -> None:
    """A look-up server told, with a read or a load, the last change it holds (the matcher's
    id and number: pb.ShardFence) drops that matcher's changes up to it arriving later
    (forwards the matcher gave up on), and takes later ones and another matcher's."""
    shards = Shards(None, 0, 1)
    encoding = Encoding(CLK_BITS, FINGERPRINT)
    rows = ShardRecords(encoding, ["south-1"], b"y" * 128)
    shards.replace({("trial", "south"): rows}, {"trial": 0.8}, Fence("m1", 5))

    def put_ref(ref: str) -> ShardChange:
        return ShardChange("trial", "south", encoding, 0.8, [(ref, b"x" * 128)])

    assert not shards.apply(put_ref("south-2"), Fence("m1", 5))  # held by the load
    assert shards.apply(put_ref("south-3"), Fence("m1", 6))
    assert shards.apply(put_ref("south-4"), Fence("m2", 1))  # another matcher (restarted)
    assert shards.apply(put_ref("south-5"))  # (none given)
    assert shards.records == 4


def test_a_late_forward_of_an_earlier_matcher_process_is_dropped_and_the_shards_loaded_again(
    clks: list[np.ndarray],
) -> None:
    """Each forward carries its matcher process's epoch (when it started): a look-up server
    that has taken a change from a matcher restarted drops one of the process before it
    arriving after (before: another matcher's change was applied, whatever its age: a put
    given up on could bring back a record the new process had removed since). It may lack
    that change, so it holds nothing until loaded again (with a data dir: it reads its
    shards again). Two `LookupServers` in turn, the second started after the first, and a
    real server without a data dir."""
    key = "bm_lookup_" + "k" * 43
    server = create_lookup_server("127.0.0.1:0", None, 0, 1, key=key)
    address = f"127.0.0.1:{server.port}"
    server.shards.replace({}, {})  # (loaded: holds nothing yet)
    earlier = LookupServers([address], key)
    later = LookupServers([address], key)  # (the matcher restarted)
    encoding = Encoding(CLK_BITS, FINGERPRINT)

    def put_ref(ref: str, row: int) -> ShardChange:
        return ShardChange("trial", "south", encoding, 0.8, [(ref, clks[1][row].tobytes())])

    try:
        earlier.forward(put_ref("south-0", 0))
        later.forward(put_ref("south-1", 1))
        assert server.shards.records == 2 and server.shards.loaded
        earlier.forward(put_ref("south-2", 2))  # late: dropped
        assert not server.shards.loaded  # (searches: FAILED_PRECONDITION, the matcher loads it)
        assert "south-2" not in server.shards._indexes[("trial", "south")][1]
        assert later.behind() == []
    finally:
        earlier.close()
        later.close()
        server.stop(grace=None)


def test_a_matchers_processes_are_ordered_even_if_the_clock_goes_back(tmp_path: Path) -> None:
    """Each start of the matcher takes an epoch after every earlier one's (kept in the data
    dir, owner-only): its start time, or one more than the last if the clock is behind."""
    first = lookup_epoch(tmp_path, now=lambda: 5_000)
    assert first == 5_000
    assert lookup_epoch(tmp_path, now=lambda: 4_000) == 5_001  # (the clock set back)
    assert lookup_epoch(tmp_path, now=lambda: 9_000) == 9_000
    assert (tmp_path / "lookup.epoch").stat().st_mode & 0o777 == 0o600


def stored_shards(monkeypatch: pytest.MonkeyPatch, encoding: Encoding) -> dict[str, bytes]:
    """What a look-up server with a data dir reads as index.sqlite: trial/south's rows, one
    to start with; a test adds rows to the dict returned, as the matcher would store them."""
    stored = {"south-1": b"y" * 128}

    def read(data_dir: Path, keep: object) -> tuple[dict, dict]:
        rows = ShardRecords(encoding, list(stored), b"".join(stored.values()))
        return {("trial", "south"): rows}, {"trial": 0.8}

    monkeypatch.setattr(shards_module, "read_shards", read)
    return stored


def test_a_late_forward_of_an_earlier_matcher_process_has_the_shards_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with a data dir: the dropped change is in index.sqlite (the earlier process
    stored it before forwarding it), and the server reads its shards again at once."""
    encoding = Encoding(CLK_BITS, FINGERPRINT)
    stored = stored_shards(monkeypatch, encoding)  # index.sqlite (what the matcher stored)
    shards = Shards(tmp_path, 0, 1)
    shards.load()
    change = ShardChange("trial", "south", encoding, 0.8, [("south-2", b"x" * 128)])
    assert shards.apply(change, Fence("m2", 1, epoch=200))
    stored["south-3"] = b"z" * 128
    assert not shards.apply(change, Fence("m1", 9, epoch=100))  # the earlier process's
    deadline = time.monotonic() + 30
    while not shards.ready or "south-3" not in shards._indexes[("trial", "south")][1]:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_reload_asked_during_a_long_apply_is_answered_at_once_and_read_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look-up server applying a change that takes long (a large index's tables built under
    its shard lock) is asked to read its shards again: the Reload returns at once (before: it
    waited for that lock, past the matcher's RELOAD_SECONDS, and the server stayed behind).
    Searches are refused from then on; a forward up to the Reload's fence arriving meanwhile
    is dropped; the read runs once the apply is done, and holds what index.sqlite holds."""
    encoding = Encoding(CLK_BITS, FINGERPRINT)
    stored = stored_shards(monkeypatch, encoding)  # index.sqlite (what the matcher stored)
    shards = Shards(tmp_path, 0, 1)
    shards.load()
    assert shards.ready and shards.records == 1
    entered, go_on = threading.Event(), threading.Event()
    applied = shards._apply

    def slow(change: ShardChange) -> None:  # (under the lock, as a large build holds it)
        entered.set()
        go_on.wait(30)
        applied(change)

    monkeypatch.setattr(shards, "_apply", slow)

    def put_ref(ref: str) -> ShardChange:
        return ShardChange("trial", "south", encoding, 0.8, [(ref, b"x" * 128)])

    stored["south-2"] = b"x" * 128
    applying = threading.Thread(target=shards.apply, args=(put_ref("south-2"), Fence("m1", 1)))
    applying.start()
    assert entered.wait(10)
    asking = threading.Thread(target=shards.reload, kwargs={"after": Fence("m1", 2)})
    try:
        asking.start()
        asking.join(10)
        assert not asking.is_alive()  # answered while the apply holds the lock
        assert not shards.ready
        with pytest.raises(Unavailable, match=r"being read from index\.sqlite"):
            shards.search("trial", ["south"], as_words(b"x" * 128, CLK_BITS), 0.8)
    finally:
        go_on.set()
    applying.join(10)
    assert not shards.apply(put_ref("south-9"), Fence("m1", 2))  # up to the fence: dropped
    deadline = time.monotonic() + 30
    while not shards.ready:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert sorted(shards._indexes[("trial", "south")][1].refs()) == ["south-1", "south-2"]


def test_empty_servers_are_loaded_when_the_matcher_starts(
    remote: Cluster, clks: list[np.ndarray]
) -> None:
    """A matcher started beside look-up servers that hold nothing (as after both were
    restarted) loads them at once: once loaded, its first query is answered, not refused
    while they load."""
    assert remote.matcher is not None
    tokens = project_of(remote.matcher).tokens
    put(remote.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]
    before = answers(once_read(remote.matcher, tokens["north"], asked))
    assert [r[0][1] for r in before] == [(f"south-{i}",) for i in range(20)]
    remote.stop()
    for i in range(2):
        remote.start_lookup(i)
    matcher = remote.start_matcher()
    servers = matcher.server.realtime.remote
    assert isinstance(servers, LookupServers)
    deadline = time.monotonic() + 60
    while not all(s is not None and s.shards.loaded for s in remote.lookups) or servers.loading:
        assert time.monotonic() < deadline, "the look-up servers were not loaded at start"
        time.sleep(0.05)
    assert answers(query(matcher, tokens["north"], asked)) == before


def test_a_look_up_server_in_the_wrong_place_is_refused(
    sharded: Cluster, clks: list[np.ndarray]
) -> None:
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    put(sharded.matcher, tokens["south"], "south", clks[1], range(100))
    sharded.stop_lookup(1)
    sharded.release(1)
    sharded.lookups[1] = create_lookup_server(
        sharded.addresses[1], sharded.data_dir, 0, 2, wait=True
    )
    with pytest.raises(UnavailableError, match="holds shard 0 of 2: start it with --shard 1/2"):
        query(sharded.matcher, tokens["north"], clks[0][0:5])


# -- as processes, through the CLI -------------------------------------------------------------


@pytest.mark.slow
def test_serve_with_look_up_server_processes(tmp_path: Path, clks: list[np.ndarray]) -> None:
    data = tmp_path / "data"

    def enter(stack: ExitStack, addresses: list[str]) -> tuple[list[str], Served, Served]:
        lookups = [a for address in addresses for a in ("--lookup-server", address)]
        served = stack.enter_context(serve(data, *lookups))
        stack.enter_context(lookup_server(data, "0/2", listen=addresses[0]))
        second = stack.enter_context(lookup_server(data, "1/2", listen=addresses[1]))
        return addresses, served, second

    with on_free_addresses(2, enter) as (addresses, served, second):
        tokens = south_indexed_north_answered(served.target, served.admin_token, clks)
        second.process.kill()
        second.process.wait(timeout=30)
        refused = f"look-up server {addresses[1]}"
        with (
            MatcherClient(served.target, tokens["north"]) as north,
            pytest.raises(UnavailableError, match=refused),
        ):
            once_read_at(north, clks[0][0:20])


def south_indexed_north_answered(
    target: str, admin_token: str, clks: list[np.ndarray]
) -> dict[str, str]:
    """A project whose south indexes 500 records through the served matcher; north's first 20
    queries are each answered with south's record of the same person. Returns the tokens."""
    with MatcherClient(target, admin_token) as op:
        tokens = op.create_project("trial", list(NAMES), disclosure="mapping").tokens
    with MatcherClient(target, tokens["south"]) as south:
        south.change_index(
            "trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
            puts=[(f"south-{i}", clks[1][i].tobytes()) for i in range(500)],
        )  # fmt: skip
    with MatcherClient(target, tokens["north"]) as north:
        answer = once_read_at(north, clks[0][0:20])
    assert [[(m.partner, m.refs[0]) for m in r] for r in answer.results] == [
        [("south", f"south-{i}")] for i in range(20)
    ]
    return dict(tokens)


def once_read_at(client: MatcherClient, clks: np.ndarray) -> QueryAnswer:
    deadline = time.monotonic() + 60
    while True:
        try:
            return client.query(
                "trial", clks.tobytes(), clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                purpose=PURPOSE,
            )  # fmt: skip
        except UnavailableError as exc:
            if not being_read(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.slow
def test_serve_with_look_up_server_processes_without_a_data_dir(
    tmp_path: Path, clks: list[np.ndarray]
) -> None:
    """`lookup-server --key-file` (a copy of the matcher's lookup.key, as on another
    machine): no data dir; the matcher loads it, and it answers."""
    data = tmp_path / "data"
    key_file = tmp_path / "elsewhere" / "lookup.key"
    key_file.parent.mkdir()

    def enter(stack: ExitStack, addresses: list[str]) -> Served:
        served = stack.enter_context(serve(data, "--lookup-server", addresses[0]))
        key_file.write_text((data / "lookup.key").read_text())
        key_file.chmod(0o600)
        stack.enter_context(
            lookup_server(tmp_path / "absent", "0/1", listen=addresses[0], key_file=key_file)
        )
        return served

    with on_free_addresses(1, enter) as served:
        south_indexed_north_answered(served.target, served.admin_token, clks)
    assert not (tmp_path / "absent").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux threads in /proc")
def test_a_sigterm_another_thread_takes_stops_the_server(tmp_path: Path) -> None:
    """The kernel may hand a process's SIGTERM to any of its threads (a gRPC thread, when
    the main thread is slow to wake under load): the server stops all the same. Before:
    the Python handler waited for the main thread, asleep in a lock's acquire for good, and
    the server never stopped (the test above: 1 run in a few hundred under load; here: always)."""
    key_file = tmp_path / "lookup.key"
    key_file.write_text("bm_lookup_" + "k" * 43 + "\n")
    key_file.chmod(0o600)
    with lookup_server(tmp_path / "absent", "0/1", key_file=key_file) as served:
        pid = served.process.pid
        for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid):
            try:
                os.kill(tid, signal.SIGTERM)  # (kill(2) given a thread's id: that thread takes it)
                break
            except ProcessLookupError:  # (that thread ended meanwhile)
                continue
        else:
            pytest.fail("the server runs no thread but its main one")
        # Before: TimeoutExpired, its main thread still waiting (cliflow's SIGTERM, to the
        # process, then stopped it).
        assert served.process.wait(timeout=STOP_SECONDS) == 0
    assert "signal 15: stopping" in "".join(served.log)


@pytest.mark.slow
def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "lookup.key"
    key_file.write_text("bm_lookup_x\n")
    key_file.chmod(0o644)
    done = subprocess.run(
        [*BLINDMATCH, "lookup-server", "--key-file", str(key_file), "--shard", "0/1"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"--key-file {key_file}: readable by others than its owner (mode 644)" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "refusal"),
    [
        (["lookup-server", "--shard", "0/2", "--listen", "0.0.0.0:0"],
         "refusing plaintext gRPC on a non-loopback address"),
        (["lookup-server", "--shard", "2/2"], "expected I/N with 0 <= I < N"),
        (["serve", "--lookup-server", "10.1.2.3:50061"],
         "refusing plaintext to a non-loopback look-up server"),
    ],
)  # fmt: skip
def test_look_up_server_options_are_refused_before_anything_starts(
    tmp_path: Path, argv: list[str], refusal: str
) -> None:
    done = subprocess.run(
        [*BLINDMATCH, *argv, "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": "x"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert refusal in done.stderr
    assert not (tmp_path / "d").exists()


def test_a_wrong_look_up_option_is_told_before_a_taken_port(tmp_path: Path) -> None:
    """An option that is wrong whatever the machine (plaintext to a look-up server off
    loopback) is told first, even where the matcher's port is also taken: the user fixes the
    command once, not once per error (before, a busy default port 50051 hid it)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [*BLINDMATCH, "serve", "--listen", f"127.0.0.1:{port}",
             "--lookup-server", "10.1.2.3:50061", "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
            env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": "x"},
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "refusing plaintext to a non-loopback look-up server" in done.stderr
    assert "is taken" not in done.stderr
    assert not (tmp_path / "d").exists()


def test_look_up_servers_over_mutual_tls(tmp_path: Path, clks: list[np.ndarray]) -> None:
    """The matcher reaches its look-up server over mutual TLS (certificates as `blindmatch
    certs` makes them); without its client certificate the server does not answer it."""
    files = make_certs(tmp_path / "certs", ["localhost"])
    to_server = {"ca_cert": str(files.ca_cert)}
    with_client = tls.channel_credentials(
        **to_server, client_cert=str(files.client_cert), client_key=str(files.client_key)
    )
    server_tls = tls.server_credentials(
        cert=str(files.server_cert), key=str(files.server_key), client_ca=str(files.ca_cert)
    )

    def matcher(address: str, credentials: grpc.ChannelCredentials) -> Matcher:
        data_dir = tmp_path / "data"
        return Matcher(
            create_server(
                "127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=1,
                lookup_servers=[address], lookup_credentials=credentials,
            ),
            data_dir,
            ADMIN_TOKEN,
        )  # fmt: skip

    def started(ports: list[int]) -> Cluster:
        address = f"127.0.0.1:{ports[0]}"
        found = Cluster(tmp_path / "data", [address], [None])
        found.matcher = matcher(address, with_client)
        try:
            found.lookups[0] = create_lookup_server(
                address, found.data_dir, 0, 1, credentials=server_tls, wait=True
            )
        except OSError:
            found.stop()
            raise
        return found

    found = on_free_ports(1, started)
    address = found.addresses[0]
    try:
        tokens = project_of(found.matcher).tokens
        put(found.matcher, tokens["south"], "south", clks[1], range(100))
        asked = clks[0][0:10]
        assert [r[0][1] for r in answers(query(found.matcher, tokens["north"], asked))] == [
            (f"south-{i}",) for i in range(10)
        ]
        found.matcher.server.stop(grace=None)
        no_client_cert = tls.channel_credentials(**to_server, client_cert=None, client_key=None)
        found.matcher = matcher(address, no_client_cert)
        with pytest.raises(UnavailableError, match=f"look-up server {address}"):
            query(found.matcher, tokens["north"], asked)
    finally:
        found.stop()


def test_changes_queued_while_reading_are_replayed_whatever_the_read_held(
    matcher: Matcher, clks: list[np.ndarray]
) -> None:
    """A look-up server queues the changes forwarded while it reads its shards, and replays
    them over what it read, which may hold some of them already: it ends where the matcher
    did, each ref's last change winning."""
    tokens = project_of(matcher).tokens
    put(matcher, tokens["south"], "south", clks[1], range(10))
    remove(matcher, tokens["south"], ["south-0", "south-1"])  # stored before the read
    put(matcher, tokens["south"], "south", clks[1], range(1, 2))  # south-1 back
    shards = Shards(matcher.data_dir, 0, 1)  # not read yet: changes are queued
    encoding = Encoding(CLK_BITS, FINGERPRINT)

    def forwarded(puts: range = range(0), removes: tuple[str, ...] = ()) -> ShardChange:
        return ShardChange(
            "trial", "south", encoding, 0.8,
            [(f"south-{i}", clks[1][i].tobytes()) for i in puts], list(removes),
        )  # fmt: skip

    # The same three changes forwarded, as they would be had the server been listening
    # while the matcher made them, and one made after the read.
    for change in (forwarded(range(10)), forwarded(removes=("south-0", "south-1")),
                   forwarded(range(1, 2))):  # fmt: skip
        shards.apply(change)
    with pytest.raises(Unavailable, match="being read"):
        shards.search("trial", ["south"], as_words(clks[0][:1].tobytes(), CLK_BITS), 0.8)
    shards.load()
    shards.apply(forwarded(removes=("south-9",)))
    found = shards.search("trial", ["south"], as_words(clks[0][0:10].tobytes(), CLK_BITS), 0.8)
    assert [[r for r, _ in f["south"]] for f in found] == [
        [] if i in (0, 9) else [f"south-{i}"] for i in range(10)
    ]
    assert shards.records == 8


def test_indexes_with_a_fallback_clk_answer_alike_on_shards(
    either: Cluster, orgs: dict[str, Org], secret_file: Path, tmp_path: Path
) -> None:
    """The default schema's CLKs carry a fallback CLK: its rule (scored on the fallback CLK
    when either side lacks the date of birth) holds on the shards as in-process."""
    sharded = either
    assert sharded.matcher is not None
    orgs["north"].csv.write_text(
        NORTH_CSV.replace("N5,Grace,Hughes,12/12/2001,F,EH1 9ZZ", "N5,Grace,Hughes,,F,")
    )
    secret = read_secret(secret_file)
    encoded = {n: encode(o, tmp_path / f"{n}.encoded", secret) for n, o in orgs.items()}
    assert encoded["south"].fallback_bits
    with sharded.matcher.operator() as op:
        tokens = op.create_project("fb", ["north", "south"], disclosure="scores").tokens
    for name in ("north", "south"):
        with sharded.matcher.member(tokens[name]) as member:
            index_all(member, "fb", encoded[name])
    asked = [
        person(secret_file, **GRACE),
        person(secret_file, given_name="Grace", surname="Hughes", sex="F"),  # no date of birth
        person(secret_file, given_name="Elodie", surname="O'Brien", dob="1985-03-02"),
        person(secret_file, **PETER),
    ]

    def ask_all(matcher: Matcher, token: str) -> list[object]:
        deadline = time.monotonic() + 60
        while True:  # while a look-up server is being loaded
            try:
                return ask_once(matcher, token)
            except UnavailableError as exc:
                if not being_read(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def ask_once(matcher: Matcher, token: str) -> list[object]:
        with matcher.member(token) as member:
            return [
                [(m.partner, m.refs, m.scores) for m in member.query(
                    "fb", clk, clk_bits=bits, fingerprint=fp, purpose=PURPOSE).results[0]]
                for clk, bits, fp in asked
            ]  # fmt: skip

    spread = {name: ask_all(sharded.matcher, tokens[name]) for name in ("north", "south")}
    assert spread["north"][0] and spread["north"][1]  # Grace is found with and without
    assert spread["south"][1]  # north's Grace lacks her date of birth: found on the fallback
    sharded.stop()
    alone = sharded.start_matcher(sharded=False)
    assert {name: ask_all(alone, tokens[name]) for name in ("north", "south")} == spread


def test_a_shard_searches_anew_when_a_member_changes_its_fallback_layout(
    matcher: Matcher,
) -> None:
    """A change whose header says otherwise of the fallback CLK re-lays the shard's index
    out, keeping the records it holds, as the matcher's own index does."""
    shards = Shards(matcher.data_dir, 0, 1)
    shards.load()
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 256, (12, 256), dtype=np.uint8)  # 2,048-bit CLKs

    def change(fallback_bits: int, refs: range) -> ShardChange:
        return ShardChange(
            "trial", "south", Encoding(2048, FINGERPRINT, fallback_bits), 0.8,
            [(f"s{i}", rows[i].tobytes()) for i in refs],
        )  # fmt: skip

    shards.apply(change(0, range(10)))
    shards.apply(change(1024, range(10, 12)))
    encoding, index = shards._indexes[("trial", "south")]
    assert encoding.fallback_bits == 1024 and len(index) == 12
    assert isinstance(index, FallbackIndex)  # searched by the fallback rule from now on
    found = shards.search("trial", ["south"], as_words(rows[3].tobytes(), 2048), 0.8)
    assert found[0]["south"][0] == ("s3", 1.0)


@pytest.mark.slow
def test_a_lookup_server_on_a_port_in_use_says_so_and_makes_no_lookup_key(tmp_path: Path) -> None:
    """Was: the data dir's lookup.key made, then gRPC's own line (`E1207 ... add_port.cc:83]
    Failed to add port ...`) and "could not listen": as `serve`, said before anything is made."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "index.sqlite").touch()  # (the matcher's; read only once it listens)
    with taken_port() as listen:
        done = subprocess.run(
            [*BLINDMATCH, "lookup-server", "--data-dir", str(data), "--shard", "0/1",
             "--listen", listen],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == said_taken(listen, "a look-up server", data)
    assert sorted(p.name for p in data.iterdir()) == ["index.sqlite"]  # no lookup.key
