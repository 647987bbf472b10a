"""Match quality on messy multi-agency exports: blindmatch beside its anchors, on two
independent generators and a grid of corruption rates and population sizes.

    .venv/bin/python benchmarks/quality.py [--seeds 11 12 13] [--population 20000]
    .venv/bin/python benchmarks/quality.py --grid        # what `make bench-quality` runs

For every setting, a generator writes the organisations' exports and their truth:
`benchmarks/messy.py` (three organisations; the generator the defaults were chosen on) or
`benchmarks/households.py` (four organisations, other names, another corruption model;
households, twins, movers, marriages; never used to choose anything). Then, on the same
files:

- **anchor**: clkhash + anonlink at Dice 0.8, record level, after careful hand
  normalisation (case, accents, punctuation, date formats, postcode spacing, sex words, a
  full-name column cut by its known layout), with the original person-uk schema
  (benchmarks/data/anchor-schema.json); multi-party greedy solving; its groups turned into
  (record, partner) hits.
- **blindmatch**: the documented CLI flow with default settings through a real
  `blindmatch serve` process: `project create` (hits disclosure, default threshold),
  `encode` with schemas/person-uk.json and each member's mapping, `upload`, `run`,
  `results`; the members' hits files are scored.
- **two-server** (with `--flows`): the blindmatch flow in a project in two-server mode
  (docs/operations.md, "A project in two-server mode"): S2 and S1 as `blindmatch two-server
  role` processes, the matcher `blindmatch serve --two-server-s1/-s2 ...` (their combiner),
  `project create --mode two-server`, members `encode --two-server`, then `upload`, `run`,
  `results` as above (benchmarks/cliflow.py `two_server_serve`). With `--one-secret` and the
  `blindmatch` flow, the two differ only in the mode: the grid prints the F1 difference in
  points and the hits found by one flow only.
- **splink** (with `--splink`, or in the grid): Splink on the same hand-normalised
  plaintext (first given name), its standard person model trained unsupervised (EM), pairs
  with match probability >= 0.5, resolved one-to-one between each two organisations best
  first (benchmarks/splink_link.py, run in benchmarks/.venv-splink: Splink is the
  benchmark's anchor, not a dependency).
- **no-rule** (with `--flows`): the same CLI flow with schemas/person-uk-no-rule.json, the
  default without `blindmatch.rule` (one CLK a pair: the default until the rule was built).
- **original** (in the grid): the same CLI flow with schemas/person-uk-original.json, the
  default until the candidate layout replaced it (issue 21; docs/schema.md); with
  `--flows`, also **no-fallback** (the default without its fallback CLK),
  **original-no-fallback** and **household-weights** (schemas/person-uk-households.json:
  the default with fewer bits on surname, postcode and `names`), **frequency** and
  **household-frequency** (benchmarks/data/person-uk-frequency.json and
  person-uk-households-frequency.json: `blindmatch.frequency` tiers, docs/evaluation.md).
- **reach-0.02** (with `--flows`): the default with the rule's previous `reach`, 0.02 (its
  candidate floor 0.78 at T = 0.8; docs/evaluation.md, "The reach"), written for the cell.
  `--one-secret` encodes every flow of a cell under one secret (default: a fresh one a flow),
  so that flows whose CLKs are the same bits differ only by how they are scored.
- **privacy** (in the grid, at corruption 1): `privacy-check` of the default encoding of
  the largest export: the share of all its records its worst attack re-identifies (as
  privacy-check ranks attacks: `CheckReport.share_of_all`).

Precision, recall and F1 are over (record, partner) hits of all members.
"""

from __future__ import annotations

