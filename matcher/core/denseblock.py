"""A block's link bits (every pair of A's rows x B's rows) with its Hamming distances by
arithmetic sharing (core/densearith.py) and the rest of the rule by the boolean circuit on
them (core/gmwsum.py; docs/privacy-design.md "A whole block by arithmetic sharing").

`exchange` runs core/densearith.py's steps between S1 and S2 on a block; `side` is a
server's parties on a part's blocks and `Blocks.party` its side of the circuit on a batch of
their pairs (its additive shares of the pairs' H as the circuit's input, its XOR shares of
their popcounts), driven as any other batch (core/linkbit.py `exchange`, `output`,
`reveal`); `compare` is the three roles on a whole block in this process, its pairs in row
order, what the tests and benchmarks/densearith.py run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import densearith, linkbit
from blindmatch.matcher.core.crosspart import Cross, _within
from blindmatch.matcher.core.gmwsum import addends, sum_circuit, sum_rule_circuit
from blindmatch.matcher.core.twoblocking import PairBatch
from blindmatch.matcher.domain import Rule

ROWS = 1024  # a block's larger side at most (`part_sides`)
Bits = npt.NDArray[np.bool_]
Rows = npt.NDArray[np.uint32]
U32 = npt.NDArray[np.uint32]


def part_blocks(part: object) -> tuple[tuple[int, int], ...]:
    """An unblocked part's blocks' sizes (rows of A, rows of B), what C is told of it to deal
    for (`part_sides`); () for a blocked part."""
    if not isinstance(part, Cross):
        return ()
    return tuple((len(a), len(b)) for a, b in part_sides(part))


def part_sides(part: Cross) -> list[tuple[Rows, Rows]]:
    """The rows of A and of B of each block of an unblocked part: its non-empty blocks, the
    larger side of each cut into runs of at most ROWS rows (so that a server converts one
    such block at a time: its arrays ~150 MB at 1,024 x 1,600 with two 1,024-bit CLKs)."""
    out = []
    for a, b in part.sides():
        if not len(a) or not len(b):
            continue
        cut = a if len(a) >= len(b) else b
        for piece in np.array_split(cut, -(-len(cut) // ROWS)):
            out.append((piece, b) if cut is a else (a, piece))
    return out


def circuit(widths: Sequence[int], cutoffs: Sequence[float], rule: Rule | None) -> linkbit.Circuit:
    """The circuit on a block's H shares: the gap rule's on both CLKs (`rule`, two widths)
    or the kernel's test on one."""
    cutoffs = tuple(float(t) for t in cutoffs)
    if len(widths) == 2:
        if rule is None:
            raise ValueError("a block on two CLKs: the gap rule's circuit")
        return sum_rule_circuit(widths[0], widths[1], cutoffs, rule)
    if len(widths) != 1:
        raise ValueError(f"a block: one or two CLKs, not {len(widths)}")
    return sum_circuit(widths[0], cutoffs)


def exchange(
    s1: densearith.Party,
    s2: densearith.Party,
    t: linkbit.Transcript,
    clock: dict[str, float] | None = None,
) -> None:
    """core/densearith.py's steps between S1 and S2: nonces, the conversion, the openings
    and checks (`DealRefused` where C's deal fails them); CPU s into `clock`."""
    spent = {"S1": 0.0, "S2": 0.0}

    def timed(role: str, step: object, *args: bytes) -> bytes:
        t0 = time.process_time()
        out = step(*args)  # type: ignore[operator]
        spent[role] += time.process_time() - t0
        return out if isinstance(out, bytes) else b""

    s1.agree(t.send("S2", "S1", "nonce", s2.nonce()))
    s2.agree(t.send("S1", "S2", "nonce", s1.nonce()))
    m1 = t.send("S1", "S2", "convert", timed("S1", s1.convert))
    m2 = t.send("S2", "S1", "convert", timed("S2", s2.convert))
    r1 = t.send("S1", "S2", "reconcile", timed("S1", s1.reconcile, m2))
    r2 = t.send("S2", "S1", "reconcile", timed("S2", s2.reconcile, m1))
    timed("S1", s1.finish, r2)
    timed("S2", s2.finish, r1)
    if clock is not None:
        for role, secs in spent.items():
            clock[role] = clock.get(role, 0.0) + secs


