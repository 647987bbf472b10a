"""`blindmatch demo`: the main job on the embedded default, as `make demo` runs it."""

from __future__ import annotations

import pytest

from blindmatch.cli import main

# The demo starts its own matcher in this process.
pytestmark = pytest.mark.server


def test_demo_runs_the_whole_flow_and_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Run demo-run-1: done" in out
    for org in ("north-police", "south-police", "retail-bcrp"):
        assert f"{org}" in out
    assert "also held by: retail-bcrp" in out
    assert "A few hits from north-police's point of view" in out
    f1 = float(out.split("F1 ")[1].split()[0])
    assert f1 >= 0.9
