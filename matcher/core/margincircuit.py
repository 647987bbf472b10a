"""The two small boolean circuits of the rule's margin by arithmetic (core/densemargin.py;
docs/privacy-design.md "A whole block by arithmetic sharing"): the gap rule of core/gmwrule.py
with its affine parts and products done mod 2^64 (core/ring64.py) between them, so that the
circuits hold only what is not affine.

The rule's output j (core/ruleform.py `rule_bounds`) is f AND [M_j >= 0], f the kernel's test
on the first CLKs at the candidate floor (core/kernelrule.py: pa1 > 0, up and down the
pre-filter's two sides, `dice` the line on H1) and

    up   = a_p pa1 + c_p + b_p e_p - b_p (pb1 - pa1)      (>= 0)
    down = a_p pa1 + c_p + b_p e_p - b_p (pa1 - pb1)
    dice = a_d Σ1 + c_d + b_d e_d - b_d H1
    M_j  = (A - B - C_j) Σ1 Σ2' - A H1 Σ2' + B H2* Σ1

(the pre-filter's line (a_p, b_p, c_p) and the dice line's (a_d, b_d, c_d), e_p = [pa1 in
its extra points], e_d = [Σ1 in the dice line's]; Σ = pa + pb, Σ2' = Σ2 + z2, H2* = H2 + z2,
z2 = [Σ2 = 0]).

- `first` (per pair, on H1's and H2's additive shares mod 2^l as gmwsum's addends and the
  four popcounts' XOR shares): [pa1 > 0], and the bits turned into additive shares: each
  H's wrap (the carry out of its two addends, so H = h1 + h2 - 2^l wrap over the integers),
  z2, and e_p, e_d where the lines have extra points (Σ1's bits by a prefix adder then).
- `second` (per pair, on each test's value as two additive shares mod 2^w, w its width from
  public bounds, S1's addend on its wires, S2's on the next): each sign as the top column
  XOR the carry into it (core/gmwprefix.py `carry_in`), f the AND of pa1 > 0 (`first`'s
  output, an XOR-shared input here) and the floor's three signs, f taken into each margin's
  last carry merge as core/gmwrule.py does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from blindmatch.matcher.core import gmwprefix as prefix
from blindmatch.matcher.core.gmwcircuit import Circuit, Index, _Builder
from blindmatch.matcher.core.kernelrule import Line
from blindmatch.matcher.core.kernelrule import rule as kernel_rule
from blindmatch.matcher.core.ruleform import IntegerRule, integer_form
from blindmatch.matcher.domain import Rule

FLOOR = ("up", "down", "dice")  # the floor test's affine signs, before the margins


def _width(terms: list[tuple[int, int]], const: int) -> int:
    """Two's-complement bits for sum(coef * v) + const over 0 <= v <= top ((coef, top))."""
    hi = const + sum(max(c * top, 0) for c, top in terms)
    lo = const + sum(min(c * top, 0) for c, top in terms)
    return max(hi.bit_length(), (-lo).bit_length() if lo < 0 else 0) + 1


@dataclass(frozen=True)
class Plan:
    """The public form of a block's rule test: its constants, each affine test's width (up,
    down, dice, then each cut-off's margin), the two circuits and what `first` outputs:
    [pa1 > 0], then the `converted` bits (wrap1, wrap2, z2[, e_p][, e_d])."""

    n_bits: int
    n_bits2: int
    form: IntegerRule
    pre: Line
    dice: Line
    widths: tuple[int, ...]
    first: Circuit
    second: Circuit
    converted: tuple[str, ...]

    @property
    def levels(self) -> tuple[int, int]:
        return self.n_bits.bit_length(), self.n_bits2.bit_length()

    @property
    def and_gates(self) -> int:
        return self.first.and_gates + self.second.and_gates


def _carry(b: _Builder, first: int, width: int, deadline: int, mask: int = 1) -> int:
    """The carry into column `width` of two addends on wires first.. and first + width..."""
    cols = [[first + k, first + width + k] for k in range(width)]
    return prefix.carry_in(b, cols, deadline, mask)


def _first(n_bits: int, n_bits2: int, pre: Line, dice: Line) -> tuple[Circuit, tuple[str, ...]]:
    l1, l2 = n_bits.bit_length(), n_bits2.bit_length()
    levels = max(l1, l2)
    first_pop = 2 + 2 * l1 + 2 * l2
    b = _Builder(first_pop + 4 * levels)
    pop_wires: Index = np.arange(first_pop, first_pop + 4 * levels, dtype=np.intp).reshape(
        4, levels
    )
    pa1, pb1, pa2, pb2 = ([int(w) for w in pop_wires[k, :n]]
                          for k, n in enumerate((l1, l1, l2, l2)))  # fmt: skip
    z2 = b.and_all([b.not_(w) for w in pa2 + pb2])
    positive = b.not_(b.and_all([b.not_(w) for w in pa1]))
    ready = max(b.depth[z2], b.depth[positive])
    outputs = [positive, _carry(b, 2, l1, ready), _carry(b, 2 + 2 * l1, l2, ready), z2]
    names: tuple[str, ...] = ("wrap1", "wrap2", "z2")
    if pre.extra:
        outputs.append(b.indicator(pa1, pre.extra))
        names += ("e_pre",)
    if dice.extra:
        total = prefix.add(b, [(pa1, 1), (pb1, 1)], 0, l1 + 1)
        outputs.append(b.indicator(total, dice.extra))
        names += ("e_dice",)
    c = b.compile(2 * l1, tuple(0.0 for _ in outputs), pop_wires, outputs, n_bits2=2 * l2)
    return c, names


