"""An erasure that fails part-way while the matcher stays up is finished in the background.

(A look-up server that missed it: tests/test_erasure_lookups.py.)

S2 is really down (stopped) when the member erases: the Erase reply and `blindmatch erase`
say that S2 has not forgotten the member's shares and that the matcher tries again; the
erasure's intent is kept (`admin check` says S1 and S2 may hold the shares). S2 comes back
on the same port with its data dir (still holding the shares), and the matcher, still up,
asks it again (usecases/erasure_retry.py): S2 drops them, an `erase.complete` entry records
it, the intent goes, and `admin check` passes, with no restart and no second Erase. Likewise
an erasure whose standing index `index.sqlite` refused to delete (held locked by another
writer, as a full disk would refuse it), once the lock is let go.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from benchmarks.knownclks import CLK_BITS, FINGERPRINT
from blindmatch.cli.app import main
from blindmatch.client import MatcherClient
from blindmatch.client.errors import BlindmatchError
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.matcher.usecases.erasure_retry import RETRIED
from tests.portheld import HeldPorts
from tests.support import (
    ADMIN_TOKEN,
    QUICK_RETRIES,
    db_rows,
    short_check_grace,
    short_index_lock_wait,
)
from tests.test_erasure_check import completed, index_of, puts, started_with_north_indexed
from tests.test_twoserver_project import MEMBER_KEY, encoded

pytestmark = pytest.mark.server
__all__ = ["encoded"]  # (the members' encoded folders, a fixture shared with that module)


def test_an_erasure_s2_missed_is_retried_while_the_matcher_runs_once_s2_is_back(
    tmp_path: Path,
    encoded: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short_check_grace(monkeypatch)  # (checked with S2 down: the erasure cannot end meanwhile)
    key = secrets.token_urlsafe(16)

    def start_s2(address: str = "127.0.0.1:0") -> RunningRole:
        return create_role("s2", address, key, MEMBER_KEY, data_dir=tmp_path / "s2-data")

    s2 = start_s2()
    s2_address = f"127.0.0.1:{s2.port}"
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=s2_address,
                     data_dir=tmp_path / "s1-data")  # fmt: skip
    setup = combiner_setup(f"127.0.0.1:{s1.port}", s2_address, key, MEMBER_KEY)
    data_dir = tmp_path / "matcher-data"
    # (Its retries 0.05, 0.1, 0.2 s apart, not 1, 2, 5 s: the same tries, sooner.)
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, two_server=setup,
                           retry_waits=QUICK_RETRIES)  # fmt: skip
    target = f"127.0.0.1:{server.port}"
    down = HeldPorts()  # (S2's port no other's while it is down: tests/portheld.py)
    try:
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("shares", ["north", "west"], mode="two-server").tokens
        for name in ("north", "west"):
            assert main(["upload", str(encoded[name]), "--project", "shares",
                         "--server", target, "--token", tokens[name]]) == 0  # fmt: skip
        down.stop(s2.port, lambda: s2.stop(grace=None))  # down: the erasure cannot reach it
        capsys.readouterr()
        assert main(["erase", "--project", "shares", "--server", target,
                     "--token", tokens["west"], "--yes"]) == 4  # fmt: skip
        said = capsys.readouterr()
        assert "Erased from shares: 1 upload," in said.out
        assert "warning: S2 did not drop your shares" in said.err
        assert "the matcher asks it again in the background until it does" in said.err
        assert "the erasure is not complete yet: S2 has not forgotten its shares yet" in said.err
        assert "the matcher tries again in the background" in said.err
        assert server.store.cut_short_erasures() != []  # its intent is kept
        (finding,) = [p for p in check_data_dir(data_dir).problems if "shares/west" in p]
        assert "S1 and S2 may still hold its shares" in finding

        down.release(s2.port)
        s2 = start_s2(s2_address)  # back, with its data dir: it still holds west's shares
        assert sorted(m.split("/")[1] for m in s2.service.held if m.startswith("shares/")) == [
            "north", "west"]  # fmt: skip
        deadline = time.monotonic() + 60
        while server.store.cut_short_erasures():  # the matcher asks it again by itself
            assert time.monotonic() < deadline, "the erasure was not retried"
            time.sleep(0.2)
        assert sorted(m.split("/")[1] for m in s2.service.held if m.startswith("shares/")) == [
            "north"]  # fmt: skip
        assert server.erasures is not None and server.erasures.pending == []
    finally:
        down.close()
        server.stop(grace=None)
        s1.stop(grace=None)
        s2.stop(grace=None)
    completed = [json.loads(r[8]) for r in db_rows(data_dir, "audit") if r[3] == "erase.complete"]
    assert len(completed) == 1
    assert completed[0]["twoserver"] == {"S2": "dropped 1"} and completed[0]["why"] == RETRIED
    assert completed[0]["attempts"] >= 1
    assert check_data_dir(data_dir).problems == []


def test_an_erasure_whose_index_could_not_be_deleted_is_retried_until_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`index.sqlite` held locked by another writer (as a full disk, it refuses the index's
    deletion): the erasure's rows go, the reply says its standing index is not deleted yet,
    and once the lock is let go the running matcher deletes it by itself."""
    short_index_lock_wait(monkeypatch)
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir, retry_waits=QUICK_RETRIES)
    target = f"127.0.0.1:{server.port}"
    try:
        holder = sqlite3.connect(data_dir / "index.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer, holding the lock
        try:
            with MatcherClient(target, tokens["north"]) as north:
                erased = north.erase("p")
            assert erased.pending[0].startswith("its standing index is not deleted yet")
            assert "database is locked" in erased.pending[0]
            assert server.store.cut_short_erasures() != []
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        deadline = time.monotonic() + 60
        while server.store.cut_short_erasures():
            assert time.monotonic() < deadline, "the erasure was not retried"
            time.sleep(0.2)
        assert index_of(server, tokens["north"]) == {}
    finally:
        server.stop(grace=None)
    assert [(p, m, d["index_records"], d["why"]) for p, m, d in completed(data_dir)] == [
        ("p", "north", 10, RETRIED)
    ]
    assert check_data_dir(data_dir).problems == []


def test_an_erased_index_whose_deletion_is_pending_is_searched_by_no_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While `index.sqlite` refuses the deletion (locked, as a full disk would), the erased
    index stays in the matcher's memory (dropped with the stored copy) but no query finds it,
    its listing is empty, and the member's change waits for the deletion (refused while it
    fails: a change stored meanwhile would keep the old records on disk); once the lock goes,
    the change deletes it first, and only the new record is there."""
    short_index_lock_wait(monkeypatch)
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir)
    target = f"127.0.0.1:{server.port}"

    def south_finds() -> list[str]:
        with MatcherClient(target, tokens["south"]) as south:
            answer = south.query("p", [clk for _, clk in puts(0, 5)], clk_bits=CLK_BITS,
                                 fingerprint=FINGERPRINT, purpose="case-1")  # fmt: skip
        return sorted({m.partner for hits in answer.results for m in hits})

    assert south_finds() == ["north"]
    try:
        holder = sqlite3.connect(data_dir / "index.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer, holding the lock
        try:
            with MatcherClient(target, tokens["north"], retry=NO_RETRY) as north:
                erased = north.erase("p")
                assert erased.pending[0].startswith("its standing index is not deleted yet")
                assert south_finds() == []  # pending, and already searched by no query
                assert north.list_index("p") == {}
                with pytest.raises(BlindmatchError, match="erasure in this project is not compl"):
                    north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                       puts=puts(20, 1))  # fmt: skip
            assert server.realtime.indexes.get("p", "north") is not None  # (in memory still)
            assert south_finds() == []
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        with MatcherClient(target, tokens["north"]) as north:
            north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts(20, 1))
        assert sorted(index_of(server, tokens["north"])) == ["r20"]
        assert south_finds() == []  # (r0-r4 asked: the old records are gone)
        deadline = time.monotonic() + 60
        while server.store.cut_short_erasures():
            assert time.monotonic() < deadline, "the erasure was not retried"
            time.sleep(0.2)
        assert sorted(index_of(server, tokens["north"])) == ["r20"]
    finally:
        server.stop(grace=None)
    assert check_data_dir(data_dir).problems == []


def test_a_change_made_while_the_retry_reads_what_was_left_is_not_taken_for_a_leftover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry reads what the erasure left of north's index and deletes it, under the
    indexes' writer lock (realtime/indexes.py `erase_left`): a change north makes right after
    the read waits for the deletion and is kept. Before, the read and the deletion were two
    steps, and a change stored between them was deleted as a leftover. The test makes the
    change exactly there (a hook on the read), whenever the writer's lock lets it in."""
    short_index_lock_wait(monkeypatch)
    data_dir = tmp_path / "data"
    server, tokens = started_with_north_indexed(data_dir, retry_waits=QUICK_RETRIES)
    target = f"127.0.0.1:{server.port}"
    indexes, index_store = server.realtime.indexes, server.realtime.index_store
    read = index_store.left_by_erasure
    changes: list[threading.Thread] = []

    def change() -> None:
        with MatcherClient(target, tokens["north"]) as north:
            north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts(20, 1))

    def read_then_change(project: str, member: str, seq: int) -> int | None:
        left = read(project, member, seq)
        if not changes:  # (the first read: north changes its index right after it)
            changes.append(threading.Thread(target=change))
            changes[0].start()
            if not indexes._write_lock.locked():  # (the race's window open: let it in)
                changes[0].join(30)
        return left

    try:
        holder = sqlite3.connect(data_dir / "index.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the erasure's deletion refused: left to the retry
        try:
            with MatcherClient(target, tokens["north"]) as north:
                erased = north.erase("p")
            assert erased.pending[0].startswith("its standing index is not deleted yet")
            monkeypatch.setattr(index_store, "left_by_erasure", read_then_change)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        deadline = time.monotonic() + 60
        while server.store.cut_short_erasures() or not changes:
            assert time.monotonic() < deadline, "the erasure was not retried"
            time.sleep(0.1)
        changes[0].join(30)
        assert sorted(index_of(server, tokens["north"])) == ["r20"]  # north's change, kept
    finally:
        server.stop(grace=None)
    assert check_data_dir(data_dir).problems == []


@pytest.mark.parametrize("waits", [(), (0.0,), (1.0, -1.0)])
def test_the_retry_waits_are_one_or_more_positive_seconds(
    tmp_path: Path, waits: tuple[float, ...]
) -> None:
    """`create_server`'s `retry_waits` (tests pass short ones): none, or a wait of 0 (a retry
    with no pause, over and over), is refused before anything is opened."""
    with pytest.raises(ValueError, match="retry waits"):
        create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, retry_waits=waits)
    assert not (tmp_path / "data").exists()
