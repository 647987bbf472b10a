"""The kernel's test as integer inequalities (core/linkbit.py's circuit evaluates them on
shares; docs/privacy-design.md "The combiner without the candidates").

The kernel (anonlink's rule, core/kernel.py) keeps a pair (a, b) when pa = |a| > 0, |pa - pb|
<= int(min(2 pa (1/t - 1), n_bits)) (the popcount pre-filter) and float64 (S - H) / S >= t,
S = pa + pb, H the Hamming distance. Over integers these are |pa - pb| <= pre(pa) and H <=
dice(S) for tables pre and dice of the threshold; `rule` fits each as a line floor((a x + c)
/ b), plus one at the few points where float64 rounding leaves every line (`Line.extra`), so
the circuit tests them with public constants. `prefilter` and `hamming_bounds` are the same
test in the clear, what the tests check the circuit against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

# --- the kernel's rule as integer inequalities --------------------------------------------------


@dataclass(frozen=True)
class Line:
    """f(x) = floor((a x + c) / b) + [x in extra] over the table's domain: the integer form
    of one of the kernel's float64 tests (`rule`)."""

    a: int
    b: int
    c: int
    extra: tuple[int, ...] = ()


def fit_line(table: npt.NDArray[np.int64], xs: npt.NDArray[np.int64], slope: float) -> Line:
    """The line (smallest b, then fewest extra points) whose floor is `table` at each of `xs`,
    or falls one short of it at the extra points. The smallest b with no extra point is at most
    len(xs) + 1 where the table is the floor of a line (a Farey neighbour of the slope); the
    float64 rounding of the pre-filter's product makes a few tables (thresholds near a
    fraction of small denominator, such as 0.55) one higher at some points than any line."""
    f = np.asarray(table, dtype=np.int64)
    x = np.asarray(xs, dtype=np.int64)
    exact = _first_exact(f, x, slope)
    if exact is not None:
        return exact
    best: Line | None = None  # (no line: the search again, for the fewest extra points)
    for b in range(1, len(x) + 2):
        base = int(np.floor(slope * b))
        for a in range(base - 2, base + 3):
            lo = int((b * f - a * x).max())
            hi = int((b * f + b - 1 - a * x).min())
            if lo <= hi:
                return Line(a, b, hi)
            # One short allowed: b (f - 1) <= a x + c < b (f + 1), c as high as it goes.
            lo1, hi1 = int((b * (f - 1) - a * x).max()), int((b * (f + 1) - 1 - a * x).min())
            if lo1 <= hi1:
                short = x[(a * x + hi1) // b < f]
                if best is None or len(short) < len(best.extra):
                    best = Line(a, b, hi1, tuple(int(v) for v in short))
    if best is None:
        raise ValueError("link bits: no integer form of the kernel's test")
    return best


def _first_exact(f: npt.NDArray[np.int64], x: npt.NDArray[np.int64], slope: float) -> Line | None:
    """`fit_line`'s first line with no extra point, in its order (b up, then a up), or None:
    each block of b's and their five a's tested at once (a random threshold's smallest b
    runs to hundreds, and one (b, a) at a time was ~50 ms a table)."""
    steps = np.arange(-2, 3, dtype=np.int64)
    start, size = 1, 4
    while start < len(x) + 2:
        b = np.arange(start, min(start + size, len(x) + 2), dtype=np.int64)
        a = np.floor(slope * b).astype(np.int64)[:, None] + steps  # (b's, 5)
        g = (b[:, None] * f)[:, None, :] - a[:, :, None] * x  # (b's, 5, points): b f - a x
        lo = g.max(axis=2)
        hi = g.min(axis=2) + (b - 1)[:, None]  # min(b f + b - 1 - a x)
        found = np.flatnonzero(lo <= hi)
        if len(found):
            i, j = divmod(int(found[0]), len(steps))
            return Line(int(a[i, j]), int(b[i]), int(hi[i, j]))
        start, size = start + len(b), min(2 * size, 128)
    return None


@dataclass(frozen=True)
class Rule:
    """The kernel's test at one cut-off as integer inequalities (exact for every pair of
    popcounts): the pre-filter |pa - pb| <= int(min(2 pa (1/t - 1), n)) is |pa - pb| <=
    pre(pa) for pa > 0, and Dice >= t, the float64 (S - H) / S >= t with S = pa + pb, is
    H <= dice(S)."""

    pre: Line
    dice: Line


@lru_cache(maxsize=64)
def rule(threshold: float, n_bits: int) -> Rule:
    """The kernel's test at `threshold` on `n_bits`-bit CLKs as `Rule`; tests/test_linkbit.py
    checks it on every (pa, pb) against the kernel's own arithmetic."""
    if not 0 < threshold <= 1:
        raise ValueError(f"link bits: a threshold in (0, 1], not {threshold}")
    pa = np.arange(1, n_bits + 1, dtype=np.int64)
    # int(min(x, n)) = int(x) as a bound on |pa - pb| <= n: the cap never decides.
    pre = ((2 * pa).astype(np.float64) * (1.0 / threshold - 1.0)).astype(np.int64)
    total = np.arange(1, 2 * n_bits + 1, dtype=np.int64)
    largest = _largest_distance(threshold, n_bits, uncapped=True)[1:]
    return Rule(
        pre=fit_line(pre, pa, 2 * (1.0 / threshold - 1.0)),
        dice=fit_line(largest, total, 1.0 - threshold),
    )


# --- the kernel's rule in the clear (the tests' reference) --------------------------------------


@lru_cache(maxsize=64)
def _largest_distance(
    threshold: float, n_bits: int, uncapped: bool = False
) -> npt.NDArray[np.int64]:
    """[S] -> the largest H <= min(S, n_bits) with float64 (S - H) / S >= threshold, for S in
    0..2 n_bits (the kernel's score, compared as the kernel compares it); -1 for S = 0.
    `uncapped`: H up to S (the same test wherever H <= n_bits)."""
    near = _largest_near(threshold, n_bits, (2 if uncapped else 1) * n_bits)
    if near is not None:
        return near
    total = np.arange(2 * n_bits + 1, dtype=np.int64)[:, None]
    dist = np.arange((2 if uncapped else 1) * n_bits + 1, dtype=np.int64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (dist <= total) & ((total - dist).astype(np.float64) / total >= threshold)
    ok[0] = False
    out: npt.NDArray[np.int64] = ok.sum(axis=1).astype(np.int64) - 1  # monotone in H
    return out


def _largest_near(threshold: float, n_bits: int, cap: int) -> npt.NDArray[np.int64] | None:
    """`_largest_distance` from the test at eight H around min(S (1 - t), S, cap) per S, not
    at every H:
    the test is monotone in H (a larger numerator, the same S: a float64 quotient no
    smaller), so where it holds at the lowest of the eight (or that is below 0) and fails
    at the highest (or that is past min(S, cap)), the largest H that passes is among them.
    None where that is not so for some S (the whole table then decides, as before)."""
    total = np.arange(1, 2 * n_bits + 1, dtype=np.int64)
    most = np.minimum(total, cap)
    guess = np.minimum(np.floor(total * (1.0 - threshold)).astype(np.int64), most)
    h = guess[:, None] + np.arange(-3, 5)
    inside = (h >= 0) & (h <= most[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        passes = inside & ((total[:, None] - h).astype(np.float64) / total[:, None] >= threshold)
    if not ((~inside[:, 0] | passes[:, 0]) & (~inside[:, -1] | ~passes[:, -1])).all():
        return None
    if not passes.any(axis=1).all():
        return None
    out = np.empty(2 * n_bits + 1, dtype=np.int64)
    out[0] = -1
    out[1:] = np.where(passes, h, -1).max(axis=1)
    return out


def prefilter(
    pa: npt.NDArray[np.int64], pb: npt.NDArray[np.int64], threshold: float, n_bits: int
) -> npt.NDArray[np.bool_]:
    """The kernel's popcount pre-filter (anonlink's): |pa - pb| <= int(min(2 pa (1/t - 1),
    n_bits)), and pa > 0 (core/twoserver.py `Combiner.decide`, the same expression)."""
    delta = np.minimum((2 * pa).astype(np.float64) * (1.0 / threshold - 1.0), n_bits)
    keep: npt.NDArray[np.bool_] = (np.abs(pa - pb) <= delta.astype(np.int64)) & (pa > 0)
    return keep


def hamming_bounds(
    pa: npt.NDArray[np.int64],
    pb: npt.NDArray[np.int64],
    cutoffs: Sequence[float],
    n_bits: int,
) -> npt.NDArray[np.int64]:
    """(len(cutoffs), pairs): B such that a pair with Hamming distance H has Dice >= cutoff
    (and passes the pre-filter at cutoffs[0], the run's threshold) iff H < B; 0 where the
    pre-filter fails. The kernel's rule in the clear, what the circuit's output is checked
    against (tests/test_linkbit.py); no party computes it in a run."""
    pa = np.asarray(pa, dtype=np.int64)
    pb = np.asarray(pb, dtype=np.int64)
    total = pa + pb
    if len(total) and (int(total.min()) < 0 or int(total.max()) > 2 * n_bits):
        raise ValueError(f"link bits: popcounts outside 0..{n_bits}")
    keep = prefilter(pa, pb, cutoffs[0], n_bits)
    out = np.zeros((len(cutoffs), len(pa)), dtype=np.int64)
    for j, t in enumerate(cutoffs):
        out[j] = np.where(keep, _largest_distance(float(t), n_bits)[total] + 1, 0)
    return out


__all__ = ["Line", "Rule", "fit_line", "hamming_bounds", "prefilter", "rule"]
