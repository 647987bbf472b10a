"""The three-party cost of secret-shared Dice (docs/privacy-design.md option b), projected.

    .venv/bin/python benchmarks/twoserver_cost.py [--pairs 200000] [--link-bit-pairs 65536]

Builds benchmarks/twoserver_perm.c with the system C compiler (`cc -O2 -march=native`), runs
it (CPU time per pair of each keyed permutation, and of the combiner's XOR and popcount), and
projects the cost of a run from the candidate densities benchmarks/keyedblocking.py measured
on realistic encodings (the share of cross pairs that share a band at recall 0.999 of the pairs
at Dice >= 0.8; figures of 2026-12-03, in `BLOCKINGS`):

- S1 and S2 each: blocking (S1 only: band keys of every record sorted per band, each
  collision deduplicated; the matcher's measured constants `COST_ROW`, `COST_PAIR`), then per
  candidate pair two 128-byte shares XORed and permuted (the measured fastest uniform
  permutation: Fisher-Yates driven by AES-128-CTR);
- network: 128 bytes from each of S1 and S2 to the combiner C per pair (256 in all), plus the
  candidate list S1 sends S2 (8 bytes a pair);
- C: XOR, popcount, Dice, threshold, per pair (measured), then the solve as today.

The link-bit step (matcher/core/linkbit.py, the per-pair step that ships) is measured in
this process on random 1,024-bit pairs (`--link-bit-pairs`), with one cut-off (the link bit)
and four (score buckets): CPU a pair of S1, S2 and C, bytes a pair in each direction as
`linkbit.Transcript` counts them, rounds a circuit; the projection gives its server and C
CPU and its traffic beside the Dice-revealing step's.

Scenarios: one pair of members at 10^4, 10^5 and 10^6 records each, and docs/scale.md's 43
forces x 1,000,000 (903 pairs of members), and the same plus 300 retailers x 10,000. Today's
plaintext run, for comparison: docs/scale.md (42.3 core-hours for the 43 forces).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.blocking import COST_PAIR, COST_ROW
from blindmatch.matcher.core.gmwcircuit import Circuit
from blindmatch.matcher.core.gmwrule import rule_circuit
from blindmatch.matcher.domain import NO_RULE, Rule

HERE = Path(__file__).resolve().parent
BYTES_TO_C = 256
BYTES_S1_S2 = 8
# (label, bands, {records a side: share of cross pairs that are candidates}): measured by
# benchmarks/keyedblocking.py on 2026-12-03 (record-level CLK, informative positions, recall
# 0.999 of the pairs at Dice >= 0.8; 10^6: a sample of 20,000 rows of A against all of B).
# The bands a recall needs grow a little with size; the cost uses the 10^6 count throughout.
BLOCKINGS: list[tuple[str, int, dict[int, float]]] = [
    ("matcher's plan, 572 x 15 bits", 572, {10**4: 0.0756, 10**5: 0.0724, 10**6: 0.0776}),
    ("keyed, 16 informative bits x 559", 559, {10**4: 0.0172, 10**5: 0.0368, 10**6: 0.0416}),
    ("keyed, 20 informative bits x 1,580", 1580, {10**4: 0.0077, 10**5: 0.0114, 10**6: 0.0121}),
    ("keyed, 26 informative bits x 9,357", 9357, {10**4: 0.0012, 10**5: 0.0021, 10**6: 0.0026}),
]


def build_and_run(pairs: int) -> dict[str, tuple[float, float]]:
    """{variant: (server us a pair, combiner us a pair)} measured by the C benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "twoserver_perm"
        subprocess.run(
            ["cc", "-O2", "-march=native", "-o", str(exe), str(HERE / "twoserver_perm.c")],
            check=True,
        )
        out = subprocess.run(
            [str(exe), str(pairs), "10000"], check=True, capture_output=True, text=True
        ).stdout
    server = dict(re.findall(r"^(\w+) server_us_per_pair ([\d.]+)", out, re.M))
    combiner = dict(re.findall(r"^(\w+) combiner_us_per_pair ([\d.]+)", out, re.M))
    return {k: (float(server[k]), float(combiner[k])) for k in server}


# The link-bit step when C computed and shared each pair's Hamming bounds (before the circuit
# tested the shared popcounts itself), measured by this script at 32,768 pairs on the
# 2-core helper machine (2026-12-04): by cut-offs, AND gates and rounds of the circuit, the
# slower server's and C's CPU us a pair, bytes a pair between S1 and S2 and from C to S2.
BOUNDS_FROM_C = {
    1: {"and": 1034, "rounds": 11, "server_us": 1.34, "c_us": 0.79, "between": 517.0,
        "c_s2": 130.6, "to_c": 0.25},
    4: {"and": 1067, "rounds": 11, "server_us": 1.31, "c_us": 0.68, "between": 533.5,
        "c_s2": 138.9, "to_c": 1.00},
}  # fmt: skip


