"""Match quality on messy multi-agency exports: the anchor and blindmatch side by side.

    .venv/bin/python benchmarks/quality.py [--seeds 11 12 13] [--population 20000]

For every seed, `benchmarks/messy.py` writes three organisations' exports and
their truth. Then, on the same files:

- **anchor**: clkhash + anonlink at Dice 0.8, record level, after careful hand
  normalisation (case, accents, punctuation, date formats, postcode spacing,
  sex words), with the original person-uk schema (benchmarks/data/anchor-schema.json);
  multi-party greedy solving; its groups turned into (record, partner) hits.
- **blindmatch**: the documented CLI flow with default settings through a real
  `blindmatch serve` process: `project create` (hits disclosure, default
  threshold), `encode` with schemas/person-uk.json and each member's mapping,
  `upload`, `run`, `results`; the three hits files are scored.

Precision, recall and F1 are over (record, partner) hits of all three members.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
import unicodedata
import warnings
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import link, serve
from benchmarks.messy import ORGS, write_exports
from blindmatch.client.tools.evaluate import Quality, quality, read_results, read_truth

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
ANCHOR_SCHEMA = Path(__file__).resolve().parent / "data" / "anchor-schema.json"


def _hand_text(value: str) -> str:
    text = unicodedata.normalize("NFKD", value.casefold())
    return "".join(ch for ch in text if ch.isalnum())


def _hand_row(row: dict[str, str], style) -> list[str]:  # type: ignore[no-untyped-def]
    c = style.columns
    dob = row[c["dob"]].strip()
    if dob:
        dob = datetime.strptime(dob, style.date_format).strftime("%Y-%m-%d")
    sex = row[c["sex"]].strip()[:1].upper()
    return [
        _hand_text(row[c["forenames"]]),
        _hand_text(row[c["surname"]]),
        dob,
        sex,
        _hand_text(row[c["postcode"]]),
    ]


def anchor(folder: Path, threshold: float = 0.8) -> set[tuple[str, str, str]]:
    """clkhash + anonlink, record level, hand-normalised: the field's reference flow."""
    import json

    from clkhash import clk, schema

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import anonlink

    raw = json.loads(ANCHOR_SCHEMA.read_text())
    for f in raw["features"]:
        f["hashing"]["missingValue"] = {"sentinel": ""}
    sch = schema.from_json_dict(raw)
    datasets, ids = [], []
    for style in ORGS:
        with open(folder / f"{style.name}.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        ids.append([r[style.id_column] for r in rows])
        datasets.append(clk.generate_clks([_hand_row(r, style) for r in rows], sch, "anchor"))
    cands = anonlink.candidate_generation.find_candidate_pairs(
        datasets, anonlink.similarities.dice_coefficient_accelerated, threshold
    )
    hits = set()
    for group in anonlink.solving.greedy_solve(cands):
        for d0, r0 in group:
            for d1, _r1 in group:
                if d0 != d1:
                    hits.add((ORGS[d0].name, ids[d0][r0], ORGS[d1].name))
    return hits


def blindmatch_flow(folder: Path, workdir: Path) -> set[tuple[str, str, str]]:
    """The documented CLI flow, default settings; the union of the members' hits files."""
    members = {s.name: (folder / f"{s.name}.csv", folder / f"{s.name}.toml") for s in ORGS}
    with serve(workdir / "matcher-data") as served:
        results = link(served, workdir, "quality", members, SCHEMA)
    return {s.hit for name, path in results.items() for s in read_results(path, name)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--skip-anchor", action="store_true")
    args = parser.parse_args()
    table: dict[str, list[Quality]] = {"anchor (clkhash+anonlink 0.8)": [], "blindmatch": []}
    print(f"{'seed':>5} {'flow':<30} {'precision':>9} {'recall':>7} {'F1':>7} {'s':>6}")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="blindmatch-quality-") as tmp:
            folder = Path(tmp) / "exports"
            write_exports(folder, seed, args.population)
            truth = read_truth(folder / "truth.csv")
            for label in table:
                if label.startswith("anchor") and args.skip_anchor:
                    continue
                started = time.monotonic()
                found = anchor(folder) if label.startswith("anchor") else None
                found = found if found is not None else blindmatch_flow(folder, Path(tmp))
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


if __name__ == "__main__":
    raise SystemExit(main())
