"""An erasure cut short beside look-up servers: the matcher's next start tells them too.

The look-up servers keep running while the matcher stops after the erasure's transaction
(the state a kill at `erase.logged` leaves: tests/test_erasure_crash.py), still holding the
member's shards in memory; the restarted matcher completes the erasure and forwards it, so a
partner's query no longer finds the member. A look-up server stopped when the member erases
misses it: the reply says so, the erasure's intent is kept, and the running matcher finishes
it once the server is back (usecases/erasure_retry.py). Both kinds of look-up server: reading
the data dir, and loaded by the matcher (no data dir).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any

import numpy as np
import pytest

from blindmatch.matcher.realtime import shards as shards_module
from blindmatch.matcher.realtime.shards import ERASE_MEMBER, shard_of
from blindmatch.matcher.rpc import lookup_wire
from blindmatch.matcher.rpc.lookup_client import LookupServers
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.usecases.erasure_retry import RETRIED
from tests.support import db_rows, short_index_lock_wait
from tests.test_lookup_behind import fail_once, hold_reads
from tests.test_lookup_servers import (
    ROWS,
    Cluster,
    answers,
    clks,
    either,
    once_read,
    project_of,
    put,
    remote,
    sharded,
)

pytestmark = pytest.mark.server
__all__ = ["clks", "either", "remote", "sharded"]  # (fixtures shared with that module)


def test_an_erasure_cut_short_reaches_the_look_up_servers_at_the_next_start(
    either: Cluster, clks: list[np.ndarray]
) -> None:
    assert either.matcher is not None
    tokens = project_of(either.matcher).tokens
    put(either.matcher, tokens["north"], "north", clks[0], range(ROWS))
    asked = clks[0][0:20]
    found = answers(once_read(either.matcher, tokens["south"], asked))
    assert [r[0][1] for r in found] == [(f"north-{i}",) for i in range(20)]
    either.matcher.server.store.erase_member("trial", "north")  # the transaction, no more
    either.matcher.server.stop(grace=None)  # the look-up servers keep north's shards
    either.matcher = None
    matcher = either.start_matcher()
    assert answers(once_read(matcher, tokens["south"], asked)) == [[] for _ in range(20)]


def test_an_erasure_a_stopped_look_up_server_missed_is_finished_once_it_is_back(
    either: Cluster, clks: list[np.ndarray]
) -> None:
    matcher = either.matcher
    assert matcher is not None
    tokens = project_of(matcher).tokens
    put(matcher, tokens["north"], "north", clks[0], range(ROWS))
    settled(either)  # (a server stopped while being loaded holds nothing: nothing is pending)
    either.stop_lookup(0)
    with matcher.member(tokens["north"]) as north:
        erased = north.erase("trial")
    (missed, retried) = erased.pending
    assert missed.startswith(f"look-up server {either.addresses[0]} (shard 0 of 2) may still hold")
    assert retried == "the matcher tries again in the background until it is done"
    assert matcher.server.store.cut_short_erasures() != []  # its intent is kept meanwhile
    either.start_lookup(0)
    deadline = time.monotonic() + 60
    while matcher.server.store.cut_short_erasures():  # finished by the running matcher
        assert time.monotonic() < deadline, "the erasure was not finished"
        time.sleep(0.2)
    asked = clks[0][0:20]
    assert answers(once_read(matcher, tokens["south"], asked)) == [[] for _ in range(20)]
    (detail,) = [json.loads(r[8]) for r in db_rows(either.data_dir, "audit")
                 if r[3] == "erase.complete"]  # fmt: skip
    assert detail["why"] == RETRIED and detail["attempts"] >= 1
    assert check_data_dir(either.data_dir).problems == []


def settled(cluster: Cluster) -> None:
    """Wait until the matcher has loaded every look-up server (the loaded kind start empty,
    and the matcher loads them in the background after its start)."""
    assert cluster.matcher is not None
    servers = cluster.matcher.server.realtime.remote
    assert isinstance(servers, LookupServers)
    deadline = time.monotonic() + 60
    while servers.loading or not all(s is not None and s.shards.loaded for s in cluster.lookups):
        assert time.monotonic() < deadline, "the look-up servers were not loaded"
        time.sleep(0.05)


@pytest.fixture
def short_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matcher (started after it: first in a test's arguments) waits 0.5 s for the lock
    the test holds on `index.sqlite`, not 5 s (tests/support.py)."""
    short_index_lock_wait(monkeypatch)


