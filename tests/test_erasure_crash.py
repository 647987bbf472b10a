"""An erasure never leaves a member's data behind, even when the matcher dies part-way.

The matcher is a process of its own, SIGKILLed at the erasure's worst moment: right after
its transaction committed (rows deleted, `erase` logged), before its upload file is unlinked,
its standing index deleted or either database checkpointed (`BLINDMATCH_CRASH_AT=erase.logged`,
storage/crashpoint.py). `admin check` then names the member's data left and how to fix it; a
restart completes the erasure before it serves anything, logs `erase.complete` with what was
left, and leaves no byte of the erased CLKs in any file.
"""

from __future__ import annotations

import contextlib
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
from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population, write
from blindmatch.client import MatcherClient
from blindmatch.client.errors import BlindmatchError
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.matcher.storage import erasure_check
from blindmatch.matcher.storage.backup import backup_data_dir
from blindmatch.matcher.storage.crashpoint import ENV
from blindmatch.matcher.storage.integrity import check_data_dir
from tests.support import short_check_grace
from tests.test_hardening import found_in_data_dir

pytestmark = pytest.mark.on_disk  # kills or races: tmp_path on the disk (tests/conftest.py)


class _NoSleep:
    """`time` for a check that must not wait: its clock, and a sleep that fails the test."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def sleep(seconds: float) -> None:
        raise AssertionError(f"the check waited {seconds} s for an erasure to finish")


CLKS = population(1, 60, 0.0, seed=17)[0].clks
PUTS = [(f"r{i}", CLKS[i].tobytes()) for i in range(40)]


def admin_check(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BLINDMATCH, "admin", "check", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def audit_actions(data_dir: Path) -> list[tuple[str, str, str, dict]]:
    """(action, project, member, detail) of every audit entry, read as an outsider would."""
    with closing(sqlite3.connect(f"file:{data_dir / 'blindmatch.sqlite'}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT action, project, member, detail FROM audit ORDER BY seq")
        return [(a, p, m, json.loads(d)) for a, p, m, d in rows.fetchall()]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", 0, "bm_admin_" + secrets.token_hex(8))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_an_erasure_cut_short_by_a_kill_is_flagged_then_completed_at_the_next_start(
    served: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MatcherClient(served.target, served.admin_token) as op:
        tokens = op.create_project("p", ["north", "south"]).tokens
    uploaded = population(1, 20, 0.0, seed=62)[0]
    with MatcherClient(served.target, tokens["north"]) as north:
        north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=PUTS)
        north.upload("p", write(uploaded, tmp_path / "north.encoded"))

    def south_finds() -> list[str]:
        with MatcherClient(served.target, tokens["south"]) as south:
            answer = south.query("p", [clk for _, clk in PUTS[:5]], clk_bits=CLK_BITS,
                                 fingerprint=FINGERPRINT, purpose="case-1")  # fmt: skip
        return sorted({m.partner for hits in answer.results for m in hits})

    assert south_finds() == ["north"]
    erased = [clk for _, clk in PUTS] + [row.tobytes() for row in uploaded.clks]

    # The matcher, restarted to die right after the erasure's transaction commits.
    served.stop()
    monkeypatch.setenv(ENV, "erase.logged")
    served.start()
    with (
        MatcherClient(served.target, tokens["north"], retry=NO_RETRY) as north,
        pytest.raises(BlindmatchError),
    ):
        north.erase("p")
    assert served.process is not None
    assert served.process.wait(timeout=60) == -9  # SIGKILLed at the crash point
    served.kill()
    monkeypatch.delenv(ENV)
    assert [a for a, *_ in audit_actions(served.data_dir)][-1] == "erase"  # logged, committed
    left = found_in_data_dir(served.data_dir, erased)
    assert any(f.startswith("index.sqlite") for f in left)  # the crash state: index still there
    assert any(f.startswith("clks/") for f in left)  # and the upload's file

    checked = admin_check(served.data_dir)
    assert checked.returncode != 0, checked.stdout
    said = (checked.stdout + checked.stderr).splitlines()
    (finding,) = [line for line in said if "p/north erased" in line]
    assert "40 records of its standing index" in finding
    assert "1 of its upload files" in finding
    assert "start the matcher to complete the erasure" in finding

    # A backup of it is made (the restored matcher completes the erasure at its start), and
    # `admin check` on the copy names what is left, as on the data dir.
    # The backup's check of its staging copy, which no process writes, does not wait for
    # the erasure to finish there (it never would).
    with monkeypatch.context() as patched:
        patched.setattr(erasure_check, "time", _NoSleep())
        backup_data_dir(served.data_dir, tmp_path / "backup")
    # (The matcher killed, this check waits 0.1 s of the grace, not 2 s: no erasure is in
    # progress.)
    short_check_grace(monkeypatch)
    copied = check_data_dir(tmp_path / "backup", require_key=False)
    assert [p for p in copied.problems if "p/north erased" in p and "40 records" in p]

    served.start()  # a plain restart completes it before serving
    try:
        assert found_in_data_dir(served.data_dir, erased) == []
        assert south_finds() == []
        with MatcherClient(served.target, tokens["north"]) as north:
            assert north.list_index("p") == {}
    finally:
        served.stop()
    (completed,) = [e for e in audit_actions(served.data_dir) if e[0] == "erase.complete"]
    _, project, member, detail = completed
    assert (project, member) == ("p", "north")
    assert (detail["index_records"], detail["upload_files"]) == (40, 1)
    erase_seq = next(i for i, e in enumerate(audit_actions(served.data_dir)) if e[0] == "erase")
    assert detail["erased"] == erase_seq + 1  # (seqs start at 1)
    checked = admin_check(served.data_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_kills_at_random_moments_of_erasures_leave_all_or_nothing_after_a_restart(
    served: Server, tmp_path: Path
) -> None:
    """No fault-injection point: SIGKILL after a random delay across the Erase call (as long
    as the quicker of two uninterrupted ones), eight times. After each restart the erasure
    is whole (no erased CLK in any file, no index, the check passes) if its `erase` entry
    was committed, and nothing of it happened if not. (Kills land before the commit, after
    it with the index still there, during the index's checkpoint, and after everything.)"""
    rng = random.Random(5)
    with MatcherClient(served.target, served.admin_token) as op:
        tokens = op.create_project("p", ["north", "south"]).tokens
    many = population(1, 20_000, 0.0, seed=63)[0]
    puts = [(f"r{i}", many.clks[i].tobytes()) for i in range(20_000)]
    upload = population(1, 5_000, 0.0, seed=64)[0]
    uploaded = write(upload, tmp_path / "north.encoded")
    sample = [clk for _, clk in puts[::400]] + [row.tobytes() for row in upload.clks[::500]]
    took: list[float] = []
    outcomes: list[str] = []
    for trial in range(10):
        with MatcherClient(served.target, tokens["north"]) as north:
            north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
            north.upload("p", uploaded)
        erases_before = [a for a, *_ in audit_actions(served.data_dir)].count("erase")
        done: list[float] = []

        def erase(done: list[float] = done) -> None:
            t0 = time.monotonic()
            with (
                contextlib.suppress(BlindmatchError),
                MatcherClient(served.target, tokens["north"], retry=NO_RETRY) as north,
            ):
                north.erase("p")
                done.append(time.monotonic() - t0)

        thread = threading.Thread(target=erase)
        thread.start()
        if trial < 2:  # not killed: how long an erasure takes here
            thread.join(timeout=60)
            took += done
            continue
        time.sleep(rng.uniform(0, min(took)))
        served.kill()
        thread.join(timeout=60)
        erased = [a for a, *_ in audit_actions(served.data_dir)].count("erase") > erases_before
        completed = [a for a, *_ in audit_actions(served.data_dir)].count("erase.complete")
        served.start()
        now = [a for a, *_ in audit_actions(served.data_dir)].count("erase.complete")
        outcomes.append("not erased" if not erased else "completed at start" if now > completed
                        else "erased")  # fmt: skip
        left = found_in_data_dir(served.data_dir, sample)
        with MatcherClient(served.target, tokens["north"]) as north:
            listed = len(north.list_index("p"))
        checked = admin_check(served.data_dir)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        if erased:
            assert (left, listed) == ([], 0), outcomes
        else:
            assert listed == 20_000 and left, outcomes
    assert len(outcomes) == 8
    left_behind = [e[3]["index_records"] for e in audit_actions(served.data_dir)
                   if e[0] == "erase.complete"]  # fmt: skip
    print(outcomes, "index records completed at start:", left_behind)  # (not checked)
