"""A block's link bits with the rule's margin by arithmetic (docs/privacy-design.md "A whole
block by arithmetic sharing"): after core/densearith.py has given S1 and S2 every pair's H1,
H2 as additive shares mod 2^l, the gap rule goes through core/margincircuit.py's two small
circuits with core/ring64.py's arithmetic between them, rather than core/gmwsum.py's circuit
(1,902 AND gates a pair at 1,024 + 1,024 bits and four cut-offs; 474 here, 253 with the
signs' carries rippled: core/margincircuit.py `plan`'s `depth`).

For a block: C deals core/densearith.py's block deal and `pops_deal` (daBits for the bits of
each record's two popcounts: each server's additive shares of pa1, pa2 of A's records and
pb1, pb2 of B's, mod 2^64, once a record, `convert_pops`). Then a batch of pairs (`deal`, a
setup a server: the first circuit's triples, the batch's daBits and triples mod 2^64, the
second circuit's triples) goes through `Side`, one a server, driven by `exchange`:

1. the first circuit (core/linkbit.py rounds, its triples checked first): XOR shares of
   [pa1 > 0] and of the bits to convert (each H's wrap, z2, the lines' extra points);
2. `convert` / `multiply` / `finish`, two messages each way: the bits to additive shares by
   the daBits, H = h1 + h2 - 2^l wrap, Σ = pa + pb, Σ2' and H2*; the three products Σ1 Σ2',
   H1 Σ2', H2* Σ1 by the triples; the daBits and triples checked by sacrifice (core/ring64.py,
   `DealRefused` before step 3); each test's value (up, down, dice, each cut-off's margin)
   locally, S1 adding the public constants;
3. the second circuit on each value's shares mod 2^w (its owner's input, no message): the
   signs, their AND; `output` to C, whose `reveal` gives core/gmwsum.py's bits.

A C that deals any value wrong is refused before any output share leaves S1 or S2: the
circuits' triples by core/triplecheck.py, the rest by core/densearith.py's and
core/ring64.py's sacrifices. `compare` is the three roles on a whole block in this process
(tests/test_densemargin.py, benchmarks/densearith.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import densearith, denseblock, linkbit, ring64
from blindmatch.matcher.core.crosspart import _within
from blindmatch.matcher.core.gmwsum import addends
from blindmatch.matcher.core.margincircuit import Plan, plan, slot
from blindmatch.matcher.core.twoblocking import PairBatch
from blindmatch.matcher.domain import Rule

U64 = npt.NDArray[np.uint64]
Bits = npt.NDArray[np.bool_]
Clock = dict[str, float]
Ints = npt.NDArray[np.integer]
T = TypeVar("T")


def _timed(clock: Clock | None, role: str, step: Callable[..., T], *args: object) -> T:
    t0 = time.process_time()
    out = step(*args)
    if clock is not None:
        clock[role] = clock.get(role, 0.0) + time.process_time() - t0
    return out


# --- the records' popcounts, once a block --------------------------------------------------


def pops_size(p: Plan, records: int) -> ring64.Size:
    """A daBit a bit of each record's two popcounts (l1 + l2 bits)."""
    return ring64.Size(records * sum(p.levels), 0)


def pops_deal(p: Plan, records: int, seeds: tuple[bytes, bytes] | None = None) -> ring64.Deal:
    """C: the daBits of a block's records' popcounts (its rows, A's then B's)."""
    return ring64.deal(pops_size(p, records), seeds)


def pop_bits(p: Plan, pops: Sequence[npt.NDArray[np.integer]]) -> npt.NDArray[np.uint8]:
    """(records, l1 + l2): a server's XOR shares of each record's two popcounts, bit by bit."""
    cols = []
    for pop, levels in zip(pops, p.levels, strict=True):
        v = np.asarray(pop, dtype=np.uint64)
        cols.append((v[:, None] >> np.arange(levels, dtype=np.uint64)) & np.uint64(1))
    return np.hstack(cols).astype(np.uint8)


def pop_values(p: Plan, converted: U64, records: int) -> list[U64]:
    """A server's additive shares (mod 2^64) of each record's two popcounts from the
    conversion of `pop_bits`."""
    bits = converted.reshape(records, sum(p.levels))
    l1 = p.levels[0]
    out = []
    for part in (bits[:, :l1], bits[:, l1:]):
        weights = np.uint64(1) << np.arange(part.shape[1], dtype=np.uint64)
        out.append((part * weights[None, :]).sum(axis=1, dtype=np.uint64))
    return out


