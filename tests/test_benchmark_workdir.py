"""A benchmark's temporary work dir goes when the benchmark ends (benchmarks/workdir.py):
on exit, on failure, on Ctrl-C (a real SIGINT to a real benchmark process), unless `--keep`.
The two-server benchmarks that once left theirs in /tmp (up to 4.4 GB each) use it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.workdir import work_dir
from tests.support import ROOT

# The benchmarks whose work dirs filled the disk, and the others that made one of their own.
USERS = ("twoserver_project", "twoserver_rerun", "twoserver_rerun_project", "twoserver_watch",
         "twoserver_query", "load", "faults", "check_index_audit", "role_backup_churn")  # fmt: skip


def test_the_work_dir_goes_on_exit_failure_and_ctrl_c_unless_kept(tmp_path: Path) -> None:
    with work_dir("bm-", parent=tmp_path) as done:
        (done / "data").write_bytes(b"x" * 1000)
    for ending in (RuntimeError("a failure"), KeyboardInterrupt()):
        with pytest.raises(type(ending)), work_dir("bm-", parent=tmp_path) as failed:
            (failed / "data").write_bytes(b"x")
            raise ending
    assert list(tmp_path.iterdir()) == []
    with work_dir("bm-", keep=True, parent=tmp_path) as kept:
        (kept / "data").write_bytes(b"x")
    assert (kept / "data").exists()


def test_the_benchmarks_that_make_a_work_dir_delete_it() -> None:
    for name in USERS:
        text = (ROOT / "benchmarks" / f"{name}.py").read_text()
        assert "tempfile.mkdtemp" not in text and "work_dir(" in text, name
        assert "add_keep(" in text, name


def test_a_benchmark_interrupted_by_ctrl_c_leaves_no_work_dir(tmp_path: Path) -> None:
    # benchmarks/twoserver_project.py at a small size, under its own TMPDIR, interrupted
    # once its work dir holds something (the exports written, members encoding).
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "twoserver_project.py"), "--size", "3000"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(p.name == "exports" for d in tmp_path.glob("bm-tsproject-*")
                      for p in d.iterdir()):  # fmt: skip
            assert bench.poll() is None and time.monotonic() < deadline, "no work dir made"
            time.sleep(0.1)
        bench.send_signal(signal.SIGINT)
        assert bench.wait(120) != 0
    finally:
        if bench.poll() is None:
            bench.kill()
    assert [p for p in tmp_path.iterdir() if re.match(r"bm-", p.name)] == []
