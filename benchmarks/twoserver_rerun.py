"""A second two-server run without every member uploading again (core/outcomes.py) against
the run where everyone uploaded again, on realistic uploads:

    .venv/bin/python benchmarks/twoserver_rerun.py [--size 8000] [--seed 3]
        [--schema schemas/person-uk-no-rule.json]

Members: the messy fixture's three organisations (benchmarks/messy.py, each holding about
35% of `--size` people) and a fourth, north-police's export of the same people written again
at 1.5x the corruption rates (another holder of much the same people), each encoded as
`encode --two-server` encodes (`encode_csv`, then `shared_upload` under the schema's keyed
blocking). S1, S2 and C run in this process (core/tworun.py `drive` over `InProcess`), with
the pair budget S1 and S2 keep over gRPC (`Budgeted`: a pair evaluated twice since its
uploads stops the run). Runs, each timed by wall clock and by this process's CPU:

1. the three organisations (every pair new);
2. the fourth joins: the outcomes of run 1's three pairs of members reused, its three pairs
   through S1's proposal and the circuit;
3. the same four, everyone uploaded again (a fresh budget; every pair through the circuit):
   what a second run cost before;
4. south uploads changed records (a fifth left out): its three pairs again, three reused.

Printed: each run's pairs of members reused, pairs proposed, pairs through the circuit
(proposed and extras), links, wall and CPU seconds; whether run 2's links are run 3's (they
must be). The machine's other load counts in the wall seconds (the load average is shown).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks.messy import write_exports
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.matcher.core import linkbit, tworun, twoserver
from blindmatch.matcher.core.outcomes import Earlier, Outcome
from blindmatch.matcher.core.pairbudget import PairBudget

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk-no-rule.json"
THRESHOLD = 0.8
SECRET = b"benchmarks/twoserver_rerun.py: the members' secret, 32+ bytes"


def lacking(uploads: list[sharing.SharedUpload]) -> list[npt.NDArray[np.bool_]] | None:
    """Which records lack the fallback's fields, as the members tell S1 (None: no fallback)."""
    got = [u.s1.lacking for u in uploads]
    return None if any(x is None for x in got) else [x for x in got if x is not None]


@dataclass
class Budgets:
    """S1's and S2's pair budgets, by upload name across runs (core/pairbudget.py): at the
    run's cut-offs, and at the reach cut-off (completion's, core/twocomplete.py)."""

    pairs: PairBudget = field(default_factory=PairBudget)
    reach: PairBudget = field(default_factory=PairBudget)


class Budgeted(tworun.InProcess):
    """S1 and S2 in this process holding `uploads` (by name), with the pair budgets S1 and S2
    keep over gRPC: a pair evaluated twice since its uploads (at the run's cut-offs, or at the
    reach) raises. `evaluated`: the pairs through the circuit, at the run's cut-offs."""

    def __init__(
        self, uploads: list[sharing.SharedUpload], names: list[str], budget: Budgets
    ) -> None:
        s1 = twoserver.BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads],
                                      b"", [u.s1.popcounts for u in uploads],
                                      lacking(uploads))  # fmt: skip
        s2 = twoserver.ShareServer([u.s2.shares for u in uploads], b"",
                                   [u.s2.popcounts for u in uploads],
                                   [u.s2.seal_key for u in uploads])  # fmt: skip
        super().__init__(s1, s2)
        self.names, self.budget = names, budget
        self.evaluated = self.reached = 0
        self._reach = False

    def evaluate_reach(self, part: twoserver.PairBatch, circuit: linkbit.Circuit,
                       dealt: linkbit.Deal, transcript: linkbit.Transcript,
                       clock: dict[str, float]) -> tuple[bytes, bytes]:  # fmt: skip
        self._reach = True
        try:
            return super().evaluate_reach(part, circuit, dealt, transcript, clock)
        finally:
            self._reach = False

    def _run(self, part: twoserver.PairBatch, circuit: linkbit.Circuit, dealt: linkbit.Deal,
             transcript: linkbit.Transcript, clock: dict[str, float], tagged: bool,
             drop: npt.NDArray[np.bool_] | None) -> tuple[bytes, bytes]:  # fmt: skip
        keep = np.ones(len(part), bool) if drop is None else ~drop
        a, b = self.names[part.member_a], self.names[part.member_b]
        budget = self.budget.reach if self._reach else self.budget.pairs
        if budget.spend(a, b, part.rows_a[keep], part.rows_b[keep]):
            raise ValueError(f"S1 refuses: a pair of {a} x {b} evaluated twice")
        if self._reach:
            self.reached += int(keep.sum())
        else:
            self.evaluated += int(keep.sum())
        return super()._run(part, circuit, dealt, transcript, clock, tagged, drop)


Outcomes = dict[tuple[str, str], Outcome]


