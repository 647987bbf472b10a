"""The link-bit circuits with each Hamming distance given as two additive shares rather than
as the bits of a ^ b (core/densearith.py computes those shares for a whole block by
arithmetic: docs/privacy-design.md "A whole block by arithmetic sharing").

An l-bit H (l = n_bits.bit_length(), H <= n_bits < 2^l) enters as two l-bit addends, S1's
share h1 and S2's h2 with h1 + h2 = H mod 2^l: S1's wires hold h1's bits and S2's hold 0 on
the first l, the other way round on the next l (an input by its owner, no message), and a
prefix adder (core/gmwprefix.py `add`) makes H's bits mod 2^l, a few dozen AND gates where
the popcount of a ^ b took about a thousand a CLK. The rest is the circuit it replaces:
core/gmwcircuit.py's kernel test (`sum_circuit`), core/gmwrule.py's gap rule
(`sum_rule_circuit`), so the outputs are theirs pair for pair.

Wires: 0 and 1 the constants, then 2 l1 wires of H1's addends (and 2 l2 of H2's for the
rule), then the popcounts' (`pop_wires`), as core/linkbit.py `Party` lays out its `diffs`:
`Circuit.n_bits` (and `n_bits2`) are the addends' 2 l wires, not the CLK's bits. `addends`
writes a server's share as those `diffs` rows.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import gmwprefix as prefix
from blindmatch.matcher.core.gmwcircuit import Circuit, Index, _Builder, _kernel_test
from blindmatch.matcher.core.gmwrule import Bits, rule_outputs
from blindmatch.matcher.core.kernelrule import rule as kernel_rule
from blindmatch.matcher.core.ruleform import integer_form
from blindmatch.matcher.domain import Rule


def _hamming(b: _Builder, first: int, levels: int) -> list[int]:
    """H's bits mod 2^levels from the addends on wires first.. (S1's), first + levels..
    (S2's)."""
    ones = list(range(first, first + levels))
    twos = list(range(first + levels, first + 2 * levels))
    return prefix.add(b, [(ones, 1), (twos, 1)], 0, levels)


def _weighted(bits: list[int]) -> Bits:
    return [(w, 1 << i) for i, w in enumerate(bits)]


def _pops(first: int, count: int, levels: int) -> Index:
    wires: Index = np.arange(first, first + count * levels, dtype=np.intp).reshape(count, levels)
    return wires


@lru_cache(maxsize=16)
def sum_circuit(n_bits: int, cutoffs: tuple[float, ...] = (0.8,)) -> Circuit:
    """core/gmwcircuit.py `circuit`'s kernel test at each cut-off on H given as two additive
    shares mod 2^l (l = n_bits.bit_length()) and the shared popcounts |a|, |b|."""
    if n_bits < 1 or not cutoffs:
        raise ValueError(f"link-bit circuit: {n_bits} bits, {len(cutoffs)} cut-offs")
    cutoffs = tuple(float(t) for t in cutoffs)
    levels = n_bits.bit_length()
    first_pop = 2 + 2 * levels
    b = _Builder(first_pop + 2 * levels)
    pop_wires = _pops(first_pop, 2, levels)
    pa, pb = [int(w) for w in pop_wires[0]], [int(w) for w in pop_wires[1]]
    h = _hamming(b, 2, levels)
    outputs = _kernel_test(b, h, pa, pb, [kernel_rule(t, n_bits) for t in cutoffs], levels)
    return b.compile(2 * levels, cutoffs, pop_wires, outputs)


@lru_cache(maxsize=16)
def sum_rule_circuit(n_bits: int, n_bits2: int, cutoffs: tuple[float, ...], rule: Rule) -> Circuit:
    """core/gmwrule.py `rule_circuit`'s outputs on both Hamming distances given as additive
    shares (H1 mod 2^l1, H2 mod 2^l2) and the four shared popcounts."""
    if n_bits < 1 or n_bits2 < 1 or not cutoffs:
        raise ValueError(f"rule circuit: {n_bits} and {n_bits2} bits, {len(cutoffs)} cut-offs")
    cutoffs = tuple(float(t) for t in cutoffs)
    form = integer_form(rule, cutoffs, n_bits, n_bits2)
    l1, l2 = n_bits.bit_length(), n_bits2.bit_length()
    levels = max(l1, l2)
    first_pop = 2 + 2 * l1 + 2 * l2
    b = _Builder(first_pop + 4 * levels)
    pop_wires = _pops(first_pop, 4, levels)
    h1 = _weighted(_hamming(b, 2, l1))
    h2 = _weighted(_hamming(b, 2 + 2 * l1, l2))
    outputs = rule_outputs(b, form, n_bits, n_bits2, pop_wires, h1, h2)
    return b.compile(2 * l1, cutoffs, pop_wires, outputs, n_bits2=2 * l2, rule=rule)


def addends(role: int, shares: npt.NDArray[np.integer], levels: int) -> npt.NDArray[np.uint8]:
    """(pairs, bytes): server `role`'s additive shares of H as its `diffs` rows for the
    circuits above: its share's low `levels` bits at bits role * levels.., 0 elsewhere."""
    if role not in (0, 1):
        raise ValueError("link bits: role 0 (S1) or 1 (S2)")
    mask = np.uint32((1 << levels) - 1)
    v = (np.asarray(shares).astype(np.uint32) & mask) << np.uint32(role * levels)
    width = (2 * levels + 7) // 8
    rows: npt.NDArray[np.uint8] = v.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :width]
    return np.ascontiguousarray(rows)


__all__ = ["addends", "sum_circuit", "sum_rule_circuit"]
