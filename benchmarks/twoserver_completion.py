"""Completing groups in a two-server run (issues 21 and 18): F1 of the CLK run, of the
two-server run as it was (the greedy solver's groups) and as it now is (completed at the
bridge bucket 0.85 and the reach cut-off 0.70), and what completion costs the run.

    .venv/bin/python benchmarks/twoserver_completion.py [--seeds households:2105 ...]
        [--population 3000] [--members 3] [--schema schemas/person-uk-no-rule.json]

In process (core/tworun.py `run` over S1 and S2 as objects, core/twoserver.py), on the first
`--members` members of each generated seed (households: four members, most people held by
three or four), encoded as `blindmatch encode --two-server` encodes them (one secret a seed),
blocked at the recommended band plan (20 bits x 1,600 bands); the CLK run is `runs.match`,
exhaustive, over the same CLKs. Hits scored against the generator's truth restricted to the
members taken. Figures: docs/evaluation.md, "Completing groups".
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.quality import GENERATORS
from benchmarks.quality_errors import Member, encoded
from benchmarks.rule2d import ROOT, prf
from blindmatch.client.encoding import sharing
from blindmatch.client.tools.evaluate import read_truth
from blindmatch.matcher.core import tworun, twoserver
from blindmatch.matcher.core.solve import Links
from blindmatch.matcher.usecases import runs

THRESHOLD = 0.8
SCHEMA = ROOT / "schemas" / "person-uk-no-rule.json"


def found(members: list[Member], links: Links) -> set[tuple[str, str, str]]:
    ends = zip(links.dset.tolist(), links.row.tolist(), links.partner.tolist(), strict=True)
    return {(members[a].name, members[a].ids[r], members[b].name) for a, r, b in ends}


def _greedy(groups: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """`complete` switched off: the greedy solver's groups as they are."""
    return list(groups)


def two_server(
    members: list[Member], secret: bytes, complete: bool
) -> tuple[tworun.TwoServerResult, float]:
    uploads = [sharing.shared_upload(m.clks, secret, sharing.RECOMMENDED, m.fallback_bits)
               for m in members]  # fmt: skip
    key = secrets.token_bytes(32)
    s1 = twoserver.BlockingServer(
        [u.s1.bands for u in uploads], [u.s1.shares for u in uploads], key,
        [u.s1.popcounts for u in uploads], [x for u in uploads if (x := u.s1.lacking) is not None],
    )  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in uploads], key,
                               [u.s2.popcounts for u in uploads],
                               [u.s2.seal_key for u in uploads])  # fmt: skip
    rule = members[0].rule
    combiner = twoserver.Combiner(None, THRESHOLD, clks=2, rule=rule, complete=complete)
    t0 = time.process_time()
    result = tworun.run(s1, s2, combiner)
    return result, time.process_time() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", default=["households:2105"])
    parser.add_argument("--population", type=int, default=3000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--schema", type=Path, default=SCHEMA)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-twocomplete"))
    args = parser.parse_args()
    for spec in args.seeds:
        gen, seed, *rest = spec.split(":")
        corruption = float(rest[0]) if rest else 1.0
        folder = args.cache / f"{gen}-{seed}-{args.population}-{corruption}"
        if not (folder / "truth.csv").exists():
            GENERATORS[gen].write(folder, int(seed), args.population, corruption)
        truth = read_truth(folder / "truth.csv")
        secret = hashlib.sha256(f"twocomplete {seed}".encode()).digest()
        members = encoded(folder, gen, args.schema, secret)[: args.members]
        names = {m.name for m in members}
        actual = {h for h in truth.true_hits() if h[0] in names and h[2] in names}
        sizes = ", ".join(f"{m.name} {len(m.ids)}" for m in members)
        print(f"{spec}, {args.population} people; members {sizes}; {len(actual)} true hits")
        for complete in (False, True):
            # The CLK run as it was (the greedy solver's groups) and as it is.
            with mock.patch.object(runs, "complete", runs.complete if complete else _greedy):
                clk = runs.match([m.clks for m in members], THRESHOLD, workers=1,
                                 blocking="exhaustive", fallback_bits=members[0].fallback_bits,
                                 rule=members[0].rule)  # fmt: skip
            p, r, f = prf(found(members, clk.links), actual)
            label = "completed" if complete else "greedy solver"
            print(f"  CLK run ({label + '):':<21} F1 {f:.4f} (P {p:.4f} R {r:.4f})")
        for complete in (False, True):
            result, took = two_server(members, secret, complete)
            p, r, f = prf(found(members, result.links), actual)
            label = "now, completed" if complete else "before"
            through = result.transcript.pairs
            print(f"  two-server ({label + '):':<20} F1 {f:.4f} (P {p:.4f} R {r:.4f}), "
                  f"{took:.1f} CPU s, {through} pairs through the circuit, "
                  f"{result.transcript.rounds} rounds")  # fmt: skip
            if complete:
                spent = result.seconds.get("completing (C)", 0.0)
                print(f"    completion: {result.completion}; C's own {spent:.2f} CPU s")
        mine, theirs = found(members, result.links), found(members, clk.links)
        print(
            f"  two-server hits vs the CLK run's: {len(mine & theirs)} both, "
            f"{len(mine - theirs)} two-server only, {len(theirs - mine)} CLK only",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