def rerun(
    uploads: dict[str, sharing.SharedUpload],
    names: list[str],
    budget: Budgets,
    earlier: Outcomes | None = None,
    clks: int = 2,
) -> tuple[tworun.TwoServerResult, Budgeted, Outcomes]:
    """A run over `names`' uploads reusing the `earlier` outcomes of pairs of them (by
    name): the result, the servers (what they evaluated), and the outcomes by name."""
    servers = Budgeted([uploads[n] for n in names], names, budget)
    known = earlier or {}
    reuse = {(i, j): known[a, b] for i, a in enumerate(names) for j, b in enumerate(names)
             if i < j and (a, b) in known}  # fmt: skip
    combiner = twoserver.Combiner(None, THRESHOLD, clks=clks)
    got = tworun.drive(servers, combiner, earlier=Earlier(len(names), reuse))
    return got, servers, {(names[i], names[j]): o for (i, j), o in got.outcomes.items()}


def links_of(result: tworun.TwoServerResult, names: list[str]) -> set[tuple[object, ...]]:
    got = result.links
    return {(names[d], int(r), names[p], int(q), float(s)) for d, r, p, q, s in zip(
        got.dset, got.row, got.partner, got.partner_row, got.score, strict=True)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8_000, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--schema", type=Path, default=SCHEMA, help="the members' schema")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bm-tsrerun-"))
    schema = load_schema(args.schema)
    exports = write_exports(work / "a", seed=args.seed, size=args.size)
    again = write_exports(work / "b", seed=args.seed, size=args.size, corruption=1.5)
    csvs = {"north": exports["north-police"], "south": exports["south-police"],
            "retail": exports["retail-bcrp"], "north2": again["north-police"]}  # fmt: skip
    uploads, clks = {}, 2
    for name, export in csvs.items():
        result = encode_csv(export.csv, schema, load_mapping(export.mapping, schema), SECRET)
        x = np.frombuffer(result.clks, np.uint8).reshape(-1, result.clk_bits // 8)
        plan = sharing.plan_of(schema)
        uploads[name] = sharing.shared_upload(x, SECRET, plan, result.fallback_bits)
        clks = 2 if result.fallback_bits else 1
        if name == "south":  # its changed upload: a fifth of its records left out
            uploads["south'"] = sharing.shared_upload(x[: 4 * len(x) // 5], SECRET, plan,
                                                      result.fallback_bits)  # fmt: skip
    sizes = ", ".join(f"{n} {len(u.s1.shares[0]):,}" for n, u in uploads.items())
    print(f"records: {sizes} (messy fixture, seed {args.seed}, {args.schema.name})")
    budget = Budgets()
    load = os.getloadavg()[0]
    rows = []

    def timed(label: str, names: list[str], spent: Budgets, earlier: Outcomes | None) -> tuple[
        tworun.TwoServerResult, Outcomes
    ]:  # fmt: skip
        w0, c0 = time.perf_counter(), time.process_time()
        got, servers, outcomes = rerun(uploads, names, spent, earlier, clks)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        reused = sum(1 for k in earlier or {} if set(k) <= set(names))
        rows.append((label, reused, got.comparisons, servers.evaluated, got.transcript.pairs,
                     len(got.links), sum(servers.blocking.values()), wall, cpu))  # fmt: skip
        return got, outcomes

    three = ["north", "south", "retail"]
    four = [*three, "north2"]
    _, first = timed("1. three members, all new", three, budget, None)
    joined, second = timed("2. a fourth joins (reuse)", four, budget, first)
    fresh, _ = timed("3. four, all uploaded again", four, Budgets(), None)
    changed = ["north", "south'", "retail", "north2"]
    kept = {k: o for k, o in second.items() if "south" not in k}
    timed("4. south changes (reuse)", changed, budget, kept)
    load_after = os.getloadavg()[0]
    print(f"\nthreshold {THRESHOLD}, in one process; load average {load:.1f} before, "
          f"{load_after:.1f} after")  # fmt: skip
    print(f"{'run':<30}{'reused':>7}{'proposed':>11}{'evaluated':>11}{'circuit':>11}"
          f"{'links':>8}{'block s':>9}{'wall s':>8}{'CPU s':>8}")  # fmt: skip
    for label, reused, proposed, evaluated, circuit, links, block, wall, cpu in rows:
        print(f"{label:<30}{reused:>7}{proposed:>11,}{evaluated:>11,}{circuit:>11,}{links:>8,}"
              f"{block:>9.2f}{wall:>8.2f}{cpu:>8.2f}")  # fmt: skip
    r2, r3 = rows[1], rows[2]
    print(
        f"run 2 against run 3: {r2[3] / r3[3]:.2f}x the pairs S1 and S2 evaluated, "
        f"{r2[7] / r3[7]:.2f}x the wall, {r2[8] / r3[8]:.2f}x the CPU, {r2[6] / r3[6]:.2f}x "
        "the CPU of blocking (S1's join, S2's expansion)"
    )
    same = links_of(joined, four) == links_of(fresh, four)
    print(f"run 2's links are run 3's: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