def slot(width: int) -> int:
    """The input wires an addend of a `width`-bit value takes in `second`: whole bytes (its
    owner writes its share's low bytes, the bits above `width` unused)."""
    return 8 * ((width + 7) // 8)


def _second(widths: tuple[int, ...], cutoffs: tuple[float, ...], depth: int,
            rule: Rule) -> Circuit:  # fmt: skip
    inputs = 2 * sum(slot(w) for w in widths)
    b = _Builder(2 + inputs + 1)
    pos = 2 + inputs
    pop_wires: Index = np.asarray([[pos]], dtype=np.intp)
    at, tests = 2, []
    for w in widths:
        s = slot(w)
        cols = [[at + k, at + s + k] for k in range(w - 1)]
        tests.append((cols, [at + w - 1, at + s + w - 1]))
        at += 2 * s
    floor, margins = tests[: len(FLOOR)], tests[len(FLOOR) :]
    # The carries ripple through as many low columns (one AND a column, a round each) as
    # leave them no deeper than `depth`, or than the trees alone (about three ANDs a column).
    depth = max(depth, *(prefix.carry_depth(b, cols) for cols, _ in margins))
    signs = [b.not_(b.xor_all([*top, prefix.carry_in(b, cols, depth - 2)])) for cols, top in floor]
    f = b.and_all([pos, *signs])
    outputs = []
    for cols, top in margins:
        carry = prefix.carry_in(b, cols, depth, f)
        outputs.append(b.xor_all([f, b.and_(f, b.xor_all(top)), carry]))
    return b.compile(inputs, cutoffs, pop_wires, outputs, rule=rule)  # its outputs: the rule's


def margin_terms(plan_form: IntegerRule, n_bits: int, n_bits2: int,
                 pre: Line, dice: Line) -> list[tuple[list[tuple[int, int]], int]]:  # fmt: skip
    """Each test's (coefficient, bound) terms and constant, for its width: up and down over
    (pa1, pb1, e_p), dice over (Σ1, e_d, H1), margin j over (Σ1 Σ2', H1 Σ2', H2* Σ1)."""
    n1, n2 = n_bits, n_bits2
    out = [
        ([(pre.a + pre.b, n1), (-pre.b, n1), (pre.b, 1)], pre.c),
        ([(pre.a - pre.b, n1), (pre.b, n1), (pre.b, 1)], pre.c),
        ([(dice.a, 2 * n1), (dice.b, 1), (-dice.b, n1)], dice.c),
    ]
    f = plan_form
    for c in f.c:
        out.append(([(f.a - f.b - c, 4 * n1 * n2), (-f.a, 2 * n1 * n2), (f.b, 2 * n1 * n2)], 0))
    return out


RIPPLE = 64  # a `depth` that ripples every carry through: the fewest AND gates


@lru_cache(maxsize=16)
def plan(n_bits: int, n_bits2: int, cutoffs: tuple[float, ...], rule: Rule,
         depth: int = 0) -> Plan:  # fmt: skip
    """The gap rule at each cut-off on `n_bits`- and `n_bits2`-bit CLKs by the margin's
    arithmetic; `depth`: the second circuit's carries as deep as that where rippling saves
    AND gates (0: core/gmwprefix.py's trees, the fewest rounds: 395 gates in 10 at the
    default rule; 11: 353 in 13, the same rounds in all as core/gmwsum.py's; `RIPPLE`: 174
    in 29)."""
    cutoffs = tuple(float(t) for t in cutoffs)
    form = integer_form(rule, cutoffs, n_bits, n_bits2)
    floor = kernel_rule(form.floor, n_bits)
    widths = tuple(_width(terms, const) for terms, const in
                   margin_terms(form, n_bits, n_bits2, floor.pre, floor.dice))  # fmt: skip
    if max(widths) > 63:
        raise ValueError(f"the rule's margin needs {max(widths)} bits: more than 2^64 holds")
    first, names = _first(n_bits, n_bits2, floor.pre, floor.dice)
    second = _second(widths, cutoffs, depth, rule)
    return Plan(n_bits, n_bits2, form, floor.pre, floor.dice, widths, first, second, names)


__all__ = ["FLOOR", "RIPPLE", "Plan", "margin_terms", "plan", "slot"]
