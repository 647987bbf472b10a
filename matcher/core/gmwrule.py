"""The link-bit circuit of the schema's gap rule (docs/privacy-design.md "The rule on the
shares"): for a pair where both records have the fallback's fields, S1 and S2 evaluate on
their shares of both CLKs' a ^ b and of the four popcounts the test a clk-mode run applies
(core/fallback.py `rescored`): the first CLKs' kernel test at the rule's candidate floor, and
S >= t at each cut-off in its integer form A N1 Σ2 - B N2 Σ1 - C Σ1 Σ2 >= 0 (core/ruleform.py,
public constants).

`rule_circuit` (core/gmwcircuit.py's builder, core/gmwprefix.py's sums; core/linkbit.py
evaluates it as any other), 21 rounds at 1,024 + 1,024 bits and four cut-offs:

- both Hamming distances by carry-save reduction, a 2^k-bit CLK's in k bits plus its last
  bit (H's top bit at 1,024 bits would be a round later than the rest);
- Σ = pa + pb by a prefix adder, Σ2 read as 1 where it is 0 (one AND tree);
- the margin rewritten as (A - B - C) Σ1 Σ2 - A H1 Σ2 + B H2* Σ1 (N = Σ - H), so that the late
  H's meet the early Σ's in partial products (an AND each) and one carry-save tree shared by
  the cut-offs, then at each cut-off one carry-save level and the sign as a parallel-prefix
  carry into the top column;
- the kernel's test on the first CLKs at the floor, its signs as the same carries, its AND
  with each sign taken into that sign's last carry merge (no round of its own).

`ripple_rule_circuit` is the circuit as first built (49 rounds: each sum ending in a ripple of
carries), kept for the benchmark's side-by-side and the tests' comparison.

tests/test_gmwrule.py and tests/test_gmwprefix.py check both against core/ruleform.py's test in
the clear and measure their AND gates and rounds beside the kernel circuit's.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from blindmatch.matcher.core import gmwprefix as prefix
from blindmatch.matcher.core.gmwcircuit import (
    ZERO,
    Circuit,
    Index,
    Term,
    _Builder,
    _kernel_test,
    _popcount,
)
from blindmatch.matcher.core.gmwprefix import naf
from blindmatch.matcher.core.kernelrule import Line
from blindmatch.matcher.core.kernelrule import rule as kernel_rule
from blindmatch.matcher.core.ruleform import IntegerRule, integer_form
from blindmatch.matcher.domain import Rule


def _scaled(bits: list[int], weight: int) -> list[Term]:
    """weight * value as terms of one signed power of two each (`naf`)."""
    return [(bits, w) for w in naf(weight)]


def _signed(bits: list[int]) -> list[Term]:
    """A two's-complement number's bits as terms: the top bit weighs -2^(width - 1)."""
    return [(bits[:-1], 1), ([bits[-1]], -(1 << (len(bits) - 1)))]


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


Bits = list[tuple[int, int]]  # (a secret bit, its public weight)


def _hamming(b: _Builder, d: list[int]) -> Bits:
    """H = popcount(d) as weighted bits: all but the last of d by carry-save columns, the last
    on its own weight-1 bit, so that 2^k wires count in k bits (H's top bit at 1,024 is the
    AND of all of them, one round later than the rest)."""
    levels = (len(d) - 1).bit_length()
    h = _popcount(b, d[:-1], levels) if levels else []
    return [(w, 1 << i) for i, w in enumerate(h)] + [(d[-1], 1)]


def _at_most(b: _Builder, lhs: list[Term], x: list[Term], line: Line,
             x_bits: list[int] | None, deadline: int) -> int:  # fmt: skip
    """[sum(lhs) <= floor((a x + c) / b) + [x in extra]] (gmwcircuit `_at_most_line`), its
    sign by a parallel-prefix carry; `x_bits` x's bits where the line has extra points."""
    terms: list[Term] = [(bits, line.a * w) for bits, w in x]
    terms += [(bits, -line.b * w) for bits, w in lhs]
    if line.extra:
        assert x_bits is not None
        terms.append(([b.indicator(x_bits, line.extra)], line.b))
    return prefix.sign(b, terms, line.c, deadline)


