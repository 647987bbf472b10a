"""Small pairs of members in two-server mode: keyed blocking beside no blocking at all
(matcher/core/exhaustive.py), on the same uploads, against the exhaustive CLK run.

    .venv/bin/python benchmarks/twoserver_small.py [--records 1000 2000 3000]
        [--population households|messy] [--seed 1] [--partner-records M]
        [--exhaustive-pairs N --small-member-pairs N2] [--by-pairs] [--paths [--repeat R]
        [--batches PAIRS ...]]
        [--schema schemas/person-uk.json]

For each `--records` N: the `--population`'s first N people as members A and B (its first
and second organisations' exports, benchmarks/twoserver_people.py), encoded under the shipped
schema (schemas/person-uk.json: a record-level CLK, a fallback CLK, its gap rule) and made
into `blindmatch encode --two-server`'s uploads. Then the run in this process
(core/tworun.py `drive` over `InProcess`, the link-bit circuit, C's buckets and completion),
twice: S1 blocking the pair (`exhaustive` 0: S1's join of the sealed band keys, S2's
expansion) and S1 proposing every pair (`exhaustive` above N x N: no join, no expansion).
`--partner-records M`: B is the population's first M people and A a random N of them (a
small member against a larger one). `--exhaustive-pairs N --small-member-pairs N2`: the
second run under those caps of S1's (core/exhaustive.py `admits`; e.g. 1 and 64,000,000: the
pair unblocked by the smaller-member cap alone) rather than a cap of N x M. An unblocked part
runs by blocks (core/densearith.py: its Hamming distances by arithmetic sharing, then the
rule's circuit on them); `--by-pairs` adds a third run, unblocked as the second, by the
boolean circuit a pair as before (`InProcess.dense` off), for the side-by-side. `--paths
[--repeat R]`: only the unblocked run, each part forced by blocks and by pairs
(core/partpath.py `PATH`), alternately R times, in process and over gRPC
(S1 and S2 `create_role` servers in this process on loopback, C's `RemoteServers`; CPU
there is the whole process's: all three parties); the links must be the same every way.
`--paths --batches 4096 16384`: only the unblocked run by blocks over gRPC, once with each
as linkbit.BATCH (C's batches and the roles' limit), and a line fitted through the runs'
batch counts and CPU (and wall) p50: a batch's own cost (its rounds, the pair budget's
commit, its kept inputs) beside the rest's, and the batches' share at each size.

Printed per run: the pairs through the circuit, CPU seconds by role (S1: join or the cross
product, and its side of the circuit; S2: expansion and its side; C: dealing, revealing,
solving), the bytes between the parties as `linkbit.Transcript` counts them, the wall
seconds, the links, their F1 against the people, and how many links are in it or in the
exhaustive CLK run's alone (matcher/usecases/runs.py `match`, blocking "exhaustive", the
schema's rule). Without blocking that count is the solver's: C solves by bucket, not by Dice,
and two candidates of one record in one bucket can be taken the other way round (the Dice
oracle's links are the CLK run's exactly: tests/test_twoserver_exhaustive.py). Each member's
upload is the same either way (a member cannot know its partner's size when it encodes): its
bytes to S1 and S2 are printed once. The machine's other load counts in the wall seconds;
the CPU seconds are this process's.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks import twoserver_people
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote.twoserver import RoleClient, upload_parts
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.matcher.core import linkbit, partpath
from blindmatch.matcher.core.solve import Links
from blindmatch.matcher.core.tworun import InProcess, TwoServerResult, drive
from blindmatch.matcher.core.twoserver import BlockingServer, Combiner, ShareServer
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.usecases.runs import match

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = 0.8


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1000, 2000, 3000],
                        help="records a member (one run each)")  # fmt: skip
    parser.add_argument("--population", choices=["households", "messy"], default="households")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partner-records", type=int, default=0, metavar="M",
                        help="B: the first M people, A a random --records of them")  # fmt: skip
    parser.add_argument("--exhaustive-pairs", type=int, default=0, metavar="N",
                        help="the second run's cap (0: records x partner's)")  # fmt: skip
    parser.add_argument("--small-member-pairs", type=int, default=0, metavar="N2",
                        help="the second run's smaller-member cap (0: none)")  # fmt: skip
    parser.add_argument("--by-pairs", action="store_true",
                        help="a third run: unblocked, the boolean circuit a pair")  # fmt: skip
    parser.add_argument("--paths", action="store_true",
                        help="only the unblocked run, each part forced by blocks then by "
                        "pairs (core/partpath.py), in process and over gRPC")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="--paths: runs of each path")
    parser.add_argument("--batches", type=int, nargs="+", default=[], metavar="PAIRS",
                        help="--paths: the unblocked run by blocks over gRPC alone, once a "
                        "batch size (linkbit.BATCH, C's and the roles' limit)")  # fmt: skip
    parser.add_argument("--schema", type=Path, default=ROOT / "schemas" / "person-uk.json",
                        help="e.g. schemas/person-uk-no-rule.json (no margin)")  # fmt: skip
    return parser


@dataclass
class Run:
    result: TwoServerResult
    wall: float
    roles: dict[str, float]
    blocking: dict[str, float]
    sent: dict[tuple[str, str], int]


def one_run(uploads: list[sharing.SharedUpload], rule: Rule, cap: int, small: int = 0,
            dense: bool = True) -> Run:  # fmt: skip
    """The run in this process with S1's cap `cap` (0: blocked) and smaller-member cap
    `small`: its figures and links; not `dense`: an unblocked part's pairs by the boolean
    circuit a pair rather than by blocks (core/denseblock.py)."""
    key = secrets.token_bytes(32)
    s1 = BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads], key,
                        [u.s1.popcounts for u in uploads], [_lacking(u) for u in uploads],
                        exhaustive=cap, small_member=small)  # fmt: skip
    s2 = ShareServer([u.s2.shares for u in uploads], key, [u.s2.popcounts for u in uploads],
                     [u.s2.seal_key for u in uploads])  # fmt: skip
    combiner = Combiner(None, THRESHOLD, clks=2, rule=rule)
    servers = InProcess(s1, s2)
    servers.dense = dense
    transcript = linkbit.Transcript()
    w0 = time.perf_counter()
    result = drive(servers, combiner, transcript=transcript)
    wall = time.perf_counter() - w0
    sec = result.seconds
    roles = {
        "S1": servers.blocking["join (S1)"] + sec["messages (S1)"],
        "S2": servers.blocking["expand (S2)"] + sec["messages (S2)"],
        "C": sec["combining (C)"] + sec["solving (C)"] + sec.get("completing (C)", 0.0),
    }
    return Run(result, wall, roles, dict(servers.blocking), dict(transcript.sent))


def compare_paths(uploads: list[sharing.SharedUpload], rule: Rule, whole: tuple[int, int],
                  repeat: int, batches: list[int]) -> bool:  # fmt: skip
    """The unblocked run with every part by blocks, then by pairs, `repeat` times, in this
    process and over gRPC: wall and CPU p50 of each, and whether all found the same links.
    `batches`: over gRPC by blocks alone, once with each as linkbit.BATCH (C's batches and
    the roles' limit), the smallest first."""
    wire_rule = (rule.gap, rule.offset, rule.reach) if rule.active else None
    key, member_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, member_key)
    s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{s2.port}",
                     exhaustive=whole[0], small_member=whole[1])  # fmt: skip
    at = [f"127.0.0.1:{r.port}" for r in (s1, s2)]
    names = ["a", "b"]
    records = [len(u.s1.shares[0]) for u in uploads]
    bits = [8 * int(x.shape[1]) for x in uploads[0].s1.shares]
    got: dict[tuple[str, str], dict[str, list[float]]] = {}
    links: dict[tuple[str, str], Links] = {}
    shipped = linkbit.BATCH, getattr(linkbit, "BLOCK_BATCH", linkbit.BATCH)  # (older code)
    ways = [("blocks", n) for n in sorted(batches)] or [("blocks", 0), ("pairs", 0)]
    try:
        for _ in range(repeat):
            for path, size in ways:
                partpath.PATH = path
                linkbit.BATCH, linkbit.BLOCK_BATCH = (size, size) if size else shipped
                label = f"blocks, {size:,} a batch" if size else path
                if not size:
                    c0 = time.process_time()
                    run = one_run(uploads, rule, *whole)
                    out = got.setdefault(("in process", label),
                                         {"wall": [], "cpu": [], "S1+S2": []})  # fmt: skip
                    out["wall"].append(run.wall)
                    out["cpu"].append(time.process_time() - c0)
                    out["S1+S2"].append(run.roles["S1"] + run.roles["S2"])
                    links["in process", label] = run.result.links
                for name, up in zip(names, uploads, strict=True):  # a fresh pair budget
                    for role, address in zip(("s1", "s2"), at, strict=True):
                        with RoleClient(role, address, member_key) as rc:
                            rc.upload(name, up, wire_rule)
                servers = RemoteServers(at[0], at[1], key, names, records, bits)
                combiner = Combiner(None, THRESHOLD, clks=len(bits), rule=rule)
                w0, c0 = time.perf_counter(), time.process_time()
                try:
                    result = drive(servers, combiner)
                finally:
                    servers.close()
                out = got.setdefault(("over gRPC", label), {"wall": [], "cpu": []})
                out["wall"].append(time.perf_counter() - w0)
                out["cpu"].append(time.process_time() - c0)
                links["over gRPC", label] = result.links
    finally:
        linkbit.BATCH, linkbit.BLOCK_BATCH = shipped
        s1.stop(grace=None)
        s2.stop(grace=None)
    for (where, path), out in got.items():
        roles = f", S1+S2 CPU {np.median(out['S1+S2']):.2f} s" if "S1+S2" in out else ""
        print(f"  {where:10s} by {path:6s}: wall p50 {np.median(out['wall']):.2f} s, CPU p50 "
              f"{np.median(out['cpu']):.2f} s (all parties){roles}; "
              f"{len(links[where, path]):,} links ({_digest(links[where, path])})")  # fmt: skip
    if len(batches) > 1:
        _per_batch(got, sorted(batches), sum(records[:1]) * records[1])
    want = next(iter(links.values()))
    same = all(differing(got_, want) == 0 and np.array_equal(got_.score, want.score)
               for got_ in links.values())  # fmt: skip
    print(f"  the same links and buckets every way: {'yes' if same else 'NO'}")
    return same


