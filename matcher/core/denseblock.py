"""A block's link bits (every pair of A's rows x B's rows) with its Hamming distances by
arithmetic sharing (core/densearith.py) and the rest of the rule by the boolean circuit on
them (core/gmwsum.py; docs/privacy-design.md "A whole block by arithmetic sharing").

`exchange` runs core/densearith.py's steps between S1 and S2 on a block; `party` is a
server's side of the circuit on a batch of the block's pairs (its additive shares of their
H as the circuit's input, its XOR shares of their popcounts), driven as any other batch
(core/linkbit.py `exchange`, `output`, `reveal`); `compare` is the three roles on a whole block
in this process, its pairs in row order, what the tests and benchmarks/densearith.py run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import densearith, linkbit
from blindmatch.matcher.core.gmwsum import addends, sum_circuit, sum_rule_circuit
from blindmatch.matcher.domain import Rule

Bits = npt.NDArray[np.bool_]


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


def party(
    block: densearith.Party,
    pops: Sequence[npt.NDArray[np.integer]],
    rows_a: npt.NDArray[np.integer],
    rows_b: npt.NDArray[np.integer],
    c: linkbit.Circuit,
    setup: bytes,
    nonce: bytes | None = None,
) -> linkbit.Party:
    """This server's side of circuit `c` on the block's pairs (rows_a[k], rows_b[k]) (rows
    within the block): its shares of each pair's H on each CLK, of |a| and |b| (`pops[clk]`:
    its XOR shares of each record's popcount, A's rows then B's)."""
    s = block.shape
    rows_a, rows_b = np.asarray(rows_a, np.intp), np.asarray(rows_b, np.intp)
    diffs = [addends(block.role, block.hamming(k)[rows_a, rows_b], s.levels(k))
             for k in range(len(s.widths))]  # fmt: skip
    shares = [np.asarray(p) for p in pops]
    per_pair = [p[rows] for p in shares for rows in (rows_a, s.rows_a + rows_b)]
    both = (diffs[0], diffs[1]) if len(diffs) == 2 else diffs[0]
    return linkbit.Party(block.role, c, both, setup, per_pair, nonce)


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
    b1 = densearith.Party(0, s, t.send("C", "S1", "setup", dealt.to_s1), clks1)
    b2 = densearith.Party(1, s, t.send("C", "S2", "setup", dealt.to_s2), clks2)
    exchange(b1, b2, t, clock)
    out = np.zeros((len(c.cutoffs), s.pairs), dtype=bool)
    for at in range(0, s.pairs, linkbit.BATCH):
        pos = np.arange(at, min(s.pairs, at + linkbit.BATCH))
        ia, ib = pos // s.rows_b, pos % s.rows_b
        t0 = time.process_time()
        d = linkbit.deal(c, len(pos))
        t1 = time.process_time()
        p1 = party(b1, pops1, ia, ib, c, t.send("C", "S1", "setup", d.to_s1))
        t2 = time.process_time()
        p2 = party(b2, pops2, ia, ib, c, t.send("C", "S2", "setup", d.to_s2))
        t3 = time.process_time()
        linkbit.exchange(p1, p2, t, clock)
        t4 = time.process_time()
        o1 = t.send("S1", "C", "output", p1.output())
        t5 = time.process_time()
        o2 = t.send("S2", "C", "output", p2.output())
        t6 = time.process_time()
        out[:, at : at + len(pos)] = linkbit.reveal(c, o1, o2, len(pos))
        for role, secs in (("C", t1 - t0 + time.process_time() - t6), ("S1", t2 - t1 + t5 - t4),
                           ("S2", t3 - t2 + t6 - t5)):  # fmt: skip
            clock[role] = clock.get(role, 0.0) + secs
        t.pairs += len(pos)
    return out


__all__ = ["circuit", "compare", "exchange", "party"]
