"""The link bit on the shares: S1 and S2 compare each candidate pair's Hamming distance with the
threshold's bound by boolean GMW, and C learns the link bit and nothing more
(docs/privacy-design.md, "The link bit on the shares").

Roles (semi-honest, non-colluding; the commodity model): S1 holds u = a1 ^ b1 and S2 holds
v = a2 ^ b2 for each pair, the XOR of their shares of the pair's two CLKs, so u ^ v = a ^ b,
whose popcount H is the pair's Hamming distance; no permutation is needed. C, which knows
both popcounts, computes each pair's bound B (`hamming_bounds`: the pair links iff H < B,
exactly the kernel's test, popcount pre-filter included, B = 0 where the pre-filter fails),
deals the Beaver triples and XOR shares of B's bits (`deal`), and receives only the two
servers' shares of the output bits (`reveal`). C never sees a share of a CLK or of d.

The circuit (`circuit`), evaluated bit-sliced (a wire is a uint64 array over the batch's
pairs, bit k of word j being pair 64j + k):

- the popcount of d's `n_bits` wires by carry-save reduction, column by column: full adders
  on triples of the bits of lowest AND-depth (one AND each: carry = c ^ ((a ^ c) & (b ^ c)),
  sum = a ^ b ^ c, so sums cascade with no AND-depth), a half adder where two bits are left,
  the top column (2^(L-1), L = n_bits.bit_length()) by XOR alone (H < 2^L: its bits hold at
  most a single one); about n_bits AND gates, the carries of column w at AND-depth ~w;
- for each bound B_j, [H < B_j] = the carry out of B_j + ~H (a ripple of majorities, one AND
  a bit), which keeps pace with the popcount's columns;
- every AND of one AND-depth evaluated at once, one round: S1 and S2 exchange their masked
  inputs (x ^ a, y ^ b) of all of the round's gates, as Beaver multiplication does.

Triples: S1's share of every triple (a1, b1, c1) and of the bounds' bits comes from a 32-byte
seed C sends it; S2's a2, b2 from a seed of its own, its c2 = (a1 ^ a2)(b1 ^ b2) ^ c1 and its
share of the bounds' bits explicitly: per pair, 1 bit an AND gate plus 1 bit a bound bit from C
to S2, 2 bits an AND gate each way between S1 and S2, 1 bit a bound from each server to C. The
PRG is AES-256-CTR keyed by the seed (one seed, one batch).

What each party sees: S1 its own shares, its seed, and S2's masked gate inputs, each one-time
padded by S2's seed stream, which S1 does not hold; S2 likewise (S1's pads from S1's seed, C's
c2 and bound shares padded by c1 and S1's bound shares); C only the output shares, whose XOR is
the bits it is meant to learn. tests/test_linkbit.py checks the circuit against the plain test
and these views. Which pairs are compared (the batch) is known to all three, as in the
Dice-revealing step.
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
    d, then the bounds' bits (`bound_wires`, bound j's bit i); `outputs[j]` is [H < B_j]."""

    n_bits: int
    n_bounds: int
    bound_bits: int
    n_wires: int
    bound_wires: Index
    outputs: Index
    xors: tuple[tuple[Gates, ...], ...]  # xors[k]: the levels at AND-depth k, in order
    ands: tuple[Gates, ...]  # ands[r]: the gates of AND-depth r + 1 (round r)
    and_offsets: tuple[int, ...]  # triple index of round r's first gate; last = all gates

    @property
    def rounds(self) -> int:
        return len(self.ands)

    @property
    def and_gates(self) -> int:
        return self.and_offsets[-1]


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

    def and_(self, a: int, b: int) -> int:
        out = self._wire(1 + max(self.depth[a], self.depth[b]), 0)
        self.and_gates.append((out, a, b))
        return out

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

    def compile(self, n_bits: int, bound_wires: Index, outputs: list[int]) -> Circuit:
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
            n_bounds=len(outputs),
            bound_bits=bound_wires.shape[1],
            n_wires=len(self.depth),
            bound_wires=bound_wires,
            outputs=np.asarray(outputs, dtype=np.intp),
            xors=xors,
            ands=ands,
            and_offsets=tuple(int(x) for x in offsets),
        )


