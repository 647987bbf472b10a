"""The benchmark scripts still run (at a toy size: their figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


ROOT = Path(__file__).resolve().parent.parent


def test_the_realtime_benchmark_runs_and_finds_every_planted_hit() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/realtime.py", "--records", "2000", "--queriers", "2",
         "--queries", "3", "--change", "300", "--change-queries", "5", "--warm-up", "40",
         "--clients", "async,session,calls"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr  # a missed hit exits 1
    for client in ("async", "session", "calls"):  # each way of asking, each run
        assert f"closed loop, {client}: 6 queries" in done.stdout
    assert "planted hits missed 0 of 3" in done.stdout
    assert "2 queriers, closed loop, p50 ms by client: async" in done.stdout
    assert "warm-up (not counted), async: 40 queries" in done.stdout
    assert "300 records changed meanwhile" in done.stdout
    assert "index change (300 puts" in done.stdout
    assert "visible to the next query: True" in done.stdout


def test_the_startup_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/startup.py", "--runs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "blindmatch --help" in done.stdout and "x python" in done.stdout
