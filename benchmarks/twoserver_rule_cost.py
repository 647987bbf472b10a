"""The link-bit step under the default schema's gap rule beside the kernel's test alone, and
the rule's circuit beside the one first built.

    .venv/bin/python benchmarks/twoserver_rule_cost.py [--pairs 32768]

A pair where both records have the fallback's fields goes through the gap rule's circuit
(matcher/core/gmwrule.py `rule_circuit`: both CLKs' popcounts, the first CLKs' kernel test at
the candidate floor, three 12 x 12-bit products in one carry-save tree, a parallel-prefix sign
a cut-off) instead of the kernel's (one CLK's popcount and test: matcher/core/gmwcircuit.py);
`ripple_rule_circuit` is the rule's circuit as first built (the same outputs, every sum ending
in a ripple of carries). Random 1,024-bit pairs (the default schema's first and fallback CLKs
are both 1,024 bits), one process, in circuits of linkbit.BATCH pairs
(benchmarks/twoserver_cost.py `link_bit_cost`): AND gates a pair, rounds a circuit, CPU us a
pair of S1, S2 and C, bytes a pair; the ratios are measured in the same run (the CPU ratio is
the figure to read on a loaded machine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from twoserver_cost import LinkBitCost, link_bit_cost

from blindmatch.matcher.core.gmwrule import ripple_rule_circuit, rule_circuit
from blindmatch.matcher.domain import NO_RULE, Rule

DEFAULT = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
CIRCUITS = (
    ("kernel (no rule)", NO_RULE, rule_circuit),
    ("gap rule, ripple carries (as first built)", DEFAULT, ripple_rule_circuit),
    ("gap rule, prefix carries", DEFAULT, rule_circuit),
)


def _between(c: LinkBitCost) -> float:
    return c.bytes["S1", "S2"] + c.bytes["S2", "S1"]


def _ratio(label: str, cutoffs: int, r: LinkBitCost, k: LinkBitCost) -> str:
    return (
        f"|   ratio {label} | {cutoffs} | {r.and_gates / k.and_gates:.2f}x | "
        f"{r.rounds / k.rounds:.2f}x | {r.us['S1'] / k.us['S1']:.2f}x, "
        f"{r.us['S2'] / k.us['S2']:.2f}x, {r.us['C'] / k.us['C']:.2f}x | "
        f"{_between(r) / _between(k):.2f}x, {r.bytes['C', 'S2'] / k.bytes['C', 'S2']:.2f}x, - |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=32_768, help="pairs timed per circuit")
    args = parser.parse_args()
    print("| circuit | cut-offs | AND gates a pair | rounds a circuit | CPU us a pair: S1, S2, C "
          "| bytes a pair: S1 <-> S2, C -> S2, S1 + S2 -> C |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for cutoffs in ((0.8,), (0.8, 0.85, 0.9, 0.95)):
        got = {}
        for name, rule, build in CIRCUITS:
            cost = got[name] = link_bit_cost(args.pairs, cutoffs, rule=rule, build=build)
            b = cost.bytes
            print(
                f"| {name} | {len(cutoffs)} | {cost.and_gates:,} | {cost.rounds} | "
                f"{cost.us['S1']:.2f}, {cost.us['S2']:.2f}, {cost.us['C']:.2f} | "
                f"{_between(cost):.0f}, {b['C', 'S2']:.0f}, {b['S1', 'C'] + b['S2', 'C']:.2f} |",
                flush=True,
            )
        kernel, ripple, fast = (got[name] for name, _, _ in CIRCUITS)
        print(_ratio("ripple rule / kernel", len(cutoffs), ripple, kernel), flush=True)
        print(_ratio("prefix rule / kernel", len(cutoffs), fast, kernel), flush=True)
        print(_ratio("prefix rule / ripple rule", len(cutoffs), fast, ripple), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