def test_an_erased_index_whose_deletion_is_pending_is_searched_at_no_look_up_server(
    short_lock: None, either: Cluster, clks: np.ndarray
) -> None:
    """`index.sqlite` refuses the deletion (held locked, as a full disk would): the look-up
    servers still hold north's shards (nothing was forwarded), but a query asks them for
    the partners it searches, and north is none of them from the moment the erasure returns."""
    matcher = either.matcher
    assert matcher is not None
    tokens = project_of(matcher).tokens
    put(matcher, tokens["north"], "north", clks[0], range(ROWS))
    asked = clks[0][0:20]
    assert [r[0][1] for r in answers(once_read(matcher, tokens["south"], asked))] == [
        (f"north-{i}",) for i in range(20)]  # fmt: skip
    holder = sqlite3.connect(either.data_dir / "index.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, holding the lock
    try:
        with matcher.member(tokens["north"]) as north:
            erased = north.erase("trial")
        assert erased.pending[0].startswith("its standing index is not deleted yet")
        assert answers(once_read(matcher, tokens["south"], asked)) == [[] for _ in range(20)]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    deadline = time.monotonic() + 60
    while matcher.server.store.cut_short_erasures():  # finished by the running matcher
        assert time.monotonic() < deadline, "the erasure was not finished"
        time.sleep(0.2)
    assert answers(once_read(matcher, tokens["south"], asked)) == [[] for _ in range(20)]
    assert check_data_dir(either.data_dir).problems == []


def test_a_look_up_server_behind_for_another_change_takes_the_erasure_at_once(
    either: Cluster, clks: list[np.ndarray]
) -> None:
    """Look-up server 0 missed a change to south's index (it was down) and is back, but the
    matcher has not had it read its shards again yet (no query since): it is behind, for a
    reason that has nothing to do with north. North's erasure is forwarded to it all the same,
    it drops north's shards, and the erasure is complete at once (before: pending, naming
    server 0, until it had read its shards again)."""
    matcher = either.matcher
    assert matcher is not None
    tokens = project_of(matcher).tokens
    put(matcher, tokens["north"], "north", clks[0], range(ROWS))
    either.stop_lookup(0)
    put(matcher, tokens["south"], "south", clks[1], range(10))  # server 0 misses it
    remote = matcher.server.realtime.remote
    assert remote is not None
    # (on a loaded host server 0's first load may still be in flight when it is stopped:
    # `behind` leaves out a server being loaded until that load has failed)
    deadline = time.monotonic() + 60
    while not remote.behind():
        assert time.monotonic() < deadline, "server 0 was never said to be behind"
        time.sleep(0.1)
    (behind,) = remote.behind()
    assert behind.startswith(f"look-up server {either.addresses[0]}")
    server = either.start_lookup(0)
    if not either.loaded:  # (it read the data dir: north's shards among them)
        assert ("trial", "north") in server.shards._indexes
    with matcher.member(tokens["north"]) as north:
        erased = north.erase("trial")
    assert erased.pending == ()  # complete: no intent kept
    assert matcher.server.store.cut_short_erasures() == []
    assert ("trial", "north") not in server.shards._indexes  # (before: until it read them again)
    if not either.loaded:  # (one loaded may be being loaded by now: not "behind")
        assert matcher.server.realtime.remote.behind() == [behind]  # for south's change, still
    asked = clks[0][0:20]
    assert answers(once_read(matcher, tokens["south"], asked)) == [[] for _ in range(20)]
    assert check_data_dir(either.data_dir).problems == []


def north_held_server_0_behind(
    cluster: Cluster, clks: list[np.ndarray], *, settle: bool = False
) -> tuple[Any, dict[str, str], Any, LookupServers]:
    """North's index held at look-up server 0 (after `settled`, with `settle`), then a change
    to south's index server 0 misses (its next read fails once): the matcher, the project's
    tokens, server 0, and the matcher's `LookupServers`, which count server 0 behind."""
    matcher = cluster.matcher
    assert matcher is not None and cluster.lookups[0] is not None
    tokens = project_of(matcher).tokens
    put(matcher, tokens["north"], "north", clks[0], range(ROWS))
    if settle:
        settled(cluster)
    server = cluster.lookups[0]
    assert ("trial", "north") in server.shards._indexes
    fail_once(server.shards)
    south = [i for i in range(ROWS) if shard_of(f"south-{i}", 2) == 0][:5]
    put(matcher, tokens["south"], "south", clks[1], range(south[-1] + 1))  # server 0 misses it
    servers = matcher.server.realtime.remote
    assert isinstance(servers, LookupServers) and servers.behind() == [servers._name(0)]
    return matcher, tokens, server, servers


def north_erased_pending_at_server_0(
    cluster: Cluster, matcher: Any, tokens: dict[str, str], server: Any
) -> None:
    """North erases: the reply names look-up server 0 as pending and the background retry,
    and server 0 still holds north's shards (what the reply warns of)."""
    with matcher.member(tokens["north"]) as north:
        erased = north.erase("trial")
    (missed, retried) = erased.pending
    assert missed.startswith(f"look-up server {cluster.addresses[0]} (shard 0 of 2) may still")
    assert retried == "the matcher tries again in the background until it is done"
    assert ("trial", "north") in server.shards._indexes


def test_an_erasure_during_a_load_again_is_pending_until_a_load_that_took_it_is_in(
    remote: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Look-up server 0 (no data dir) holds north's shards, misses a change to south's
    index, and is loaded again from the matcher's memory; the load hangs at the server
    (alive, holding what it held), then fails. North erases while it hangs: the reply names
    server 0 (before: left out as "being loaded", and nothing was pending though the load
    then failed and the server kept north's shards), and the background retry finishes the
    erasure once the load has failed (the server takes the erasure then)."""
    matcher, tokens, server, servers = north_held_server_0_behind(remote, clks, settle=True)
    entered, release = threading.Event(), threading.Event()

    def hang(*args: object, **kwargs: object) -> None:  # (the injected fault: a hung load)
        entered.set()
        release.wait()
        raise OSError("hung, then failed (injected)")

    monkeypatch.setattr(server.shards, "replace", hang)
    try:
        servers.catch_up()  # Reload: it has no data dir, so it is loaded again
        assert servers.loading == [0]
        assert entered.wait(60), "the load did not reach the server"
        north_erased_pending_at_server_0(remote, matcher, tokens, server)
        release.set()  # the load fails; the server, alive, keeps what it held
        deadline = time.monotonic() + 60
        while matcher.server.store.cut_short_erasures():  # finished by the running matcher
            assert time.monotonic() < deadline, "the erasure was not finished"
            time.sleep(0.2)
        assert ("trial", "north") not in server.shards._indexes
    finally:
        release.set()
    assert check_data_dir(remote.data_dir).problems == []


def test_a_server_whose_read_again_fails_is_pending_until_a_read_is_in(
    sharded: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Look-up server 0 (a data dir) holds north's shards, misses a change to south's index,
    says yes when asked to read its shards again, and the read fails (injected): it refuses
    searches, and still holds north's shards in memory. North erases: the reply names
    server 0 as pending, and it counts as behind (before: dropped from "behind" once it had
    said yes, so nothing was pending), until the background retry has it read again (the
    retry asks whether it is done; asked so, it reads again) and the read is in."""
    matcher, tokens, server, servers = north_held_server_0_behind(sharded, clks)
    read, failing = shards_module.read_shards, threading.Event()
    failing.set()

    def read_or_fail(*args: object) -> object:  # (the injected fault: a read that fails)
        if failing.is_set():
            raise OSError("disk I/O error (injected)")
        return read(*args)

    monkeypatch.setattr(shards_module, "read_shards", read_or_fail)
    servers.catch_up()  # Reload: it says yes, then its read fails
    deadline = time.monotonic() + 60
    while not server.shards.failed:
        assert time.monotonic() < deadline, "the read did not fail"
        time.sleep(0.05)
    assert servers.behind() == [servers._name(0)]
    north_erased_pending_at_server_0(sharded, matcher, tokens, server)
    assert matcher.server.store.cut_short_erasures() != []
    failing.clear()  # the next read succeeds
    while matcher.server.store.cut_short_erasures():  # finished by the running matcher
        assert time.monotonic() < deadline, "the erasure was not finished"
        time.sleep(0.2)
    assert ("trial", "north") not in server.shards._indexes
    assert servers.behind() == []
    assert check_data_dir(sharded.data_dir).problems == []


def test_an_erasure_waits_once_for_a_server_behind_and_one_reading_again(
    sharded: Cluster, clks: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Look-up server 1 missed a change and says yes to reading its shards again (its read
    held: it counts as behind until the read is in); server 0 then misses another change
    (behind, up). North's erasure goes to server 0 as a late call, and the reply waits for
    it and asks server 1 (Describe) whether its read is in. Server 0 takes the erasure only
    once server 1's Describe has arrived (held at the servers until both have): the matcher
    sends the Describe before waiting for the erasure (`_ask_done`), so both meet, server 0
    takes it and only server 1 is pending. Before, it waited for the erasure first, and the
    Describe after: server 0 missed its deadline waiting alone, and was named pending too."""
    matcher = sharded.matcher
    assert matcher is not None
    tokens = project_of(matcher).tokens
    remote = matcher.server.realtime.remote
    assert isinstance(remote, LookupServers)
    s0, s1 = sharded.lookups
    assert s0 is not None and s1 is not None
    put(matcher, tokens["north"], "north", clks[0], range(ROWS))
    fail_once(s1.shards)
    put(matcher, tokens["south"], "south", clks[1], range(10))  # server 1 misses it
    assert remote.behind() == [remote._name(1)]
    entered, release = hold_reads(sharded, monkeypatch)
    try:
        remote.catch_up()  # server 1 says yes to reading again; its read is held
        assert entered.wait(60), "server 1 was not asked to read its shards again"
        fail_once(s0.shards)
        put(matcher, tokens["south"], "south", clks[1], range(10, 20))  # server 0 misses it
        assert remote.behind() == [remote._name(0), remote._name(1)]
        both = threading.Barrier(2, timeout=lookup_wire.RELOAD_SECONDS + 1)
        met: dict[int, bool] = {}

        def meet(i: int) -> None:
            if i in met:  # (once each: a later ask, by the background retry, passes)
                return
            try:
                both.wait()
                met[i] = True
            except threading.BrokenBarrierError:
                met[i] = False

        apply, retry = s0.shards.apply, s1.shards.retry_failed

        def erasing(change: Any, sent: Any = None) -> bool:
            if change.erase == ERASE_MEMBER:
                meet(0)
            return apply(change, sent)

        def describing() -> None:
            meet(1)
            retry()

        monkeypatch.setattr(s0.shards, "apply", erasing)
        monkeypatch.setattr(s1.shards, "retry_failed", describing)
        with matcher.member(tokens["north"]) as north:
            erased = north.erase("trial")
        assert met == {0: True, 1: True}  # the erasure and the Describe at once
        pending = " ".join(erased.pending)
        assert remote._name(1) in pending and remote._name(0) not in pending, pending
    finally:
        release.set()