import argparse
import csv
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import households, messy
from benchmarks.cliflow import link, serve, two_server_serve
from blindmatch.client.tools.evaluate import Quality, quality, read_results, read_truth

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
# The other shipped record-level schemas the grid can run through the same CLI flow.
SCHEMA_FLOWS = {
    # The default without its rule over both CLKs (one CLK a pair): the default until the
    # rule was built (issue 21, docs/evaluation.md "A decision rule over both CLKs' scores").
    "no-rule": ROOT / "schemas" / "person-uk-no-rule.json",
    "no-fallback": ROOT / "schemas" / "person-uk-no-fallback.json",
    "original": ROOT / "schemas" / "person-uk-original.json",  # the default until issue 21
    "original-no-fallback": ROOT / "schemas" / "person-uk-original-no-fallback.json",
    # The default with fewer bits on what a household shares (issue 21 item 1, docs/schema.md).
    "household-weights": ROOT / "schemas" / "person-uk-households.json",
    # Frequency tiers counted by each member over its own export (issue 21 item 1; not
    # shipped: docs/evaluation.md, "Frequency tiers"): on the given name of the default,
    # and common-value tiers on both names of the household weights.
    "frequency": ROOT / "benchmarks" / "data" / "person-uk-frequency.json",
    "household-frequency": ROOT / "benchmarks" / "data" / "person-uk-households-frequency.json",
}
# The default with the rule's previous reach (0.02, candidate floor 0.78 at T = 0.8; the
# default until 2026-12-04, docs/evaluation.md "The reach"), written beside the cell's exports.
REACH_FLOW = "reach-0.02"
# The default in a project in two-server mode: the matcher as combiner of S1 and S2.
TWO_SERVER_FLOW = "two-server"
FLOWS = ["anchor", "blindmatch", TWO_SERVER_FLOW, *SCHEMA_FLOWS, REACH_FLOW, "splink"]
ANCHOR_SCHEMA = Path(__file__).resolve().parent / "data" / "anchor-schema.json"
SPLINK_PYTHON = Path(__file__).resolve().parent / ".venv-splink" / "bin" / "python"
SPLINK_SCRIPT = Path(__file__).resolve().parent / "splink_link.py"

Hits = set[tuple[str, str, str]]
HandRows = dict[str, tuple[list[str], list[list[str]]]]


@dataclass(frozen=True)
class Generator:
    name: str
    write: Callable[..., Mapping[str, object]]  # (folder, seed, size, corruption) -> exports
    hand_rows: Callable[[Path], HandRows]

    def exports(self, folder: Path) -> dict[str, tuple[Path, Path]]:
        """Each organisation's CSV and mapping in `folder`, in the generator's order."""
        return {name: (folder / f"{name}.csv", folder / f"{name}.toml") for name in self.orgs}

    @property
    def orgs(self) -> list[str]:
        module = messy if self.name == "messy" else households
        return [o.name for o in module.ORGS]


GENERATORS = {
    "messy": Generator("messy", messy.write_exports, messy.hand_rows),
    "households": Generator("households", households.write_exports, households.hand_rows),
}


def anchor(folder: Path, threshold: float = 0.8, generator: str = "messy") -> Hits:
    """clkhash + anonlink, record level, hand-normalised: the field's reference flow."""
    from clkhash import clk, schema

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import anonlink

    raw = json.loads(ANCHOR_SCHEMA.read_text())
    for f in raw["features"]:
        f["hashing"]["missingValue"] = {"sentinel": ""}
    sch = schema.from_json_dict(raw)
    hand = GENERATORS[generator].hand_rows(folder)
    names = list(hand)
    datasets = [
        clk.generate_clks([[r[0].replace(" ", ""), *r[1:]] for r in rows], sch, "anchor")
        for _ids, rows in hand.values()
    ]
    cands = anonlink.candidate_generation.find_candidate_pairs(
        datasets, anonlink.similarities.dice_coefficient_accelerated, threshold
    )
    hits = set()
    for group in anonlink.solving.greedy_solve(cands):
        for d0, r0 in group:
            for d1, _r1 in group:
                if d0 != d1:
                    hits.add((names[d0], hand[names[d0]][0][r0], names[d1]))
    return hits


def _spaced_postcode(code: str) -> str:
    code = code.upper()
    return f"{code[:-3]} {code[-3:]}" if len(code) > 4 else code