@dataclass
class Blocks:
    """A server's side of a part's blocks once `exchange` has run on each: each block's rows
    of members A and B (`sides`, ascending), its `densearith.Party` and this server's XOR
    shares of its records' popcounts (`pops[block][clk]`, A's rows then B's)."""

    sides: list[tuple[Rows, Rows]]
    blocks: list[densearith.Party]
    pops: list[list[npt.NDArray[np.uint32]]]
    # Prepared for the rule's margin (core/densemargin.py): the same popcounts' additive
    # shares mod 2^64 (`convert_pops`), `arith[block][clk]`; none otherwise.
    arith: list[list[npt.NDArray[np.uint64]]] = field(default_factory=list)

    def inputs(self, batch: PairBatch) -> tuple[U32, U32]:
        """This server's shares of each pair of `batch` (rows of the members, each pair in one
        of the blocks): of its H a CLK, (clks, pairs), and of |a| and |b| a CLK, (2 clks,
        pairs)."""
        n, clks = len(batch.rows_a), len(self.blocks[0].shape.widths)
        h = np.zeros((clks, n), np.uint32)
        pops = np.zeros((2 * clks, n), np.uint32)
        done = np.zeros(n, bool)
        for (rows_a, rows_b), block, shares in zip(self.sides, self.blocks, self.pops,
                                                   strict=True):  # fmt: skip
            in_a, at_a = _within(rows_a, batch.rows_a)
            in_b, at_b = _within(rows_b, batch.rows_b)
            here = np.flatnonzero(in_a & in_b & ~done)
            i, j = at_a[here].astype(np.intp), at_b[here].astype(np.intp)
            for k in range(clks):
                h[k, here] = block.hamming(k)[i, j]
                pops[2 * k, here] = shares[k][i]
                pops[2 * k + 1, here] = shares[k][len(rows_a) + j]
            done[here] = True
        if not done.all():
            raise ValueError("a batch's pair is in none of the part's blocks")
        return h, pops

    def party(self, batch: PairBatch, c: linkbit.Circuit, setup: bytes,
              nonce: bytes | None = None) -> linkbit.Party:  # fmt: skip
        """This server's side of circuit `c` on `batch` (rows of the members, each pair in
        one of the blocks): its shares of each pair's H on each CLK and of |a| and |b|."""
        first = self.blocks[0]
        return party_of(first.role, first.shape.widths, c, *self.inputs(batch), setup, nonce)


def party_of(role: int, widths: Sequence[int], c: linkbit.Circuit, h: U32, pops: U32,
             setup: bytes, nonce: bytes | None = None) -> linkbit.Party:  # fmt: skip
    """Server `role`'s side of circuit `c` from its shares of a batch's H and popcounts
    (`Blocks.inputs`) on CLKs of `widths` bits."""
    if h.shape[0] != len(widths) or pops.shape != (2 * len(widths), h.shape[1]):
        raise ValueError("a batch's H and popcount shares do not fit its CLKs")
    diffs = [addends(role, h[k], int(w).bit_length()) for k, w in enumerate(widths)]
    both = (diffs[0], diffs[1]) if len(widths) == 2 else diffs[0]
    return linkbit.Party(role, c, both, setup, list(pops), nonce)


def side(role: int, shares: Sequence[Sequence[npt.NDArray[np.uint8]]],
         pops: Sequence[Sequence[npt.NDArray[np.integer]]],
         sides: Sequence[tuple[Rows, Rows]], setups: Sequence[bytes],
         nonces: Sequence[bytes] = ()) -> Blocks:  # fmt: skip
    """Server `role`'s parties on each block (`sides`: rows of A and of B), from its XOR
    shares of each member's CLKs and popcounts (`shares[0][clk]` A's, `shares[1][clk]` B's:
    the CLKs the blocks read) and C's setups, a block each (`nonces`: each party's; none:
    fresh)."""
    parties, block_pops = [], []
    for k, ((rows_a, rows_b), setup) in enumerate(zip(sides, setups, strict=True)):
        clks = [np.vstack([a[rows_a], b[rows_b]]) for a, b in zip(*shares, strict=True)]
        widths = tuple(8 * int(x.shape[1]) for x in clks)
        shape = densearith.Shape(len(rows_a), len(rows_b), widths)
        nonce = nonces[k] if nonces else None
        parties.append(densearith.Party(role, shape, setup, clks, nonce))
        block_pops.append([np.concatenate([np.asarray(a)[rows_a], np.asarray(b)[rows_b]])
                           .astype(np.uint32) for a, b in zip(*pops, strict=True)])  # fmt: skip
    return Blocks(list(sides), parties, block_pops)