def _digest(links: Links) -> str:
    """The links' and buckets' SHA-256 (first 12 hex digits), each pair once, sorted: runs
    with the same links print the same."""
    forward = links.dset < links.partner
    cols = (links.dset, links.row, links.partner, links.partner_row, links.score)
    rows = np.stack([np.asarray(c, dtype=np.float64)[forward] for c in cols], axis=1)
    rows = rows[np.lexsort(rows.T[::-1])]
    return hashlib.sha256(rows.tobytes()).hexdigest()[:12]


def _per_batch(got: dict[tuple[str, str], dict[str, list[float]]], sizes: list[int],
               pairs: int) -> None:  # fmt: skip
    """A line fitted through (batches, CPU p50) and (batches, wall p50): the cost a batch
    beside the cost of the rest, and the batch's share at each size."""
    count = np.array([-(-pairs // n) for n in sizes], dtype=float)
    for what in ("cpu", "wall"):
        y = np.array([np.median(got["over gRPC", f"blocks, {n:,} a batch"][what])
                      for n in sizes])  # fmt: skip
        slope, rest = np.polyfit(count, y, 1)
        shares = ", ".join(f"{n:,}: {k:.0f} batches, {100 * slope * k / v:.0f}%"
                           for n, k, v in zip(sizes, count, y, strict=True))  # fmt: skip
        print(f"  {what} a batch {1e3 * slope:.1f} ms, the rest {rest:.1f} s; "
              f"the batches' share at {shares}")  # fmt: skip


def _lacking(upload: sharing.SharedUpload) -> npt.NDArray[np.bool_]:
    if upload.s1.lacking is None:
        raise SystemExit("the shipped schema's uploads say who lacks the fallback's fields")
    return upload.s1.lacking


def f1(links: Links, people: tuple[list[int], list[int]]) -> float:
    """The links' F1 against the truth: a pair of A's and B's records of one person."""
    a, b = (np.asarray(p) for p in people)
    forward = links.dset < links.partner
    right = int((a[links.row[forward]] == b[links.partner_row[forward]]).sum())
    truth = len(set(a.tolist()) & set(b.tolist()))
    return 2 * right / max(int(forward.sum()) + truth, 1)


def differing(got: Links, want: Links) -> int:
    """The links (each pair once) in one run and not the other."""

    def pairs(links: Links) -> set[tuple[int, int, int, int]]:
        ends = zip(links.dset.tolist(), links.row.tolist(), links.partner.tolist(),
                   links.partner_row.tolist(), strict=True)  # fmt: skip
        return {e for e in ends if e[0] < e[2]}

    return len(pairs(got) ^ pairs(want))


def main() -> int:
    args = arguments().parse_args()
    schema = load_schema(args.schema)
    rule = Rule(*schema.rule) if schema.rule else NO_RULE
    plan = sharing.plan_of(schema)
    print(f"{args.population}, seed {args.seed}, threshold {THRESHOLD}, {args.schema.name} "
          f"(plan {plan.bits} x {plan.bands}, rule {rule.text() or 'none'})")  # fmt: skip
    for n in args.records:
        people = argparse.Namespace(population=args.population, seed=args.seed, records=n,
                                    pad_to=0, decoys="generator", shared_decoys=False,
                                    partner_records=args.partner_records)  # fmt: skip
        m = max(n, args.partner_records)
        loaded = twoserver_people.load(people, schema)
        secret = secrets.token_bytes(32)
        datasets, uploads = [], []
        for rows, _people in loaded[:2]:
            views = upload_views(schema, rows, secret, NONE)
            fallback_bits = 8 * views[1].shape[1]
            datasets.append(np.hstack(views))
            uploads.append(sharing.shared_upload(datasets[-1], secret, plan, fallback_bits))
        sizes = {r: sum(p.ByteSize() for p in upload_parts("a", r, uploads[0]))
                 for r in ("s1", "s2")}  # fmt: skip
        c0 = time.process_time()
        oracle = match(datasets, THRESHOLD, workers=1, blocking="exhaustive",
                       fallback_bits=fallback_bits, rule=rule)  # fmt: skip
        oracle_cpu = time.process_time() - c0
        truth = (loaded[0][1], loaded[1][1])
        print(f"\n{n:,} x {m:,} records: A's upload {sizes['s1'] / n / 1e3:,.1f} kB a record "
              f"to S1, {sizes['s2'] / n / 1e3:,.1f} kB to S2; the exhaustive CLK run "
              f"{len(oracle.links):,} links (F1 {f1(oracle.links, truth):.4f}) in "
              f"{oracle_cpu:.1f} s CPU")  # fmt: skip
        whole = (args.exhaustive_pairs or n * m, args.small_member_pairs)
        if args.paths:
            if not compare_paths(uploads, rule, whole, args.repeat, args.batches):
                return 1
            continue
        runs = [("blocked", (0, 0), True), ("no blocking", whole, True)]
        if args.by_pairs:
            runs.append(("by pairs", whole, False))
        for label, (cap, small), dense in runs:
            got = one_run(uploads, rule, cap, small, dense)
            result, roles, sent = got.result, got.roles, got.sent
            total = sum(sent.values())
            off = differing(result.links, oracle.links)
            by = ", ".join(f"{a}->{b} {v / 1e6:,.1f}" for (a, b), v in sorted(sent.items()))
            print(f"  {label:11s}: {result.comparisons:>10,} pairs; CPU S1 {roles['S1']:.1f} s, "
                  f"S2 {roles['S2']:.1f} s, C {roles['C']:.1f} s (blocking: {got.blocking}); "
                  f"{total / 1e6:,.1f} MB ({by} MB); wall {got.wall:.1f} s; "
                  f"{len(result.links):,} links (F1 {f1(result.links, truth):.4f}), the "
                  f"links in it or in the exhaustive CLK run's alone: {off}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
