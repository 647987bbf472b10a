"""The link bit on the shares: S1 and S2 evaluate the kernel's test on each candidate pair by
boolean GMW on XOR shares, and C learns each pair's bits and, where it links, its rows
(docs/privacy-design.md, "The link bit on the shares", "The combiner without the
candidates").

Roles (semi-honest, non-colluding; the commodity model): S1 holds u = a1 ^ b1 and S2 holds
v = a2 ^ b2 for each pair, the XOR of their shares of the pair's two CLKs, so u ^ v = a ^ b,
whose popcount H is the pair's Hamming distance; and each holds XOR shares of |a| and |b|
(the members upload them). The circuit (`circuit`) tests the kernel's rule at public
cut-offs: [pa > 0], the pre-filter |pa - pb| <= pre(pa) at the threshold, and H <=
dice_j(pa + pb) at each cut-off, pre and dice the integer forms of the kernel's float64
tests (`rule`: a line floor((a x + c) / b), plus one at a few points where float64 rounding
leaves the line, checked on every pair of popcounts by tests/test_linkbit.py). C deals
generic Beaver triples (`deal`) and receives only the two servers' output shares (`reveal`):
it chooses no bound. C never sees a share of a CLK, of a popcount, or of d.

The circuit, evaluated bit-sliced (a wire is a uint64 array over the batch's pairs, bit k of
word j being pair 64j + k):

- the popcount of d's `n_bits` wires by carry-save reduction, column by column: full adders
  on triples of the bits of lowest AND-depth (one AND each: carry = c ^ ((a ^ c) & (b ^ c)),
  sum = a ^ b ^ c, so sums cascade with no AND-depth), a half adder where two bits are left,
  the top column (2^(L-1), L = n_bits.bit_length()) by XOR alone;
- each of the rule's comparisons as the sign of a weighted sum of secret bits with public
  weights (`_Builder.nonnegative`: a negative weight's bits enter negated, the constant as
  constant wires, the same column reduction, the sign column by XOR alone); the pre-filter's
  beside the popcount (its inputs are there from the start), each cut-off's after it;
- every AND of one AND-depth evaluated at once, one round: S1 and S2 exchange their masked
  inputs (x ^ a, y ^ b) of all of the round's gates, as Beaver multiplication does.

Triples: S1's share of every triple (a1, b1, c1) comes from a 32-byte seed C sends it; S2's
a2, b2 from a seed of its own, its c2 = (a1 ^ a2)(b1 ^ b2) ^ c1 explicitly: per pair, 1 bit
an AND gate from C to S2, 2 bits an AND gate each way between S1 and S2, 1 bit a cut-off
from each server to C, and with `tags` the pair's 64 row bits AND its link bit (a public bit
times a share, no gate), every output share padded by a seed S1 and S2 share (`Party.output`).
The PRG is AES-256-CTR keyed by the seed (one seed, one batch).

What each party sees: S1 its own shares, its seed, and S2's masked gate inputs, each one-time
padded by S2's seed stream, which S1 does not hold; S2 likewise (S1's pads from S1's seed,
C's c2 padded by c1); C only the output shares, whose XOR is the bits it is meant to learn.
tests/test_linkbit.py checks the circuit against the kernel and these views.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Words = npt.NDArray[np.uint64]
Index = npt.NDArray[np.intp]
Gates = tuple[Index, Index, Index]  # (out, a, b) wire ids

ZERO, ONE = 0, 1  # constant wires: shares (0, 0) and (1, 0)
SEED_BYTES = 32
BATCH = 1 << 14  # pairs a circuit evaluation (memory: ~8 kB a pair a party at 1,024 bits)
ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


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
                outputs: list[int]) -> Circuit:  # fmt: skip
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
        )


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
    best: Line | None = None
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
    column = list(range(2, 2 + n_bits))
    h: list[int] = []
    for w in range(levels):
        if w == levels - 1:
            h.append(b.xor_all(column))
            break
        bit, column = b.column(column)
        h.append(bit)
    # The pre-filter, beside the popcount (its inputs are there from the start).
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
    return b.compile(n_bits, cutoffs, pop_wires, outputs)


# --- the kernel's rule in the clear (the tests' reference) --------------------------------------


@lru_cache(maxsize=64)
def _largest_distance(
    threshold: float, n_bits: int, uncapped: bool = False
) -> npt.NDArray[np.int64]:
    """[S] -> the largest H <= min(S, n_bits) with float64 (S - H) / S >= threshold, for S in
    0..2 n_bits (the kernel's score, compared as the kernel compares it); -1 for S = 0.
    `uncapped`: H up to S (the same test wherever H <= n_bits)."""
    total = np.arange(2 * n_bits + 1, dtype=np.int64)[:, None]
    dist = np.arange((2 if uncapped else 1) * n_bits + 1, dtype=np.int64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (dist <= total) & ((total - dist).astype(np.float64) / total >= threshold)
    ok[0] = False
    out: npt.NDArray[np.int64] = ok.sum(axis=1).astype(np.int64) - 1  # monotone in H
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


# --- bit slicing and the PRG -----------------------------------------------------------------


def words_for(pairs: int) -> int:
    return (pairs + 63) // 64


def bitslice(rows: npt.NDArray[np.uint8], n_bits: int) -> Words:
    """(pairs, bytes) -> (n_bits, words): wire i's bit of pair k at word k // 64, bit k % 64
    (bit i of a row is bit i % 8 of byte i // 8)."""
    pairs, width = rows.shape
    words = words_for(pairs)
    padded = np.zeros((64 * words, width), dtype=np.uint8)
    padded[:pairs] = rows
    # (bytes, words, 64 pairs), contiguous: each bit plane then packs along the last axis.
    by_byte = np.ascontiguousarray(padded.reshape(words, 64, width).transpose(2, 0, 1))
    packed = np.empty((width, 8, words, 8), dtype=np.uint8)
    for s in range(8):
        packed[:, s] = np.packbits((by_byte >> s) & 1, axis=-1, bitorder="little")
    out: Words = packed.reshape(8 * width, 8 * words).view("<u8")[:n_bits].astype(np.uint64)
    return out


def unslice(wires: Words, pairs: int) -> npt.NDArray[np.bool_]:
    """(wires, words) -> (wires, pairs) bool."""
    raw = np.ascontiguousarray(wires).view(np.uint8)
    out: npt.NDArray[np.bool_] = np.unpackbits(raw, axis=1, bitorder="little")[:, :pairs] == 1
    return out


def _slice_ints(values: npt.NDArray[np.int64], bits: int) -> Words:
    """(n, pairs) ints -> (n * bits, words), value j's bit i at row j * bits + i."""
    n, pairs = values.shape
    planes = (values[:, None, :] >> np.arange(bits)[None, :, None]) & 1
    padded = np.zeros((n * bits, 64 * words_for(pairs)), dtype=np.uint8)
    padded[:, :pairs] = planes.reshape(n * bits, pairs)
    out: Words = np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(np.uint64)
    return out


def prg(seed: bytes, count: int) -> Words:
    """`count` pseudo-random uint64 words: AES-256-CTR under `seed`, from counter 0."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"link bits: a seed is {SEED_BYTES} bytes")
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(stream.update(bytes(8 * count)), dtype="<u8").astype(np.uint64)


def _triples(
    seed: bytes, c: Circuit, words: int, with_c: bool
) -> tuple[Words, Words, Words | None]:
    """A party's (a, b[, c]) from its seed: S1's all three, S2's a and b."""
    g = c.and_gates
    raw = prg(seed, (3 if with_c else 2) * g * words)
    a = raw[: g * words].reshape(g, words)
    b = raw[g * words : 2 * g * words].reshape(g, words)
    return a, b, raw[2 * g * words :].reshape(g, words) if with_c else None


# --- the three parties -------------------------------------------------------------------------


@dataclass(frozen=True)
class Deal:
    """C's messages for one batch: to S1 its seed; to S2 its seed and its c shares (packed
    words, bytes). Generic triples: nothing in them depends on the pairs."""

    to_s1: bytes
    to_s2: bytes
    pairs: int


def deal(c: Circuit, pairs: int, seeds: tuple[bytes, bytes] | None = None) -> Deal:
    """C: the Beaver triples of `c` for a batch of `pairs` pairs; `seeds` fixed only by tests
    (fresh random otherwise)."""
    if pairs < 0:
        raise ValueError("link bits: a batch of no pairs")
    words = words_for(pairs)
    s1, s2 = seeds or (secrets.token_bytes(SEED_BYTES), secrets.token_bytes(SEED_BYTES))
    a1, b1, c1 = _triples(s1, c, words, with_c=True)
    a2, b2, _ = _triples(s2, c, words, with_c=False)
    assert c1 is not None
    c2 = ((a1 ^ a2) & (b1 ^ b2)) ^ c1
    return Deal(s1, s2 + c2.tobytes(), pairs)


Pops = tuple[npt.NDArray[np.integer], npt.NDArray[np.integer]]


class Party:
    """S1 (role 0) or S2 (role 1) evaluating the circuit on its shares: `diffs` ((pairs,
    bytes): its share of each pair's a ^ b) and `pops` (its XOR shares of each pair's |a| and
    |b|), with the triples C sent it. Drive it by `open` (this round's message to the other
    server), `close` (the other's message), then `output` (to C)."""

    def __init__(
        self, role: int, c: Circuit, diffs: npt.NDArray[np.uint8], setup: bytes, pops: Pops
    ) -> None:
        if role not in (0, 1):
            raise ValueError("link bits: role 0 (S1) or 1 (S2)")
        if diffs.ndim != 2 or 8 * diffs.shape[1] < c.n_bits:
            raise ValueError("link bits: shares narrower than the circuit")
        self.role, self.circuit, self.pairs = role, c, len(diffs)
        if len(pops) != 2 or any(np.shape(p) != (self.pairs,) for p in pops):
            raise ValueError("link bits: a popcount share a CLK of each pair")
        popshares = np.stack([np.asarray(p, dtype=np.int64) for p in pops])
        if self.pairs and (popshares.min() < 0 or popshares.max() >> c.pop_bits):
            raise ValueError(f"link bits: a popcount share beyond {c.pop_bits} bits")
        words = words_for(self.pairs)
        g = c.and_gates
        self._a, self._b, cc = _triples(setup[:SEED_BYTES], c, words, with_c=role == 0)
        if role == 1:
            rest = np.frombuffer(setup[SEED_BYTES:], dtype="<u8").astype(np.uint64)
            if len(rest) != g * words:
                raise ValueError("link bits: S2's setup does not fit the batch")
            cc = rest.reshape(g, words)
        elif len(setup) != SEED_BYTES:
            raise ValueError("link bits: S1's setup is its seed")
        assert cc is not None
        self._c = cc
        self._w = np.zeros((c.n_wires, words), dtype=np.uint64)
        if role == 0:
            self._w[ONE] = ALL_ONES
        self._w[2 : 2 + c.n_bits] = bitslice(diffs, c.n_bits)
        self._w[c.pop_wires.ravel()] = _slice_ints(popshares, c.pop_bits)
        self._round = 0
        self._masked: tuple[Words, Words] | None = None
        self._xors(0)

    def _xors(self, depth: int) -> None:
        w = self._w
        for out, a, b in self.circuit.xors[depth] if depth < len(self.circuit.xors) else ():
            w[out] = w[a] ^ w[b]

    def open(self) -> bytes:
        """This round's masked AND inputs (x ^ a, y ^ b) of every gate, for the other server."""
        _, x, y = self.circuit.ands[self._round]
        g0, g1 = self.circuit.and_offsets[self._round : self._round + 2]
        e, f = self._w[x] ^ self._a[g0:g1], self._w[y] ^ self._b[g0:g1]
        self._masked = (e, f)
        return e.tobytes() + f.tobytes()

    def close(self, other: bytes) -> None:
        """The round's AND outputs from the other server's message, then the XORs they feed."""
        if self._masked is None:
            raise RuntimeError("link bits: close before open")
        e, f = self._masked
        theirs = np.frombuffer(other, dtype="<u8").astype(np.uint64)
        if theirs.size != 2 * e.size:
            raise ValueError("link bits: the other server's message does not fit the round")
        theirs = theirs.reshape(2, *e.shape)
        e, f = e ^ theirs[0], f ^ theirs[1]
        g0, g1 = self.circuit.and_offsets[self._round : self._round + 2]
        a, b = self._a[g0:g1], self._b[g0:g1]
        z = self._c[g0:g1] ^ (e & b) ^ (f & a)
        if self.role == 0:
            z ^= e & f
        self._w[self.circuit.ands[self._round][0]] = z
        self._round += 1
        self._masked = None
        self._xors(self._round)

    def output(
        self, tags: Words | None = None, keep: Words | None = None, mask: bytes | None = None
    ) -> bytes:
        """The shares of the output bits, for C: the cut-offs' bits, then with `tags` (public
        bits of each pair, `tags`) each tag bit AND the link bit (this server's link share
        AND the tag: the two XOR to link & tag, so C learns a pair's tags only where it
        links); with `keep` (a word row) every output 0 where its bit is clear; with `mask`
        (a seed S1 and S2 share, C does not) each share re-randomised by the same pad, so
        that each alone is uniform whatever the bits (a share of link & tag is otherwise the
        tag wherever the server's link share is 1)."""
        if self._round != self.circuit.rounds:
            raise RuntimeError("link bits: output before the last round")
        out = self._w[self.circuit.outputs]
        if tags is not None:
            out = np.concatenate([out, tags & out[0]])
        if keep is not None:
            out = out & keep
        if mask is not None:
            out = out ^ prg(mask, out.size).reshape(out.shape)
        return np.ascontiguousarray(out).tobytes()


TAG_BITS = 64  # a pair's tags: its row of member a, then of member b (32 bits each)


def tags(rows_a: npt.NDArray[np.integer], rows_b: npt.NDArray[np.integer]) -> Words:
    """(64, words): each pair's two rows as public wires, gated by its link bit in `output`."""
    both = np.stack([np.asarray(rows_a, np.int64), np.asarray(rows_b, np.int64)])
    return _slice_ints(both, TAG_BITS // 2)


def untag(bits: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """The rows (a, b) from `reveal`'s last 64 rows (0 where a pair does not link)."""
    weights = (np.uint64(1) << np.arange(TAG_BITS // 2, dtype=np.uint64))[:, None]
    half = TAG_BITS // 2
    rows_a = (bits[-TAG_BITS:-half].astype(np.uint64) * weights).sum(axis=0)
    rows_b = (bits[-half:].astype(np.uint64) * weights).sum(axis=0)
    return rows_a.astype(np.uint32), rows_b.astype(np.uint32)


def keep_row(drop: npt.NDArray[np.bool_]) -> Words:
    """(1, words): bit k set unless drop[k] (`Party.output`'s `keep`)."""
    return _slice_ints((~np.asarray(drop, bool)).astype(np.int64)[None, :], 1)


def reveal(
    c: Circuit, out1: bytes, out2: bytes, pairs: int, tagged: bool = False
) -> npt.NDArray[np.bool_]:
    """C: (cut-offs [+ 64 tag bits], pairs) output bits from the two servers' shares."""
    words = words_for(pairs)
    rows = c.n_outputs + (TAG_BITS if tagged else 0)
    one = np.frombuffer(out1, dtype="<u8").reshape(rows, words)
    two = np.frombuffer(out2, dtype="<u8").reshape(rows, words)
    return unslice((one ^ two).astype(np.uint64), pairs)


@dataclass
class Transcript:
    """What crossed between the parties: bytes by (sender, receiver), rounds S1 <-> S2, and,
    with `keep`, every message as (sender, receiver, what, payload)."""

    keep: bool = False
    sent: dict[tuple[str, str], int] = field(default_factory=dict)
    rounds: int = 0
    pairs: int = 0
    messages: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    def count(self, sender: str, receiver: str, nbytes: int) -> None:
        self.sent[sender, receiver] = self.sent.get((sender, receiver), 0) + nbytes

    def send(self, sender: str, receiver: str, what: str, payload: bytes) -> bytes:
        self.count(sender, receiver, len(payload))
        if self.keep:
            self.messages.append((sender, receiver, what, payload))
        return payload


def exchange(s1: Party, s2: Party, t: Transcript, clock: dict[str, float] | None = None) -> None:
    """The rounds between S1 and S2 (masked gate inputs each way); CPU s into `clock`."""
    spent = [0.0, 0.0]
    for _ in range(s1.circuit.rounds):
        t0 = time.process_time()
        m1 = t.send("S1", "S2", "round", s1.open())
        t1 = time.process_time()
        m2 = t.send("S2", "S1", "round", s2.open())
        t2 = time.process_time()
        s1.close(m2)
        t3 = time.process_time()
        s2.close(m1)
        spent[0] += t1 - t0 + t3 - t2
        spent[1] += t2 - t1 + time.process_time() - t3
        t.rounds += 1
    if clock is not None:
        for role, secs in zip(("S1", "S2"), spent, strict=True):
            clock[role] = clock.get(role, 0.0) + secs


def split_popcounts(
    pops: npt.NDArray[np.integer], n_bits: int
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """Two XOR shares of each popcount of an `n_bits`-bit CLK, each uniform on the circuit's
    n_bits.bit_length() bits (a member's, client/encoding/sharing.py)."""
    p = np.asarray(pops, dtype=np.uint32)
    if p.size and int(p.max()) > n_bits:
        raise ValueError(f"popcount shares: a popcount above {n_bits}")
    r = np.frombuffer(secrets.token_bytes(4 * p.size), dtype="<u4").astype(np.uint32)
    r = r.reshape(p.shape) & np.uint32((1 << n_bits.bit_length()) - 1)
    return r, r ^ p


def compare(
    diffs1: npt.NDArray[np.uint8],
    diffs2: npt.NDArray[np.uint8],
    pops1: Pops,
    pops2: Pops,
    cutoffs: Sequence[float],
    n_bits: int,
    transcript: Transcript | None = None,
    seeds: tuple[bytes, bytes] | None = None,
) -> npt.NDArray[np.bool_]:
    """The three roles on one batch: (cut-offs, pairs), the kernel's test at each cut-off on
    a = a1 ^ a2, b = b1 ^ b2 given each server's share of a ^ b and of |a|, |b|."""
    t = transcript if transcript is not None else Transcript()
    c = circuit(n_bits, tuple(cutoffs))
    d = deal(c, len(diffs1), seeds)
    s1 = Party(0, c, diffs1, t.send("C", "S1", "setup", d.to_s1), pops1)
    s2 = Party(1, c, diffs2, t.send("C", "S2", "setup", d.to_s2), pops2)
    exchange(s1, s2, t)
    out1 = t.send("S1", "C", "output", s1.output())
    out2 = t.send("S2", "C", "output", s2.output())
    t.pairs += d.pairs
    return reveal(c, out1, out2, d.pairs)
