"""`blindmatch demo`: the whole flow on synthetic exports, with a real matcher in-process.

Three organisations whose exports differ in column names, case, date format,
accents and postcode spacing encode locally, upload over gRPC (loopback), run
matching, and each fetches what the default `hits` disclosure allows.

The client does not import the matcher: the caller (the command line, which sits
above both) passes `start_matcher`, which starts one on a free loopback port.
"""

from __future__ import annotations

import csv
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.encoded import write_encoded
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.results import join_results
from blindmatch.client.tools import SCHEMAS
from blindmatch.client.tools.synthetic import DEMO_ORGS, write_org_exports

SCHEMA = SCHEMAS / "person-uk.json"

# (data dir, operator token) -> (the matcher's HOST:PORT, a function that stops it)
StartMatcher = Callable[[Path, str], tuple[str, Callable[[], None]]]


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_demo(start_matcher: StartMatcher, records: int = 2000, seed: int = 7) -> dict[str, float]:
    """Run the demo; returns the measured precision, recall and F1 of the hits."""
    started = time.monotonic()
    schema = load_schema(SCHEMA)
    secret = secrets.token_hex(32).encode()
    admin = "bm_admin_" + secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="blindmatch-demo-") as tmp:
        root = Path(tmp)
        exports = write_org_exports(root / "exports", records, seed)
        target, stop = start_matcher(root / "matcher-data", admin)
        try:
            _say(f"Matcher listening on {target} (data dir {root / 'matcher-data'})")
            with MatcherClient(target, admin) as operator:
                project = operator.create_project("demo", [o.name for o in DEMO_ORGS])
            _say(f"Project demo created for {', '.join(project.tokens)} (disclosure: hits)\n")

            encoded = {}
            for org, (csv_path, map_path, _truth) in exports.items():
                with open(csv_path, encoding="utf-8") as fh:
                    header, first = next(csv.reader(fh)), next(csv.reader(fh))
                mapping = load_mapping(map_path, schema)
                result = encode_csv(csv_path, schema, mapping, secret)
                encoded[org] = write_encoded(
                    root / f"{org}.encoded",
                    clks=result.clks,
                    clk_bits=result.clk_bits,
                    fingerprint=result.fingerprint,
                    ids=result.ids,
                    report=result.report.to_dict(),
                    field_bits=result.field_bits,
                    fallback_bits=result.fallback_bits,
                    schema_digest=result.schema_digest,
                    rule=result.rule,
                )
                _say(f"{org}: {result.report.rows_encoded} records, columns {', '.join(header)}")
                _say(f"    e.g. {', '.join(first)}")
                with MatcherClient(target, project.tokens[org]) as member:
                    member.upload("demo", encoded[org])

            first_org = DEMO_ORGS[0].name
            with MatcherClient(target, project.tokens[first_org]) as member:
                run = member.start_run("demo")
                final = run
                for status in member.watch_run("demo", run.run_id):
                    final = status
            _say(f"\nRun {final.run_id}: {final.state}\n")

            truth = {org: t for org, (_c, _m, t) in exports.items()}
            true_pairs = _true_hits(truth)
            found: set[tuple[str, str, str]] = set()
            views = {}
            for org in exports:
                with MatcherClient(target, project.tokens[org]) as member:
                    results = member.results("demo")
                rows = join_results(results, encoded[org])
                views[org] = (results, rows)
                found.update((org, rid, partner) for rid, partner in rows)

            _say("Shared subjects (what each member learns: counts per partner)")
            for org, (results, _rows) in views.items():
                counts = ", ".join(f"{p} {n}" for p, n in results.counts.items()) or "none"
                _say(f"  {org:<14} holds {results.record_count:>5}; also held by: {counts}")

            results, rows = views[first_org]
            names = _local_names(exports[first_org][0])
            _say(
                f"\nA few hits from {first_org}'s point of view "
                "(its own ids and names, never sent):"
            )
            for rid, partner in rows[:6]:
                _say(f"  {rid}  {names[rid]:<28} -> also held by {partner}")

            tp = len(found & true_pairs)
            precision = tp / len(found) if found else 1.0
            recall = tp / len(true_pairs) if true_pairs else 1.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            _say(
                f"\nAgainst the synthetic truth: precision {precision:.3f}, recall {recall:.3f}, "
                f"F1 {f1:.3f} over {len(true_pairs)} true (record, partner) hits."
            )
            _say(f"Done in {time.monotonic() - started:.1f}s.")
            return {"precision": precision, "recall": recall, "f1": f1}
        finally:
            stop()


def _true_hits(truth: dict[str, dict[str, int]]) -> set[tuple[str, str, str]]:
    by_entity: dict[int, list[tuple[str, str]]] = {}
    for org, ids in truth.items():
        for rid, entity in ids.items():
            by_entity.setdefault(entity, []).append((org, rid))
    pairs: set[tuple[str, str, str]] = set()
    for holders in by_entity.values():
        for org, rid in holders:
            pairs.update((org, rid, other) for other, _ in holders if other != org)
    return pairs


def _local_names(csv_path: Path) -> dict[str, str]:
    with open(csv_path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return {r[0]: f"{r[1]} {r[2]}, {r[3]}" for r in rows[1:]}
