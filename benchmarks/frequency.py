"""Frequency tiers computed by each member from its own export (issue 21 item 1): quality,
and what the popcounts tell the matcher.

    .venv/bin/python benchmarks/frequency.py [--seeds messy:2205 messy:2305 households:2105]
        [--routes default households tiers ...] [--cuts 0.78 0.8 0.82] [--leak]

In-process (the encoder and the matcher's own `match`, as a run does; one fixed secret per
seed, so routes are compared on the same hash collisions), 20,000 people at each
generator's own rates (`--corruption`). Every route is a schema: the default, the opt-in
household weights, and those with `blindmatch.frequency` tiers on the given name and/or
surname (client/encoding/frequency.py). Cuts are chosen on `messy`; `households` is
reported, never tuned on.

With `--leak`, for every tiered route, on the largest export of each seed:

- how often the two records of a true pair are in the same tier (members count their own
  exports, so a value can be rare at one and middle at another);
- how well the matcher tells a record's tier from what it sees: the AUC of the first CLK's
  popcount (and of the fallback CLK's) for rare-surname records against the others, and for
  common-surname records against the others; the same AUC for the default schema (the
  baseline: longer names make more bits anyway).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.quality import GENERATORS
from benchmarks.quality_errors import Member, encoded, linked
from blindmatch.client.encoding.frequency import row_bits
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.evaluate import read_truth

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "schemas" / "person-uk.json"
HOUSEHOLDS = ROOT / "schemas" / "person-uk-households.json"


def tiered(
    base: Path, tiers: dict[str, tuple[float, int, float, int]], drop: Sequence[str] = ()
) -> dict[str, Any]:
    """`base` with `blindmatch.frequency` on the named features: (rare share, rare bits,
    common share, common bits); a bits value of 0 leaves that tier out."""
    raw: dict[str, Any] = json.loads(base.read_text())
    for feature in raw["features"]:
        spec = tiers.get(feature["identifier"])
        if spec is None:
            continue
        rare_share, rare_bits, common_share, common_bits = spec
        freq = {}
        if rare_bits:
            freq["rare"] = {"share": rare_share, "bitsPerFeature": rare_bits}
        if common_bits:
            freq["common"] = {"share": common_share, "bitsPerFeature": common_bits}
        feature.setdefault("blindmatch", {})["frequency"] = freq
    raw["features"] = [f for f in raw["features"] if f["identifier"] not in drop]
    return raw


def routes() -> dict[str, dict[str, Any]]:
    default = json.loads(DEFAULT.read_text())
    households = json.loads(HOUSEHOLDS.read_text())
    out = {"default": default, "households": households}
    out["sur"] = tiered(DEFAULT, {"surname": (0.001, 230, 0.005, 110)})
    out["given"] = tiered(DEFAULT, {"given_name": (0.001, 210, 0.005, 100)})
    out["both"] = tiered(
        DEFAULT, {"surname": (0.001, 230, 0.005, 110), "given_name": (0.001, 210, 0.005, 100)}
    )
    out["both-common"] = tiered(
        DEFAULT, {"surname": (0.001, 0, 0.004, 100), "given_name": (0.001, 0, 0.004, 90)}
    )
    out["both-rare"] = tiered(
        DEFAULT, {"surname": (0.001, 240, 0.005, 0), "given_name": (0.001, 220, 0.005, 0)}
    )
    out["hh+both"] = tiered(
        HOUSEHOLDS, {"surname": (0.001, 200, 0.005, 100), "given_name": (0.001, 210, 0.005, 100)}
    )
    out["hh+common-strong"] = tiered(
        HOUSEHOLDS, {"surname": (0.001, 0, 0.004, 70), "given_name": (0.001, 0, 0.004, 60)}
    )
    for name, path in (("frequency", "person-uk-frequency.json"),
                       ("household-frequency", "person-uk-households-frequency.json")):  # fmt: skip
        out[name] = json.loads((ROOT / "benchmarks" / "data" / path).read_text())
    out["hh+given"] = tiered(HOUSEHOLDS, {"given_name": (0.001, 210, 0.005, 100)})
    out["hh+mild"] = tiered(
        HOUSEHOLDS, {"surname": (0.0005, 180, 0.008, 120), "given_name": (0.0005, 180, 0.008, 120)}
    )
    out["hh+common"] = tiered(
        HOUSEHOLDS, {"surname": (0.001, 0, 0.004, 100), "given_name": (0.001, 0, 0.004, 90)}
    )
    return out


def mixed(first: list[Member], second: list[Member]) -> list[Member]:
    """Each member's first CLKs from one route and its fallback CLKs from another."""
    out = []
    for a, b in zip(first, second, strict=True):
        half = a.clks.shape[1] - a.fallback_bits // 8
        clks = np.concatenate([a.clks[:, :half], b.clks[:, half:]], axis=1)
        out.append(Member(a.name, a.ids, a.rows, clks, a.fallback_bits))
    return out


def secret_for(seed: int) -> bytes:
    return hashlib.sha256(f"frequency {seed}".encode()).digest()