@dataclass
class LinkBitCost:
    """The link-bit step (matcher/core/linkbit.py) measured on random 1,024-bit pairs: CPU us
    a pair by role, bytes a pair by direction, rounds a circuit, AND gates a pair."""

    us: dict[str, float]
    bytes: dict[tuple[str, str], float]
    rounds: int
    and_gates: int
    batch: int


def link_bit_cost(
    pairs: int,
    cutoffs: tuple[float, ...] = (0.8,),
    n_bits: int = 1024,
    rule: Rule = NO_RULE,
    build: Callable[[int, int, tuple[float, ...], Rule], Circuit] = rule_circuit,
) -> LinkBitCost:
    """Times C's dealing and reveal, S1's and S2's circuit (bit slicing, popcount shares, PRG,
    rounds), in circuits of linkbit.BATCH pairs, one process; bytes as linkbit.Transcript
    counts them. With a gap `rule`, its circuit (`build`: core/gmwrule.py's) on two
    `n_bits`-bit CLKs a pair (the default schema's first and fallback CLKs are both 1,024
    bits)."""
    rng = np.random.default_rng(1)
    c = build(n_bits, n_bits, cutoffs, rule) if rule.active else linkbit.circuit(
        n_bits, cutoffs)  # fmt: skip
    clks = 2 if rule.active else 1
    us = {"S1": 0.0, "S2": 0.0, "C": 0.0}
    t = linkbit.Transcript()
    done = 0
    while done < pairs:
        n = min(linkbit.BATCH, pairs - done)
        uv = [rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8) for _ in range(2 * clks)]
        u = (uv[0], uv[2]) if clks == 2 else uv[0]
        v = (uv[1], uv[3]) if clks == 2 else uv[1]
        pops = [rng.integers(0, 1 << (n_bits.bit_length()), n) for _ in range(4 * clks)]
        t0 = time.process_time()
        dealt = linkbit.deal(c, n)
        t1 = time.process_time()
        p1 = linkbit.Party(0, c, u, t.send("C", "S1", "setup", dealt.to_s1), pops[: 2 * clks])
        t2 = time.process_time()
        p2 = linkbit.Party(1, c, v, t.send("C", "S2", "setup", dealt.to_s2), pops[2 * clks :])
        t3 = time.process_time()
        us["C"] += t1 - t0
        us["S1"] += t2 - t1
        us["S2"] += t3 - t2
        linkbit.exchange(p1, p2, t, us)
        # S1's first message to S2 also carries the rows (8 bytes a pair) and the pad's seed;
        # each server's output holds the rows gated by the link bit (64 bits a pair).
        rows = rng.integers(0, 1 << 20, (2, n))
        mask = bytes(linkbit.SEED_BYTES)
        t.count("S1", "S2", 8 * n + len(mask))
        t0 = time.process_time()
        o1 = t.send("S1", "C", "output", p1.output(linkbit.tags(*rows), None, mask))
        t1 = time.process_time()
        o2 = t.send("S2", "C", "output", p2.output(linkbit.tags(*rows), None, mask))
        t2 = time.process_time()
        linkbit.untag(linkbit.reveal(c, o1, o2, n, tagged=True))
        us["C"] += time.process_time() - t2
        us["S1"] += t1 - t0
        us["S2"] += t2 - t1
        done += n
    return LinkBitCost(
        {k: 1e6 * v / pairs for k, v in us.items()},
        {k: v / pairs for k, v in t.sent.items()},
        c.rounds,
        c.and_gates,
        linkbit.BATCH,
    )


