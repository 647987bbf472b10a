"""A two-server query's unblocked part by pairs against by blocks, what each sends and calls
(core/partpath.py `by_blocks`; docs/performance.md "A two-server query by pairs or by
blocks (2026-12-06)"):

    .venv/bin/python benchmarks/twoserver_query_path.py [--partner-records 1000] [--people 1]
        [--repeat 3] [--schema schemas/person-uk.json] [--paths pairs blocks]

S2 and S1 in this process on loopback gRPC ports (`create_role`, S1 comparing every pair
without blocking); the partner is the messy fixture's south-police (its first
`--partner-records` records), the query `--people` of north-police's records. Each query
(`twopartner.query_links`, the matcher's own call, over `RemoteServers`) is run by pairs and
by blocks alternately, `--repeat` times, both uploads sent afresh before each (a fresh pair
budget). Per path: wall and CPU p50 (every party is this process), the calls C made to S1 and
S2 by method, the bytes between the parties by direction (`linkbit.Transcript`: C's deals,
S1 <-> S2's rounds and block exchange), the circuit's rounds, and whether both found the same
links, buckets and rows.
"""

from __future__ import annotations

import argparse
import collections
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.messy import write_exports
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import linkbit, partpath, twoserver
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.realtime import twopartner
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import create_role

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["asker", "south"]
THRESHOLD = 0.8


class Calls(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
            grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # fmt: skip
    """The calls C makes on a channel, by method."""

    def __init__(self) -> None:
        self.made: collections.Counter[str] = collections.Counter()

    def _count(self, method: Any, details: Any, request: Any) -> Any:
        self.made[details.method.rsplit("/", 1)[-1]] += 1
        return method(details, request)

    intercept_unary_unary = intercept_unary_stream = _count
    intercept_stream_unary = intercept_stream_stream = _count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partner-records", type=int, default=1000)
    ap.add_argument("--people", type=int, default=1, help="query records")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--schema", type=Path, default=ROOT / "schemas" / "person-uk.json")
    ap.add_argument(
        "--paths",
        nargs="+",
        choices=("pairs", "blocks"),
        default=["pairs", "blocks"],
        help="the paths run (both: their links compared)",
    )
    add_keep(ap)
    args = ap.parse_args()
    with work_dir("bm-tsqpath-", keep=args.keep) as work:
        return bench(args, work)


def bench(args: argparse.Namespace, work: Path) -> int:
    size = max(3 * args.partner_records, 3 * args.people, 1000)
    exports = write_exports(work / "exports", seed=args.seed, size=size)
    schema = load_schema(args.schema)
    secret = secrets.token_bytes(32)
    data, rule = [], NO_RULE
    for org, n in (("north-police", args.people), ("south-police", args.partner_records)):
        enc = encode_csv(exports[org].csv, schema, load_mapping(exports[org].mapping, schema),
                         secret)  # fmt: skip
        clks = np.frombuffer(enc.clks, dtype=np.uint8).reshape(-1, enc.clk_bits // 8)[:n]
        data.append(sharing.shared_upload(clks, secret, sharing.plan_of(schema), enc.fallback_bits))
        rule = Rule(*enc.rule) if enc.rule else NO_RULE
    records = [len(d.s1.shares[0]) for d in data]
    wire_rule = (rule.gap, rule.offset, rule.reach) if rule.active else None
    key, member_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, member_key)
    s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{s2.port}",
                     exhaustive=10**12)  # fmt: skip
    at = [f"127.0.0.1:{r.port}" for r in (s1, s2)]
    bits = [8 * int(x.shape[1]) for x in data[0].s1.shares]
    got: dict[str, dict[str, Any]] = {}
    try:
        for _ in range(args.repeat):
            for path in args.paths:
                for name, up in zip(NAMES, data, strict=True):
                    for role, address in zip(("s1", "s2"), at, strict=True):
                        with RoleClient(role, address, member_key) as rc:
                            rc.upload(name, up, wire_rule)
                partpath.PATH = path
                calls = Calls()
                channels = tuple(grpc.intercept_channel(grpc.insecure_channel(a), calls)
                                 for a in at)  # fmt: skip
                servers = RemoteServers(at[0], at[1], key, NAMES, records, bits,
                                        channels=channels)  # fmt: skip
                combiner = twoserver.Combiner(None, THRESHOLD, clks=len(bits), rule=rule)
                transcript = linkbit.Transcript()
                t0, c0 = time.perf_counter(), time.process_time()
                links, pairs = twopartner.query_links(servers, combiner, transcript)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                servers.close()
                for c in channels:
                    c.close()
                out = got.setdefault(path, {"wall": [], "cpu": []})
                out["wall"].append(wall)
                out["cpu"].append(cpu)
                found = zip(links.rec0.tolist(), links.rec1.tolist(), links.sims.tolist(),
                            strict=True)  # fmt: skip
                out.update(calls=calls.made, sent=transcript.sent, rounds=transcript.rounds,
                           pairs=pairs, links=sorted(found))  # fmt: skip
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)
    print(f"\na query of {records[0]} record(s) against {records[1]:,} (messy fixture, seed "
          f"{args.seed}, {args.schema.name}, rule {wire_rule}); all parties in this "
          f"process on loopback gRPC, S1 comparing every pair; {args.repeat} runs each"
          )  # fmt: skip
    for path, out in got.items():
        sent = ", ".join(f"{a}->{b} {n / 1e6:.2f}" for (a, b), n in sorted(out["sent"].items()))
        print(f"by {path}: {out['pairs']:,} pairs; wall p50 {1e3 * np.median(out['wall']):.0f} "
              f"ms, CPU p50 {1e3 * np.median(out['cpu']):.0f} ms; MB {sent}; circuit rounds "
              f"{out['rounds']}; C's calls {dict(sorted(out['calls'].items()))}")  # fmt: skip
    if len(got) < 2:
        return 0
    same = got["pairs"]["links"] == got["blocks"]["links"]
    print(f"links: {len(got['pairs']['links'])} by pairs, {len(got['blocks']['links'])} by "
          f"blocks, the same rows and buckets: {same}")  # fmt: skip
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