def splink(folder: Path, generator: str, workdir: Path) -> Hits:
    """Splink on the hand-normalised plaintext (see benchmarks/splink_link.py)."""
    if not SPLINK_PYTHON.exists():
        raise SystemExit(f"{SPLINK_PYTHON} is missing: run `make bench-quality` to make it")
    records = workdir / "splink-records.csv"
    with open(records, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["source_dataset", "unique_id", "first_name", "surname", "dob", "sex",
                         "postcode"])  # fmt: skip
        for name, (ids, rows) in GENERATORS[generator].hand_rows(folder).items():
            for rid, (given, surname, dob, sex, postcode) in zip(ids, rows, strict=True):
                first = (given.split() or [""])[0]
                writer.writerow([name, rid, first, surname, dob, sex, _spaced_postcode(postcode)])
    pairs = workdir / "splink-pairs.csv"
    with open(workdir / "splink.log", "w", encoding="utf-8") as log:
        done = subprocess.run(
            [str(SPLINK_PYTHON), str(SPLINK_SCRIPT), str(records), str(pairs)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode:
        tail = (workdir / "splink.log").read_text(encoding="utf-8")[-3000:]
        raise RuntimeError(f"splink_link.py exited {done.returncode}:\n{tail}")
    with open(pairs, newline="", encoding="utf-8") as fh:
        scored = [
            (float(r["match_probability"]), r["source_dataset_l"], r["unique_id_l"],
             r["source_dataset_r"], r["unique_id_r"])
            for r in csv.DictReader(fh)
        ]  # fmt: skip
    # One-to-one between each two organisations, best probability first (as blindmatch's
    # and anonlink's greedy solvers are): without it Splink links every household member
    # that clears 0.5 and its precision collapses.
    hits, taken = set(), set()
    for _p, left, lid, right, rid in sorted(scored, reverse=True):
        if (left, lid, right) in taken or (right, rid, left) in taken:
            continue
        taken.update({(left, lid, right), (right, rid, left)})
        hits.update({(left, lid, right), (right, rid, left)})
    return hits


def blindmatch_flow(
    folder: Path,
    workdir: Path,
    generator: str = "messy",
    schema: Path = SCHEMA,
    secret_hex: str | None = None,
    mode: str | None = None,
) -> Hits:
    """The documented CLI flow, default settings; the union of the members' hits files. With
    `mode="two-server"`, on a matcher with S1 and S2, in a project in two-server mode."""
    members = GENERATORS[generator].exports(folder)
    workdir.mkdir(parents=True, exist_ok=True)
    two = mode == "two-server"
    with two_server_serve(workdir) if two else serve(workdir / "matcher-data") as served:
        results = link(
            served, workdir, "quality", members, schema, secret_hex=secret_hex, mode=mode
        )
    return {s.hit for name, path in results.items() for s in read_results(path, name)}


def privacy(folder: Path, generator: str, schema: Path = SCHEMA) -> tuple[float, str]:
    """The worst attack's share of all records on the default encoding of the largest export,
    as privacy-check ranks and says it (`CheckReport.share_of_all`; before 2026-12-08 the
    share of the records that attack tried, which a graph attack on a sample overstated)."""
    from blindmatch.client.encoding.schema import load_schema
    from blindmatch.client.tools.privacy.check import check_csv

    csv_path, mapping = next(iter(GENERATORS[generator].exports(folder).values()))
    report = check_csv(csv_path, load_schema(schema), mapping, secrets.token_bytes(32))
    worst = report.worst
    where = f"{worst.attack}, {worst.encoding} {worst.field}" if worst else "-"
    return (report.share_of_all(worst) if worst else 0.0), where


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _q(q: Quality) -> str:
    return f"{q.f1:.4f} ({q.precision:.4f}/{q.recall:.4f})"


CORRUPTIONS = [0.5, 1.0, 2.0]
POPULATIONS = [20_000, 50_000]


def cell_seed(base: int, generator: str, corruption: float, population: int) -> int:
    """A grid cell's seed from its place in the whole grid, so a run of a few cells (one
    generator, one rate) generates the same people as the whole grid does; a cell outside the
    default grid gets a seed of its own past the grid's."""
    cells = [(g, c, p) for g in GENERATORS for c in CORRUPTIONS for p in POPULATIONS]
    if (generator, corruption, population) in cells:
        return base + 1 + cells.index((generator, corruption, population))
    name = f"{generator}/{corruption:g}/{population}".encode()
    return base + 1 + len(cells) + zlib.crc32(name) % 1_000_000


def _modes(cell: dict[str, object], found_by: dict[str, Hits], true: Hits) -> dict[str, float]:
    """The two-server flow against the blindmatch flow of a cell: F1 points, the hits both
    report, and those one reports alone (how many of them true)."""
    clk, two = found_by["blindmatch"], found_by[TWO_SERVER_FLOW]
    f1 = {flow: cast("list[float]", cell[flow])[2] for flow in ("blindmatch", TWO_SERVER_FLOW)}
    return {"f1_points": 100 * (f1[TWO_SERVER_FLOW] - f1["blindmatch"]), "both": len(clk & two),
            "two_server_only": len(two - clk), "two_server_only_true": len((two - clk) & true),
            "clk_only": len(clk - two), "clk_only_true": len((clk - two) & true)}  # fmt: skip


def _mode_cell(cell: dict[str, object]) -> str:
    d = cast("dict[str, float]", cell["two-server vs blindmatch"])
    return (f"{d['f1_points']:+.2f}; {d['both']:,} / {d['two_server_only']:,} "
            f"({d['two_server_only_true']:,} true) / {d['clk_only']:,} "
            f"({d['clk_only_true']:,} true)")  # fmt: skip


def grid(args: argparse.Namespace) -> int:
    """Both generators x corruption rates x population sizes: the table of issue 21."""
    flows = args.flows or ["anchor", "blindmatch", "original", "splink"]
    results: list[dict[str, object]] = []
    print(f"{'generator':<11} {'corr':>4} {'people':>6} {'flow':<11} {'precision':>9} "
          f"{'recall':>7} {'F1':>7} {'s':>6}", flush=True)  # fmt: skip
    for gen in args.generators:
        for corruption in args.corruptions:
            for size in args.populations:
                seed = cell_seed(args.seed, gen, corruption, size)
                cell: dict[str, object] = {"generator": gen, "corruption": corruption,
                                           "population": size, "seed": seed}  # fmt: skip
                one_secret = secrets.token_hex(32) if args.one_secret else None
                with tempfile.TemporaryDirectory(prefix="blindmatch-quality-") as tmp:
                    folder = Path(tmp) / "exports"
                    GENERATORS[gen].write(folder, seed, size, corruption)
                    truth = read_truth(folder / "truth.csv")
                    cell["true_hits"] = len(truth.true_hits())
                    found_by: dict[str, Hits] = {}
                    for flow in flows:
                        started = time.monotonic()
                        if flow == "anchor":
                            found = anchor(folder, generator=gen)
                        elif flow == "blindmatch":
                            found = blindmatch_flow(folder, Path(tmp), gen, SCHEMA, one_secret)
                        elif flow == TWO_SERVER_FLOW:
                            found = blindmatch_flow(
                                folder, Path(tmp) / flow, gen, SCHEMA, one_secret, flow
                            )
                        elif flow in SCHEMA_FLOWS:
                            found = blindmatch_flow(
                                folder, Path(tmp) / flow, gen, SCHEMA_FLOWS[flow], one_secret
                            )
                        elif flow == REACH_FLOW:
                            raw = json.loads(SCHEMA.read_text(encoding="utf-8"))
                            raw["blindmatch"]["rule"]["reach"] = 0.02
                            schema = Path(tmp) / f"person-uk-{flow}.json"
                            schema.write_text(json.dumps(raw, indent=2), encoding="utf-8")
                            found = blindmatch_flow(
                                folder, Path(tmp) / flow, gen, schema, one_secret
                            )
                        else:
                            found = splink(folder, gen, Path(tmp))
                        q = quality(found, truth)
                        cell[flow] = [q.precision, q.recall, q.f1]
                        cell[f"{flow} s"] = time.monotonic() - started
                        found_by[flow] = found
                        print(f"{gen:<11} {corruption:>4} {size:>6} {flow:<11} "
                              f"{q.precision:>9.4f} {q.recall:>7.4f} {q.f1:>7.4f} "
                              f"{time.monotonic() - started:>6.1f}", flush=True)  # fmt: skip
                    if {"blindmatch", TWO_SERVER_FLOW} <= found_by.keys():
                        cell["two-server vs blindmatch"] = _modes(cell, found_by, truth.true_hits())
                        print(f"{gen:<11} {corruption:>4} {size:>6} two-server - blindmatch: "
                              + _mode_cell(cell), flush=True)  # fmt: skip
                    if corruption == 1.0 and not args.no_privacy and "blindmatch" in flows:
                        share, where = privacy(folder, gen)
                        cell["privacy"] = [share, where]
                        print(f"{gen:<11} {corruption:>4} {size:>6} privacy     worst attack "
                              f"{share:.2%} ({where})", flush=True)  # fmt: skip
                results.append(cell)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print("\nF1 (precision/recall):\n")
    both = {"blindmatch", TWO_SERVER_FLOW} <= set(flows)
    modes = ["two-server - blindmatch: F1 pt; hits both / two-server only / CLK only"] * both
    print(_row(["generator", "corruption", "people", "true hits", *flows, *modes,
                "privacy (worst)"]))  # fmt: skip
    print(_row(["---"] * (5 + len(flows) + len(modes))))
    for cell in results:
        shown = []
        for flow in flows:
            p, r, f = cast("list[float]", cell[flow])
            shown.append(f"{f:.4f} ({p:.4f}/{r:.4f})")
        priv = cell.get("privacy")
        privacy_cell = f"{cast('list[float]', priv)[0]:.2%}" if priv else ""
        shown += [_mode_cell(cell)] if both else []
        print(_row([cell["generator"], cell["corruption"], cell["population"],
                    cell["true_hits"], *shown, privacy_cell]))  # fmt: skip
    return 0


def seeds(args: argparse.Namespace) -> int:
    """The original per-seed comparison on one generator at its documented rates."""
    labels = ["anchor (clkhash+anonlink 0.8)", "blindmatch"]
    if args.splink:
        labels.append("splink (EM, p >= 0.5)")
    table: dict[str, list[Quality]] = {label: [] for label in labels}
    gen = args.generators[0]
    print(f"{'seed':>5} {'flow':<30} {'precision':>9} {'recall':>7} {'F1':>7} {'s':>6}")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="blindmatch-quality-") as tmp:
            folder = Path(tmp) / "exports"
            GENERATORS[gen].write(folder, seed, args.population, 1.0)
            truth = read_truth(folder / "truth.csv")
            for label in table:
                if label.startswith("anchor") and args.skip_anchor:
                    continue
                started = time.monotonic()
                if label.startswith("anchor"):
                    found = anchor(folder, generator=gen)
                elif label.startswith("splink"):
                    found = splink(folder, gen, Path(tmp))
                else:
                    found = blindmatch_flow(folder, Path(tmp), gen)
                q = quality(found, truth)
                table[label].append(q)
                print(
                    f"{seed:>5} {label:<30} {q.precision:>9.4f} {q.recall:>7.4f} {q.f1:>7.4f} "
                    f"{time.monotonic() - started:>6.1f}",
                    flush=True,
                )
    print("\nover seeds: mean (min - max)")
    for label, qs in table.items():
        if not qs:
            continue
        cells = []
        for metric in ("precision", "recall", "f1"):
            values = [getattr(q, metric) for q in qs]
            cells.append(
                f"{metric} {statistics.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"
            )
        print(f"  {label:<30} " + "; ".join(cells))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", action="store_true", help="both generators, the whole grid")
    parser.add_argument("--generators", nargs="+", default=None, choices=list(GENERATORS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--skip-anchor", action="store_true")
    parser.add_argument("--splink", action="store_true", help="also run Splink (per-seed mode)")
    parser.add_argument("--corruptions", type=float, nargs="+", default=CORRUPTIONS)
    parser.add_argument("--populations", type=int, nargs="+", default=POPULATIONS)
    parser.add_argument(
        "--seed",
        type=int,
        default=2100,
        help="grid: first cell's seed - 1 (a cell keeps its seed when run alone)",
    )
    parser.add_argument(
        "--flows",
        nargs="+",
        choices=FLOWS,
        help="grid: the flows to run (default: anchor, blindmatch, original, splink)",
    )
    parser.add_argument("--no-privacy", action="store_true", help="grid: no privacy-check")
    parser.add_argument(
        "--one-secret", action="store_true", help="grid: one secret a cell for all its flows"
    )
    parser.add_argument("--out", type=Path, help="grid: also write the figures as JSON")
    args = parser.parse_args()
    if args.grid:
        args.generators = args.generators or list(GENERATORS)
        return grid(args)
    args.generators = args.generators or ["messy"]
    return seeds(args)


if __name__ == "__main__":
    raise SystemExit(main())