def scenarios() -> list[tuple[str, list[tuple[int, int, int]]]]:
    """(label, [(pairs of members, records of one, of the other)])."""
    forces = (43 * 42 // 2, 10**6, 10**6)
    return [
        ("10^4 x 10^4", [(1, 10**4, 10**4)]),
        ("10^5 x 10^5", [(1, 10**5, 10**5)]),
        ("10^6 x 10^6", [(1, 10**6, 10**6)]),
        ("43 forces x 10^6 (all pairs)", [forces]),
        (
            "43 forces + 300 retailers x 10^4",
            [forces, (43 * 300, 10**6, 10**4), (300 * 299 // 2, 10**4, 10**4)],
        ),
    ]


def fraction(table: dict[int, float], size: int) -> float:
    """The share measured at `size` records a side, else at the nearest size measured (the
    share is a per-pair property; it grows a little with size as namesakes raise the bands
    recall 0.999 needs)."""
    return table[min(table, key=lambda s: abs(s - size))]


def _human(x: float, unit: str) -> str:
    for prefix in ("", "k", "M", "G", "T", "P", "E"):
        if abs(x) < 1000:
            return f"{x:.3g} {prefix}{unit}"
        x /= 1000
    return f"{x:.3g} Z{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200_000, help="pairs timed per variant")
    parser.add_argument(
        "--link-bit-pairs", type=int, default=65_536, help="pairs timed for the link-bit step"
    )
    args = parser.parse_args()
    measured = build_and_run(args.pairs)
    print("| permutation | one server, us a pair | pairs/s/core | combiner, us a pair |")
    print("|---|---|---|---|")
    for name, (s, c) in measured.items():
        print(f"| {name} | {s:.2f} | {1e6 / s:,.0f} | {c:.3f} |")
    print(
        "\nThe link-bit step (matcher/core/linkbit.py, numpy, one process), 1,024-bit CLKs, "
        f"{args.link_bit_pairs:,} pairs in circuits of {linkbit.BATCH:,}; beside it the "
        "Dice-revealing step (fyaes above; 128 bytes from each server to C):\n"
    )
    print("| step | cut-offs | AND gates a pair | rounds a circuit | CPU us a pair: S1, S2, C "
          "| bytes a pair: S1 <-> S2, C -> S1, C -> S2, S1 + S2 -> C |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    dice_us = measured["fyaes"]
    print(f"| Dice (oracle) | - | 0 | 0 (one message) | {dice_us[0]:.2f}, {dice_us[0]:.2f}, "
          f"{dice_us[1]:.3f} | 0, 0, 0, {BYTES_TO_C} |")  # fmt: skip
    costs = {}
    for cutoffs in ((0.8,), (0.8, 0.85, 0.9, 0.95)):
        bounds = len(cutoffs)
        cost = costs[bounds] = link_bit_cost(args.link_bit_pairs, cutoffs)
        b = cost.bytes
        between = b["S1", "S2"] + b["S2", "S1"]
        print(
            f"| link bit | {bounds} | {cost.and_gates:,} | {cost.rounds} | "
            f"{cost.us['S1']:.2f}, {cost.us['S2']:.2f}, {cost.us['C']:.2f} | "
            f"{between:.1f}, {b['C', 'S1']:.3f}, {b['C', 'S2']:.1f}, "
            f"{b['S1', 'C'] + b['S2', 'C']:.2f} |",
            flush=True,
        )
        old = BOUNDS_FROM_C[bounds]
        print(
            f"|   ratio to C's bounds (2026-12-03) | {bounds} | "
            f"{cost.and_gates / old['and']:.2f}x | {cost.rounds / old['rounds']:.2f}x | "
            f"{max(cost.us['S1'], cost.us['S2']) / old['server_us']:.2f}x, "
            f"C {cost.us['C'] / old['c_us']:.2f}x | {between / old['between']:.2f}x, -, "
            f"{b['C', 'S2'] / old['c_s2']:.2f}x, "
            f"{(b['S1', 'C'] + b['S2', 'C']) / old['to_c']:.1f}x |",
            flush=True,
        )
    lb = costs[1]
    lb_server_us = max(lb.us["S1"], lb.us["S2"])
    lb_between = lb.bytes["S1", "S2"] + lb.bytes["S2", "S1"]
    lb_from_c = lb.bytes["C", "S1"] + lb.bytes["C", "S2"]
    server_us, combiner_us = measured["fyaes"]
    print(
        f"\nProjection with fyaes ({server_us:.2f} us a pair on each of S1 and S2, "
        f"{combiner_us:.3f} at C), and with the link-bit step ({lb_server_us:.2f} us a pair "
        f"on a server, {lb.us['C']:.2f} at C, {lb_between:.0f} bytes a pair between S1 and "
        f"S2, {lb_from_c:.0f} from C; rounds: {lb.rounds} a circuit of {lb.batch:,} pairs):\n"
    )
    print(
        "| scenario | blocking | candidate pairs | S1 CPU (blocking + shares) | S2 CPU | C CPU | "
        "to C | S1 to S2 | band keys uploaded | link bit: server CPU, C CPU | "
        "link bit: S1 <-> S2, C -> S1 + S2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, parts in scenarios():
        for name, bands, table in BLOCKINGS:
            pairs = block = 0.0
            for count, n_a, n_b in parts:
                f = fraction(table, max(n_a, n_b))
                pairs += count * f * n_a * n_b
                block += count * (bands * (n_a + n_b) * COST_ROW + f * n_a * n_b * COST_PAIR)
            keys = bands * 8 * _records(label)
            share = pairs * server_us * 1e-6
            print(
                f"| {label} | {name} | {pairs:.3g} | {(block + share) / 3600:.3g} core-h | "
                f"{share / 3600:.3g} core-h | {pairs * combiner_us * 1e-6 / 3600:.3g} core-h | "
                f"{_human(pairs * BYTES_TO_C, 'B')} | {_human(pairs * BYTES_S1_S2, 'B')} | "
                f"{_human(keys, 'B')} | {pairs * lb_server_us * 1e-6 / 3600:.3g} core-h, "
                f"{pairs * lb.us['C'] * 1e-6 / 3600:.3g} core-h | "
                f"{_human(pairs * lb_between, 'B')}, {_human(pairs * lb_from_c, 'B')} |"
            )
    return 0


def _records(label: str) -> int:
    return {
        "10^4 x 10^4": 2 * 10**4,
        "10^5 x 10^5": 2 * 10**5,
        "10^6 x 10^6": 2 * 10**6,
        "43 forces x 10^6 (all pairs)": 43 * 10**6,
        "43 forces + 300 retailers x 10^4": 43 * 10**6 + 300 * 10**4,
    }[label]


if __name__ == "__main__":
    raise SystemExit(main())
