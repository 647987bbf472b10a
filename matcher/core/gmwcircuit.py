"""The link-bit circuit (core/linkbit.py evaluates it): the kernel's test on d = a ^ b and the
popcounts |a|, |b| as a boolean circuit scheduled by AND-depth, its constants public (the
rule's lines, core/kernelrule.py). `circuit` builds it: the popcount of d by carry-save
column reduction, each of the rule's comparisons as the sign of a weighted sum of secret
bits (`_Builder.nonnegative`), a few points off a line by an indicator (`_Builder.indicator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.kernelrule import Line, Rule, rule
from blindmatch.matcher.domain import Rule as GapRule

Index = npt.NDArray[np.intp]
Gates = tuple[Index, Index, Index]  # (out, a, b) wire ids

ZERO, ONE = 0, 1  # constant wires: shares (0, 0) and (1, 0)


# --- the circuit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Circuit:
    """A boolean circuit scheduled by AND-depth: XOR gates by (depth, XOR level), then the AND
    gates of each depth as one round. Wires 0 and 1 are the constants, then `n_bits` wires of
    d, then `pop_bits` wires of |a| and `pop_bits` of |b| (`pop_wires`); `outputs[j]` is the
    kernel's test at `cutoffs[j]` (pre-filter at cutoffs[0], Dice >= cutoffs[j])."""

    n_bits: int
    cutoffs: tuple[float, ...]
    pop_bits: int
    n_wires: int
    pop_wires: Index
    outputs: Index
    xors: tuple[tuple[Gates, ...], ...]  # xors[k]: the levels at AND-depth k, in order
    ands: tuple[Gates, ...]  # ands[r]: the gates of AND-depth r + 1 (round r)
    and_offsets: tuple[int, ...]  # triple index of round r's first gate; last = all gates
    # The gap rule's circuit (core/gmwrule.py): the fallback CLKs' d after the first's, pop
    # wires (4, pop_bits) for |a1|, |b1|, |a2|, |b2|; output j the rule at cutoffs[j].
    n_bits2: int = 0
    rule: GapRule | None = None

    @property
    def n_outputs(self) -> int:
        return len(self.cutoffs)

    @property
    def rounds(self) -> int:
        return len(self.ands)

    @property
    def and_gates(self) -> int:
        return self.and_offsets[-1]


Term = tuple[list[int], int]  # (the bits of a value, lowest first; its public weight)