@lru_cache(maxsize=16)
def circuit(n_bits: int, n_bounds: int = 1) -> Circuit:
    """[popcount(d) < B_j] for j < n_bounds, d of `n_bits` bits, each B_j <= n_bits + 1."""
    if n_bits < 1 or n_bounds < 1:
        raise ValueError(f"link-bit circuit: {n_bits} bits, {n_bounds} bounds")
    levels = n_bits.bit_length()  # H <= n_bits < 2^levels
    bound_bits = (n_bits + 1).bit_length()  # B <= n_bits + 1 < 2^bound_bits
    first_bound = 2 + n_bits
    b = _Builder(first_bound + n_bounds * bound_bits)
    bound_wires: Index = np.arange(
        first_bound, first_bound + n_bounds * bound_bits, dtype=np.intp
    ).reshape(n_bounds, bound_bits)
    column = list(range(2, 2 + n_bits))
    h: list[int] = []
    for w in range(levels):
        if w == levels - 1:
            h.append(b.xor_all(column))
            break
        bit, column = b.column(column)
        h.append(bit)
    h += [ZERO] * (bound_bits - len(h))
    outputs = []
    for j in range(n_bounds):
        carry = ZERO  # the carry of B_j + ~H: 1 at the top iff B_j > H
        for i in range(bound_bits):
            not_h = b.xor(h[i], ONE)
            x = b.xor(int(bound_wires[j, i]), carry)
            carry = b.xor(carry, b.and_(x, b.xor(not_h, carry)))
        outputs.append(carry)
    return b.compile(n_bits, bound_wires, outputs)


# --- C's bounds --------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _largest_distance(threshold: float, n_bits: int) -> npt.NDArray[np.int64]:
    """[S] -> the largest H <= min(S, n_bits) with float64 (S - H) / S >= threshold, for S in
    0..2 n_bits (the kernel's score, compared as the kernel compares it); -1 for S = 0."""
    total = np.arange(2 * n_bits + 1, dtype=np.int64)[:, None]
    dist = np.arange(n_bits + 1, dtype=np.int64)[None, :]
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
    pre-filter fails, so that those pairs go through the circuit too and S1 and S2 do not
    learn which fail it. B <= n_bits + 1."""
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
) -> tuple[Words, Words, Words | None, Words | None]:
    """A party's (a, b[, c, bounds' share]) from its seed: S1's all four, S2's a and b."""
    g, nb = c.and_gates, c.n_bounds * c.bound_bits
    raw = prg(seed, (3 * g + nb if with_c else 2 * g) * words)
    a = raw[: g * words].reshape(g, words)
    b = raw[g * words : 2 * g * words].reshape(g, words)
    if not with_c:
        return a, b, None, None
    cc = raw[2 * g * words : 3 * g * words].reshape(g, words)
    return a, b, cc, raw[3 * g * words :].reshape(nb, words)


# --- the three parties -------------------------------------------------------------------------


@dataclass(frozen=True)
class Deal:
    """C's messages for one batch: to S1 its seed; to S2 its seed, its c shares and its
    shares of the bounds' bits (packed words, bytes)."""

    to_s1: bytes
    to_s2: bytes
    pairs: int


def deal(
    c: Circuit, bounds: npt.NDArray[np.int64], seeds: tuple[bytes, bytes] | None = None
) -> Deal:
    """C: triples and bound shares for a batch of pairs with `bounds` ((n_bounds, pairs),
    `hamming_bounds`); `seeds` fixed only by tests (fresh random otherwise)."""
    if bounds.ndim != 2 or bounds.shape[0] != c.n_bounds:
        raise ValueError("link bits: one row of bounds a bound of the circuit")
    if bounds.size and (int(bounds.min()) < 0 or int(bounds.max()) > c.n_bits + 1):
        raise ValueError(f"link bits: a bound outside 0..{c.n_bits + 1}")
    pairs = bounds.shape[1]
    words = words_for(pairs)
    s1, s2 = seeds or (secrets.token_bytes(SEED_BYTES), secrets.token_bytes(SEED_BYTES))
    a1, b1, c1, r1 = _triples(s1, c, words, with_c=True)
    a2, b2, _, _ = _triples(s2, c, words, with_c=False)
    assert c1 is not None and r1 is not None
    c2 = ((a1 ^ a2) & (b1 ^ b2)) ^ c1
    shares = _slice_ints(bounds, c.bound_bits) ^ r1
    return Deal(s1, s2 + c2.tobytes() + shares.tobytes(), pairs)


