"""A query in a two-server project against the same query in a CLK project, on the same
records, in one run (docs/realtime.md "Queries in a two-server project"):

    .venv/bin/python benchmarks/twoserver_query.py [--size 14286] [--seed 3] [--queries 40]
        [--partners 3]

S2, S1 and a matcher that is their combiner (`serve --two-server-s1/-s2`'s set-up), all in
this one process on loopback gRPC ports; the messy fixture (benchmarks/messy.py). The
partners (`--partners`, 1 to 3): south (south-police, ~35% of `--size` people, ~5,000 at the
default), west (retail-bcrp of the same people, ~860) and east (south-police of another
population, `--seed` + 1, ~5,000), each encoded with `encode --two-server`, each both a
standing index (`index sync`) in a CLK project and an upload (`upload`) in a two-server
project on the same matcher. The querier, north, asks about its own first `--queries`
records, one person a query, alternately in each project: a CLK query (MatcherClient.query,
the CLK to the matcher) and a two-server query (the record's shares and sealed band keys made
as `encode --two-server` makes them, sent to S1 and S2 under a query ticket, the matcher
asked: client/remote/twoserver.py `project_query`). Per query: wall seconds, and CPU seconds
of this process (client, matcher, S1 and S2 together, since all run here); the first query of
each mode, then p50 and p99 of the rest, the two-server figure as a ratio of the CLK one;
whether both answer the same (which partners hold each person); what each query sent S1 and
S2, and how many pairs S1 proposed (C learns each one's link bit).

It runs on whichever tree it sits in (its folder's parent is put first on the path), so a
copy in another checkout measures that checkout's code on the same data: the before/after
figures of docs/realtime.md are this script run in a copy of the tree before and in this one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.messy import write_exports
from blindmatch.cli.app import main as cli
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import project_query, upload_parts
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk-no-rule.json"
ADMIN = secrets.token_urlsafe(24)


# name: (the messy fixture's export, the seed's offset)
PARTNERS = {"south": ("south-police", 0), "west": ("retail-bcrp", 0), "east": ("south-police", 1)}


class Counted:
    """S1 and S2 as the matcher reaches them, counting the pairs each proposal holds."""

    def __init__(self, servers: Any, proposed: list[int]) -> None:
        self.servers, self.proposed = servers, proposed

    def propose(self, *args: Any, **kwargs: Any) -> Any:
        described = self.servers.propose(*args, **kwargs)
        self.proposed.append(sum(p.pairs for p in described))  # (a list's append: thread-safe)
        return described

    def __getattr__(self, name: str) -> Any:
        return getattr(self.servers, name)


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=14_286, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--queries", type=int, default=40, help="queries in each mode")
    ap.add_argument("--schema", type=Path, default=SCHEMA)
    ap.add_argument("--partners", type=int, default=3, choices=(1, 2, 3),
                    help="partners searched: south, then west, then east")  # fmt: skip
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bm-tsquery-"))
    exports = write_exports(work / "exports", seed=args.seed, size=args.size)
    secret_file = work / "linkage.secret"
    cli(["secret", "new", str(secret_file)])
    secret = secret_file.read_bytes().strip()
    north = exports["north-police"]
    partners = list(PARTNERS)[: args.partners]
    encoded: dict[str, Path] = {}
    for name in partners:
        org, offset = PARTNERS[name]
        source = (exports if not offset else write_exports(
            work / f"exports-{offset}", seed=args.seed + offset, size=args.size))[org]  # fmt: skip
        encoded[name] = work / f"{name}.encoded"
        assert cli(["encode", str(source.csv), "--schema", str(args.schema), "--secret-file",
                    str(secret_file), "--mapping", str(source.mapping), "--out",
                    str(encoded[name]), "--two-server", "--quiet"]) == 0  # fmt: skip
    schema = load_schema(args.schema)
    asked = encode_csv(north.csv, schema, load_mapping(north.mapping, schema), secret)
    width = asked.clk_bits // 8
    clks = np.frombuffer(asked.clks, dtype=np.uint8).reshape(-1, width)[: args.queries]

    key, member_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, member_key)
    s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{s2.port}")
    plain = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, member_key)
    proposed: list[int] = []  # the pairs S1 proposes a query: C learns each one's link bit

    def servers(names: list[str], records: list[int], bits: list[int]) -> Counted:
        return Counted(plain.servers(names, records, bits), proposed)

    setup = dataclasses.replace(plain, servers=servers)
    server = create_server("127.0.0.1:0", work / "matcher", ADMIN, workers=2, two_server=setup)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN) as op:
            clk = op.create_project("clks", ["north", *partners], mode="clk")
            two = op.create_project("shares", ["north", *partners], mode="two-server")
            for project in ("clks", "shares"):  # no limit in the way of the measurement
                op.set_query_limits(project, per_minute=10**6, per_day=10**7)
        net = ["--server", target, "--quiet"]
        for name in partners:
            assert (
                cli(
                    [
                        "index",
                        "sync",
                        str(encoded[name]),
                        "--project",
                        "clks",
                        "--ref-key",
                        str(work / f"{name}.refkey"),
                        "--token",
                        clk.tokens[name],
                        *net,
                    ]
                )
                == 0
            )
            assert cli(["upload", str(encoded[name]), "--project", "shares", "--token",
                        two.tokens[name], *net]) == 0  # fmt: skip
        partner_records = {n.split("/")[1]: h.records for n, h in s1.service.held.items()}
        load = os.getloadavg()[0]
        wall: dict[str, list[float]] = {"clk": [], "two-server": []}
        cpu: dict[str, list[float]] = {"clk": [], "two-server": []}
        held: dict[str, list[list[str]]] = {"clk": [], "two-server": []}
        pairs: list[int] = []
        s1_bytes: list[int] = []
        s2_bytes: list[int] = []
        with (
            MatcherClient(target, clk.tokens["north"]) as a,
            MatcherClient(target, two.tokens["north"]) as b,
        ):
            for row in clks:
                for mode in ("clk", "two-server"):
                    proposed.clear()
                    t0, c0 = time.perf_counter(), time.process_time()
                    if mode == "clk":
                        answer = a.query(
                            "clks",
                            row.tobytes(),
                            clk_bits=asked.clk_bits,
                            fingerprint=asked.fingerprint,
                            purpose="bench",
                            fallback_bits=asked.fallback_bits,
                            rule=asked.rule,
                        )
                    else:
                        upload = sharing.shared_upload(
                            row[None, :], secret, sharing.plan_of(schema), asked.fallback_bits
                        )
                        answer = project_query(
                            b,
                            "shares",
                            upload,
                            clk_bits=asked.clk_bits,
                            fingerprint=asked.fingerprint,
                            purpose="bench",
                            schema_digest=asked.schema_digest,
                            rule=asked.rule,
                        )
                    wall[mode].append(time.perf_counter() - t0)
                    cpu[mode].append(time.process_time() - c0)
                    held[mode].append(sorted(m.partner for m in answer.results[0]))
                    if mode == "two-server":
                        pairs.append(sum(proposed))
                        s1_bytes.append(sum(p.ByteSize() for p in upload_parts("q", "s1", upload)))
                        s2_bytes.append(sum(p.ByteSize() for p in upload_parts("q", "s2", upload)))
        load_after = os.getloadavg()[0]
    finally:
        server.stop(grace=None)
        s1.stop(grace=None)
        s2.stop(grace=None)
    n = len(clks)
    sizes = ", ".join(f"{p} {partner_records[p]:,}" for p in partners)
    print(
        f"\n{n} queries of one person (north's records) in each mode against "
        f"{len(partners)} partner(s) ({sizes} records; messy fixture, seed {args.seed}); "
        "client, matcher, S1 and S2 in one process on loopback; "
        f"load average {load:.1f} before, {load_after:.1f} after"
    )
    # The first query of each mode apart: S1 sorts the partner's band keys for its first join,
    # the client draws the band positions for its first upload (both kept for the next).
    print(f"{'per query':<22}{'CLK project':>14}{'two-server':>14}{'ratio':>9}")
    for what, got in (("wall", wall), ("CPU", cpu)):
        x, y = got["clk"][0], got["two-server"][0]
        print(f"{what + ' first (ms)':<22}{1000 * x:>14.1f}{1000 * y:>14.1f}{y / x:>8.1f}x")
        for q in (50, 99):
            x, y = pct(got["clk"][1:], q), pct(got["two-server"][1:], q)
            print(f"{what + f' p{q} (ms)':<22}{1000 * x:>14.1f}{1000 * y:>14.1f}{y / x:>8.1f}x")
    same = sum(x == y for x, y in zip(held["clk"], held["two-server"], strict=True))
    by = {p: sum(p in h for h in held["two-server"]) for p in partners}
    print(
        f"held (two-server): {', '.join(f'by {p} {k} of {n}' for p, k in by.items())}; the same "
        f"answer as the CLK project's for {same} of {n}"
    )
    print(
        f"pairs S1 proposed a query, all partners (C learns their link bits): median "
        f"{pct(pairs, 50):.0f}, max {max(pairs)}; sent a query: S1 {pct(s1_bytes, 50) / 1e3:.0f} "
        f"kB, S2 {pct(s2_bytes, 50) / 1e3:.1f} kB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