def _floor_test(b: _Builder, h: Bits, pa: list[int], pb: list[int], total: list[int],
                floor: float, n_bits: int, deadline: int) -> int:  # fmt: skip
    """The kernel's test on the first CLKs at the candidate floor (gmwcircuit `_kernel_test`
    on H as weighted bits, `total` = pa + pb): pa > 0, the pre-filter, H <= dice(pa + pb),
    rippling where that leaves it ready by round `deadline`."""
    r = kernel_rule(floor, n_bits)
    positive = b.not_(b.and_all([b.not_(w) for w in pa]))  # pa > 0
    early = deadline - 3  # then two ANDs with `positive`, the last with `dice`
    up = _at_most(b, [(pb, 1), (pa, -1)], [(pa, 1)], r.pre, pa, early)  # pb - pa <= pre(pa)
    down = _at_most(b, [(pa, 1), (pb, -1)], [(pa, 1)], r.pre, pa, early)  # pa - pb <= pre(pa)
    hamming = [([w], k) for w, k in h]
    dice = _at_most(b, hamming, [(total, 1)], r.dice, total, deadline - 1)
    return b.and_(b.and_all([positive, up, down]), dice)


def _sum(b: _Builder, pa: list[int], pb: list[int]) -> list[int]:
    """pa + pb: a prefix adder with one round's slack for a ripple through its low bits."""
    return prefix.add(b, [(pa, 1), (pb, 1)], 0, len(pa) + 1, slack=1)


def _partials(b: _Builder, x: Bits, y: list[int]) -> list[Term]:
    """x * y (y's bits weighing 2^j): a partial product an AND."""
    return [([b.and_(xi, yj)], w << j) for xi, w in x for j, yj in enumerate(y)]


def _rows(cols: prefix.Columns) -> list[Term]:
    """Columns of at most two bits as two rows."""
    return [([c[i] if len(c) > i else ZERO for c in cols], 1) for i in (0, 1)]


def _start(
    n_bits: int, n_bits2: int, cutoffs: tuple[float, ...], rule: Rule
) -> tuple[tuple[float, ...], IntegerRule, _Builder, Index]:
    """What both rule circuits start from: the cut-offs as floats, the rule's integer form,
    a builder over the inputs (the two CLKs' bits, then four popcounts of max(l1, l2) wires:
    pa1, pb1, pa2, pb2) and those popcounts' wires."""
    if n_bits < 1 or n_bits2 < 1 or not cutoffs:
        raise ValueError(f"rule circuit: {n_bits} and {n_bits2} bits, {len(cutoffs)} cut-offs")
    cutoffs = tuple(float(t) for t in cutoffs)
    form = integer_form(rule, cutoffs, n_bits, n_bits2)
    levels = max(n_bits.bit_length(), n_bits2.bit_length())
    first_pop = 2 + n_bits + n_bits2
    b = _Builder(first_pop + 4 * levels)
    pop_wires: Index = np.arange(first_pop, first_pop + 4 * levels, dtype=np.intp).reshape(
        4, levels
    )
    return cutoffs, form, b, pop_wires


@lru_cache(maxsize=16)
def rule_circuit(n_bits: int, n_bits2: int, cutoffs: tuple[float, ...], rule: Rule) -> Circuit:
    """The gap rule at each cut-off (cutoffs[0] the threshold) on a pair's first CLKs (d1 of
    `n_bits` bits) and fallback CLKs (d2 of `n_bits2`), with the four popcounts shared: output
    j is [the kernel's test on the first CLKs at the candidate floor, and S >= cutoffs[j]].

    N = Σ - H, so with Σ2' = Σ2 read as 1 where it is 0 (z2 = [Σ2 = 0], H2* = H2 + z2: N2 =
    Σ2' - H2*) the integer form A N1 Σ2' - B N2 Σ1 - C Σ1 Σ2' is

        M = (A - B - C) Σ1 Σ2' - A H1 Σ2' + B H2* Σ1

    (Σ1 is not fixed: where it is 0, pa1 is 0 and the floor test fails). All arithmetic is
    mod 2^width, the width M needs at every cut-off; the sums are `prefix`'s: carry-save
    columns, parallel-prefix carries. The products' partials of H's early bits (ready with
    the Σ's) are reduced to two rows before they are scaled by A and B, the late ones scaled
    at once (three rows each in non-adjacent form, but no levels after them); Y = -A H1 Σ2'
    + B H2* Σ1 and Σ1 Σ2' are each two rows shared by the cut-offs; at each cut-off Y + (A - B
    - C) Σ1 Σ2' is reduced to two rows and its sign is the carry into the top column."""
    cutoffs, form, b, pop_wires = _start(n_bits, n_bits2, cutoffs, rule)
    first_pop = 2 + n_bits + n_bits2
    h1 = _hamming(b, list(range(2, 2 + n_bits)))
    h2 = _hamming(b, list(range(2 + n_bits, first_pop)))
    outputs = rule_outputs(b, form, n_bits, n_bits2, pop_wires, h1, h2)
    return b.compile(n_bits, cutoffs, pop_wires, outputs, n_bits2=n_bits2, rule=rule)