class _Builder:
    def __init__(self, inputs: int) -> None:
        self.depth = [0] * inputs
        self.level = [0] * inputs
        self.xor_gates: list[tuple[int, int, int]] = []
        self.and_gates: list[tuple[int, int, int]] = []

    def _wire(self, depth: int, level: int) -> int:
        self.depth.append(depth)
        self.level.append(level)
        return len(self.depth) - 1

    def xor(self, a: int, b: int) -> int:
        if a == ZERO:
            return b
        if b == ZERO:
            return a
        d = max(self.depth[a], self.depth[b])
        level = 1 + max(self.level[x] if self.depth[x] == d else 0 for x in (a, b))
        out = self._wire(d, level)
        self.xor_gates.append((out, a, b))
        return out

    def not_(self, a: int) -> int:
        return ONE if a == ZERO else self.xor(a, ONE)

    def and_(self, a: int, b: int) -> int:
        if ZERO in (a, b):
            return ZERO
        if a == ONE:
            return b
        if b == ONE:
            return a
        out = self._wire(1 + max(self.depth[a], self.depth[b]), 0)
        self.and_gates.append((out, a, b))
        return out

    def and_all(self, bits: list[int]) -> int:
        """A balanced AND tree (log depth)."""
        if not bits:
            return ONE
        while len(bits) > 1:
            bits = [self.and_(*bits[i : i + 2]) if i + 1 < len(bits) else bits[i]
                    for i in range(0, len(bits), 2)]  # fmt: skip
        return bits[0]

    def xor_all(self, bits: list[int]) -> int:
        """A balanced XOR tree (few levels)."""
        if not bits:
            return ZERO
        while len(bits) > 1:
            bits = [self.xor(*bits[i : i + 2]) if i + 1 < len(bits) else bits[i]
                    for i in range(0, len(bits), 2)]  # fmt: skip
        return bits[0]

    def full_add(self, a: int, b: int, c: int) -> tuple[int, int]:
        t1, t2 = self.xor(a, c), self.xor(b, c)
        return self.xor(t1, b), self.xor(c, self.and_(t1, t2))

    def column(self, bits: list[int]) -> tuple[int, list[int]]:
        """A column's bits reduced to one (or ZERO), and the carries for the next."""
        bits = [w for w in bits if w != ZERO]
        carries: list[int] = []
        while len(bits) >= 3:
            bits = sorted(bits, key=lambda w: self.depth[w])
            cutoff = self.depth[bits[2]]
            ready = [w for w in bits if self.depth[w] <= cutoff]
            rest = [w for w in bits if self.depth[w] > cutoff]
            n = len(ready) // 3 * 3
            sums = []
            for i in range(0, n, 3):
                s, c = self.full_add(*ready[i : i + 3])
                sums.append(s)
                carries.append(c)
            bits = sums + ready[n:] + rest
        if len(bits) == 2:
            carries.append(self.and_(*bits))
            bits = [self.xor(*bits)]
        return (bits[0] if bits else ZERO), carries

    def weighted_sum(self, terms: Sequence[Term], const: int, width: int) -> list[int]:
        """The bits of sum(weight * value) + const mod 2^width, public weights and constant:
        a negative weight's bits enter negated (w x = |w| (1 - x) - |w|), every bit in the
        columns of its weight's set bits, reduced by carry-save column by column; the top
        column by XOR alone."""
        cols: list[list[int]] = [[] for _ in range(width)]
        for bits, weight in terms:
            for i, bit in enumerate(bits):
                w = weight << i
                if w < 0:
                    bit, const = self.not_(bit), const + w
                for k in range(width):
                    if (abs(w) >> k) & 1:
                        cols[k].append(bit)
        const %= 1 << width
        for k in range(width):
            if (const >> k) & 1:
                cols[k].append(ONE)
        out = []
        for k in range(width - 1):
            bit, carries = self.column(cols[k])
            out.append(bit)
            cols[k + 1] += carries
        out.append(self.xor_all([w for w in cols[width - 1] if w != ZERO]))
        return out

    def nonnegative(self, terms: Sequence[Term], const: int) -> int:
        """[sum(weight * value) + const >= 0]: the sign of the sum in enough bits."""
        hi = lo = const
        for bits, weight in terms:
            top = weight * ((1 << len(bits)) - 1)
            hi, lo = hi + max(top, 0), lo + min(top, 0)
        width = max(hi.bit_length(), (-lo).bit_length() if lo < 0 else 0) + 1
        return self.not_(self.weighted_sum(terms, const, width)[-1])

    def indicator(self, bits: list[int], values: Sequence[int]) -> int:
        """[the value of `bits` is one of `values`]: a multiplexer tree on the top bit."""
        if not values:
            return ZERO
        if not bits:
            return ONE
        top = len(bits) - 1
        low = [v for v in values if not (v >> top) & 1]
        high = [v - (1 << top) for v in values if (v >> top) & 1]
        f0, f1 = self.indicator(bits[:top], low), self.indicator(bits[:top], high)
        if f0 == f1:
            return f0
        # b ? f1 : f0 = f0 ^ b (f0 ^ f1): one AND.
        return self.xor(f0, self.and_(bits[top], self.xor(f0, f1)))

    def compile(self, n_bits: int, cutoffs: tuple[float, ...], pop_wires: Index,
                outputs: list[int], n_bits2: int = 0, rule: GapRule | None = None,
                ) -> Circuit:  # fmt: skip
        depth = np.asarray(self.depth)
        top = int(depth.max()) if len(depth) else 0
        by_level: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for g in self.xor_gates:
            by_level.setdefault((self.depth[g[0]], self.level[g[0]]), []).append(g)
        by_depth: dict[int, list[tuple[int, int, int]]] = {}
        for g in self.and_gates:
            by_depth.setdefault(self.depth[g[0]], []).append(g)

        def arrays(gates: list[tuple[int, int, int]]) -> Gates:
            a = np.asarray(gates, dtype=np.intp).reshape(-1, 3)
            return a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy()

        xors = tuple(
            tuple(arrays(by_level[k, lv]) for lv in sorted(lv for d, lv in by_level if d == k))
            for k in range(top + 1)
        )
        ands = tuple(arrays(by_depth.get(r, [])) for r in range(1, top + 1))
        offsets = np.concatenate([[0], np.cumsum([len(g[0]) for g in ands])]).astype(int)
        return Circuit(
            n_bits=n_bits,
            cutoffs=cutoffs,
            pop_bits=pop_wires.shape[1],
            n_wires=len(self.depth),
            pop_wires=pop_wires,
            outputs=np.asarray(outputs, dtype=np.intp),
            xors=xors,
            ands=ands,
            and_offsets=tuple(int(x) for x in offsets),
            n_bits2=n_bits2,
            rule=rule,
        )


