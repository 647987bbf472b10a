"""Nothing is disclosed, and no change acknowledged, unless its audit entry is durable first.

A SIGKILL in the middle of index changes and queries leaves every answered query and every
stored change with its entry; a full disk refuses queries and changes rather than answering
unaudited; a retried index change that had been stored gets its first acknowledgement.
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from benchmarks.cliflow import BLINDMATCH
from benchmarks.faults import Server
from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.errors import BlindmatchError, RejectedError
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.sqlite import GroupCommit
from tests import support
from tests.support import ADMIN_TOKEN, Matcher

pytestmark = pytest.mark.on_disk  # kills or races: tmp_path on the disk (tests/conftest.py)

CLKS = population(1, 400, 0.0, seed=23)[0].clks


def index_puts(start: int, n: int) -> list[tuple[str, bytes]]:
    return [(f"r{i}", CLKS[i].tobytes()) for i in range(start, start + n)]


def audit_rows(data_dir: Path) -> list[tuple[int, str, str, dict]]:
    """(seq, action, purpose, detail) of every audit entry, read as an outsider would."""
    with closing(sqlite3.connect(f"file:{data_dir / 'blindmatch.sqlite'}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT seq, action, purpose, detail FROM audit ORDER BY seq").fetchall()
    return [(seq, action, purpose, json.loads(detail)) for seq, action, purpose, detail in rows]


def stored_changes(data_dir: Path) -> dict[str, int]:
    """change id -> the seq of the entry that announced it, for every stored index change."""
    with closing(sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT change_id, audit_seq FROM index_changes").fetchall())


def unaudited(data_dir: Path, answered: set[str], acknowledged: set[str]) -> list[str]:
    """Every answered query, and every stored or acknowledged change, without its entry;
    every entry claiming a change that was never stored."""
    rows = audit_rows(data_dir)
    asked = {purpose for _, action, purpose, _ in rows if action == "query"}
    voided = {detail["announced"] for _, action, _, detail in rows if action == "index.change.void"}
    claimed = {
        detail["change_id"]
        for seq, action, _, detail in rows
        if action == "index.change" and seq not in voided
    }
    stored = set(stored_changes(data_dir))
    found = [f"query {p!r} answered, not audited" for p in sorted(answered - asked)]
    found += [f"change {c} stored, not audited" for c in sorted(stored - claimed)]
    found += [f"change {c} acknowledged, not stored" for c in sorted(acknowledged - stored)]
    found += [f"change {c} audited, never stored" for c in sorted(claimed - stored)]
    return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    """`blindmatch serve` (a process of its own, to be SIGKILLed), a project, north's index."""
    server = Server(tmp_path / "data", 0, "bm_admin_" + secrets.token_hex(8))
    server.start()
    try:
        with MatcherClient(server.target, server.admin_token) as op:
            tokens = op.create_project("p", ["north", "west"]).tokens
        with MatcherClient(server.target, tokens["north"]) as north:
            north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               puts=index_puts(0, 200))  # fmt: skip
        yield server, tokens
    finally:
        server.stop()