def convert_pops(p: Plan, one: ring64.Party, two: ring64.Party,
                 pops: tuple[Sequence[npt.NDArray[np.integer]], Sequence[npt.NDArray[np.integer]]],
                 t: linkbit.Transcript, clock: Clock | None = None,
                 ) -> tuple[list[U64], list[U64]]:  # fmt: skip
    """S1 and S2 turn their XOR shares of the records' popcounts (`pops[role][clk]`) into
    additive shares mod 2^64, the daBits checked (`DealRefused` otherwise)."""
    records = len(pops[0][0])
    bits = (pop_bits(p, pops[0]).ravel(), pop_bits(p, pops[1]).ravel())
    got = ring64.exchange(one, two, bits, t, clock)
    return pop_values(p, got[0], records), pop_values(p, got[1], records)


# --- a batch of pairs ----------------------------------------------------------------------


def batch_size(p: Plan, pairs: int) -> ring64.Size:
    """A batch's daBits (each converted bit of each pair) and triples (three a pair, their
    products wanted mod 2^w, w the widest test's width in whole bytes)."""
    return ring64.Size(len(p.converted) * pairs, 3 * pairs, (max(p.widths) + 7) // 8)


@dataclass(frozen=True)
class Deal(linkbit.Deal):
    """C's messages for a batch: a server's setups of the first circuit, the arithmetic and
    the second circuit, one after the other (S1's three seeds); a run's batch of a part's
    blocks takes it where it would take a circuit's (core/tworun.py `proposed_links`)."""


def deal(p: Plan, pairs: int) -> Deal:
    """C: a batch's triples of both circuits and its daBits and triples mod 2^64 (generic:
    nothing depends on the pairs but their number)."""
    one, two = linkbit.deal(p.first, pairs), linkbit.deal(p.second, pairs)
    arith = ring64.deal(batch_size(p, pairs))
    return Deal(one.to_s1 + arith.to_s1 + two.to_s1, one.to_s2 + arith.to_s2 + two.to_s2, pairs)


# A server's nonces: the first circuit's, the arithmetic's, the second circuit's.
NONCE_BYTES = 3 * linkbit.SEED_BYTES


def setup_sizes(p: Plan, role: int, pairs: int) -> list[int]:
    """Server `role`'s setup of a batch of `pairs` pairs (`deal`): its first circuit's, its
    arithmetic's and its second circuit's lengths."""
    words = linkbit.words_for(pairs)
    sizes = [linkbit.SEED_BYTES + (8 * linkbit.dealt_rows(c) * words if role else 0)
             for c in (p.first, p.second)]  # fmt: skip
    sizes.insert(1, batch_size(p, pairs).setup_bytes[role])
    return sizes


def _split_setup(p: Plan, role: int, pairs: int, setup: bytes) -> list[bytes]:
    sizes = setup_sizes(p, role, pairs)
    if len(setup) != sum(sizes):
        raise ValueError("the margin: a setup that does not fit the batch")
    return [setup[sum(sizes[:k]) : sum(sizes[: k + 1])] for k in range(3)]


@lru_cache(maxsize=16)
def _slots(widths: tuple[int, ...], role: int) -> tuple[list[int], list[int], int]:
    """The second circuit's input bytes a pair from each test's 8-byte value (tests side by
    side, `widths` theirs): the value's bytes read (`src`), where they go (`dst`: this
    server's slot of the test's two, S1's first), and the bytes a pair in all."""
    src: list[int] = []
    dst: list[int] = []
    at = 0
    for t, w in enumerate(widths):
        k = slot(w) // 8
        src += range(8 * t, 8 * t + k)
        dst += range(at + role * k, at + (role + 1) * k)
        at += 2 * k
    return src, dst, at


def _mod(v: U64, width: int) -> U64:
    out: U64 = v & np.uint64((1 << width) - 1)
    return out


class Side:
    """S1 (role 0) or S2 (role 1) on a batch of a block's pairs: `h` its additive shares of
    the pairs' H1, H2 (mod 2^l1, 2^l2: core/densearith.py), `xor_pops` its XOR shares of pa1,
    pb1, pa2, pb2 and `pops` its additive shares of them mod 2^64 (`convert_pops`), a pair
    each; `setup` C's (`deal`). `exchange` drives it."""

    def __init__(self, role: int, p: Plan, h: tuple[Ints, Ints], xor_pops: Sequence[Ints],
                 pops: Sequence[U64], setup: bytes, nonce: bytes | None = None,
                 ) -> None:  # fmt: skip
        self.role, self.plan, self.pairs = role, p, len(h[0])
        if len(pops) != 4 or any(len(x) != self.pairs for x in (*xor_pops, *pops, h[1])):
            raise ValueError("the margin: H1, H2 and four popcounts a pair")
        if nonce is not None and len(nonce) != NONCE_BYTES:
            raise ValueError(f"the margin: a nonce of {NONCE_BYTES} bytes")
        nonces = [None] * 3 if nonce is None else [nonce[k : k + 32] for k in (0, 32, 64)]
        first, arith, self._setup2 = _split_setup(p, role, self.pairs, setup)
        l1, l2 = p.levels
        diffs = (addends(role, h[0], l1), addends(role, h[1], l2))
        self.first = linkbit.Party(role, p.first, diffs, first, list(xor_pops), nonces[0])
        self.arith = ring64.Party(role, batch_size(p, self.pairs), arith, nonces[1])
        self._nonce2 = nonces[2] or secrets.token_bytes(linkbit.SEED_BYTES)
        self._h = [np.asarray(x, dtype=np.uint64) & np.uint64((1 << lv) - 1)
                   for x, lv in zip(h, (l1, l2), strict=True)]  # fmt: skip
        self._pops = [np.asarray(x, dtype=np.uint64) for x in pops]
        self._pos: npt.NDArray[np.uint32] | None = None
        self._values: tuple[U64, ...] = ()
        self.second: linkbit.Party | None = None

    def nonce(self) -> bytes:
        """This server's nonces of the first circuit, the arithmetic and the second circuit
        (fixed by `nonce` where given: a batch run again on what it was kept with)."""
        return self.first.nonce() + self.arith.nonce() + self._nonce2

    def convert(self) -> bytes:
        """After the first circuit: the masked bits to convert and the checks' pads, for the
        other server (core/ring64.py `Party.first`)."""
        c, n = self.plan.first, self.pairs
        shares = np.frombuffer(self.first.output(), "<u8").reshape(c.n_outputs, -1)
        bits = linkbit.unslice(shares.astype(np.uint64), n)
        self._pos = bits[0].astype(np.uint32)
        return self.arith.first(bits[1:].ravel())

    def multiply(self, theirs: bytes) -> bytes:
        """From the other's `convert`: the converted bits, H, Σ, Σ2', H2*; the digest of the
        checks and the products' openings, for the other."""
        p, n = self.plan, self.pairs
        got = self.arith.converted(theirs).reshape(len(p.converted), n)
        conv = dict(zip(p.converted, got, strict=True))
        l1, l2 = p.levels
        h1 = self._h[0] - (conv["wrap1"] << np.uint64(l1))
        h2 = self._h[1] - (conv["wrap2"] << np.uint64(l2))
        pa1, pb1, pa2, pb2 = self._pops
        s1, s2 = pa1 + pb1, pa2 + pb2 + conv["z2"]
        zero = np.zeros(n, np.uint64)
        self._values = (pa1, pb1, s1, h1, conv.get("e_pre", zero), conv.get("e_dice", zero))
        return self.arith.second(np.concatenate([s1, h1, h2 + conv["z2"]]),
                                 np.concatenate([s2, s2, s1]))  # fmt: skip

    def finish(self, theirs: bytes) -> None:
        """From the other's `multiply`: the checks (`DealRefused`), the products, each test's
        value, and this server's side of the second circuit on them."""
        p, n = self.plan, self.pairs
        prods = self.arith.products(theirs).reshape(3, n)
        pa1, pb1, s1, h1, e_pre, e_dice = self._values
        pre, dice = p.pre, p.dice
        terms: list[tuple[int, list[tuple[int, U64]]]] = [
            (pre.c, [(pre.a + pre.b, pa1), (-pre.b, pb1), (pre.b, e_pre)]),
            (pre.c, [(pre.a - pre.b, pa1), (pre.b, pb1), (pre.b, e_pre)]),
            (dice.c, [(dice.a, s1), (dice.b, e_dice), (-dice.b, h1)]),
        ]
        f = p.form
        terms += [(0, [(f.a - f.b - c, prods[0]), (-f.a, prods[1]), (f.b, prods[2])]) for c in f.c]
        values = np.empty((n, len(terms)), "<u8")  # each test's value, a column each
        for t, ((const, addends_), w) in enumerate(zip(terms, p.widths, strict=True)):
            v = np.full(n, const % (1 << 64) if self.role == 0 else 0, np.uint64)
            for coef, x in addends_:
                v = v + np.uint64(coef % (1 << 64)) * x
            values[:, t] = _mod(v, w)
        # Each test's low bytes in this server's slot of its two, the other's slot 0: the
        # columns picked at once (`_slots`), not a narrow array a test stacked side by side.
        src, dst, total = _slots(p.widths, self.role)
        diffs = np.zeros((n, total), np.uint8)
        diffs[:, dst] = values.view(np.uint8)[:, src]
        assert self._pos is not None
        self.second = linkbit.Party(self.role, p.second, diffs, self._setup2, [self._pos],
                                    self._nonce2)  # fmt: skip
        self._values = ()

    def output(self, tags: linkbit.Words | None = None, keep: linkbit.Words | None = None,
               mask: bytes | None = None) -> bytes:  # fmt: skip
        """This server's shares of the link bits (a cut-off each), for C; `tags`, `keep`,
        `mask` as core/linkbit.py `Party.output` takes them."""
        if self.second is None:
            raise RuntimeError("the margin: output before the second circuit")
        return self.second.output(tags, keep, mask)


def gather(blocks: denseblock.Blocks, pops: Sequence[Sequence[U64]], batch: PairBatch,
           ) -> tuple[tuple[U64, U64], list[U64], list[U64]]:  # fmt: skip
    """A server's inputs to `Side` for `batch` (rows of the members, each pair in one of the
    part's blocks, after core/denseblock.py `exchange` on each): its shares of each pair's
    H1, H2, its XOR shares of pa1, pb1, pa2, pb2 (`blocks.pops`) and its additive ones
    (`pops[block][clk]`, `convert_pops`'s, A's rows then B's)."""
    n = len(batch.rows_a)
    out = np.zeros((10, n), np.uint64)  # h1, h2, then four XOR, then four additive
    done = np.zeros(n, bool)
    for (rows_a, rows_b), block, xor, arith in zip(blocks.sides, blocks.blocks, blocks.pops,
                                                   pops, strict=True):  # fmt: skip
        in_a, at_a = _within(rows_a, batch.rows_a)
        in_b, at_b = _within(rows_b, batch.rows_b)
        here = np.flatnonzero(in_a & in_b & ~done)
        i, j = at_a[here].astype(np.intp), at_b[here].astype(np.intp)
        out[0, here], out[1, here] = block.hamming(0)[i, j], block.hamming(1)[i, j]
        both: tuple[Sequence[Ints], Sequence[Ints]] = (xor, arith)
        for k, values in enumerate(both):
            for c in (0, 1):
                out[2 + 4 * k + 2 * c, here] = values[c][i]
                out[3 + 4 * k + 2 * c, here] = values[c][len(rows_a) + j]
        done[here] = True
    if not done.all():
        raise ValueError("a batch's pair is in none of the part's blocks")
    return (out[0], out[1]), list(out[2:6]), list(out[6:])


def exchange(s1: Side, s2: Side, t: linkbit.Transcript, clock: Clock | None = None) -> None:
    """The batch between S1 and S2: the first circuit, the arithmetic (its checks), the
    second circuit; `DealRefused` where C's deal fails a check. CPU s into `clock`."""
    linkbit.exchange(s1.first, s2.first, t, clock)
    sides, who = (s1, s2), ("S1", "S2")
    for k in (0, 1):
        sides[k].arith.agree(t.send(who[1 - k], who[k], "nonce", sides[1 - k].arith.nonce()))
    sent = [t.send(who[k], who[1 - k], "convert", _timed(clock, who[k], sides[k].convert))
            for k in (0, 1)]  # fmt: skip
    back = [t.send(who[k], who[1 - k], "multiply",
                   _timed(clock, who[k], sides[k].multiply, sent[1 - k]))
            for k in (0, 1)]  # fmt: skip
    for k in (0, 1):
        _timed(clock, who[k], sides[k].finish, back[1 - k])
    assert s1.second is not None and s2.second is not None
    linkbit.exchange(s1.second, s2.second, t, clock)
    t.rounds += 2


def compare(
    clks1: Sequence[npt.NDArray[np.uint8]],
    clks2: Sequence[npt.NDArray[np.uint8]],
    pops1: Sequence[npt.NDArray[np.integer]],
    pops2: Sequence[npt.NDArray[np.integer]],
    rows_a: int,
    cutoffs: Sequence[float],
    rule: Rule,
    transcript: linkbit.Transcript | None = None,
    clock: Clock | None = None,
    depth: int = 0,
) -> Bits:
    """The three roles on a block (core/denseblock.py `compare`'s arguments, two CLKs and
    the gap rule): (cut-offs, pairs) link bits, pair (i, j) at i * rows_b + j."""
    t = transcript if transcript is not None else linkbit.Transcript()
    clock = clock if clock is not None else {}
    widths = tuple(8 * int(np.shape(x)[1]) for x in clks1)
    if len(widths) != 2:
        raise ValueError("the margin: a block on two CLKs and the gap rule")
    s = densearith.Shape(rows_a, len(clks1[0]) - rows_a, widths)
    p = plan(widths[0], widths[1], tuple(float(x) for x in cutoffs), rule, depth)
    dealt = _timed(clock, "C", densearith.deal, s)
    popdeal = _timed(clock, "C", pops_deal, p, s.records)
    every = (np.arange(s.rows_a, dtype=np.uint32), np.arange(s.rows_b, dtype=np.uint32))
    blocks, conv = [], []
    for role, (clks, pops) in enumerate(((clks1, pops1), (clks2, pops2))):
        who = ("S1", "S2")[role]
        setup = t.send("C", who, "setup", (dealt.to_s1, dealt.to_s2)[role])
        halves = ([x[:rows_a] for x in clks], [x[rows_a:] for x in clks])
        pop_halves = (
            [np.asarray(q)[:rows_a] for q in pops],
            [np.asarray(q)[rows_a:] for q in pops],
        )
        blocks.append(
            _timed(clock, who, denseblock.side, role, halves, pop_halves, [every], [setup])
        )
        pops_setup = t.send("C", who, "setup", (popdeal.to_s1, popdeal.to_s2)[role])
        conv.append(ring64.Party(role, pops_size(p, s.records), pops_setup))
    b1, b2 = (b.blocks[0] for b in blocks)
    denseblock.exchange(b1, b2, t, clock)
    xor = ([np.asarray(q) for q in pops1], [np.asarray(q) for q in pops2])
    arith = convert_pops(p, conv[0], conv[1], xor, t, clock)
    out = np.zeros((len(cutoffs), s.pairs), dtype=bool)
    for at in range(0, s.pairs, linkbit.BATCH):
        i, j = np.divmod(np.arange(at, min(s.pairs, at + linkbit.BATCH)), s.rows_b)
        d = _timed(clock, "C", deal, p, len(i))
        batch = PairBatch(0, 1, 0, i.astype(np.uint32), j.astype(np.uint32))
        sides = []
        for role in (0, 1):
            who = ("S1", "S2")[role]
            setup = t.send("C", who, "setup", (d.to_s1, d.to_s2)[role])
            h, xor_pops, pops = gather(blocks[role], [arith[role]], batch)
            sides.append(_timed(clock, who, Side, role, p, h, xor_pops, pops, setup))
        exchange(sides[0], sides[1], t, clock)
        o1 = t.send("S1", "C", "output", _timed(clock, "S1", sides[0].output))
        o2 = t.send("S2", "C", "output", _timed(clock, "S2", sides[1].output))
        out[:, at : at + len(i)] = _timed(clock, "C", linkbit.reveal, p.second, o1, o2, len(i))
        t.pairs += len(i)
    return out


__all__ = ["Deal", "Side", "compare", "convert_pops", "deal", "exchange", "gather", "pops_deal"]