def rule_outputs(b: _Builder, form: IntegerRule, n_bits: int, n_bits2: int, pop_wires: Index,
                 h1: Bits, h2: Bits) -> list[int]:  # fmt: skip
    """`rule_circuit`'s output wires from both Hamming distances as weighted bits (`h1`, `h2`)
    and the four popcounts' wires; core/gmwsum.py gives it H from additive shares instead."""
    l1, l2 = n_bits.bit_length(), n_bits2.bit_length()
    pa1, pb1, pa2, pb2 = (
        [int(w) for w in pop_wires[k, :n]] for k, n in enumerate((l1, l1, l2, l2))
    )
    s1, s2 = _sum(b, pa1, pb1), _sum(b, pa2, pb2)
    z2 = b.and_all([b.not_(w) for w in pa2 + pb2])
    s2 = [b.xor(s2[0], z2), *s2[1:]]
    q1 = _partials(b, h1, s2)  # H1 Σ2'
    q2 = _partials(b, [*h2, (z2, 1)], s1)  # H2* Σ1
    p3 = _partials(b, [(w, 1 << i) for i, w in enumerate(s1)], s2)  # Σ1 Σ2'
    ks = [form.a - form.b - c for c in form.c]
    width = max(prefix.width_for([(bits, -form.a * w) for bits, w in q1]
                                 + [(bits, form.b * w) for bits, w in q2]
                                 + [(bits, k * w) for bits, w in p3]) for k in ks)  # fmt: skip
    ready = 1 + max(b.depth[w] for w in s1 + s2)

    def rows(terms: list[Term]) -> list[Term]:
        return _rows(prefix.compress(b, prefix.columns(b, terms, 0, width))) if terms else []

    y: list[Term] = []
    for q, weight in ((q1, -form.a), (q2, form.b)):
        early = [t for t in q if b.depth[t[0][0]] <= ready]
        y += [(bits, weight * w) for bits, w in rows(early)]
        y += [(bits, weight * w) for bits, w in q if b.depth[bits[0]] > ready]
    y, p = rows(y), rows(p3)
    margins = [prefix.compress(b, prefix.columns(b, y + [(bits, k) for bits, _ in p], 0, width))
               for k in ks]  # fmt: skip
    # Output j is f & ~(top ^ carry) = f ^ f top ^ f carry (f the floor test, top the top
    # column's bit): f taken into the carry's last merge costs no round where the floor test
    # is ready two rounds before the carry; each sign and the floor test ripple where they
    # have time (`carry_in`'s deadline).
    unmasked = max(prefix.carry_depth(b, m[:-1]) for m in margins)
    floor_ok = _floor_test(b, h1, pa1, pb1, s1, form.floor, n_bits, unmasked - 2)
    deadline = max(prefix.carry_depth(b, m[:-1], floor_ok) for m in margins)
    outputs = []
    for m in margins:
        carry = prefix.carry_in(b, m[:-1], deadline, floor_ok)
        outputs.append(b.xor_all([floor_ok, b.and_(floor_ok, b.xor_all(m[-1])), carry]))
    return outputs


@lru_cache(maxsize=16)
def ripple_rule_circuit(
    n_bits: int, n_bits2: int, cutoffs: tuple[float, ...], rule: Rule
) -> Circuit:
    """`rule_circuit`'s outputs by the circuit as first built: Σ, N = Σ - H and the products
    N1 Σ2, N2 Σ1, Σ1 Σ2 each a sum ending in a ripple of carries, X = A N1 Σ2 - B N2 Σ1 once,
    the sign of X - C Σ1 Σ2 at each cut-off (49 rounds at 1,024 + 1,024 bits and four
    cut-offs); kept for the benchmark's side-by-side and the tests."""
    cutoffs, form, b, pop_wires = _start(n_bits, n_bits2, cutoffs, rule)
    l1, l2, first_pop = n_bits.bit_length(), n_bits2.bit_length(), 2 + n_bits + n_bits2
    pa1, pb1, pa2, pb2 = (
        [int(w) for w in pop_wires[k, :n]] for k, n in enumerate((l1, l1, l2, l2))
    )
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
    x = b.weighted_sum(x_terms, 0, prefix.width_for(x_terms))
    outputs = [b.and_(floor_ok, b.nonnegative(_signed(x) + _scaled(p3, -c), 0)) for c in form.c]
    return b.compile(n_bits, cutoffs, pop_wires, outputs, n_bits2=n_bits2, rule=rule)


__all__ = ["Bits", "naf", "ripple_rule_circuit", "rule_circuit", "rule_outputs"]
