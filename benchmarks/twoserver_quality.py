"""End-to-end match quality of the two-server run (keyed blocking + secret-shared Dice) beside
the default exhaustive run, on the same encodings.

    .venv/bin/python benchmarks/twoserver_quality.py [--generators messy households]
        [--population 20000] [--corruption 1.0] [--bits 20] [--bands 1600] [--seed 2100]
        [--combiners link-bit link-bit:0.85,0.9,0.95 dice link-bit:0.85,0.9,0.95+rule]
    .venv/bin/python benchmarks/twoserver_quality.py --scale 100000

For each generator (benchmarks/messy.py, benchmarks/households.py; the cell of
docs/evaluation.md's grid with the same population and corruption, `quality.cell_seed`), the
organisations' exports are encoded once, as `blindmatch encode` does, with the default schema
(schemas/person-uk.json: a record-level CLK and a fallback CLK) under a fresh secret. Then on
those CLKs:

- **exhaustive**: the normal run (matcher/usecases/runs.py `match`, blocking "exhaustive",
  the fallback rule), what a project runs today;
- **two-server**: each member's `shared_upload` (client/encoding/sharing.py: band keys at r
  `--bits` x `--bands` bands per CLK from the secret, two XOR shares, popcounts), then
  matcher/core/tworun.py `run` once a `--combiners` entry: S1 blocks on the band keys;
  with `link-bit` S1 and S2 run the link-bit circuit on every proposed pair (core/linkbit.py)
  and C learns link bits, with `link-bit:0.85,0.9,0.95` also which of those cut-offs each
  candidate's Dice reaches (score buckets, the solver's order); with `dice` (the oracle) S1 and
  S2 send permuted share differences and C learns each pair's Dice; an entry ending in
  `+rule` applies the schema's `blindmatch.rule` (link bits only: the rule's circuit,
  core/gmwrule.py, on the first CLKs' pairs). C decides, solves and scores the links.
- **exhaustive + rule**: the normal run under the schema's rule (what `blindmatch run` does
  with the default schema), the figure a `+rule` run is to be read against.

Printed per generator: precision, recall and F1 over (record, partner) hits of all members,
side by side with their difference from the exhaustive run's; the links that differ from the
Dice oracle's; the pairs compared (the pairs blocking proposes, by CLK); bytes between the
parties (counted as `run` sends them: S1 <-> S2, C -> S1 and S2, S1 and S2 -> C) and rounds
between S1 and S2; blocking recall of the true cross-member pairs (same person), of every
pair at or above the threshold under the fallback rule (what the exhaustive run decides
from) and of the pairs the exhaustive run links; CPU seconds per stage (the members'
uploads, S1's blocking, S1's and S2's part of the per-pair step, C's, solving; the
exhaustive run's compare and solve), and the per-pair step's CPU a pair. All three parties
run in this process, one core.

`--scale N`: blocking alone at N records a member (benchmarks/realclks.py `realistic_pair`,
the record-level CLK, 10% of A's people in B): the members' band keys and S1's candidate
generation, CPU time and candidates, and the blocking recall of the cross pairs at Dice >= 0.8
(found exhaustively by the kernel); no messages (at 10^5 they are ~10^8 pairs, about 4 us a
pair a server: benchmarks/twoserver_cost.py projects them).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks.quality import GENERATORS, SCHEMA, cell_seed
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.evaluate import Quality, quality, read_truth
from blindmatch.matcher.core import exhaustive, fallback, twoblocking, tworun, twoserver
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.core.solve import Links
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.usecases.runs import match

THRESHOLD = 0.8
Clks = npt.NDArray[np.uint8]


def hits(links: Links, orgs: list[str], ids: list[list[str]]) -> set[tuple[str, str, str]]:
    return {
        (orgs[d], ids[d][r], orgs[p])
        for d, r, p in zip(
            links.dset.tolist(), links.row.tolist(), links.partner.tolist(), strict=True
        )
    }


def codes(
    x: int, y: int, rows_x: npt.NDArray[np.integer], rows_y: npt.NDArray[np.integer]
) -> set[int]:
    """Pairs of members x < y as integers, to compare sets of pairs."""
    return set(((x << 56) | (rows_x.astype(np.int64) << 28) | rows_y.astype(np.int64)).tolist())


def near_pairs(datasets: list[Clks], fallback_bits: int) -> set[int]:
    """Every cross-member pair at or above the threshold under the fallback rule."""
    split = fallback.Split.of(datasets, fallback_bits)
    first = []
    for x in range(len(datasets)):
        for y in range(x + 1, len(datasets)):
            sims, ia, ib = dice_candidates(split.first[x], split.first[y], THRESHOLD)
            n = len(sims)
            first.append(
                Candidates(sims, np.full(n, x, np.uint32), np.full(n, y, np.uint32), ia, ib)
            )
    out: set[int] = set()
    for c in fallback.rescored(merge(first), split, THRESHOLD):
        for x, y in {(int(a), int(b)) for a, b in zip(c.dset0, c.dset1, strict=True)}:
            sel = (c.dset0 == x) & (c.dset1 == y)
            out |= codes(x, y, c.rec0[sel], c.rec1[sel])
    return out


def true_pairs(
    truth_entity: dict[tuple[str, str], str], orgs: list[str], ids: list[list[str]]
) -> set[int]:
    by_entity: list[dict[str, list[int]]] = []
    for org, rows in zip(orgs, ids, strict=True):
        held: dict[str, list[int]] = {}
        for r, rid in enumerate(rows):
            ent = truth_entity.get((org, rid))
            if ent is not None:
                held.setdefault(ent, []).append(r)
        by_entity.append(held)
    out: set[int] = set()
    for x in range(len(orgs)):
        for y in range(x + 1, len(orgs)):
            for ent, rows_x in by_entity[x].items():
                for rx in rows_x:
                    for ry in by_entity[y].get(ent, []):
                        out.add((x << 56) | (rx << 28) | ry)
    return out


def cell(gen: str, args: argparse.Namespace) -> None:
    seed = cell_seed(args.seed, gen, args.corruption, args.population)
    schema = load_schema(SCHEMA)
    plan = sharing.BandPlan(args.bits, args.bands)
    with tempfile.TemporaryDirectory(prefix="blindmatch-2sq-") as tmp:
        folder = Path(tmp) / "exports"
        GENERATORS[gen].write(folder, seed, args.population, args.corruption)
        truth = read_truth(folder / "truth.csv")
        orgs = GENERATORS[gen].orgs
        secret = secrets.token_bytes(32)
        datasets, ids = [], []
        started = time.monotonic()
        for org in orgs:
            csv_path, mapping = GENERATORS[gen].exports(folder)[org]
            res = encode_csv(csv_path, schema, load_mapping(mapping, schema), secret)
            datasets.append(np.frombuffer(res.clks, dtype=np.uint8).reshape(-1, res.clk_bits // 8))
            ids.append(res.ids)
        encode_s = time.monotonic() - started
    fb = res.fallback_bits
    sizes = [len(d) for d in datasets]
    cross = sum(a * b for i, a in enumerate(sizes) for b in sizes[i + 1 :])
    print(f"\n## {gen}, {args.population:,} people, corruption x{args.corruption:g} (seed {seed}): "
          f"{', '.join(f'{o} {n:,}' for o, n in zip(orgs, sizes, strict=True))} records; "
          f"{cross:,} cross pairs; {len(truth.true_hits()):,} true hits; "
          f"encoded in {encode_s:.0f} s",
          flush=True)  # fmt: skip

    started = time.process_time()
    normal = match(datasets, THRESHOLD, workers=1, blocking="exhaustive", fallback_bits=fb)
    normal_s = time.process_time() - started
    rule = Rule(*schema.rule) if schema.rule is not None else NO_RULE
    ruled = match(datasets, THRESHOLD, workers=1, blocking="exhaustive", fallback_bits=fb,
                  rule=rule)  # fmt: skip

    started = time.process_time()
    uploads = [sharing.shared_upload(d, secret, plan, fb) for d in datasets]
    upload_s = time.process_time() - started
    key = secrets.token_bytes(32)
    s1 = twoserver.BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads],
                                  key, [u.s1.popcounts for u in uploads])  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in uploads], key,
                               [u.s2.popcounts for u in uploads],
                               [u.s2.seal_key for u in uploads])  # fmt: skip
    popcounts = [u.combiner.popcounts for u in uploads]
    del uploads
    runs: list[tuple[str, tworun.TwoServerResult]] = []
    for spec in args.combiners:
        with_rule = spec.endswith("+rule")
        reveal, _, cuts = spec.removesuffix("+rule").partition(":")
        buckets = [float(c) for c in cuts.split(",") if c]
        combiner = twoserver.Combiner(popcounts, THRESHOLD, reveal=reveal, buckets=buckets,
                                      rule=rule if with_rule else NO_RULE)  # fmt: skip
        label = {"link-bit": "link bits", "dice": "Dice (oracle)"}[reveal]
        label += f" + buckets {', '.join(cuts.split(','))}" if buckets else ""
        label += " + rule" if with_rule else ""
        runs.append((label, tworun.run(s1, s2, combiner)))
    result = runs[0][1]
    # The candidate set is the one S1 proposed when it held every record's band keys.
    keys = [sharing.record_keys(d, secret, plan, fb) for d in datasets]
    lacking = twoserver.Combiner(popcounts, THRESHOLD).lacking()
    before = twoserver.record_blocking(keys, lacking)
    # The pairs S1 proposes (S1's join, S2's expansion; C never receives them).
    blocked = exhaustive.explicit(tworun.InProcess(s1, s2).block(lacking))
    same = sorted((b.member_a, b.member_b, b.clk, b.rows_a.tobytes(), b.rows_b.tobytes())
                  for b in before if len(b)) == sorted(
        (b.member_a, b.member_b, b.clk, b.rows_a.tobytes(), b.rows_b.tobytes())
        for b in blocked if len(b))  # fmt: skip
    print(f"candidate pairs: {result.comparisons:,}, "
          f"{'the same as' if same else 'NOT the same as'} S1's blocking on every record's "
          "band keys (the run before the sealed join)", flush=True)  # fmt: skip

    proposed: set[int] = set()
    by_clk = {twoserver.RECORD: 0, twoserver.FALLBACK: 0}
    for batch in blocked:
        proposed |= codes(batch.member_a, batch.member_b, batch.rows_a, batch.rows_b)
        by_clk[batch.clk] += len(batch)
    near = near_pairs(datasets, fb)
    true = true_pairs(truth.entity, orgs, ids)
    q_normal: Quality = quality(hits(normal.links, orgs, ids), truth)
    q_ruled: Quality = quality(hits(ruled.links, orgs, ids), truth)
    q_two = [quality(hits(r.links, orgs, ids), truth) for _, r in runs]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.4f}" if b else "-"

    def row(name: str, first: str, cells: list[str]) -> None:
        print(f"| {name} | {first} | {' | '.join(cells)} |")

    print(f"| | exhaustive (no rule) | {' | '.join(f'two-server, {lb}' for lb, _ in runs)} "
          "| exhaustive + rule |")  # fmt: skip
    print("|---|---|" + "---|" * (len(runs) + 1))
    for name in ("precision", "recall", "f1"):
        row(name, f"{getattr(q_normal, name):.4f}",
            [f"{getattr(q, name):.4f}" for q in (*q_two, q_ruled)])  # fmt: skip
    row("f1 - exhaustive's", "", [f"{q.f1 - q_normal.f1:+.4f}" for q in (*q_two, q_ruled)])
    row("f1 - exhaustive + rule's", "", [f"{q.f1 - q_ruled.f1:+.4f}" for q in q_two])
    row("links", f"{len(normal.links):,}",
        [f"{len(r.links):,}" for _, r in runs] + [f"{len(ruled.links):,}"])  # fmt: skip
    oracle = next((r for lb, r in runs if lb.startswith("Dice")), None)
    if oracle is not None:
        want = set(hits(oracle.links, orgs, ids))
        row("links not the Dice oracle's (either way)", "",
            [f"{len(set(hits(r.links, orgs, ids)) ^ want):,}" for _, r in runs])  # fmt: skip
    print(f"| pairs compared | {cross:,} (all) | {result.comparisons:,} (record-level "
          f"{by_clk[twoserver.RECORD]:,}, fallback {by_clk[twoserver.FALLBACK]:,}; "
          f"{ratio(result.comparisons, cross)}) |")  # fmt: skip
    for name, ends in (("S1 <-> S2", (("S1", "S2"), ("S2", "S1"))),
                       ("C -> S1, S2", (("C", "S1"), ("C", "S2"))),
                       ("S1, S2 -> C", (("S1", "C"), ("S2", "C")))):  # fmt: skip
        cells = []
        for _, r in runs:
            sent = sum(r.transcript.sent.get(e, 0) for e in ends)
            cells.append(
                f"{sent / 1e6:,.1f} MB ({sent / max(1, r.transcript.pairs):,.1f} B a pair)"
            )
        row(f"bytes {name}", "0", cells)
    row("rounds S1 <-> S2", "", [f"{r.transcript.rounds:,}" for _, r in runs])
    print(
        f"| blocking recall, pairs at Dice >= {THRESHOLD} | 1 ({len(near):,}) | "
        f"{len(near & proposed) / max(1, len(near)):.5f} ({len(near - proposed):,} missed) |"
    )
    links = normal.links
    forward = links.dset < links.partner
    linked: set[int] = set()
    member_pairs = zip(links.dset[forward].tolist(), links.partner[forward].tolist(), strict=True)
    for x, y in set(member_pairs):
        sel = forward & (links.dset == x) & (links.partner == y)
        linked |= codes(x, y, links.row[sel], links.partner_row[sel])
    missed = len(linked - proposed)
    print(f"| exhaustive run's linked pairs blocking missed | | {missed:,} of {len(linked):,} |")
    print(
        f"| blocking recall, true pairs | 1 ({len(true):,}) | "
        f"{len(true & proposed) / max(1, len(true)):.5f} ({len(true - proposed):,} missed) |"
    )
    print(f"| CPU s, members' uploads (band keys, shares) | | {upload_s:.1f} |")
    for stage in result.seconds:
        row(f"CPU s, {stage}", "", [f"{r.seconds[stage]:.1f}" for _, r in runs])
    step = ("messages (S1)", "messages (S2)", "combining (C)")
    per_pair = [sum(r.seconds[k] for k in step) / max(1, r.transcript.pairs) for _, r in runs]
    row("CPU us a pair, S1 + S2 + C", "", [f"{1e6 * x:.1f}" for x in per_pair])
    row("CPU s, the run", f"{normal_s:.1f} (compare + solve)",
        [f"{upload_s + sum(r.seconds.values()):.1f} "
         f"({ratio(upload_s + sum(r.seconds.values()), normal_s)})" for _, r in runs])  # fmt: skip
    sys.stdout.flush()


def scale(n: int, args: argparse.Namespace) -> None:
    """Blocking alone at n records a member, realistic encodings (record-level CLK): S1's
    sealed join and S2's expansion against S1's blocking on every record's band keys (the run
    before), as ratios: the members' upload to S1 (bytes, CPU), S1's CPU, S2's CPU; the
    candidate pairs (the same) and their recall at Dice >= 0.8."""
    from benchmarks.realclks import realistic_pair

    pair = realistic_pair(n, n, seed=2)
    plan = sharing.BandPlan(args.bits, args.bands)
    secret = secrets.token_bytes(32)
    started = time.process_time()
    keys = [sharing.record_keys(x, secret, plan)[0] for x in (pair.a, pair.b)]
    keys_s = time.process_time() - started
    started = time.process_time()
    rows_a, rows_b = twoserver.colliding_pairs(keys[0], keys[1])
    blocking_s = time.process_time() - started
    seal_key = [secrets.token_bytes(32) for _ in keys]
    started = time.process_time()
    sealed = [sharing.seal_bands(k, 0, sk) for k, sk in zip(keys, seal_key, strict=True)]
    seal_s = time.process_time() - started
    started = time.process_time()
    matched = twoblocking.join(0, 1, 0, *(twoblocking.Sealed(b.counts, b.keys, b.classes, b.sealed)
                                        for b in sealed))  # fmt: skip
    join_s = time.process_time() - started
    started = time.process_time()
    codes = twoblocking.expanded_pairs(matched, (seal_key[0], seal_key[1]), (n, n))
    counts = np.unique(codes, return_counts=True)
    expand_s = time.process_time() - started
    found = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b  # sorted
    same = np.array_equal(counts[0], found)
    _, near_a, near_b = dice_candidates(pair.a, pair.b, THRESHOLD)
    near = (near_a.astype(np.uint64) << np.uint64(32)) | near_b
    at = np.minimum(np.searchsorted(found, near), max(0, len(found) - 1))
    hit = int((found[at] == near).sum()) if len(found) else 0
    recall = hit / max(1, len(near))
    before = sum(k.nbytes for k in keys)
    after = sum(
        b.counts.nbytes // 2 + b.keys.nbytes + b.classes.nbytes + b.sealed.nbytes for b in sealed
    )  # fmt: skip (counts go as uint32)
    distinct = sum(len(b.keys) for b in sealed) / sum(k.size for k in keys)
    print(f"{n:,} x {n:,} records, r={args.bits} x {args.bands} bands (record-level CLK): "
          f"{len(rows_a):,} candidate pairs ({len(rows_a) / n / n:.2%} of cross pairs), "
          f"{'the same' if same else 'NOT the same'} from the sealed join and S2's expansion; "
          f"recall of the {len(near):,} pairs at Dice >= {THRESHOLD}: {recall:.5f}")  # fmt: skip
    print(f"  band keys to S1, both members: {before / 2**20:,.1f} MiB a key a record, "
          f"{after / 2**20:,.1f} MiB sealed ({after / before:.2f}x; {distinct:.1%} of the "
          f"record x band keys distinct); {len(matched):,} matched keys "
          f"({len(matched) / max(1, len(rows_a)):.1f} a candidate pair)")  # fmt: skip
    print(f"  CPU s: members' band keys {keys_s:.1f}, + sealing {seal_s:.1f} "
          f"({(keys_s + seal_s) / keys_s:.2f}x); S1's blocking {blocking_s:.2f} -> S1's join "
          f"{join_s:.2f} ({join_s / blocking_s:.2f}x) + S2's expansion {expand_s:.2f} "
          f"(together {(join_s + expand_s) / blocking_s:.2f}x)", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--generators", nargs="+", default=["messy", "households"], choices=list(GENERATORS)
    )
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--corruption", type=float, default=1.0)
    parser.add_argument("--bits", type=int, default=sharing.RECOMMENDED.bits)
    parser.add_argument("--bands", type=int, default=sharing.RECOMMENDED.bands)
    parser.add_argument("--seed", type=int, default=2100, help="as benchmarks/quality.py --grid")
    parser.add_argument(
        "--combiners",
        nargs="+",
        default=["link-bit", "link-bit:0.85,0.9,0.95", "dice", "link-bit:0.85,0.9,0.95+rule"],
        help="what C learns, one two-server run each: link-bit, link-bit:CUT,CUT (score "
        "buckets above the threshold), dice (the oracle); +rule: under the schema's rule",
    )
    parser.add_argument("--scale", type=int, help="blocking alone at this many records a member")
    args = parser.parse_args()
    if args.scale:
        scale(args.scale, args)
        return 0
    print(f"keyed blocking r={args.bits} x {args.bands} bands a CLK; threshold {THRESHOLD}")
    for gen in args.generators:
        cell(gen, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
