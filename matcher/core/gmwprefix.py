"""Shallow arithmetic for the GMW circuits (core/gmwcircuit.py's builder): weighted sums of
secret bits reduced by carry-save to two rows, then parallel-prefix carries, so that a sum's
AND-depth grows with the logarithm of its width rather than with the width
(docs/privacy-design.md "The rule on the shares"; core/gmwrule.py uses it).

XOR gates are free of AND-depth, an AND gate is a round, so:

- `compress` reduces each column of bits to at most two, lowest column first, by full adders
  on its three earliest bits (sum = a ^ b ^ c stays at their depth, carry = c ^ ((a ^ c) &
  (b ^ c)) goes up one column and one round), a half adder on the two earliest of three where
  the third is later (its carry is then no later than theirs: a late bit is left for the last
  addition instead of rippling up the columns); the top column by XOR alone (mod 2^width);
- `carry_in` is the carry a two-row addition brings into a column, the generate of the
  columns below it, from (generate, propagate) pairs g = x & y, p = x ^ y merged by
  G = G_hi ^ (P_hi & G_lo), P = P_hi & P_lo (G_hi and P_hi never both hold, so XOR is OR), the
  adjacent pair whose merge is ready first merged first: a balanced tree where the columns
  arrive together, a chain over columns that arrive early; the lowest group's P is never
  needed and not built;
- `sign` is [sum >= 0]: the top column XOR the carry into it; `add` the whole sum, each
  column's carry by a Sklansky prefix (depth log2 of the width).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from blindmatch.matcher.core.gmwcircuit import ONE, ZERO, Term, _Builder

Columns = list[list[int]]


def naf(k: int) -> list[int]:
    """k as a sum of signed powers of two, no two adjacent (its non-adjacent form: 125 =
    128 - 4 + 1, three bits a column rather than six)."""
    out, shift = [], 0
    while k:
        if k & 1:
            digit = 2 - (k % 4)  # 1 or -1
            out.append(digit << shift)
            k -= digit
        k >>= 1
        shift += 1
    return out


def width_for(terms: Sequence[Term], const: int = 0) -> int:
    """Bits enough for sum(weight * value) + const in two's complement, over any bits."""
    hi = lo = const
    for bits, weight in terms:
        top = weight * ((1 << len(bits)) - 1)
        hi, lo = hi + max(top, 0), lo + min(top, 0)
    return max(hi.bit_length(), (-lo).bit_length() if lo < 0 else 0) + 1


def columns(b: _Builder, terms: Sequence[Term], const: int, width: int) -> Columns:
    """sum(weight * value) + const mod 2^width as columns of bits (a bit in column k weighs
    2^k): each wire's weights summed, then written in non-adjacent form, a negative digit's
    bit entering negated (w x = |w| (1 - x) - |w|); the constant as ONE wires."""
    weights: dict[int, int] = {}
    for bits, weight in terms:
        for i, bit in enumerate(bits):
            if bit == ONE:
                const += weight << i
            elif bit != ZERO:
                weights[bit] = weights.get(bit, 0) + (weight << i)
    cols: Columns = [[] for _ in range(width)]
    for bit, weight in weights.items():
        negated = ZERO
        for w in naf(weight):
            k = abs(w).bit_length() - 1
            if k < width and w < 0:
                negated = negated if negated != ZERO else b.not_(bit)
                cols[k].append(negated)
                const += w
            elif k < width:
                cols[k].append(bit)
    const %= 1 << width
    for k in range(width):
        if (const >> k) & 1:
            cols[k].append(ONE)
    return cols


def compress(b: _Builder, cols: Columns) -> Columns:
    """The same sum mod 2^len(cols) with at most two bits a column below the top and one in
    the top column."""
    cols = [[w for w in col if w != ZERO] for col in cols]
    top = len(cols) - 1
    for k in range(top):
        col = cols[k]
        while len(col) > 2:
            col.sort(key=lambda w: b.depth[w])
            if len(col) == 3 and b.depth[col[2]] > b.depth[col[1]]:
                x, y = col[0], col[1]
                col[:2] = [b.xor(x, y)]
                cols[k + 1].append(b.and_(x, y))
            else:
                s, c = b.full_add(*col[:3])
                col[:3] = [s]
                cols[k + 1].append(c)
    cols[top] = [b.xor_all(cols[top])] if cols[top] else []
    return cols


def _gp(b: _Builder, col: list[int]) -> tuple[int, int]:
    """A column of at most two bits as (generate, propagate)."""
    if not col:
        return ZERO, ZERO
    if len(col) == 1:
        return ZERO, col[0]
    return b.and_(col[0], col[1]), b.xor(col[0], col[1])


def _ready(b: _Builder, *wires: int) -> int:
    return max((b.depth[w] for w in wires if w not in (ZERO, ONE)), default=0)


def _tree(b: _Builder, groups: list[tuple[int, int]], mask: int = ONE) -> int:
    """The generate of `groups` ((G, P), lowest first, the lowest's P unused), merging first
    the adjacent pair whose merge is ready first; AND `mask`, taken into the high group of
    the last merge (m G = m G_hi ^ (m P_hi) G_lo: no round after the tree's where the low
    group is the last to be ready)."""
    if len(groups) == 1:
        return b.and_(mask, groups[0][0])
    while len(groups) > 1:
        # The merge of groups i (low) and i + 1 (high) is ready at this depth.
        def merged(i: int) -> int:
            (g_lo, p_lo), (g_hi, p_hi) = groups[i], groups[i + 1]
            g = max(_ready(b, g_hi), 1 + _ready(b, p_hi, g_lo))
            return g if i == 0 else max(g, 1 + _ready(b, p_hi, p_lo))

        i = min(range(len(groups) - 1), key=lambda i: (merged(i), i))
        (g_lo, p_lo), (g_hi, p_hi) = groups[i], groups[i + 1]
        if len(groups) == 2:
            g_hi, p_hi = b.and_(mask, g_hi), b.and_(mask, p_hi)
        g = b.xor(g_hi, b.and_(p_hi, g_lo))
        p = ZERO if i == 0 else b.and_(p_hi, p_lo)
        groups[i : i + 2] = [(g, p)]
    return groups[0][0] if groups else ZERO


