"""What a dishonest combiner's deal makes S1 and S2 evaluate (docs/privacy-design.md,
"Resuming a pair of members a failure cut: a design"): C sends S2 its share c2 of every
Beaver triple explicitly (matcher/core/linkbit.py `deal`); unchecked (before 2026-12-05), a C
that flips one bit of c2 flips that AND gate's output for that pair, and S1 and S2 evaluate
another circuit than the run's, a deterministic function of the pair, not noise. S1 and S2
now order the rows and check them (core/triplecheck.py); `--attack` measures what is left.

On synthetic pairs (each a random CLK and a copy with a few bits flipped, Dice spread over
about 0.45..1), for each AND gate in turn: the circuit at `--threshold` (with the default
buckets with `--buckets`) evaluated with that gate flipped on every pair, against the honest
evaluation. Printed per gate that changes something: which outputs changed, and among the
pairs the honest link bit says do not link, the Dice of those the changed output marks and
of those it does not. A gate whose flip leaves the link bit as it is but marks the near
misses is one evaluation telling C the run's result and a bit at a lower cut-off.

    nice .venv/bin/python benchmarks/deal_flip.py --bits 1024 --pairs 4096 --buckets

The scan flips a gate's row and its spare's alike, as a C that knew S1 and S2's order of the
rows could (before they ordered them, the rows were the gates and nothing checked them); as
shipped, S1 and S2 order the dealt rows by their nonces after the deal (linkbit.Party.agree)
and sacrifice each gate's row against a spare (core/triplecheck.py). With `--attack N`, C
then plays its best flip (the gate the scan found most useful: a near-miss test beside the
honest link bit, else a moved cut-off) N times: knowing the order (before), and as shipped
one row, or two rows alike (its best chance against the sacrifice). Printed: how often S1
and S2 refuse the deal, how often the outputs are the ones C aimed at, how often the link
bit stays as honest, and how often some output is still a near-miss test.

    nice .venv/bin/python benchmarks/deal_flip.py --bits 1024 --pairs 1024 --buckets --attack 200
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.linkbit import (
    SEED_BYTES,
    Party,
    Transcript,
    circuit,
    deal,
    dealt_rows,
    exchange,
    reveal,
    row_order,
    split_popcounts,
    words_for,
)
from blindmatch.matcher.core.triplecheck import DealRefused, layout
from blindmatch.matcher.core.twoserver import default_buckets


def pairs_spread(bits: int, pairs: int, seed: int) -> tuple[npt.NDArray[np.bool_], ...]:
    """`pairs` CLK pairs: a random CLK (30% set) and a copy with 0..bits/3 bits flipped."""
    rng = np.random.default_rng(seed)
    a = rng.random((pairs, bits)) < 0.3
    b = a.copy()
    for i in range(pairs):
        flip = rng.choice(bits, int(rng.integers(0, bits // 3)), replace=False)
        b[i, flip] ^= True
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=4096)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--buckets", action="store_true", help="the default three buckets too")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=int, default=12, help="gates printed")
    ap.add_argument(
        "--attack",
        type=int,
        default=0,
        metavar="N",
        help="then C's best flip played N times against the shipped protocol",
    )
    args = ap.parse_args()
    a, b = pairs_spread(args.bits, args.pairs, args.seed)
    pa, pb = a.sum(1), b.sum(1)
    dice = 2 * (a & b).sum(1) / np.maximum(pa + pb, 1)
    d = np.packbits(a ^ b, axis=1, bitorder="little")
    pad = np.random.default_rng(args.seed + 1).integers(0, 256, d.shape, dtype=np.uint8)
    pa1, pa2 = split_popcounts(pa, args.bits)
    pb1, pb2 = split_popcounts(pb, args.bits)
    cutoffs = (args.threshold, *(default_buckets(args.threshold) if args.buckets else ()))
    c = circuit(args.bits, cutoffs)
    words = words_for(args.pairs)

    def evaluate(flip: int | None, shipped: int = 0) -> npt.NDArray[np.bool_] | None:
        """The outputs (None: S1 and S2 refused the deal) with C's c2 rows flipped on every
        pair: gate `flip`'s row and its spare's alike (as if C knew the servers' order: the
        protocol before they ordered the rows, when the rows were the gates), or with
        `shipped` (1 or 2) the row C dealt as `flip` and with 2 the row `flip` + G alike,
        whichever gate, spare or opened row the servers' nonces make them."""
        dealt = deal(c, args.pairs)
        nonces = (secrets.token_bytes(SEED_BYTES), secrets.token_bytes(SEED_BYTES))
        to_s2 = dealt.to_s2
        if flip is not None:  # C's c2 share of the rows, every pair's bit flipped
            g = c.and_gates
            at = layout(row_order(_xor(*nonces), dealt_rows(c)), g)
            rows = [flip, flip + g][:shipped] if shipped else [at.gates[flip], at.spare[flip]]
            c2 = np.frombuffer(to_s2[SEED_BYTES:], dtype="<u8").reshape(-1, words).copy()
            c2[rows] ^= np.uint64(0xFFFF_FFFF_FFFF_FFFF)
            to_s2 = to_s2[:SEED_BYTES] + c2.tobytes()
        s1 = Party(0, c, pad, dealt.to_s1, [pa1, pb1], nonce=nonces[0])
        s2 = Party(1, c, pad ^ d, to_s2, [pa2, pb2], nonce=nonces[1])
        try:
            exchange(s1, s2, Transcript())
        except DealRefused:
            return None
        return reveal(c, s1.output(), s2.output(), args.pairs)

    honest = evaluate(None)
    assert honest is not None
    print(f"{args.bits} bits, {args.pairs} pairs, cut-offs {list(cutoffs)}: {c.and_gates} AND "
          f"gates, {c.rounds} rounds; honest links {int(honest[0].sum())}, Dice of the "
          f"non-links {dice[~honest[0]].min():.3f}..{dice[~honest[0]].max():.3f}")  # fmt: skip
    t0 = time.process_time()
    off = ~honest[0]
    near: list[tuple[float, str]] = []  # the link bit as honest, another output a near miss
    moved: list[tuple[float, str]] = []  # the link bit itself another test
    changing = silent = 0
    for gate in range(c.and_gates):
        got = evaluate(gate)
        assert got is not None
        changed = [k for k in range(len(cutoffs)) if (got[k] != honest[k]).any()]
        changing += bool(changed)
        if not changed:
            continue
        if 0 in changed:
            share, top, n = _cutoff_like(got[0], dice)
            if n and abs(top - args.threshold) > 0.01:
                moved.append(
                    (
                        share,
                        f"gate {gate}: the link bit marks {n} pairs, {share:.0%} "
                        f"of them among the {n} of highest Dice (Dice >= {top:.3f})",
                    )
                )
            continue
        silent += 1  # the link bit as honest: the run's links, and a bit more
        k = changed[0]
        share, top, n = _cutoff_like(got[k] & off, np.where(off, dice, -1.0))
        if 10 <= n <= int(off.sum()) // 2:
            near.append(
                (
                    share,
                    f"gate {gate}: link bit as honest, output {k} marks {n} "
                    f"non-links, {share:.0%} of them among the {n} of highest Dice (Dice "
                    f">= {top:.3f})",
                )
            )
    for _, line in (
        sorted(near, reverse=True)[: args.show] + sorted(moved, reverse=True)[: args.show]
    ):
        print(line)
    print(
        f"{changing} of {c.and_gates} gates change an output when flipped, {silent} of them "
        f"leaving the link bit as honest; {time.process_time() - t0:.1f} s CPU"
    )
    if args.attack:
        best = sorted(near, reverse=True)[:1] or sorted(moved, reverse=True)[:1]
        if not best:
            print("no flip gives C a near-miss test or a moved cut-off")
            return
        target = int(best[0][1].split(":")[0].removeprefix("gate "))
        _attack(args.attack, target, honest, evaluate, dice)


