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
a2, b2 from a seed of its own, its c2 = (a1 ^ a2)(b1 ^ b2) ^ c1 explicitly, for twice the
AND gates' rows and two more (S1 and S2 check them: core/triplecheck.py): per pair, 2 bits
an AND gate from C to S2, 4 bits an AND gate each way between S1 and S2 (2 the check's, 2
the rounds'), 1 bit a cut-off from each server to C, and with `tags` the pair's 64 row bits
AND its link bit (a public bit times a share, no gate), every output share padded by a seed
S1 and S2 share (`Party.output`). The PRG is AES-256-CTR keyed by the seed (one seed, one
batch). C deals rows, not gates: once both servers hold their deal, each sends the other 32
fresh random bytes and the XOR orders the rows (`Party.agree`), so a row C dealt wrong (a
flipped c2 bit) lands on a gate, spare or opened row C cannot choose, and the check finds it
(`Party.check`, `verify`, `confirm`; docs/privacy-design.md, "What a dishonest combiner can
still learn").

What each party sees: S1 its own shares, its seed, and S2's masked gate inputs, each one-time
padded by S2's seed stream, which S1 does not hold, and S2's rho and sigma of the check, each
padded by a spare row's a or b, which serves nothing else; S2 likewise (S1's pads from S1's seed,
C's c2 padded by c1); C only the output shares, whose XOR is the bits it is meant to learn.
tests/test_linkbit.py checks the circuit against the kernel and these views.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from blindmatch.matcher.core import triplecheck
from blindmatch.matcher.core.gmwcircuit import ONE as ONE
from blindmatch.matcher.core.gmwcircuit import ZERO as ZERO
from blindmatch.matcher.core.gmwcircuit import Circuit as Circuit
from blindmatch.matcher.core.gmwcircuit import circuit as circuit
from blindmatch.matcher.core.kernelrule import Line as Line
from blindmatch.matcher.core.kernelrule import Rule as Rule
from blindmatch.matcher.core.kernelrule import fit_line as fit_line
from blindmatch.matcher.core.kernelrule import hamming_bounds as hamming_bounds
from blindmatch.matcher.core.kernelrule import prefilter as prefilter
from blindmatch.matcher.core.kernelrule import rule as rule

Words = npt.NDArray[np.uint64]
SEED_BYTES = 32
BATCH = 1 << 14  # pairs a circuit evaluation (memory: ~8 kB a pair a party at 1,024 bits)
BLOCK_BATCH = 1 << 16  # on a part's blocks' H shares, as both servers allow (docs/protocol.md)
ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


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


_PRG_CHUNK = bytes(1 << 16)  # zeros the stream encrypts a chunk at a time (in the cache)


def prg(seed: bytes, count: int) -> Words:
    """`count` pseudo-random uint64 words: AES-256-CTR under `seed`, from counter 0 (64 kB of
    zeros encrypted at a time into the words' own memory: the stream all at once, without its
    copies; docs/performance.md "Where a two-server run's CPU goes")."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"link bits: a seed is {SEED_BYTES} bytes")
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    out = np.empty(count + 2, dtype="<u8")  # (update_into wants a block less a byte spare)
    raw, total, step = out.data.cast("B"), 8 * count, len(_PRG_CHUNK)
    for at in range(0, total, step):
        n = min(step, total - at)
        stream.update_into(_PRG_CHUNK if n == step else _PRG_CHUNK[:n], raw[at : at + n + 15])
    words: Words = out[:count]
    return words


def dealt_rows(c: Circuit) -> int:
    """The triple rows C deals for `c` (a row: a bit a pair of the batch): two a gate and
    `triplecheck.OPENED` more. S1 and S2 choose which row serves which gate and which is
    sacrificed or opened (`Party.agree`, core/triplecheck.py)."""
    return triplecheck.rows(c.and_gates)


def _triples(seed: bytes, g: int, words: int, with_c: bool) -> tuple[Words, Words, Words | None]:
    """A party's (a, b[, c]) of `g` rows from its seed: S1's all three, S2's a and b."""
    raw = prg(seed, (3 if with_c else 2) * g * words)
    a = raw[: g * words].reshape(g, words)
    b = raw[g * words : 2 * g * words].reshape(g, words)
    return a, b, raw[2 * g * words :].reshape(g, words) if with_c else None


# --- the three parties -------------------------------------------------------------------------


@dataclass(frozen=True)
class Deal:
    """C's messages for one batch: to S1 its seed; to S2 its seed and its c shares of the
    `dealt_rows` rows (packed words, bytes). Generic triples: nothing in them depends on the
    pairs."""

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
    rows = dealt_rows(c)
    a1, b1, c1 = _triples(s1, rows, words, with_c=True)
    a2, b2, _ = _triples(s2, rows, words, with_c=False)
    assert c1 is not None
    c2 = ((a1 ^ a2) & (b1 ^ b2)) ^ c1
    return Deal(s1, s2 + c2.tobytes(), pairs)


Pops = Sequence[npt.NDArray[np.integer]]
Diffs = npt.NDArray[np.uint8] | tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


class Party:
    """S1 (role 0) or S2 (role 1) evaluating the circuit on its shares: `diffs` ((pairs,
    bytes): its share of each pair's a ^ b; for the gap rule's circuit, core/gmwrule.py, a
    pair of them, the first CLKs' and the fallback CLKs') and `pops` (its XOR shares of each
    pair's |a| and |b|; the rule's: |a1|, |b1|, |a2|, |b2|), with the triples C sent it.
    Drive it by `open` (this round's message to the other server), `close` (the other's
    message), then `output` (to C); first `agree` on the rows with the other's `nonce`
    (`nonce` fixed only by tests and benchmarks, fresh random otherwise)."""

    def __init__(
        self, role: int, c: Circuit, diffs: Diffs, setup: bytes, pops: Pops,
        nonce: bytes | None = None,
    ) -> None:  # fmt: skip
        if role not in (0, 1):
            raise ValueError("link bits: role 0 (S1) or 1 (S2)")
        both = diffs if isinstance(diffs, tuple) else (diffs,)
        widths = (c.n_bits, c.n_bits2) if c.n_bits2 else (c.n_bits,)
        if len(both) != len(widths) or any(
            d.ndim != 2 or 8 * d.shape[1] < n or len(d) != len(both[0])
            for d, n in zip(both, widths, strict=False)
        ):
            raise ValueError("link bits: shares narrower than the circuit, or not one a CLK")
        self.role, self.circuit, self.pairs = role, c, len(both[0])
        if len(pops) != len(c.pop_wires) or any(np.shape(p) != (self.pairs,) for p in pops):
            raise ValueError("link bits: a popcount share a CLK of each pair")
        popshares = np.stack([np.asarray(p, dtype=np.int64) for p in pops])
        if self.pairs and (popshares.min() < 0 or popshares.max() >> c.pop_bits):
            raise ValueError(f"link bits: a popcount share beyond {c.pop_bits} bits")
        words = words_for(self.pairs)
        g = dealt_rows(c)
        a, b, cc = _triples(setup[:SEED_BYTES], g, words, with_c=role == 0)
        if role == 1:
            rest = np.frombuffer(setup[SEED_BYTES:], dtype="<u8").astype(np.uint64)
            if len(rest) != g * words:
                raise ValueError("link bits: S2's setup does not fit the batch")
            cc = rest.reshape(g, words)
        elif len(setup) != SEED_BYTES:
            raise ValueError("link bits: S1's setup is its seed")
        assert cc is not None
        self._dealt = (a, b, cc)
        self._a = self._b = self._c = np.zeros((0, words), dtype=np.uint64)
        self._nonce = nonce or secrets.token_bytes(SEED_BYTES)  # fixed only by tests
        self._agreed = False
        self._check: tuple[bytes, bytes, int] | None = None  # mine, digest, opened wrong
        self._message: bytes | None = None  # `check`'s, built once (sent, then verified)
        self._checked = False
        self._w = np.zeros((c.n_wires, words), dtype=np.uint64)
        if role == 0:
            self._w[ONE] = ALL_ONES
        at = 2
        for d, n in zip(both, widths, strict=True):
            self._w[at : at + n] = bitslice(d, n)
            at += n
        self._w[c.pop_wires.ravel()] = _slice_ints(popshares, c.pop_bits)
        self._round = 0
        self._masked: tuple[Words, Words] | None = None
        self._xors(0)

    def _xors(self, depth: int) -> None:
        w = self._w
        for out, a, b in self.circuit.xors[depth] if depth < len(self.circuit.xors) else ():
            w[out] = w[a] ^ w[b]

    def nonce(self) -> bytes:
        """This server's fresh random bytes for `agree`, for the other server (sent once both
        hold their deal: C cannot know them when it deals)."""
        return self._nonce

    def agree(self, theirs: bytes) -> None:
        """Which dealt row serves which AND gate, from both servers' nonces (XOR): a uniform
        permutation of the rows (every row is a generic triple of the batch's width, so any
        serves any gate of any round), so that C, which dealt the rows, does not know which
        gate a row it chose serves."""
        if self._agreed:
            raise RuntimeError("link bits: the rows are agreed already")
        if len(theirs) != SEED_BYTES:
            raise ValueError(f"link bits: the other server's nonce is {SEED_BYTES} bytes")
        joint = bytes(x ^ y for x, y in zip(self._nonce, theirs, strict=True))
        at = triplecheck.layout(row_order(joint, len(self._dealt[0])), self.circuit.and_gates)
        self._a, self._b, self._c = (rows[at.gates] for rows in self._dealt)
        a, b, c = self._dealt
        self._spare = (a[at.spare], b[at.spare], c[at.spare])
        self._opened = (a[at.opened], b[at.opened], c[at.opened])
        self._agreed = True

    def check(self) -> bytes:
        """This server's half of the triples' check (core/triplecheck.py), for the other:
        rho and sigma of every gate's row against its spare, the opened rows' shares."""
        if not self._agreed:
            raise RuntimeError("link bits: check before the servers agree on the rows")
        if self._message is None:
            used = (self._a, self._b, self._c)
            self._message = triplecheck.message(used, self._spare, self._opened)
        return self._message

    def verify(self, theirs: bytes) -> bytes:
        """The digest of this server's share of the sacrifice's t, from the other's `check`
        (for the other's `confirm`)."""
        mine = self.check()
        used = (self._a, self._b, self._c)
        digest = triplecheck.digest(self.role, mine, theirs, used, self._spare)
        wrong = triplecheck.opened_wrong(mine, theirs, self.circuit.and_gates, self._a.shape[1])
        self._check = (mine, digest, wrong)
        return digest

    def confirm(self, their_digest: bytes) -> None:
        """The check's verdict: `triplecheck.DealRefused` unless both servers' shares of t
        are equal (t = 0 on every bit) and every opened row is a triple; `output` only
        after it passed."""
        if self._check is None:
            raise RuntimeError("link bits: confirm before verify")
        _, digest, wrong = self._check
        if wrong:
            raise triplecheck.DealRefused(
                f"{wrong} of the {triplecheck.OPENED} triple rows opened are not triples"
            )
        if their_digest != digest:
            raise triplecheck.DealRefused(
                "the sacrifice of the dealt triples failed: a gate's triple and its spare "
                "are not both c = ab"
            )
        self._checked = True

    def open(self) -> bytes:
        """This round's masked AND inputs (x ^ a, y ^ b) of every gate, for the other server."""
        if not self._agreed:
            raise RuntimeError("link bits: open before the servers agree on the rows")
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
        if not self._checked:
            raise RuntimeError("link bits: output before the triples are checked (confirm)")
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


def row_order(joint: bytes, rows: int) -> npt.NDArray[np.intp]:
    """A uniform permutation of `rows` from the servers' joint seed (AES-CTR keys, sorted)."""
    order: npt.NDArray[np.intp] = np.argsort(prg(joint, rows), kind="stable")
    return order


def exchange(s1: Party, s2: Party, t: Transcript, clock: dict[str, float] | None = None) -> None:
    """The rounds between S1 and S2: the nonces each way (`Party.agree`), then the masked
    gate inputs each way, a round an AND-depth; CPU s into `clock`."""
    spent = [0.0, 0.0]
    t0 = time.process_time()
    s1.agree(t.send("S2", "S1", "nonce", s2.nonce()))
    t1 = time.process_time()
    s2.agree(t.send("S1", "S2", "nonce", s1.nonce()))
    t2 = time.process_time()
    m1 = t.send("S1", "S2", "check", s1.check())
    t3 = time.process_time()
    d2 = t.send("S2", "S1", "digest", s2.verify(m1))
    m2 = t.send("S2", "S1", "check", s2.check())
    t4 = time.process_time()
    d1 = t.send("S1", "S2", "digest", s1.verify(m2))
    s1.confirm(d2)
    t5 = time.process_time()
    s2.confirm(d1)
    spent[0] += t1 - t0 + t3 - t2 + t5 - t4
    spent[1] += t2 - t1 + t4 - t3 + time.process_time() - t5
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
    diffs1: Diffs,
    diffs2: Diffs,
    pops1: Pops,
    pops2: Pops,
    cutoffs: Sequence[float],
    n_bits: int,
    transcript: Transcript | None = None,
    seeds: tuple[bytes, bytes] | None = None,
    c: Circuit | None = None,
) -> npt.NDArray[np.bool_]:
    """The three roles on one batch: (cut-offs, pairs), the kernel's test at each cut-off on
    a = a1 ^ a2, b = b1 ^ b2 given each server's share of a ^ b and of |a|, |b| (or `c`'s
    test, such as the gap rule's on both CLKs' shares: core/gmwrule.py)."""
    t = transcript if transcript is not None else Transcript()
    c = c or circuit(n_bits, tuple(cutoffs))
    d = deal(c, len(diffs1[0] if isinstance(diffs1, tuple) else diffs1), seeds)
    s1 = Party(0, c, diffs1, t.send("C", "S1", "setup", d.to_s1), pops1)
    s2 = Party(1, c, diffs2, t.send("C", "S2", "setup", d.to_s2), pops2)
    exchange(s1, s2, t)
    out1 = t.send("S1", "C", "output", s1.output())
    out2 = t.send("S2", "C", "output", s2.output())
    t.pairs += d.pairs
    return reveal(c, out1, out2, d.pairs)
