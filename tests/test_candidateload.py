"""A threshold under what unrelated records score by chance (matcher/core/candidateload.py,
febrl06): CLKs with most of their bits set, as Febrl4's schema makes, give almost every pair a
Dice of 0.6 or more, so a run at 0.6 (a scores project's floor) has millions of candidates.
The run says so at its start, with the pairs expected; a threshold above the chance level says
nothing."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.matcher.core import candidateload
from blindmatch.matcher.usecases.runs import match


def _dense(rows: int, share: float, seed: int) -> npt.NDArray[np.uint8]:
    """Unrelated CLKs of 1,024 bits, each bit set with probability `share`."""
    rng = np.random.default_rng(seed)
    return np.packbits(rng.random((rows, 1024)) < share, axis=1)


def test_a_threshold_under_the_chance_dice_expects_nearly_every_pair() -> None:
    a, b = _dense(1200, 0.69, 1), _dense(1000, 0.69, 2)
    load = candidateload.estimate([a, b], 0.6)
    assert load.pairs == 1_200_000
    assert load.expected > 0.99 * load.pairs  # every sampled pair scored about 0.69
    assert 0.67 < load.density < 0.71
    note = candidateload.warning(load, 0.6)
    assert note is not None
    assert f"threshold 0.6 lets through about {load.expected:,} candidate pairs" in note
    assert "of 1,200,000 (100%" in note and "raise --threshold" in note


def test_a_threshold_above_the_chance_dice_says_nothing() -> None:
    a, b = _dense(1200, 0.69, 1), _dense(1000, 0.69, 2)
    load = candidateload.estimate([a, b], 0.8)
    assert load.expected == 0
    assert candidateload.warning(load, 0.8) is None


def test_a_run_under_the_chance_dice_warns_at_its_start(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small enough to run in a test: the warning's count lowered from a million to 10,000.
    monkeypatch.setattr(candidateload, "WARN_PAIRS", 10_000)
    a, b = _dense(150, 0.69, 3), _dense(120, 0.69, 4)
    with caplog.at_level(logging.WARNING, logger="blindmatch.matcher"):
        match([a, b], 0.6, workers=1)
    assert "threshold 0.6 lets through about 18,000 candidate pairs of 18,000" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="blindmatch.matcher"):
        match([a, b], 0.8, workers=1)
    assert "lets through" not in caplog.text