class Party:
    """S1 (role 0) or S2 (role 1) evaluating the circuit on its shares `diffs` ((pairs, bytes):
    its share of each pair's a ^ b) with what C sent it. Drive it by `open` (this round's
    message to the other server), `close` (the other's message), then `output` (to C)."""

    def __init__(self, role: int, c: Circuit, diffs: npt.NDArray[np.uint8], setup: bytes) -> None:
        if role not in (0, 1):
            raise ValueError("link bits: role 0 (S1) or 1 (S2)")
        if diffs.ndim != 2 or 8 * diffs.shape[1] < c.n_bits:
            raise ValueError("link bits: shares narrower than the circuit")
        self.role, self.circuit, self.pairs = role, c, len(diffs)
        words = words_for(self.pairs)
        g, nb = c.and_gates, c.n_bounds * c.bound_bits
        self._a, self._b, cc, r = _triples(setup[:SEED_BYTES], c, words, with_c=role == 0)
        if role == 1:
            rest = np.frombuffer(setup[SEED_BYTES:], dtype="<u8").astype(np.uint64)
            if len(rest) != (g + nb) * words:
                raise ValueError("link bits: S2's setup does not fit the batch")
            cc, r = rest[: g * words].reshape(g, words), rest[g * words :].reshape(nb, words)
        elif len(setup) != SEED_BYTES:
            raise ValueError("link bits: S1's setup is its seed")
        assert cc is not None and r is not None
        self._c = cc
        self._w = np.zeros((c.n_wires, words), dtype=np.uint64)
        if role == 0:
            self._w[ONE] = ALL_ONES
        self._w[2 : 2 + c.n_bits] = bitslice(diffs, c.n_bits)
        self._w[c.bound_wires.ravel()] = r
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

    def output(self) -> bytes:
        """The shares of the output bits, for C."""
        if self._round != self.circuit.rounds:
            raise RuntimeError("link bits: output before the last round")
        return self._w[self.circuit.outputs].tobytes()


def reveal(c: Circuit, out1: bytes, out2: bytes, pairs: int) -> npt.NDArray[np.bool_]:
    """C: (n_bounds, pairs) output bits from the two servers' shares."""
    words = words_for(pairs)
    one = np.frombuffer(out1, dtype="<u8").reshape(c.n_bounds, words)
    two = np.frombuffer(out2, dtype="<u8").reshape(c.n_bounds, words)
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


def compare(
    diffs1: npt.NDArray[np.uint8],
    diffs2: npt.NDArray[np.uint8],
    bounds: npt.NDArray[np.int64],
    n_bits: int,
    transcript: Transcript | None = None,
    seeds: tuple[bytes, bytes] | None = None,
) -> npt.NDArray[np.bool_]:
    """The three roles on one batch: (n_bounds, pairs), [popcount(diffs1 ^ diffs2) < bound]."""
    t = transcript if transcript is not None else Transcript()
    c = circuit(n_bits, bounds.shape[0])
    d = deal(c, bounds, seeds)
    s1 = Party(0, c, diffs1, t.send("C", "S1", "setup", d.to_s1))
    s2 = Party(1, c, diffs2, t.send("C", "S2", "setup", d.to_s2))
    exchange(s1, s2, t)
    out1 = t.send("S1", "C", "output", s1.output())
    out2 = t.send("S2", "C", "output", s2.output())
    t.pairs += d.pairs
    return reveal(c, out1, out2, d.pairs)
