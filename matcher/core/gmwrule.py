"""The link-bit circuit of the schema's gap rule (docs/privacy-design.md "The rule on the
shares"): for a pair where both records have the fallback's fields, S1 and S2 evaluate on
their shares of both CLKs' a ^ b and of the four popcounts the test a clk-mode run applies
(core/fallback.py `rescored`): the first CLKs' kernel test at the rule's candidate floor, and
S >= t at each cut-off in its integer form A N1 Σ2 - B N2 Σ1 - C Σ1 Σ2 >= 0 (core/ruleform.py,
public constants).

The circuit (core/gmwcircuit.py's builder; core/linkbit.py evaluates it as any other):

- both popcounts H1, H2 by carry-save reduction, and the kernel's test on the first CLKs at
  the floor (the same gates as the kernel circuit's);
- Σ = pa + pb, N = Σ - H (constant-weight sums), Σ read as 1 where it is 0 (one AND tree);
- the products N1 Σ2, N2 Σ1, Σ1 Σ2 of secret 12-bit numbers (at 1,024 bits): each partial
  product one AND, reduced column by column;
- X = A N1 Σ2 - B N2 Σ1 once, then at each cut-off the sign of X - C Σ1 Σ2; public constants
  enter in non-adjacent form (125 = 128 - 4 + 1: three rows of bits, not six).

tests/test_gmwrule.py checks it against core/ruleform.py's test in the clear and measures its
AND gates and rounds beside the kernel circuit's.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from blindmatch.matcher.core.gmwcircuit import (
    Circuit,
    Index,
    Term,
    _Builder,
    _kernel_test,
    _popcount,
)
from blindmatch.matcher.core.kernelrule import rule as kernel_rule
from blindmatch.matcher.core.ruleform import integer_form
from blindmatch.matcher.domain import Rule


def naf(k: int) -> list[int]:
    """k as a sum of signed powers of two, no two adjacent (its non-adjacent form)."""
    out, shift = [], 0
    while k:
        if k & 1:
            digit = 2 - (k % 4)  # 1 or -1
            out.append(digit << shift)
            k -= digit
        k >>= 1
        shift += 1
    return out


def _scaled(bits: list[int], weight: int) -> list[Term]:
    """weight * value as terms of one signed power of two each (`naf`)."""
    return [(bits, w) for w in naf(weight)]


def _signed(bits: list[int]) -> list[Term]:
    """A two's-complement number's bits as terms: the top bit weighs -2^(width - 1)."""
    return [(bits[:-1], 1), ([bits[-1]], -(1 << (len(bits) - 1)))]


def _width(terms: list[Term], const: int = 0) -> int:
    """Bits enough for sum(weight * value) + const in two's complement."""
    hi = lo = const
    for bits, weight in terms:
        top = weight * ((1 << len(bits)) - 1)
        hi, lo = hi + max(top, 0), lo + min(top, 0)
    return max(hi.bit_length(), (-lo).bit_length() if lo < 0 else 0) + 1


def _nonzero(b: _Builder, bits: list[int]) -> list[int]:
    """The value of `bits`, read as 1 where it is 0 (bit 0 set where every bit is clear)."""
    zero = b.and_all([b.not_(w) for w in bits])
    return [b.xor(bits[0], zero), *bits[1:]]


def _product(b: _Builder, x: list[int], y: list[int]) -> list[int]:
    """The bits of x * y: a partial product an AND, reduced as a weighted sum."""
    terms: list[Term] = [
        ([b.and_(xi, yj)], 1 << (i + j)) for i, xi in enumerate(x) for j, yj in enumerate(y)
    ]
    return b.weighted_sum(terms, 0, len(x) + len(y))


@lru_cache(maxsize=16)
def rule_circuit(n_bits: int, n_bits2: int, cutoffs: tuple[float, ...], rule: Rule) -> Circuit:
    """The gap rule at each cut-off (cutoffs[0] the threshold) on a pair's first CLKs (d1 of
    `n_bits` bits) and fallback CLKs (d2 of `n_bits2`), with the four popcounts shared: output
    j is [the kernel's test on the first CLKs at the candidate floor, and S >= cutoffs[j]]."""
    if n_bits < 1 or n_bits2 < 1 or not cutoffs:
        raise ValueError(f"rule circuit: {n_bits} and {n_bits2} bits, {len(cutoffs)} cut-offs")
    cutoffs = tuple(float(t) for t in cutoffs)
    form = integer_form(rule, cutoffs, n_bits, n_bits2)
    l1, l2 = n_bits.bit_length(), n_bits2.bit_length()
    levels = max(l1, l2)
    first_pop = 2 + n_bits + n_bits2
    b = _Builder(first_pop + 4 * levels)
    pop_wires: Index = np.arange(first_pop, first_pop + 4 * levels, dtype=np.intp).reshape(
        4, levels
    )
    pa1, pb1 = [int(w) for w in pop_wires[0, :l1]], [int(w) for w in pop_wires[1, :l1]]
    pa2, pb2 = [int(w) for w in pop_wires[2, :l2]], [int(w) for w in pop_wires[3, :l2]]
    h1 = _popcount(b, list(range(2, 2 + n_bits)), l1)
    h2 = _popcount(b, list(range(2 + n_bits, first_pop)), l2)
    floor_ok = _kernel_test(b, h1, pa1, pb1, [kernel_rule(form.floor, n_bits)], l1)[0]
    s1 = b.weighted_sum([(pa1, 1), (pb1, 1)], 0, l1 + 1)
    s2 = b.weighted_sum([(pa2, 1), (pb2, 1)], 0, l2 + 1)
    n1 = b.weighted_sum([(s1, 1), (h1, -1)], 0, l1 + 1)  # N = Σ - H, in 0..Σ
    n2 = b.weighted_sum([(s2, 1), (h2, -1)], 0, l2 + 1)
    s1, s2 = _nonzero(b, s1), _nonzero(b, s2)
    p1, p2, p3 = _product(b, n1, s2), _product(b, n2, s1), _product(b, s1, s2)
    x_terms = _scaled(p1, form.a) + _scaled(p2, -form.b)
    x = b.weighted_sum(x_terms, 0, _width(x_terms))
    outputs = [b.and_(floor_ok, b.nonnegative(_signed(x) + _scaled(p3, -c), 0)) for c in form.c]
    return b.compile(n_bits, cutoffs, pop_wires, outputs, n_bits2=n_bits2, rule=rule)


__all__ = ["naf", "rule_circuit"]
