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

With `--fail-after N` (a run that fails part-way, core/runjournal.py), then:

5. the three organisations again (fresh uploads), S2 lost just before the first batch of
   the (N+1)-th pair of members S1 proposed (as S2 refusing `Prepare` fails it: nothing of
   that batch evaluated), the outcomes of the N pairs of members finished kept in the run's
   journal (in memory here; the matcher's SQLite in a project);
6. the rerun, no member uploading again: the journal's outcomes reused, the unfinished
   pairs of members through S1's proposal and the circuit, on the same pair budget;
7. the three, everyone uploaded again (what a failed run cost before: every pair again).

and whether run 6's links are run 7's (they must be).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks.messy import write_exports
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.matcher import errors
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


class Journal:
    """A run's journal (core/outcomes.py `Journal`) in memory: each pair of members' outcome
    as soon as the run holds it, and the pairs of members with a batch out (pending)."""

    def __init__(self) -> None:
        self.outcomes: dict[tuple[int, int], Outcome] = {}
        self.open: set[tuple[int, int]] = set()

    def pending(self, ends: tuple[int, int]) -> None:
        self.open.add(ends)

    def keep(self, ends: tuple[int, int], outcome: Outcome) -> None:
        self.outcomes[ends] = outcome
        self.open.discard(ends)

    def drop(self, ends: tuple[int, int]) -> None:
        self.outcomes.pop(ends, None)
        self.open.discard(ends)

    def by_name(self, names: list[str]) -> Outcomes:
        """The outcomes a rerun reuses (none of a pending pair of members), by name."""
        return {(names[i], names[j]): o for (i, j), o in self.outcomes.items()
                if (i, j) not in self.open}  # fmt: skip


class Lost(Budgeted):
    """`Budgeted` whose S2 is lost just before the first batch of the (`after` + 1)-th pair
    of members S1 proposed: the batch fails as a refused `Prepare` does over gRPC (S1 not
    asked, nothing of it evaluated: rpc/twoserver_client.py)."""

    after = 1

    def evaluate_part(self, index: int, offset: int, count: int, circuit: linkbit.Circuit,
                      dealt: linkbit.Deal, transcript: linkbit.Transcript,
                      clock: dict[str, float]) -> tuple[bytes, bytes]:  # fmt: skip
        assert self.proposal is not None  # proposed before any batch
        described = self.proposal.described()
        p = described[index]
        ends = list(dict.fromkeys((q.member_a, q.member_b) for q in described))
        if ends.index((p.member_a, p.member_b)) >= self.after:
            exc = errors.Unavailable("S2 is unreachable (benchmarks/twoserver_rerun.py)")
            exc.evaluated = False
            raise exc
        return super().evaluate_part(index, offset, count, circuit, dealt, transcript, clock)


def rerun(
    uploads: dict[str, sharing.SharedUpload],
    names: list[str],
    budget: Budgets,
    earlier: Outcomes | None = None,
    clks: int = 2,
    journal: Journal | None = None,
    servers: Budgeted | None = None,
) -> tuple[tworun.TwoServerResult, Budgeted, Outcomes]:
    """A run over `names`' uploads reusing the `earlier` outcomes of pairs of them (by
    name), keeping each pair of members' in `journal` as it goes: the result, the servers
    (what they evaluated; `servers` where given), and the outcomes by name."""
    servers = servers or Budgeted([uploads[n] for n in names], names, budget)
    known = earlier or {}
    reuse = {(i, j): known[a, b] for i, a in enumerate(names) for j, b in enumerate(names)
             if i < j and (a, b) in known}  # fmt: skip
    combiner = twoserver.Combiner(None, THRESHOLD, clks=clks)
    got = tworun.drive(servers, combiner, earlier=Earlier(len(names), reuse), journal=journal)
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
    ap.add_argument(
        "--fail-after",
        type=int,
        default=0,
        metavar="N",
        help="then runs 5-7: a run failing after N pairs of members, resumed",
    )
    add_keep(ap)
    args = ap.parse_args()
    with work_dir("bm-tsrerun-", keep=args.keep) as work:
        return bench(args, work)


def bench(args: argparse.Namespace, work: Path) -> int:
    """The benchmark in `work` (deleted by `main` afterwards)."""
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

    def timed(label: str, names: list[str], spent: Budgets, earlier: Outcomes | None,
              journal: Journal | None = None, lost: int = 0) -> tuple[
        tworun.TwoServerResult | None, Outcomes
    ]:  # fmt: skip
        w0, c0 = time.perf_counter(), time.process_time()
        servers: Budgeted | None = None
        if lost:
            servers = Lost([uploads[n] for n in names], names, spent)
            servers.after = lost
        try:
            got, servers, outcomes = rerun(uploads, names, spent, earlier, clks, journal,
                                           servers)  # fmt: skip
        except errors.Unavailable:  # the run lost S2 (`Lost`)
            assert servers is not None and servers.proposal is not None
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            rows.append((label, 0, sum(p.pairs for p in servers.proposal.described()),
                         servers.evaluated, servers.evaluated, 0,
                         sum(servers.blocking.values()), wall, cpu))  # fmt: skip
            return None, {}
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
    resumed = everyone = None
    if args.fail_after:
        journal, spent = Journal(), Budgets()  # fresh uploads of the three: a fresh budget
        timed(f"5. S2 lost after {args.fail_after} pair(s)", three, spent, None, journal,
              lost=args.fail_after)  # fmt: skip
        assert not journal.open, "the lost batch was evaluated: its pair of members pending"
        resumed, _ = timed("6. plain rerun (resumes)", three, spent, journal.by_name(three))
        everyone, _ = timed("7. three, all uploaded again", three, Budgets(), None)
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
    assert joined is not None and fresh is not None
    same = links_of(joined, four) == links_of(fresh, four)
    print(f"run 2's links are run 3's: {same}")
    if resumed is not None and everyone is not None:
        r6, r7 = rows[5], rows[6]
        print(
            f"run 6 against run 7: {r6[3] / r7[3]:.2f}x the pairs S1 and S2 evaluated, "
            f"{r6[7] / r7[7]:.2f}x the wall, {r6[8] / r7[8]:.2f}x the CPU; runs 5 and 6 "
            f"together {(rows[4][3] + r6[3]) / r7[3]:.2f}x the pairs, "
            f"{(rows[4][8] + r6[8]) / r7[8]:.2f}x the CPU"
        )
        resumes = links_of(resumed, three) == links_of(everyone, three)
        print(f"run 6's links are run 7's: {resumes}")
        same = same and resumes
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