def _at_most_line(
    b: _Builder, lhs: list[Term], x: list[Term], line: Line, extra_bits: list[int] | None
) -> int:
    """[sum(lhs) <= floor((a x + c) / b) + [x in extra]], i.e. [b sum(lhs) <= a x + c + b e]
    (e the extra indicator on `extra_bits`, x's bits)."""
    terms: list[Term] = [(bits, line.a * w) for bits, w in x]
    terms += [(bits, -line.b * w) for bits, w in lhs]
    if line.extra:
        assert extra_bits is not None
        terms.append(([b.indicator(extra_bits, line.extra)], line.b))
    return b.nonnegative(terms, line.c)


def _popcount(b: _Builder, column: list[int], levels: int) -> list[int]:
    """The popcount of `column`'s bits in `levels` bits, by carry-save column reduction."""
    h: list[int] = []
    for w in range(levels):
        if w == levels - 1:
            h.append(b.xor_all(column))
            break
        bit, column = b.column(column)
        h.append(bit)
    return h


def _kernel_test(b: _Builder, h: list[int], pa: list[int], pb: list[int], rules: list[Rule],
                 levels: int) -> list[int]:  # fmt: skip
    """The kernel's test at each of `rules`: pa > 0, the pre-filter at rules[0], H <= dice."""
    pre = rules[0].pre
    positive = b.not_(b.and_all([b.not_(w) for w in pa]))  # pa > 0
    up = _at_most_line(b, [(pb, 1), (pa, -1)], [(pa, 1)], pre, pa)  # pb - pa <= pre(pa)
    down = _at_most_line(b, [(pa, 1), (pb, -1)], [(pa, 1)], pre, pa)  # pa - pb <= pre(pa)
    keep = b.and_all([positive, up, down])
    total_bits: list[int] | None = None
    outputs = []
    for r in rules:
        if r.dice.extra and total_bits is None:
            total_bits = b.weighted_sum([(pa, 1), (pb, 1)], 0, levels + 1)
        dice = _at_most_line(b, [(h, 1)], [(pa, 1), (pb, 1)], r.dice, total_bits)
        outputs.append(b.and_(keep, dice))
    return outputs


@lru_cache(maxsize=16)
def circuit(n_bits: int, cutoffs: tuple[float, ...] = (0.8,)) -> Circuit:
    """The kernel's test at each cut-off (the first the threshold) on d = a ^ b of `n_bits`
    bits and the shared popcounts |a|, |b|: output j is [pa > 0, |pa - pb| <= pre(pa) at
    cutoffs[0], popcount(d) <= dice_j(pa + pb)], the rule's constants public (`rule`)."""
    if n_bits < 1 or not cutoffs:
        raise ValueError(f"link-bit circuit: {n_bits} bits, {len(cutoffs)} cut-offs")
    cutoffs = tuple(float(t) for t in cutoffs)
    rules = [rule(t, n_bits) for t in cutoffs]
    levels = n_bits.bit_length()  # H, |a|, |b| <= n_bits < 2^levels
    first_pop = 2 + n_bits
    b = _Builder(first_pop + 2 * levels)
    pop_wires: Index = np.arange(first_pop, first_pop + 2 * levels, dtype=np.intp).reshape(
        2, levels
    )
    pa, pb = [int(w) for w in pop_wires[0]], [int(w) for w in pop_wires[1]]
    h = _popcount(b, list(range(2, 2 + n_bits)), levels)
    outputs = _kernel_test(b, h, pa, pb, rules, levels)
    return b.compile(n_bits, cutoffs, pop_wires, outputs)


__all__ = ["ONE", "ZERO", "Circuit", "Gates", "Index", "circuit"]
