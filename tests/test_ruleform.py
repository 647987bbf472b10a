"""The gap rule as an integer test (core/ruleform.py): it is the clk-mode float64 test
(`Rule.score` >= t, core/fallback.py) on every pair of popcounts except exact ties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.matcher.core import ruleform
from blindmatch.matcher.domain import Rule

DEFAULT = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
CUTOFFS = (0.8, 0.85, 0.9, 0.95)  # the threshold and the default buckets
N = 1024


@st.composite
def clk_pair(draw: st.DrawFn, n: int = N) -> tuple[int, int, int]:
    """(pa, pb, H) of two n-bit CLKs: H = pa + pb - 2 |a & b|."""
    pa = draw(st.integers(0, n))
    pb = draw(st.integers(0, n))
    both = draw(st.integers(max(0, pa + pb - n), min(pa, pb)))
    return pa, pb, pa + pb - 2 * both


def _decimal(lo: int, hi: int, scale: int = 100) -> st.SearchStrategy[float]:
    return st.integers(lo, hi).map(lambda k: k / scale)


def test_the_defaults_integer_form_is_125_n1_s2_minus_25_n2_s1_minus_83_s1_s2() -> None:
    form = ruleform.integer_form(DEFAULT, CUTOFFS, N, N)
    assert (form.a, form.b, form.c) == (125, 25, (83, 88, 93, 98))
    assert form.floor == DEFAULT.candidate_floor(0.8)


def test_no_rule_and_too_fine_constants_are_refused() -> None:
    with pytest.raises(ValueError, match="no rule"):
        ruleform.integer_form(Rule(), CUTOFFS, N, N)
    with pytest.raises(ValueError, match="too fine"):
        ruleform.integer_form(Rule(0.123456789, 0.03, 0.01), CUTOFFS, N, N)


@settings(max_examples=3000, deadline=None)
@given(first=clk_pair(), second=clk_pair(), j=st.integers(0, len(CUTOFFS) - 1))
def test_the_integer_test_is_the_float_rule_off_exact_ties(
    first: tuple[int, int, int], second: tuple[int, int, int], j: int
) -> None:
    form = ruleform.integer_form(DEFAULT, CUTOFFS, N, N)
    margin = int(ruleform.integer_margin(form, j, *first, *second))
    got = bool(ruleform.integer_test(form, j, *first, *second))
    want = bool(ruleform.float_test(DEFAULT, CUTOFFS[j], *first, *second))
    assert got == want or margin == 0


@settings(max_examples=1500, deadline=None)
@given(
    second=clk_pair(),
    s1=st.integers(1, 2 * N),
    gap=_decimal(0, 400),
    offset=_decimal(-50, 50),
    threshold=_decimal(50, 100),
)
def test_next_to_the_boundary_the_integer_test_is_the_float_rule_off_exact_ties(
    second: tuple[int, int, int], s1: int, gap: float, offset: float, threshold: float
) -> None:
    """Every N1 = Σ1 - H1 of one Σ1 within a few steps of where S crosses the threshold, for
    any rule of two-decimal constants: where the float64 rounding would decide if anything
    did."""
    rule = Rule(gap, offset, 0.01)
    if not rule.active:
        return
    form = ruleform.integer_form(rule, (threshold,), N, N)
    pa2, pb2, h2 = second
    s2, n2 = max(pa2 + pb2, 1), pa2 + pb2 - h2
    # A N1 s2 = B n2 s1 + C s1 s2 at the boundary.
    n1_star = (form.b * n2 * s1 + form.c[0] * s1 * s2) / (form.a * s2)
    n1 = np.arange(int(n1_star) - 4, int(n1_star) + 5)
    n1 = n1[(n1 >= 0) & (n1 <= s1)]
    pa1 = np.full(len(n1), s1 // 2)
    pb1 = s1 - pa1
    h1 = s1 - n1
    args = (pa1, pb1, h1, np.full(len(n1), pa2), np.full(len(n1), pb2), np.full(len(n1), h2))
    got = ruleform.integer_test(form, 0, *args)
    want = ruleform.float_test(rule, threshold, *args)
    ties = ruleform.integer_margin(form, 0, *args) == 0
    assert ((got == want) | ties).all()


def test_at_exact_ties_the_integer_test_keeps_the_pair_and_the_float_one_mostly_does() -> None:
    """Every exact tie of the default rule at 0.8 with Σ1, Σ2 in 600..700 (CLK popcounts of
    the default schema are about 300-450 a record): the integer test keeps each, float64
    rounding drops some. Ties need 25 Σ1 | Σ2 (125 N1 - 83 Σ1) and N even."""
    form = ruleform.integer_form(DEFAULT, CUTOFFS, N, N)
    grid = np.meshgrid(np.arange(600, 701), np.arange(600, 701), indexing="ij")
    s1, s2 = grid[0].ravel(), grid[1].ravel()
    ties = kept = 0
    for n1 in range(0, 701, 2):
        num = 125 * n1 * s2 - 83 * s1 * s2
        ok = (n1 <= s1) & (num >= 0) & (num % (25 * s1) == 0)
        n2 = np.where(ok, num // (25 * np.maximum(s1, 1)), -1)
        ok &= (n2 % 2 == 0) & (n2 <= s2)
        if not ok.any():
            continue
        a, b = s1[ok], s2[ok]
        args = (a // 2, a - a // 2, a - n1, b // 2, b - b // 2, b - n2[ok])
        assert (ruleform.integer_margin(form, 0, *args) == 0).all()
        assert ruleform.integer_test(form, 0, *args).all()
        ties += int(ok.sum())
        kept += int(ruleform.float_test(DEFAULT, 0.8, *args).sum())
    assert ties > 0
    assert kept <= ties
    print(f"exact ties: {ties}, kept by float64: {kept}")