def prf(found: set[Any], actual: set[Any]) -> tuple[float, float, float]:
    tp = len(found & actual)
    p, r = tp / max(len(found), 1), tp / max(len(actual), 1)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    both = np.concatenate([pos, neg])
    # average ranks for ties
    sorted_vals = both[order]
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def popcounts(clks: np.ndarray) -> np.ndarray:
    return np.unpackbits(clks, axis=1).sum(axis=1)


def leak(members: list[Member], schema_path: Path, default_members: list[Member]) -> str:
    """AUC of popcounts for rare / common surname records on the largest export."""
    schema = load_schema(schema_path)
    big = max(range(len(members)), key=lambda i: len(members[i].ids))
    m, d = members[big], default_members[big]
    sur = next((t for t in schema.frequency if t.field == "surname"), None)
    giv = next((t for t in schema.frequency if t.field == "given_name"), None)
    out = []
    for t in (sur, giv):
        if t is None:
            continue
        bits = np.array([b[0] for b in row_bits(m.rows, [t], [""])])
        half = m.clks.shape[1] - m.fallback_bits // 8
        for label, mask in (("rare", bits == (t.rare_bits or -1)),
                            ("common", bits == (t.common_bits or -1))):  # fmt: skip
            if not mask.any():
                continue
            a1 = auc(popcounts(m.clks[:, :half]), mask)
            a2 = auc(popcounts(m.clks[:, half:]), mask) if m.fallback_bits else float("nan")
            b1 = auc(popcounts(d.clks[:, :half]), mask)
            b2 = auc(popcounts(d.clks[:, half:]), mask) if d.fallback_bits else float("nan")
            out.append(
                f"{t.field} {label} ({mask.mean():.0%} of {len(mask)}): AUC first {a1:.3f} "
                f"fallback {a2:.3f} (default schema: {b1:.3f} / {b2:.3f})"
            )
    return "; ".join(out)


def tier_agreement(members: list[Member], schema_path: Path, truth_entity: dict) -> str:  # type: ignore[type-arg]
    """Share of true cross-member pairs whose records got the same tier, per tiered field."""
    schema = load_schema(schema_path)
    out = []
    for t in schema.frequency:
        per: dict[tuple[str, str], int] = {}
        for m in members:
            for rid, b in zip(m.ids, row_bits(m.rows, [t], [""]), strict=True):
                per[(m.name, rid)] = b[0]
        by_ent: dict[str, list[tuple[str, int]]] = {}
        for (name, rid), ent in truth_entity.items():
            if (name, rid) in per:
                by_ent.setdefault(ent, []).append((name, per[(name, rid)]))
        same = total = 0
        for recs in by_ent.values():
            for i in range(len(recs)):
                for j in range(i + 1, len(recs)):
                    if recs[i][0] != recs[j][0]:
                        total += 1
                        same += recs[i][1] == recs[j][1]
        out.append(f"{t.field}: same tier in {same / max(total, 1):.1%} of {total} true pairs")
    return "; ".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seeds", nargs="+", default=["messy:2205", "messy:2305", "households:2105"]
    )
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--corruption", type=float, default=1.0)
    parser.add_argument("--routes", nargs="+", default=None)
    parser.add_argument("--cuts", nargs="+", type=float, default=[0.78, 0.8, 0.82])
    parser.add_argument("--leak", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-quality-errors"))
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="more schema files")
    args = parser.parse_args()
    all_routes = routes()
    for path in args.extra:
        all_routes[path.stem] = json.loads(path.read_text())
    chosen = args.routes or list(all_routes)
    with tempfile.TemporaryDirectory(prefix="blindmatch-frequency-") as tmp:
        paths = {}
        for name in {part for n in chosen for part in n.split("/")}:
            paths[name] = Path(tmp) / f"{name}.json"
            paths[name].write_text(json.dumps(all_routes[name]))
        for spec in args.seeds:
            gen, seed_text = spec.split(":")
            seed = int(seed_text)
            folder = args.cache / f"{gen}-{seed}-{args.population}-{args.corruption}"
            if not (folder / "truth.csv").exists():
                GENERATORS[gen].write(folder, seed, args.population, args.corruption)
            truth = read_truth(folder / "truth.csv")
            actual = truth.true_hits()
            secret = secret_for(seed)
            default_members = encoded(folder, gen, DEFAULT, secret) if args.leak else []
            cache: dict[str, list[Member]] = {}
            for name in chosen:  # "A/B": A's first CLKs with B's fallback CLKs
                for part in name.split("/"):
                    if part not in cache:
                        cache[part] = encoded(folder, gen, paths[part], secret)
                parts = [cache[p] for p in name.split("/")]
                members = parts[0] if len(parts) == 1 else mixed(parts[0], parts[1])
                cells = []
                for cut in args.cuts:
                    p, r, f = prf(set(linked(members, cut)), actual)
                    cells.append(f"{cut}: {f:.4f} ({p:.4f}/{r:.4f})")
                print(f"{gen:<10} {seed} {name:<14} " + "  ".join(cells), flush=True)
                last = paths[name.split("/")[-1]]
                if args.leak and load_schema(last).frequency:
                    print("    leak: " + leak(members, last, default_members))
                    print("    tiers: " + tier_agreement(members, last, truth.entity))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