def _hybrid(b: _Builder, cols: Columns, low: int, mask: int = ONE) -> int:
    """The carry out of `cols`: rippled through the lowest `low` columns (one AND a column,
    a full adder's carry), then `_tree` over the rest above that carry."""
    carry = ZERO
    for col in cols[:low]:
        x, y = [*col, ZERO, ZERO][:2]
        carry = b.xor(carry, b.and_(b.xor(x, carry), b.xor(y, carry)))
    return _tree(b, [(carry, ZERO)] + [_gp(b, col) for col in cols[low:]], mask)


def _hybrid_bits(b: _Builder, cols: Columns, low: int, mask: int = ONE) -> list[int]:
    return [_hybrid(b, cols, low, mask)]


def _trial(b: _Builder, build: Callable[[], list[int]]) -> int:
    """The depth the last of `build`'s wires would reach, its gates taken back."""
    marks = len(b.depth), len(b.xor_gates), len(b.and_gates)
    depth = max((b.depth[w] for w in build()), default=0)
    del b.depth[marks[0] :], b.level[marks[0] :], b.xor_gates[marks[1] :]
    del b.and_gates[marks[2] :]
    return depth


def carry_depth(b: _Builder, cols: Columns, mask: int = ONE) -> int:
    """The depth `carry_in` reaches at the earliest (its tree over all the columns)."""
    return _trial(b, partial(_hybrid_bits, b, cols, 0, mask))


def carry_in(b: _Builder, cols: Columns, deadline: int = 0, mask: int = ONE) -> int:
    """The carry into the column above `cols` (at most two bits each) when their two rows are
    added, AND `mask`: rippled through as many low columns as leave it no later than `_tree`
    over all of them has it, or than `deadline` (a ripple costs one AND a column, the tree
    about three)."""
    best = max(deadline, carry_depth(b, cols, mask))
    low = next(k for k in range(len(cols), -1, -1)
               if k == 0 or _trial(b, partial(_hybrid_bits, b, cols, k, mask)) <= best)  # fmt: skip
    return _hybrid(b, cols, low, mask)


def sign(b: _Builder, terms: Sequence[Term], const: int = 0, deadline: int = 0) -> int:
    """[sum(weight * value) + const >= 0], public weights and constant (`carry_in`'s
    deadline)."""
    cols = compress(b, columns(b, terms, const, width_for(terms, const)))
    return b.not_(b.xor_all([*cols[-1], carry_in(b, cols[:-1], deadline)]))


def _prefix_sum(b: _Builder, cols: Columns, low: int) -> list[int]:
    """The bits of the two rows' sum mod 2^len(cols): carries rippled through the lowest `low`
    columns, a Sklansky prefix over the rest above that carry."""
    out, carry = [], ZERO
    for col in cols[:low]:
        x, y = [*col, ZERO, ZERO][:2]
        out.append(b.xor(b.xor(x, y), carry))
        carry = b.xor(carry, b.and_(b.xor(x, carry), b.xor(y, carry)))
    gp = [_gp(b, col) for col in cols[low:]]
    # prefix[k] = (G, P) of groups 0..k (the carry in, if any, then columns low..): the
    # carry above them.
    prefix = [(carry, ZERO), *gp] if low else list(gp)
    span = 1
    while span < len(prefix):
        for k in range(len(prefix)):
            if (k // span) % 2 == 1:
                j = (k // span) * span - 1  # the top of the block below
                (g_hi, p_hi), (g_lo, p_lo) = prefix[k], prefix[j]
                g = b.xor(g_hi, b.and_(p_hi, g_lo))
                p = ZERO if j < span else b.and_(p_hi, p_lo)  # reaches the carry in: unused
                prefix[k] = (g, p)
        span *= 2
    below = (
        [prefix[k][0] for k in range(len(prefix))] if low else [ZERO] + [g for g, _ in prefix[:-1]]
    )  # the carry into each column of gp
    return out + [b.xor(p, c) for (_, p), c in zip(gp, below, strict=False)]


def add(b: _Builder, terms: Sequence[Term], const: int, width: int, slack: int = 0) -> list[int]:
    """The bits of sum(weight * value) + const mod 2^width: the compressed rows' carries
    rippled through as many low columns as leave every bit no more than `slack` rounds later
    than a Sklansky prefix over all of them has it."""
    cols = compress(b, columns(b, terms, const, width))

    best = slack + _trial(b, partial(_prefix_sum, b, cols, 0))
    low = next(k for k in range(width, -1, -1)
               if k == 0 or _trial(b, partial(_prefix_sum, b, cols, k)) <= best)  # fmt: skip
    return _prefix_sum(b, cols, low)


__all__ = [
    "Columns",
    "add",
    "carry_depth",
    "carry_in",
    "columns",
    "compress",
    "naf",
    "sign",
    "width_for",
]
