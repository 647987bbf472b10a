"""The schema's gap rule (`blindmatch.rule`, matcher/domain.py `Rule`) as an integer test, for
the link-bit circuit (core/gmwcircuit.py `rule_circuit`; docs/privacy-design.md "The rule on
the shares").

A pair where both records have the fallback's fields is kept at cut-off t when its first CLKs
reach the candidate floor (the kernel's test at `Rule.candidate_floor`, core/kernelrule.py)
and S = D1 + g (D1 - D2) - o >= t, D1 and D2 the Dice of the first and of the fallback CLKs,
as core/fallback.py computes it in float64. With D = N / Σ (Σ = pa + pb, N = Σ - H = 2|a & b|,
H the Hamming distance), and g, t + o the rationals the float64 constants are written as
(0.25 = 1/4, 0.83 = 83/100), multiplying S >= t by L Σ1 Σ2 > 0 (L the constants' common
denominator) gives

    A N1 Σ2 - B N2 Σ1 - C Σ1 Σ2 >= 0,   A = L (1 + g), B = L g, C = L (t + o)

(125 N1 Σ2 - 25 N2 Σ1 - 83 Σ1 Σ2 >= 0 for the default at 0.8), Σ read as 1 where it is 0 (the
float's D of two empty CLKs is 0, as N = 0 gives).

How it agrees with the float64 test (`float_test`): the left side over L Σ1 Σ2 is S - t exactly
(with the constants' rationals), so where it is not 0 it is at least 1 / (L Σ1 Σ2) from 0, and
`integer_form` refuses constants whose L Σ1 Σ2 could reach 1e13 (1 / 1e13 is above twice any
float64 rounding of S, a few ulps of numbers under 2 + 2 g). The two tests therefore agree
except at exact ties (S = t as rationals), where the integer test keeps the pair and the float
one keeps it or not by its rounding: tests/test_ruleform.py checks this with hypothesis over
(pa1, pb1, H1, pa2, pb2, H2) and counts the ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import lcm

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.kernelrule import hamming_bounds
from blindmatch.matcher.domain import Rule

MARGIN = 10**13  # L Σ1 Σ2 must stay under this (see the module docstring)

Ints = npt.NDArray[np.int64]


def _exact(x: float) -> Fraction:
    """The rational a float64 constant is written as (its shortest repr: 0.03 -> 3/100)."""
    return Fraction(repr(float(x)))


@dataclass(frozen=True)
class IntegerRule:
    """S >= cutoffs[j] as A N1 Σ2 - B N2 Σ1 - C[j] Σ1 Σ2 >= 0 (`integer_form`)."""

    a: int
    b: int
    c: tuple[int, ...]
    cutoffs: tuple[float, ...]
    floor: float  # the first CLKs' candidate floor (Rule.candidate_floor at cutoffs[0])


@lru_cache(maxsize=64)
def integer_form(rule: Rule, cutoffs: tuple[float, ...], n_bits: int, n_bits2: int) -> IntegerRule:
    """The rule at each cut-off (cutoffs[0] the threshold) on `n_bits`-bit first and
    `n_bits2`-bit fallback CLKs; ValueError where the constants' common denominator is too
    large for the integer test to agree with the float64 one off exact ties."""
    if not rule.active:
        raise ValueError("the integer rule: no rule (gap and offset 0) is the kernel's test")
    if not cutoffs or not all(0 < t <= 1 for t in cutoffs):
        raise ValueError(f"the integer rule: cut-offs in (0, 1], not {cutoffs}")
    g, o = _exact(rule.gap), _exact(rule.offset)
    sums = [_exact(t) + o for t in cutoffs]
    den = lcm(g.denominator, *(s.denominator for s in sums))
    if den * (2 * n_bits) * (2 * n_bits2) >= MARGIN:
        raise ValueError(
            f"the integer rule: constants {rule.gap!r}, {rule.offset!r}, {cutoffs} need a "
            f"denominator of {den}, too fine for {n_bits} and {n_bits2}-bit CLKs"
        )
    a, b = (1 + g) * den, g * den
    c = tuple(int(s * den) for s in sums)
    return IntegerRule(int(a), int(b), c, tuple(float(t) for t in cutoffs),
                       rule.candidate_floor(float(cutoffs[0])))  # fmt: skip


# --- the test in the clear (the references tests/test_ruleform.py compares) -------------------


def _ints(*xs: npt.ArrayLike) -> list[Ints]:
    return [np.asarray(x, dtype=np.int64) for x in xs]


def float_test(
    rule: Rule,
    threshold: float,
    pa1: npt.ArrayLike,
    pb1: npt.ArrayLike,
    h1: npt.ArrayLike,
    pa2: npt.ArrayLike,
    pb2: npt.ArrayLike,
    h2: npt.ArrayLike,
) -> npt.NDArray[np.bool_]:
    """[S >= threshold] as a clk-mode run computes it (core/solve.py `dice`, `Rule.score`)."""
    p = _ints(pa1, pb1, h1, pa2, pb2, h2)
    d = []
    for pa, pb, h in (p[:3], p[3:]):
        total = pa + pb
        out = np.zeros(total.shape, dtype=np.float64)
        np.divide((total - h).astype(np.float64), total, out=out, where=total > 0)
        d.append(out)
    passed: npt.NDArray[np.bool_] = rule.score(d[0], d[1]) >= threshold
    return passed


def integer_margin(
    form: IntegerRule,
    j: int,
    pa1: npt.ArrayLike,
    pb1: npt.ArrayLike,
    h1: npt.ArrayLike,
    pa2: npt.ArrayLike,
    pb2: npt.ArrayLike,
    h2: npt.ArrayLike,
) -> Ints:
    """A N1 Σ2 - B N2 Σ1 - C[j] Σ1 Σ2 (Σ read as 1 where 0): the pair passes cut-off j iff
    it is >= 0; 0 at an exact tie."""
    pa1_, pb1_, h1_, pa2_, pb2_, h2_ = _ints(pa1, pb1, h1, pa2, pb2, h2)
    s1, s2 = pa1_ + pb1_, pa2_ + pb2_
    n1, n2 = s1 - h1_, s2 - h2_
    s1, s2 = np.maximum(s1, 1), np.maximum(s2, 1)
    out: Ints = form.a * n1 * s2 - form.b * n2 * s1 - form.c[j] * s1 * s2
    return out


def integer_test(form: IntegerRule, j: int, *popcounts: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """[S >= cutoffs[j]] by the integer form (`integer_margin` >= 0)."""
    passed: npt.NDArray[np.bool_] = integer_margin(form, j, *popcounts) >= 0
    return passed


def rule_bounds(
    form: IntegerRule, n_bits: int, *popcounts: Sequence[int] | npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    """(cut-offs, pairs): what the rule circuit outputs, in the clear: the first CLKs' kernel
    test at the candidate floor (pa1 > 0, the pre-filter, D1 >= floor) and the integer test
    at each cut-off. `popcounts`: pa1, pb1, h1, pa2, pb2, h2."""
    pa1, pb1, h1 = _ints(*popcounts[:3])
    floor_ok = h1 < hamming_bounds(pa1, pb1, (form.floor,), n_bits)[0]
    return np.stack([floor_ok & integer_test(form, j, *popcounts) for j in range(len(form.c))])


__all__ = ["IntegerRule", "float_test", "integer_form", "integer_margin", "integer_test",
           "rule_bounds"]  # fmt: skip