def test_a_sigkill_during_index_changes_and_queries_leaves_nothing_unaudited(
    served: tuple[Server, dict[str, str]],
) -> None:
    server, tokens = served
    rng = random.Random(4)
    answered: set[str] = set()
    acknowledged: set[str] = set()
    for trial in range(3):
        stop = threading.Event()

        def ask(who: int, trial: int = trial) -> None:
            with MatcherClient(server.target, tokens["west"], retry=NO_RETRY) as west:
                for i in range(10_000):
                    purpose = f"case-{trial}-{who}-{i}"
                    try:
                        west.query("p", CLKS[i % 200].tobytes(), clk_bits=CLK_BITS,
                                   fingerprint=FINGERPRINT, purpose=purpose)  # fmt: skip
                    except BlindmatchError:
                        return  # the kill
                    answered.add(purpose)

        def change(trial: int = trial) -> None:
            with MatcherClient(server.target, tokens["north"], retry=NO_RETRY) as north:
                for i in range(10_000):
                    key = f"c-{trial}-{i}"
                    start = 200 + (i // 2 % 20) * 10  # put a block, then remove it
                    try:
                        puts = index_puts(start, 10)
                        removes = [r for r, _ in puts]
                        north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                           puts=puts if i % 2 == 0 else [],
                                           removes=[] if i % 2 == 0 else removes,
                                           change_id=key)  # fmt: skip
                    except BlindmatchError:
                        return
                    acknowledged.add(key)

        load = [threading.Thread(target=ask, args=(w,)) for w in range(2)]
        load.append(threading.Thread(target=change))
        for thread in load:
            thread.start()
        time.sleep(rng.uniform(0.8, 1.6))
        server.kill()
        stop.set()
        for thread in load:
            thread.join(timeout=60)
        server.start()
        assert answered and acknowledged, "nothing ran before the kill"
        assert unaudited(server.data_dir, answered, acknowledged) == []
        done = subprocess.run(
            [*BLINDMATCH, "admin", "check", "--data-dir", str(server.data_dir)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_a_retried_index_change_that_was_stored_gets_its_first_acknowledgement(
    matcher: Matcher, project: ProjectTokens
) -> None:
    with matcher.member(project.tokens["north"]) as north:
        put = north.change_index("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                 puts=index_puts(0, 50), change_id="load-1")  # fmt: skip
        removes = [f"r{i}" for i in range(10)]
        first = north.change_index("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                   removes=removes, change_id="trim-1")  # fmt: skip
        # The acknowledgement was lost; the client sends the same change again.
        again = north.change_index("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                   removes=removes, change_id="trim-1")  # fmt: skip
        assert not first.replayed and again.replayed
        assert (
            (again.removed, again.record_count) == (first.removed, first.record_count) == (10, 40)
        )
        assert len(north.list_index("trial")) == 40
        with pytest.raises(RejectedError, match="already used for a different change"):
            north.change_index("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               puts=index_puts(50, 5), change_id="load-1")  # fmt: skip
    assert put.record_count == 50
    changes = [a for _, a, _, _ in audit_rows(matcher.data_dir) if a.startswith("index.change")]
    assert changes == ["index.change", "index.change"]  # the retry changed nothing


def test_queries_arriving_together_share_one_audit_commit(
    matcher: Matcher, project: ProjectTokens
) -> None:
    with matcher.member(project.tokens["north"]) as north:
        north.change_index("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                           puts=index_puts(0, 100))  # fmt: skip
    commits_before, entries_before = matcher.server.store.audit.group_commits

    def ask(who: int) -> None:
        with matcher.member(project.tokens["south"]) as south:
            for i in range(15):
                south.query("trial", CLKS[i].tobytes(), clk_bits=CLK_BITS,
                            fingerprint=FINGERPRINT, purpose=f"case-{who}-{i}")  # fmt: skip

    askers = [threading.Thread(target=ask, args=(w,)) for w in range(16)]
    for thread in askers:
        thread.start()
    for thread in askers:
        thread.join(timeout=120)
    commits, entries = matcher.server.store.audit.group_commits
    assert entries - entries_before == 16 * 15
    assert commits - commits_before < entries - entries_before  # grouped, one fsync each
    purposes = {p for _, a, p, _ in audit_rows(matcher.data_dir) if a == "query"}
    assert {f"case-{w}-{i}" for w in range(16) for i in range(15)} <= purposes


def test_a_group_commit_returns_each_submit_after_its_own_write_and_fails_only_its_batch() -> None:
    written: list[list[int]] = []
    fail = {7}  # the batch holding this item fails, and only that batch

    def write(items: list[int]) -> None:
        time.sleep(0.002)  # long enough for others to arrive meanwhile
        if fail & set(items):
            raise OSError("disk gone")
        written.append(list(items))

    group: GroupCommit[int] = GroupCommit(write)
    seen: dict[int, str] = {}

    def submit(i: int) -> None:
        try:
            group.submit((i, i + 1000))
        except OSError:
            seen[i] = "failed"
            return
        # Returned: its items are in a write that finished.
        seen[i] = "written" if any(i in w and i + 1000 in w for w in written) else "early"

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    flat = [x for w in written for x in w]
    kept = [x for i in range(40) if seen[i] == "written" for x in (i, i + 1000)]
    assert sorted(flat) == sorted(kept)  # each written once, and none of the failed batch
    assert seen[7] == "failed" and "early" not in seen.values()
    assert set(seen.values()) == {"written", "failed"}  # each waited for its own write
    assert group.items == 80 and group.writes == len(written) + 1  # the failed one counted
    assert group.writes < 40  # arrivals during a write shared the next


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with support.small_disk(tmp_path / "small-disk", "4m") as mount:
        yield mount


@pytest.mark.parametrize("full", ["blindmatch.sqlite", "index.sqlite"])
def test_with_a_database_out_of_disk_nothing_is_answered_or_stored_unaudited(
    small_disk: Path, tmp_path: Path, full: str
) -> None:
    """One database (the audit log's, or the standing indexes') lives on a disk that fills."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / full).symlink_to(small_disk / full)  # SQLite keeps its -wal beside the target
    server = create_server("127.0.0.1:0", data, ADMIN_TOKEN, scrub_interval=0)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("p", ["north", "west"]).tokens
        with MatcherClient(target, tokens["north"]) as north:
            north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               puts=index_puts(0, 100))  # fmt: skip
        filler = support.fill_disk(small_disk)
        with MatcherClient(target, tokens["north"], retry=NO_RETRY) as north:
            with pytest.raises(RejectedError, match="disk is full") as refused:
                north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                   puts=index_puts(100, 100), change_id="when-full")  # fmt: skip
            assert "RESOURCE_EXHAUSTED" in str(refused.value)
            assert len(north.list_index("p")) == 100  # nothing of the change was kept
        answered = set()
        with MatcherClient(target, tokens["west"], retry=NO_RETRY) as west:
            for i in range(20):
                try:
                    west.query("p", CLKS[i].tobytes(), clk_bits=CLK_BITS,
                               fingerprint=FINGERPRINT, purpose=f"full-{i}")  # fmt: skip
                    answered.add(f"full-{i}")
                except RejectedError as exc:  # the audit log's disk is the full one
                    assert full == "blindmatch.sqlite"
                    assert "cannot record this request in its audit log" in str(exc)
        everything = {f"full-{i}" for i in range(20)}
        assert answered == (set() if full == "blindmatch.sqlite" else everything)
        assert unaudited(data, answered, set()) == []

        filler.unlink()  # space again: the same change goes through
        with MatcherClient(target, tokens["north"]) as north:
            retried = north.change_index(
                "p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=index_puts(100, 100),
                change_id="when-full",
            )  # fmt: skip
            assert retried.record_count == 200 and not retried.replayed
        assert unaudited(data, answered, {"when-full"}) == []
    finally:
        server.stop(grace=None)
