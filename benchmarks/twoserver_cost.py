"""The three-party cost of secret-shared Dice (docs/privacy-design.md option b), projected.

    .venv/bin/python benchmarks/twoserver_cost.py [--pairs 200000]

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blindmatch.matcher.core.blocking import COST_PAIR, COST_ROW

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
    args = parser.parse_args()
    measured = build_and_run(args.pairs)
    print("| permutation | one server, us a pair | pairs/s/core | combiner, us a pair |")
    print("|---|---|---|---|")
    for name, (s, c) in measured.items():
        print(f"| {name} | {s:.2f} | {1e6 / s:,.0f} | {c:.3f} |")
    server_us, combiner_us = measured["fyaes"]
    print(
        f"\nProjection with fyaes ({server_us:.2f} us a pair on each of S1 and S2, "
        f"{combiner_us:.3f} at C):\n"
    )
    print(
        "| scenario | blocking | candidate pairs | S1 CPU (blocking + shares) | S2 CPU | C CPU | "
        "to C | S1 to S2 | band keys uploaded |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
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
                f"{_human(keys, 'B')} |"
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
