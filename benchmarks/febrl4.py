"""Febrl4 through the documented CLI flow, beside the anchor (clkhash + anonlink).

    .venv/bin/python benchmarks/febrl4.py [--threshold 0.8]

Two organisations (febrl4_a, febrl4_b: 5,000 records each, every record of A
has one corrupted duplicate in B) link through a real `blindmatch serve`
process. Precision, recall and F1 are computed on the `hits` files. The anchor
encodes the raw files with clkhash's own CSV encoder (no normalisation beyond
what the schema does) and matches with anonlink's candidate generation and
greedy solver at the same threshold: the same schema, secret and threshold.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import link, serve
from blindmatch.matcher.domain import DEFAULT_THRESHOLD

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "febrl4"


def entity(rec_id: str) -> str:
    return rec_id.split("-")[1]


def prf(true_positive: int, predicted: int, actual: int) -> tuple[float, float, float]:
    precision = true_positive / predicted if predicted else 1.0
    recall = true_positive / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class Quality:
    hits: tuple[float, float, float]  # P, R, F1 of the (record, partner) hits files
    pairs: tuple[float, float, float]  # P, R, F1 of the record pairs (mapping)
    seconds: float


def blindmatch_flow(threshold: float | None, workdir: Path) -> Quality:
    """The CLI flow at `mapping` disclosure: the hits files plus partner rows.

    A hits file is the mapping file without its partner_row column, so both the
    hits-level and the stricter pair-level figures come from one run.
    """
    started = time.monotonic()
    with serve(workdir / "matcher-data") as served:
        results = link(
            served,
            workdir,
            "febrl4",
            {
                "org_a": (DATA / "febrl4_a.csv", DATA / "mapping.toml"),
                "org_b": (DATA / "febrl4_b.csv", DATA / "mapping.toml"),
            },
            DATA / "schema.json",
            disclose="mapping",
            threshold=threshold,
        )
    seconds = time.monotonic() - started
    ids = {name: _column(DATA / f"febrl4_{name[-1]}.csv", "rec_id") for name in ("org_a", "org_b")}
    hit_rows = [(name, row) for name in ("org_a", "org_b") for row in _rows(results[name])]
    # Every Febrl4 subject is held by both organisations: 10,000 true hits.
    hits_true = sum(1 for _name, row in hit_rows if row["partner"] in ids)
    pairs = _rows(results["org_a"])
    correct = sum(
        1
        for row in pairs
        if entity(row["record_id"]) == entity(ids["org_b"][int(row["partner_row"])])
    )
    return Quality(
        hits=prf(hits_true, len(hit_rows), 10_000),
        pairs=prf(correct, len(pairs), 5000),
        seconds=seconds,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _column(path: Path, name: str) -> list[str]:
    return [row[name] for row in _rows(path)]


def anchor(threshold: float) -> tuple[float, float, float, float]:
    """clkhash's CSV encoder + anonlink, the field's reference flow."""
    import io
    import json
    import warnings

    from clkhash import clk, schema

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import anonlink

    started = time.monotonic()
    raw = json.loads((DATA / "schema.json").read_text())
    raw["features"].insert(0, {"identifier": "rec_id", "ignored": True})
    # clkhash reads dates as the schema says; Febrl4 writes YYYYMMDD.
    dob = next(f for f in raw["features"] if f["identifier"] == "date_of_birth")
    dob["format"]["format"] = "%Y%m%d"
    for f in raw["features"][1:]:
        f["hashing"]["missingValue"] = {"sentinel": ""}
    sch = schema.from_json_dict(raw)
    secret = "anchor secret"
    datasets, ids = [], []
    for name in ("febrl4_a.csv", "febrl4_b.csv"):
        text = (DATA / name).read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))[1:]
        # Invalid dates in Febrl4 would make clkhash refuse the file: blank them, as
        # a careful analyst would by hand.
        for r in rows:
            try:
                time.strptime(r[9], "%Y%m%d")
            except ValueError:
                r[9] = ""
        ids.append([r[0] for r in rows])
        datasets.append(clk.generate_clks(rows, sch, secret))
    cands = anonlink.candidate_generation.find_candidate_pairs(
        datasets, anonlink.similarities.dice_coefficient_accelerated, threshold
    )
    groups = anonlink.solving.greedy_solve(cands)
    correct = predicted = 0
    for group in groups:
        (d0, r0), (d1, r1) = sorted(group)
        predicted += 1
        correct += entity(ids[d0][r0]) == entity(ids[d1][r1])
    return (*prf(correct, predicted, 5000), time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=float, help="Dice threshold (default: the project's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blindmatch-febrl4-") as tmp:
        ours = blindmatch_flow(args.threshold, Path(tmp))
    threshold = args.threshold or DEFAULT_THRESHOLD
    theirs = anchor(threshold)
    print(f"Febrl4, 5,000 x 5,000 records, Dice threshold {threshold}")
    print(f"{'':<40} {'precision':>9} {'recall':>7} {'F1':>7} {'seconds':>8}")
    rows = [
        ("blindmatch CLI flow: hits files", ours.hits, ours.seconds),
        ("blindmatch CLI flow: record pairs", ours.pairs, ours.seconds),
        ("anchor clkhash + anonlink: record pairs", theirs[:3], theirs[3]),
    ]
    for label, (p, r, f), secs in rows:
        print(f"{label:<40} {p:>9.4f} {r:>7.4f} {f:>7.4f} {secs:>8.1f}")
    print(f"pair F1, blindmatch - anchor: {ours.pairs[2] - theirs[2]:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
