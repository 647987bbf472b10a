"""benchmarks/walkinprocess.py on the work dir a real `cliwalk.py --keep` leaves, for both
of its `--project` choices. `--project walk` could not work before: the walk's truth was
deleted with its exports (`data/`), and the `--big-population` project replaced two of the
walk's members' ENCODED folders with its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


def bench(script: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="cliwalk needs GNU time")
def test_walkinprocess_reads_both_projects_of_a_kept_walk(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    bench("cliwalk.py", "--population", "1000", "--big-population", "1000", "--keep", env=env)
    [work] = tmp_path.glob("bm-cliwalk-*")
    for project in ("walk", "big"):
        said = bench("walkinprocess.py", str(work), "--project", project, env=env)
        # "A and B: match in process (...) N hits, the CLI's N, N in both"
        first = said.splitlines()[0]
        mine, cli, both = (int(w) for w in first.replace(",", "").split() if w.isdigit())
        assert mine == cli == both > 0, said