def compare(
    clks1: Sequence[npt.NDArray[np.uint8]],
    clks2: Sequence[npt.NDArray[np.uint8]],
    pops1: Sequence[npt.NDArray[np.integer]],
    pops2: Sequence[npt.NDArray[np.integer]],
    rows_a: int,
    cutoffs: Sequence[float],
    rule: Rule | None = None,
    transcript: linkbit.Transcript | None = None,
    clock: dict[str, float] | None = None,
    seeds: tuple[bytes, bytes] | None = None,
) -> Bits:
    """The three roles on a block: (cut-offs, pairs) link bits, pair (i, j) at i * rows_b + j,
    from S1's and S2's XOR shares of each record's CLKs (`clks1[clk]`, A's `rows_a` rows then
    B's) and popcounts; CPU s by role into `clock`, bytes into `transcript`."""
    t = transcript if transcript is not None else linkbit.Transcript()
    clock = clock if clock is not None else {}
    widths = tuple(8 * int(np.shape(x)[1]) for x in clks1)
    s = densearith.Shape(rows_a, len(clks1[0]) - rows_a, widths)
    c = circuit(widths, cutoffs, rule)
    t0 = time.process_time()
    dealt = densearith.deal(s, seeds)
    clock["C"] = clock.get("C", 0.0) + time.process_time() - t0
    every = (np.arange(s.rows_a, dtype=np.uint32), np.arange(s.rows_b, dtype=np.uint32))
    blocks = []
    for role, (clks, pops) in enumerate(((clks1, pops1), (clks2, pops2))):
        setup = t.send("C", ("S1", "S2")[role], "setup", (dealt.to_s1, dealt.to_s2)[role])
        t0 = time.process_time()
        halves = ([x[:rows_a] for x in clks], [x[rows_a:] for x in clks])
        pop_halves = (
            [np.asarray(p)[:rows_a] for p in pops],
            [np.asarray(p)[rows_a:] for p in pops],
        )
        blocks.append(side(role, halves, pop_halves, [every], [setup]))
        clock[("S1", "S2")[role]] = clock.get(("S1", "S2")[role], 0.0) + time.process_time() - t0
    exchange(blocks[0].blocks[0], blocks[1].blocks[0], t, clock)
    out = np.zeros((len(c.cutoffs), s.pairs), dtype=bool)
    for at in range(0, s.pairs, linkbit.BATCH):
        pos = np.arange(at, min(s.pairs, at + linkbit.BATCH))
        batch = PairBatch(0, 1, 0, *(x.astype(np.uint32) for x in np.divmod(pos, s.rows_b)))
        t0 = time.process_time()
        d = linkbit.deal(c, len(pos))
        t1 = time.process_time()
        p1 = blocks[0].party(batch, c, t.send("C", "S1", "setup", d.to_s1))
        t2 = time.process_time()
        p2 = blocks[1].party(batch, c, t.send("C", "S2", "setup", d.to_s2))
        t3 = time.process_time()
        linkbit.exchange(p1, p2, t, clock)
        t4 = time.process_time()
        o1 = t.send("S1", "C", "output", p1.output())
        t5 = time.process_time()
        o2 = t.send("S2", "C", "output", p2.output())
        t6 = time.process_time()
        out[:, at : at + len(pos)] = linkbit.reveal(c, o1, o2, len(pos))
        for who, secs in (("C", t1 - t0 + time.process_time() - t6), ("S1", t2 - t1 + t5 - t4),
                          ("S2", t3 - t2 + t6 - t5)):  # fmt: skip
            clock[who] = clock.get(who, 0.0) + secs
        t.pairs += len(pos)
    return out


__all__ = [
    "Blocks",
    "circuit",
    "compare",
    "exchange",
    "part_blocks",
    "part_sides",
    "party_of",
    "side",
]
