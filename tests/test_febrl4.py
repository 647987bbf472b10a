"""Febrl4 through the documented CLI flow, with `blindmatch serve` as a real process."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.febrl4 import blindmatch_flow

pytestmark = pytest.mark.slow


def test_febrl4_cli_flow_reaches_f1_099_at_the_default_threshold(tmp_path: Path) -> None:
    quality = blindmatch_flow(None, tmp_path)
    precision, _recall, f1 = quality.hits
    assert f1 >= 0.99, quality
    assert precision >= 0.99, quality
    pair_precision, _recall, pair_f1 = quality.pairs
    assert pair_f1 >= 0.99 and pair_precision >= 0.99, quality
