"""The link-bit step under the default schema's gap rule beside the kernel's test alone.

    .venv/bin/python benchmarks/twoserver_rule_cost.py [--pairs 32768]

A pair where both records have the fallback's fields goes through the gap rule's circuit
(matcher/core/gmwrule.py: both CLKs' popcounts, the first CLKs' kernel test at the candidate
floor, three 12 x 12-bit products, a sign a cut-off) instead of the kernel's (one CLK's
popcount and test: matcher/core/gmwcircuit.py). Random 1,024-bit pairs (the default schema's
first and fallback CLKs are both 1,024 bits), one process, in circuits of linkbit.BATCH pairs
(benchmarks/twoserver_cost.py `link_bit_cost`): AND gates a pair, rounds a circuit, CPU us a
pair of S1, S2 and C, bytes a pair; the ratios are the rule's over the kernel's at the same
cut-offs, measured in the same run (the CPU ratio is the figure to read on a loaded machine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from twoserver_cost import link_bit_cost

from blindmatch.matcher.domain import NO_RULE, Rule

DEFAULT = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=32_768, help="pairs timed per circuit")
    args = parser.parse_args()
    print("| circuit | cut-offs | AND gates a pair | rounds a circuit | CPU us a pair: S1, S2, C "
          "| bytes a pair: S1 <-> S2, C -> S2, S1 + S2 -> C |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for cutoffs in ((0.8,), (0.8, 0.85, 0.9, 0.95)):
        got = {}
        for name, rule in (("kernel (no rule)", NO_RULE), ("gap rule (default)", DEFAULT)):
            cost = got[name] = link_bit_cost(args.pairs, cutoffs, rule=rule)
            b = cost.bytes
            between = b["S1", "S2"] + b["S2", "S1"]
            print(
                f"| {name} | {len(cutoffs)} | {cost.and_gates:,} | {cost.rounds} | "
                f"{cost.us['S1']:.2f}, {cost.us['S2']:.2f}, {cost.us['C']:.2f} | "
                f"{between:.0f}, {b['C', 'S2']:.0f}, {b['S1', 'C'] + b['S2', 'C']:.2f} |",
                flush=True,
            )
        k, r = got["kernel (no rule)"], got["gap rule (default)"]
        kb = k.bytes["S1", "S2"] + k.bytes["S2", "S1"]
        rb = r.bytes["S1", "S2"] + r.bytes["S2", "S1"]
        print(
            f"|   ratio rule / kernel | {len(cutoffs)} | {r.and_gates / k.and_gates:.2f}x | "
            f"{r.rounds / k.rounds:.2f}x | {r.us['S1'] / k.us['S1']:.2f}x, "
            f"{r.us['S2'] / k.us['S2']:.2f}x, {r.us['C'] / k.us['C']:.2f}x | "
            f"{rb / kb:.2f}x, {r.bytes['C', 'S2'] / k.bytes['C', 'S2']:.2f}x, - |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
