"""How many candidate pairs a run's threshold lets through, estimated before it compares.

A threshold under the Dice two unrelated records reach by chance makes nearly every pair a
candidate: Febrl4 (5,000 x 5,000, tests/data/febrl4's schema, CLKs with about 69% of their
bits set) at 0.6 has 99.96% of its 25,000,000 pairs at or above it, and the run then compares,
merges, solves and holds all of them (febrl06: over 10 minutes on two cores). The estimate
compares an even sample of each pair of datasets' rows with the run's own kernel, so the
matcher can say so at the run's start instead of leaving the run silent for minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.domain import counted

SAMPLE_ROWS = 300  # of each dataset: 90,000 comparisons a pair of datasets, milliseconds
WARN_PAIRS = 1_000_000  # expected candidate pairs from which a run warns ...
WARN_SHARE = 0.01  # ... when also at least this share of all pairs is expected through


@dataclass(frozen=True)
class Load:
    expected: int  # candidate pairs expected at or above the threshold, all pairs of datasets
    pairs: int  # all pairs of rows the run could compare
    density: float  # the mean share of bits set in the CLKs (what unrelated pairs score near)

    @property
    def share(self) -> float:
        return self.expected / self.pairs if self.pairs else 0.0


def _sample(clks: npt.NDArray[np.uint8], rows: int) -> npt.NDArray[np.uint8]:
    if len(clks) <= rows:
        return clks
    return clks[np.linspace(0, len(clks) - 1, rows).astype(np.int64)]


def estimate(
    datasets: Sequence[npt.NDArray[np.uint8]], threshold: float, rows: int = SAMPLE_ROWS
) -> Load:
    """The candidate pairs expected at `threshold`, from an even sample of each dataset."""
    expected = pairs = 0
    for i, a in enumerate(datasets):
        for b in datasets[i + 1 :]:
            sa, sb = _sample(a, rows), _sample(b, rows)
            if not len(sa) or not len(sb):
                continue
            found = len(dice_candidates(np.ascontiguousarray(sa), np.ascontiguousarray(sb),
                                        threshold)[0])  # fmt: skip
            expected += round(found / (len(sa) * len(sb)) * len(a) * len(b))
            pairs += len(a) * len(b)
    bits = [np.unpackbits(_sample(d, rows), axis=1).mean() for d in datasets if d.size]
    return Load(expected, pairs, float(np.mean(bits)) if bits else 0.0)


def warning(load: Load, threshold: float) -> str | None:
    """What a run at `threshold` should say up front, or None when its candidates are few."""
    if load.expected < WARN_PAIRS or load.share < WARN_SHARE:
        return None
    return (
        f"threshold {threshold:g} lets through about {counted(load.expected, 'candidate pair')} "
        f"of {load.pairs:,} ({load.share:.0%}, estimated from a sample): the run holds and "
        f"sorts them all and solves those it keeps, which can take many minutes and "
        f"gigabytes. Unrelated "
        f"records score near these CLKs' share of bits set ({load.density:.2f}); a threshold "
        f"(or a scores project's floor) should sit above it: raise --threshold "
        f"(docs/evaluation.md, 'One project sweeps every threshold')"
    )
