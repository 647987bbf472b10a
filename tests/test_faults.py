"""A small run of the fault-injection script: SIGKILL `blindmatch serve`, restart, lose nothing.

The full run is `python benchmarks/faults.py --trials 200` (see docs/operations.md); the mixed
kind (everything at once, queries included) alone is `--kinds mixed`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults import run_trials

pytestmark = [pytest.mark.slow, pytest.mark.on_disk]  # (tests/conftest.py `tmp_path`)


def test_sigkill_at_random_moments_loses_corrupts_and_leaves_unaudited_nothing(
    tmp_path: Path,
) -> None:
    summary = run_trials(10, tmp_path, members=3, records=2000, seed=20240611)
    print(summary.render())
    assert summary.trials == 10
    assert summary.acknowledged_uploads >= 3  # the first upload of each member, at least
    assert summary.lost == []
    assert summary.corruptions == []
    assert summary.unaudited == []


def test_sigkill_during_everything_at_once_leaves_no_disclosure_unaudited(tmp_path: Path) -> None:
    summary = run_trials(4, tmp_path, members=3, records=2000, seed=17, kinds=("mixed",))
    print(summary.render())
    assert summary.kills == {"mixed": 4}
    assert summary.answered_queries > 0  # queries were answered around the kills
    assert summary.lost == [] and summary.corruptions == []
    assert summary.unaudited == []
