"""Look-up servers known to have missed a change: one resting (it missed a search's or a
Reload's deadline) is marked behind at the next change it should take, without waiting for
it; and one behind when the matcher stopped is behind again when it starts (rpc/lookup_client.py,
rpc/lookup_load.py, storage/shard_source.py `behind_at_last_stop`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Barrier, BrokenBarrierError, Event
from typing import Any

import numpy as np
import pytest

from benchmarks.erasure_start import Hung
from benchmarks.synthclks import CLK_BITS
from blindmatch.client.errors import UnavailableError
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.domain import Encoding
from blindmatch.matcher.errors import Unavailable
from blindmatch.matcher.realtime import shards as shards_module
from blindmatch.matcher.realtime.shards import Fence, ShardChange, Shards, shard_of
from blindmatch.matcher.rpc import lookup_wire
from blindmatch.matcher.rpc.lookup_client import LookupServers
from blindmatch.matcher.rpc.lookup_service import create_lookup_server
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.storage.shard_source import (
    INDEX_RESTORED,
    LastStop,
    behind_at_last_stop,
    lookup_epoch,
    record_stop,
    record_without_servers,
)
from tests.support import PURPOSE, Matcher
from tests.test_lookup_servers import (
    ROWS,
    Cluster,
    answers,
    clks,
    current,
    either,
    once_read,
    project_of,
    put,
    query,
    refs_of,
    remote,
    remove,
    sharded,
)

pytestmark = pytest.mark.server
__all__ = ["clks", "either", "remote", "sharded"]  # (fixtures shared with that module)

FINGERPRINT = b"lookup-server test fingerprint!!"


def test_a_change_to_a_resting_server_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matcher's side alone: a hung look-up server (`Hung`) misses a search's deadline
    and rests (its shards searched in the matcher's copy). A change to its shard is not
    sent to it (before: sent, and waited for up to its deadline under the index writer
    lock, holding every member's change): it is behind at once, and the query after is
    still answered from the matcher's copy; the probe asks it to read its shards again, as
    any server behind."""
    monkeypatch.setattr(lookup_wire, "SEARCH_SECONDS", 0.5)
    monkeypatch.setattr(lookup_wire, "FORWARD_FLOOR_SECONDS", 0.3)  # (before: waited this)
    monkeypatch.setattr(lookup_wire, "BACKOFF_SECONDS", 0.05)  # probed, and not answered
    monkeypatch.setattr(lookup_wire, "RELOAD_SECONDS", 0.2)  # in time
    hole = Hung(0)
    port = hole.port
    remote = LookupServers([f"127.0.0.1:{port}"], "bm_lookup_" + "k" * 43)
    asked = np.zeros((2, CLK_BITS // 64), dtype=np.uint64)
    mine = [{"south": [("south-1", 0.9)]}, {"south": []}]
    change = ShardChange("trial", "south", Encoding(CLK_BITS, FINGERPRINT), 0.8,
                         [("south-2", b"x" * (CLK_BITS // 8))])  # fmt: skip
    try:
        assert remote.search("trial", ["south"], asked, 0.8, local=lambda: mine) == mine
        assert remote._resting and not remote.behind()
        remote.forward(change)
        assert "Apply" not in hole.methods  # not sent: it rests
        assert remote.behind() == [remote._name(0)]
        assert remote.search("trial", ["south"], asked, 0.8, local=lambda: mine) == mine
        assert hole.methods.count("Search") == 1
        deadline = time.monotonic() + 30
        while "Reload" not in hole.methods:  # the probe asks it to read its shards again
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert remote.behind() == [remote._name(0)]  # (until it has said yes)
    finally:
        hole.close()
        remote.close()


def test_the_servers_behind_are_recorded_at_stop_and_read_at_the_next_start(
    tmp_path: Path,
) -> None:
    """DIR/lookup.stopped: the matcher's look-up servers and which were behind when it
    stopped, read (and removed) at its next start; none on a data dir from before (or a
    process killed: every server may have missed a change, as when the servers are not the
    same, or index.sqlite is not the file it left); a change forwarded after the record
    voids it."""
    key = "bm_lookup_" + "k" * 43
    assert behind_at_last_stop(tmp_path) == LastStop(None)  # a new data dir: nothing missed
    lookup_epoch(tmp_path)  # (a matcher with look-up servers started)
    assert behind_at_last_stop(tmp_path) is None  # no record: it was killed
    addresses = ["127.0.0.1:1", "127.0.0.1:2"]
    remote = LookupServers(addresses, key, data_dir=tmp_path, last_stop=None)
    assert remote.behind() == [remote._name(0), remote._name(1)]  # (unknown: every one)
    remote._behind.pop(0)  # (server 0 has read its shards again)
    remote.close()
    assert (tmp_path / "lookup.stopped").stat().st_mode & 0o777 == 0o600
    last = behind_at_last_stop(tmp_path)
    assert last == LastStop(tuple(addresses), frozenset({1}))
    assert behind_at_last_stop(tmp_path) is None  # read once: the next start's is its own
    again = LookupServers(addresses, key, data_dir=tmp_path, last_stop=last)
    assert again.behind() == [again._name(1)]
    assert last.stale(addresses[::-1]) == {0, 1}  # (others, or in another order: every one)
    again._behind.clear()
    again.close()
    assert behind_at_last_stop(tmp_path) == LastStop(tuple(addresses))
    later = LookupServers(addresses, key, data_dir=tmp_path)
    later.close()
    later.forward(ShardChange("trial", "south"))  # (a request still running: sent nothing)
    assert behind_at_last_stop(tmp_path) is None  # the record is void
    (tmp_path / "index.sqlite").write_bytes(b"the index as it stopped")
    LookupServers(addresses, key, data_dir=tmp_path).close()
    (tmp_path / "index.sqlite").write_bytes(b"an older copy, restored")
    restored = behind_at_last_stop(tmp_path)  # not the index it left: every one
    assert restored is not None and restored.stale(addresses) == {0, 1}
    assert restored.why == INDEX_RESTORED


def test_servers_behind_at_start_are_told_why_as_far_as_the_matcher_can_tell(
    tmp_path: Path,
) -> None:
    """Every server counted as behind at start was said to be so because the matcher's
    `previous process left it behind, or was stopped without saying`, also when the servers
    were new to the data dir or the last run had none; each case now says what happened."""
    key, addresses = "bm_lookup_" + "k" * 43, ["127.0.0.1:1", "127.0.0.1:2"]

    def told(data_dir: Path) -> str:
        remote = LookupServers(addresses, key, last_stop=behind_at_last_stop(data_dir))
        assert remote.behind() == [remote._name(0), remote._name(1)]
        assert remote._behind[0] == remote._behind[1] == remote._at_start
        assert "stopped without saying" not in remote._at_start
        return remote._at_start

    new = tmp_path / "new"  # served without look-up servers, then with them
    create_server("127.0.0.1:0", new, "bm_op").stop(grace=None)
    assert (new / "lookup.stopped").exists()  # written at its start
    assert "last run used no look-up servers" in told(new)
    assert "new to this data dir" in told(new)  # (read: a data dir from before that record)
    lookup_epoch(new)  # with servers, then without: the last run had none
    record_without_servers(new)
    assert "last run used no look-up servers" in told(new)
    assert "left no record of its look-up servers: it was killed" in told(new)
    record_stop(new, addresses[::-1], set())
    assert f"other look-up servers, or these in another order ({addresses[1]}, " in told(new)


def fail_once(shards: Shards) -> None:
    """`shards` fails the next change forwarded to it (a full disk, say), then takes them."""
    applied = shards.apply

    def apply(change: ShardChange, sent: Fence | None = None) -> bool:
        shards.apply = applied  # type: ignore[method-assign]
        raise OSError("no space left on device")

    shards.apply = apply  # type: ignore[method-assign]


def answered(matcher: Matcher, token: str, asked: np.ndarray) -> list[list[tuple]]:
    """The query's answer, asked again while a look-up server is refused for having missed
    a change or reading its shards again (never answered from part of them)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return answers(query(matcher, token, asked))
        except UnavailableError as exc:
            waiting = ("has not read its shards again yet", "is being read", "is being loaded")
            if not any(w in str(exc) for w in waiting) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_a_server_behind_when_the_matcher_stops_is_read_again_when_it_starts(
    either: Cluster, clks: list[np.ndarray], how: str
) -> None:
    """Look-up server 1 misses south's remove (its apply fails) and is behind; the matcher
    stops before any query has it read its shards again, and starts again on the same data
    dir beside the same servers. Server 1 is behind from the start (the record the stop
    left; or, killed, none: every server is) and reads its shards again (or is loaded):
    the removed records are not found (before: the new process knew nothing of it, and
    server 1 answered from its stale shards until another change failed)."""
    assert either.matcher is not None and either.lookups[1] is not None
    tokens = project_of(either.matcher).tokens
    put(either.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]
    before = answered(either.matcher, tokens["north"], asked)
    assert [r[0][1] for r in before] == [(f"south-{i}",) for i in range(20)]
    current(either.matcher)  # (loaded, the kind without a data dir: the fault is in its apply)
    fail_once(either.lookups[1].shards)
    remove(either.matcher, tokens["south"], refs_of("south", range(20)))
    remote = either.matcher.server.realtime.remote
    assert isinstance(remote, LookupServers) and remote.behind() == [remote._name(1)]
    either.matcher.server.stop(grace=None)
    either.matcher = None
    if how == "killed":  # what a kill leaves: no record
        (either.data_dir / "lookup.stopped").unlink()
    matcher = either.start_matcher()
    restarted = matcher.server.realtime.remote
    assert isinstance(restarted, LookupServers)
    if how == "stopped":  # (server 0 missed nothing: the record says so)
        assert restarted._name(0) not in restarted.behind()
    assert answered(matcher, tokens["north"], asked) == [[]] * 20
    put(matcher, tokens["south"], "south", clks[1], range(20))  # forwarded as before
    assert answered(matcher, tokens["north"], asked) == before


def test_a_change_of_layout_reaches_every_shard_even_one_it_puts_nothing_in(
    sharded: Cluster,
) -> None:
    """South's index of plain 2,048-bit CLKs; then one put says they carry a 1,024-bit
    fallback CLK: the matcher lays every record out anew (scored by the fallback rule), and
    so must every look-up server, not only the one whose shard the put falls in (before:
    the other kept the plain layout, and a query that lacks the left-out fields, found in
    process by its fallback CLK, was answered "no match" through it)."""
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    rng = np.random.default_rng(11)
    first = rng.random((40, 1024)) < 0.6  # (has the fields: the first CLK markedly fuller)
    second = rng.random((40, 1024)) < 0.3
    rows = np.packbits(np.concatenate([first, second], axis=1), axis=1)
    refs = [f"south-{i}" for i in range(40)]
    last = next(i for i, r in enumerate(refs) if shard_of(r, 2) == 0)
    with sharded.matcher.member(tokens["south"]) as south:
        south.change_index("trial", clk_bits=2048, fingerprint=FINGERPRINT,
                           puts=[(r, rows[i].tobytes()) for i, r in enumerate(refs)])  # fmt: skip
        south.change_index("trial", clk_bits=2048, fingerprint=FINGERPRINT, fallback_bits=1024,
                           puts=[(refs[last], rows[last].tobytes())])  # fmt: skip
    # North's records lack the left-out fields (both CLKs the same): scored by fallback CLKs.
    far = [i for i, r in enumerate(refs) if shard_of(r, 2) == 1][:5]
    asked = np.packbits(np.concatenate([second[far], second[far]], axis=1), axis=1)
    expected = [[(refs[i],)] for i in far]

    def ask(matcher: Matcher) -> list[list[tuple[str, ...]]]:
        deadline = time.monotonic() + 60
        while True:  # (a server being loaded or read: refused meanwhile)
            try:
                with matcher.member(tokens["north"]) as north:
                    found = north.query("trial", asked.tobytes(), clk_bits=2048,
                                        fingerprint=FINGERPRINT, fallback_bits=1024,
                                        purpose=PURPOSE)  # fmt: skip
                return [[m.refs for m in r] for r in found.results]
            except UnavailableError as exc:
                if "is being" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    assert ask(sharded.matcher) == expected
    sharded.stop()  # the same data dir, served in-process: the same answer
    assert ask(sharded.start_matcher(sharded=False)) == expected


def out_of_memory(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, times: int) -> None:
    """`owner.name` fails its next `times` calls (out of memory, as a large index's build
    may), then works as before: the fault injected, nothing else replaced."""
    works = getattr(owner, name)
    left = [times]

    def failing(*args: object, **kwargs: object) -> object:
        if left[0]:
            left[0] -= 1
            raise MemoryError("out of memory (injected)")
        return works(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


def test_a_change_stored_but_not_applied_in_memory_is_read_again_from_storage(
    either: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """North removes 20 records; the change is stored, but applying it to the matcher's
    in-memory index fails (out of memory), and so does reading it again at once. The change
    still reaches the look-up servers (it is stored), the next query is refused (memory is
    not what is stored), and the one after reads the index again and is answered from the
    stored state: the removed records are found nowhere (before: nothing was forwarded, and
    the matcher and its look-up servers kept answering them until a restart)."""
    matcher = either.matcher
    assert matcher is not None
    tokens = project_of(matcher).tokens
    put(matcher, tokens["north"], "north", clks[0], range(ROWS))
    asked = clks[0][0:20]
    assert [r[0][1] for r in answered(matcher, tokens["south"], asked)] == [
        (f"north-{i}",) for i in range(20)]  # fmt: skip
    indexes = matcher.server.realtime.indexes
    out_of_memory(monkeypatch, indexes.get("trial", "north"), "apply", 1)
    out_of_memory(monkeypatch, indexes, "_load", 2)  # (read again: at once, at the query)
    remove(matcher, tokens["north"], refs_of("north", range(20)))  # stored: acknowledged
    with pytest.raises(UnavailableError, match=r"north.s standing index .* is stored but not"):
        query(matcher, tokens["south"], asked)
    assert answered(matcher, tokens["south"], asked) == [[]] * 20
    with matcher.member(tokens["north"]) as north:
        assert sorted(north.list_index("trial")) == sorted(refs_of("north", range(20, ROWS)))
    assert check_data_dir(either.data_dir).problems == []


def hold_reads(either: Cluster, monkeypatch: pytest.MonkeyPatch) -> tuple[Event, Event]:
    """From now on each look-up server's read of its shards (or, without a data dir, its
    load) waits at the server until `release` is set; `entered` once one has begun."""
    entered, release = Event(), Event()
    if either.loaded:
        for server in either.lookups:
            assert server is not None
            replace = server.shards.replace

            def held(*args: Any, replace: Callable[..., None] = replace) -> None:
                entered.set()
                release.wait(60)
                replace(*args)

            monkeypatch.setattr(server.shards, "replace", held)
    else:
        read = shards_module.read_shards

        def held_read(*args: Any) -> Any:
            entered.set()
            release.wait(60)
            return read(*args)

        monkeypatch.setattr(shards_module, "read_shards", held_read)
    return entered, release


def test_servers_reading_their_shards_again_are_answered_from_the_matchers_copy(
    either: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a matcher killed (no `lookup.stopped`), every look-up server reads its shards
    again at its next start (or is loaded again): held at the servers here. Queries
    meanwhile are answered, every server's shards searched in the matcher's own copy
    (before: refused UNAVAILABLE "is being read" / "is being loaded" for the whole read,
    about 4 s a 250,000-record shard); without that copy (`local`) still refused, never
    answered from stale shards; once the reads are in, answered through the servers."""
    with killed_and_reading(either, clks, monkeypatch) as (matcher, tokens, asked, before):
        assert [r[0][1] for r in before] == [(f"south-{i}",) for i in range(20)]
        remote = matcher.server.realtime.remote
        assert isinstance(remote, LookupServers)
        assert answers(query(matcher, tokens["north"], asked)) == before
        assert answers(query(matcher, tokens["north"], asked)) == before
        assert remote.loading or remote.behind()  # (still reading: held)
        words = as_words(asked.tobytes(), CLK_BITS)
        with pytest.raises(Unavailable, match="look-up server"):
            remote.search("trial", ["south"], words, 0.8)
    assert answers(once_read(matcher, tokens["north"], asked)) == before


@contextmanager
def killed_and_reading(
    cluster: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Matcher, dict[str, str], np.ndarray, list[list[tuple]]]]:
    """South's index put and north's query of 20 records answered through the servers
    (`before`); then the matcher killed (no `lookup.stopped`) and started again, each
    server reading its shards again, held until the block ends. Yields (the matcher, the
    tokens, the query, `before`)."""
    assert cluster.matcher is not None
    tokens = project_of(cluster.matcher).tokens
    put(cluster.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]
    before = answers(once_read(cluster.matcher, tokens["north"], asked))
    cluster.matcher.server.stop(grace=None)
    cluster.matcher = None
    (cluster.data_dir / "lookup.stopped").unlink()  # what a kill leaves: no record
    entered, release = hold_reads(cluster, monkeypatch)
    try:
        matcher = cluster.start_matcher()
        assert entered.wait(60), "the servers were not asked to read their shards again"
        yield matcher, tokens, asked, before
    finally:
        release.set()


def test_a_server_restarted_and_reading_its_shards_is_answered_from_the_matchers_copy(
    sharded: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Look-up server 1 is restarted by hand: it reads its shards at its own start (held
    here), which the matcher does not know of, and refuses searches meanwhile ("is being
    read"). Queries are answered all the same, its shards searched in the matcher's own copy
    (before: refused with its answer, "is being read from index.sqlite")."""
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    put(sharded.matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]
    before = answers(once_read(sharded.matcher, tokens["north"], asked))
    sharded.stop_lookup(1)
    entered, release = hold_reads(sharded, monkeypatch)
    try:
        sharded.release(1)
        server = create_lookup_server(sharded.addresses[1], sharded.data_dir, 1, 2)
        sharded.lookups[1] = server
        assert entered.wait(60), "the restarted server did not start reading"
        deadline = time.monotonic() + 30
        while True:  # (until its channel has found the server again)
            try:
                found = answers(query(sharded.matcher, tokens["north"], asked))
                break
            except UnavailableError as exc:
                assert "is being read" not in str(exc)
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert found == before
        assert not server.shards.ready  # (still reading: held)
    finally:
        release.set()
    assert answers(once_read(sharded.matcher, tokens["north"], asked)) == before


def test_servers_slow_to_describe_themselves_are_asked_at_once_not_one_after_another(
    sharded: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both look-up servers read their shards again (held, as above) and are slow to answer
    Describe: each Describe handler waits at the servers until the other's has arrived. The
    matcher asks them at once (`_reread`: every Describe in flight together, then waited
    for), so both meet and the wait is one Describe's deadline, not one a server; asked one
    after another, the first would wait alone until its deadline. A query meanwhile is
    answered from the matcher's own copy, and both servers are named behind."""
    with killed_and_reading(sharded, clks, monkeypatch) as (matcher, tokens, asked, before):
        remote = matcher.server.realtime.remote
        assert isinstance(remote, LookupServers)
        until_rereading = time.monotonic() + 60
        while len(remote._rereading) < 2:  # (each has said yes to its Reload)
            assert time.monotonic() < until_rereading
            time.sleep(0.05)
        both = Barrier(2, timeout=lookup_wire.RELOAD_SECONDS)
        met: list[bool] = []
        for server in sharded.lookups:
            assert server is not None
            retry = server.shards.retry_failed  # (what Describe does first)

            def slow(retry: Callable[[], None] = retry) -> None:
                try:
                    both.wait()
                    met.append(True)
                except BrokenBarrierError:
                    met.append(False)
                retry()

            monkeypatch.setattr(server.shards, "retry_failed", slow)
        assert answers(query(matcher, tokens["north"], asked)) == before  # the matcher's copy
        assert remote.behind() == [remote._name(0), remote._name(1)]
        assert met == [True, True]  # both Describes in flight at once


def test_servers_that_read_their_shards_after_the_matcher_stopped_are_not_read_again(
    sharded: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data-dir servers at other addresses than the matcher's last run (new ports, say) were
    every one asked to read their shards again at its start: one that had read them at its
    own start, after that run stopped, read them twice. It now says so (pb.ShardState
    `read_after_stop`) and is read once; one that read them before a change that run stored
    (started early, never told of it) is still read again, and answers with the change."""
    assert sharded.matcher is not None
    tokens = project_of(sharded.matcher).tokens
    put(sharded.matcher, tokens["south"], "south", clks[1], range(20))
    asked = clks[0][0:20]
    before = answered(sharded.matcher, tokens["north"], asked)
    early = create_lookup_server("127.0.0.1:0", sharded.data_dir, 1, 2, wait=True)
    remove(sharded.matcher, tokens["south"], refs_of("south", range(10)))  # (early: not told)
    sharded.stop()
    reads: list[int] = []
    read = Shards._read
    monkeypatch.setattr(Shards, "_read", lambda self: (reads.append(self.shard), read(self))[1])
    late = create_lookup_server("127.0.0.1:0", sharded.data_dir, 0, 2, wait=True)
    sharded.lookups = [late, early]  # (stopped by the fixture)
    sharded.addresses = [f"127.0.0.1:{late.port}", f"127.0.0.1:{early.port}"]
    matcher = sharded.start_matcher()
    deadline = time.monotonic() + 60
    while any(t.name == "blindmatch-load" for t in threading.enumerate()):  # the start's asking
        assert time.monotonic() < deadline
        time.sleep(0.05)
    current(matcher)
    assert sorted(reads) == [0, 1]  # late's own read at its start, early's again (before: 0 twice)
    expected = [[] if i < 10 else hits for i, hits in enumerate(before)]
    assert answered(matcher, tokens["north"], asked) == expected