def _xor(x: bytes, y: bytes) -> bytes:
    return bytes(i ^ j for i, j in zip(x, y, strict=True))


def _near_miss(got: npt.NDArray[np.bool_], off: npt.NDArray[np.bool_],
               dice: npt.NDArray[np.float64]) -> bool:  # fmt: skip
    """Some output beside the link bit marks 10.. half the non-links, 90% of them among the
    highest Dice: a near-miss test."""
    for k in range(1, len(got)):
        share, _, n = _cutoff_like(got[k] & off, np.where(off, dice, -1.0))
        if 10 <= n <= int(off.sum()) // 2 and share >= 0.9:
            return True
    return False


def _attack(trials: int, target: int, honest: npt.NDArray[np.bool_],
            evaluate: Callable[..., npt.NDArray[np.bool_] | None],
            dice: npt.NDArray[np.float64]) -> None:  # fmt: skip
    """C flips gate `target`'s rows `trials` times: knowing the order (before), and as
    shipped one row, or two rows alike (its best chance against the sacrifice)."""
    off = ~honest[0]
    aimed = evaluate(target)
    for name, shipped in (("knowing the order (before: the rows the gates)", 0),
                          ("as shipped, one row", 1),
                          ("as shipped, two rows alike", 2)):  # fmt: skip
        hit = same = near = refused = 0
        t0 = time.process_time()
        for _ in range(trials):
            got = evaluate(target, shipped)
            if got is None:
                refused += 1
                continue
            hit += bool((got == aimed).all())
            same += bool((got[0] == honest[0]).all())
            near += (got[0] == honest[0]).all() and _near_miss(got, off, dice)
        print(f"C flips gate {target}, {trials} times, {name}: refused {refused / trials:.1%}, "
              f"the outputs C aimed at {hit / trials:.1%}, the link bit as honest "
              f"{same / trials:.1%}, the link bit as honest and a near-miss test beside it "
              f"{near / trials:.1%} ({time.process_time() - t0:.1f} s CPU)")  # fmt: skip


def _cutoff_like(
    marked: npt.NDArray[np.bool_], dice: npt.NDArray[np.float64]
) -> tuple[float, float, int]:
    """How much `marked` is a cut-off test of `dice`: the share of the marked among the n
    pairs of highest Dice (n: how many are marked), the lowest Dice of those n, and n."""
    n = int(marked.sum())
    if not n:
        return 0.0, 0.0, 0
    top = float(np.sort(dice)[-n])
    return float((dice[marked] >= top).mean()), top, n


if __name__ == "__main__":
    main()
