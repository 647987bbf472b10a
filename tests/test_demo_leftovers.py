"""`blindmatch demo` leaves nothing in the temp dir: not at its end, and not when a SIGTERM
(`kill`, `timeout`) ends it part-way, which left its folder (the exports, the ENCODED
folders, the matchers' data dirs) behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow  # `blindmatch demo` in a process of its own


@pytest.mark.parametrize("mode", [[], ["--two-server"]], ids=["clk", "two-server"])
def test_a_demo_ended_by_sigterm_leaves_no_folder_in_the_temp_dir(
    tmp_path: Path, mode: list[str]
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = subprocess.Popen(
        [sys.executable, "-m", "blindmatch", "demo", "--records", "300", *mode], cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # the matcher's up, its data dir in the demo's folder
            if "listening on" in line:
                break
        assert any(tmp.iterdir())
        demo.send_signal(signal.SIGTERM)
        _, err = demo.communicate(timeout=120)
    finally:
        demo.kill()
        demo.wait()
    assert demo.returncode == 128 + signal.SIGTERM, err
    assert "Terminated." in err and "Traceback" not in err
    assert list(tmp.iterdir()) == []
