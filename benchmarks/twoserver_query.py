"""A query in a two-server project against the same query in a CLK project, on the same
records, in one run (docs/realtime.md "Queries in a two-server project"):

    .venv/bin/python benchmarks/twoserver_query.py [--size 14286] [--seed 3] [--queries 40]
        [--partners 3] [--disclosure hits|mapping] [--roles here|processes] [--role-data]
        [--path auto|blocks|pairs] [--people 1]

S2, S1 and a matcher that is their combiner (`serve --two-server-s1/-s2`'s set-up), all in this
one process on loopback gRPC ports; the messy fixture (benchmarks/messy.py). The partners
(`--partners`, 1 to 3): south (south-police, ~35% of `--size` people, ~5,000 at the default),
west (retail-bcrp of the same people, ~860) and east (south-police of another population,
`--seed` + 1, ~5,000), each encoded with `encode --two-server`, each both a standing index
(`index sync`) in a CLK project and an upload (`upload`) in a two-server project on the same
matcher. The querier, north, asks about its own first `--queries` records, one person a query,
alternately in each project: a CLK query (MatcherClient.query, the CLK to the matcher) and a
two-server query (the record's shares and sealed band keys made as `encode --two-server` makes
them, sent to S1 and S2 under a query ticket, the matcher asked: `MatcherClient.query` with a
`SharedUpload`, client/remote/twoserver_realtime.py `_query`). Per query: wall seconds, and CPU
seconds of this process (client, matcher, S1 and S2 together, since all run here); the first
query of each mode, then p50 and p99 of the rest, the two-server figure as a ratio of the CLK
one; whether both answer the same (which partners hold each person); what each query sent S1 and
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
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import BLINDMATCH, _started
from benchmarks.messy import write_exports
from benchmarks.twoserver_querypath import query_sends_keys
from benchmarks.workdir import add_keep, work_dir
from blindmatch.cli.app import main as cli
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver_parts import upload_parts
from blindmatch.matcher.core import exhaustive, tickets
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk-no-rule.json"
ADMIN = secrets.token_urlsafe(24)


# name: (the messy fixture's export, the seed's offset)
PARTNERS = {"south": ("south-police", 0), "west": ("retail-bcrp", 0), "east": ("south-police", 1)}


class Counted:
    """S1 and S2 as the matcher reaches them, counting the pairs each proposal holds and
    those evaluated (a query sent without band keys that S1 refuses for one partner is
    proposed against the others, and none evaluated: client/remote/twoserver_realtime.py)."""

    def __init__(self, servers: Any, proposed: list[int], evaluated: list[int],
                 timed: list[tuple[int, float, bool]] | None = None) -> None:  # fmt: skip
        self.servers, self.proposed, self.evaluated = servers, proposed, evaluated
        self.timed = timed if timed is not None else []  # (partner's records, s, refused)

    def evaluate_part(self, index: int, offset: int, count: int, *args: Any) -> Any:
        self.evaluated.append(count)
        return self.servers.evaluate_part(index, offset, count, *args)

    def prepare_part(self, *args: Any, **kwargs: Any) -> Any:
        self.blocked.append(1)  # a part by blocks (C's deal of its blocks, BlockExchange)
        return self.servers.prepare_part(*args, **kwargs)

    blocked: ClassVar[list[int]] = []  # the parts run by blocks (`--path`), every query's

    def propose(self, *args: Any, **kwargs: Any) -> Any:
        t0, refused = time.perf_counter(), True
        try:
            described = self.servers.propose(*args, **kwargs)
            refused = False
        finally:  # the partner's records, the proposal's wall seconds, refused or not
            partner = max(getattr(self.servers, "records", [0]))
            self.timed.append((partner, time.perf_counter() - t0, refused))
        self.proposed.append(sum(p.pairs for p in described))  # (a list's append: thread-safe)
        return described

    def __getattr__(self, name: str) -> Any:
        return getattr(self.servers, name)


def proc_cpu(pids: list[int]) -> float:
    """CPU seconds the processes `pids` have used (user and system, /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def kept_bytes(sealed: Any) -> int:
    """The bytes S1 keeps of an upload for its joins, its sorted band keys and its tokens'
    offsets (`Sealed.kept_bytes`; an older tree's `_sorted` and `_offsets` caches)."""
    if hasattr(sealed, "kept_bytes"):
        return int(sealed.kept_bytes())
    offsets = sealed.__dict__.get("_offsets")
    kept = sum(a.nbytes for got in sealed.__dict__.get("_sorted", {}).values() for a in got)
    return kept + (0 if offsets is None else offsets.nbytes)


def s1_memory(s1: Any) -> str:
    """What S1 holds a record of the partners' uploads, and the sorted keys it keeps."""
    held = {n: h for n, h in s1.held.items() if "@" not in n}
    records = sum(h.records for h in held.values())
    own = sum(a.nbytes for h in held.values() for a in h.arrays())
    keys = sum(len(s.keys) for h in held.values() for s in h.sealed)
    sorted_ = sum(kept_bytes(s) for h in held.values() for s in h.sealed)
    return (f"S1 holds {own / records / 1e3:.1f} kB a partner record ({keys / records:.0f} "
            f"band keys a record); the sorted keys it keeps: {sorted_ / records / 1e3:.1f} kB "
            f"a record ({100 * sorted_ / own:.1f}% more; with the tokens' offsets)")  # fmt: skip


def start_roles(
    work: Path, processes: bool, kept: bool = False, caps: tuple[int, int] | None = None
) -> tuple[str, str, str, str, Callable[[], None], list[int], Any]:
    """S2 and S1: in this process (`create_role`), or each a process of its own (`blindmatch
    two-server role`, as deployed, of this tree); with `kept`, each with a data dir (its audit
    log and uploads on disk, durably); `caps`: S1's `--exhaustive-pairs` and
    `--small-member-pairs` (None: its defaults; in this process only; given, S1 also runs
    `--query-band-keys allow`: `--mixed` measures the band-key round); (S1's address, S2's,
    the parties' key, the members' key, stop, the roles' process ids: none in this process,
    S1's service here or None)."""
    data = {r: work / f"{r}-data" for r in ("s1", "s2")} if kept else {"s1": None, "s2": None}
    if not processes:
        key, member_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        r2 = create_role("s2", "127.0.0.1:0", key, member_key, data_dir=data["s2"])
        exhaustive_, small = caps if caps is not None else (None, None)
        r1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{r2.port}",
                         data_dir=data["s1"], exhaustive=exhaustive_, small_member=small,
                         query_band_keys="allow" if caps is not None else None)  # fmt: skip

        def stop() -> None:
            r1.stop(grace=None)
            r2.stop(grace=None)

        return (f"127.0.0.1:{r1.port}", f"127.0.0.1:{r2.port}", key, member_key, stop, [],
                r1.service)  # fmt: skip
    files = [work / "parties.key", work / "members.key"]
    for f in files:
        cli(["secret", "new", str(f)])
    key, member_key = (f.read_text().strip() for f in files)
    # Each on a port the kernel picks (`--listen 127.0.0.1:0`, read from its listening line),
    # S2 first: S1 names the port S2 got. No port picked and let go.
    at: dict[str, str] = {}
    procs: list[subprocess.Popen[str]] = []
    roles = ExitStack()
    for role in ("s2", "s1"):
        extra = ["--s2", at["s2"]] if role == "s1" else []
        if data[role] is not None:
            extra = [*extra, "--data-dir", str(data[role])]
        command = [*BLINDMATCH, "two-server", "role", "--role", role, "--listen",
                   "127.0.0.1:0", "--key-file", str(files[0]), "--member-key-file",
                   str(files[1]), *extra]  # fmt: skip
        served = roles.enter_context(_started(command, "", None))
        at[role] = served.target
        procs.append(served.process)

    def stop_all() -> None:
        roles.close()

    return at["s1"], at["s2"], key, member_key, stop_all, [p.pid for p in procs], None


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def s1_sent(upload: Any, partner: int, caps: tuple[int, int] | None = None) -> int:
    """The bytes a single-record query sends S1 against partners of at most `partner` records
    (S1 at `caps`, its `--exhaustive-pairs` and `--small-member-pairs`; None: its defaults):
    without band keys, and again with them where S1 blocks it
    (`MatcherClient.query` with a `SharedUpload`: client/remote/twoserver_realtime.py `_query`)."""
    keyless = sum(p.ByteSize() for p in upload_parts("q", "s1", upload, keys=False))
    if caps is None:
        needed = query_sends_keys(exhaustive.DEFAULT_PAIRS, 1, partner)
    else:
        names = [tickets.query_name("project", "north", "q"), "project/south@t"]
        needed = exhaustive.keys_needed(names, caps[0], [1, partner], caps[1])
    if not needed:
        return keyless
    return keyless + sum(p.ByteSize() for p in upload_parts("q", "s1", upload))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=14_286, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--queries", type=int, default=40, help="queries in each mode")
    ap.add_argument("--schema", type=Path, default=SCHEMA)
    ap.add_argument("--partners", type=int, default=3, choices=(1, 2, 3),
                    help="partners searched: south, then west, then east")  # fmt: skip
    ap.add_argument("--roles", choices=("here", "processes"), default="here",
                    help="S1 and S2 in this process, or each a process of its own")  # fmt: skip
    ap.add_argument("--role-data", action="store_true",
                    help="S1 and S2 each with a data dir, as deployed (their audit logs and "
                    "uploads on disk, written durably); default: in memory")  # fmt: skip
    ap.add_argument("--at-once", type=int, default=0,
                    help="partners the matcher searches at once (twoquery.PARTNERS_AT_ONCE; "
                    "1: one after the other; default: the code's)")  # fmt: skip
    ap.add_argument("--disclosure", choices=("hits", "mapping"), default="hits",
                    help="both projects' level (mapping: a two-server query's answer issues "
                    "a request reference per partner record found)")  # fmt: skip
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds between the last upload and the first query (default 0: "
                    "at once, as a member querying right after a partner uploads)")  # fmt: skip
    ap.add_argument("--mixed", action="store_true",
                    help="S1 compares a query whole against the smallest partner only and "
                    "blocks it against the others (its --exhaustive-pairs QUERY_STREAM x the "
                    "smallest's records, --small-member-pairs 0; with --roles here and 2 or 3 "
                    "--partners)")  # fmt: skip
    ap.add_argument(
        "--people",
        type=int,
        default=1,
        help="people a query (north's next records; --queries queries)",
    )
    ap.add_argument("--path", choices=("auto", "blocks", "pairs"), default="auto",
                    help="a query's unblocked parts: by the shape's cheaper path (the code's "
                    "choice, core/partpath.py by_blocks), always by blocks (the "
                    "choice before 2026-12-06) or always by pairs")  # fmt: skip
    add_keep(ap)
    args = ap.parse_args()
    if args.mixed and (args.roles != "here" or args.partners < 2):
        ap.error("--mixed: with --roles here and --partners 2 or 3")
    if args.path != "auto":  # C's choice of an unblocked part's path (core/partpath.py)
        from blindmatch.matcher.core import partpath

        partpath.PATH = args.path  # type: ignore[attr-defined,unused-ignore]
    if args.at_once:
        from blindmatch.matcher.realtime import twoquery

        twoquery.PARTNERS_AT_ONCE = args.at_once  # type: ignore[attr-defined,unused-ignore]
    with work_dir("bm-tsquery-", keep=args.keep) as work:
        return bench(args, work)


def bench(args: argparse.Namespace, work: Path) -> int:
    """The benchmark in `work` (deleted by `main` afterwards)."""
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
    every = np.frombuffer(asked.clks, dtype=np.uint8).reshape(-1, width)
    clks = every[: args.queries * args.people].reshape(args.queries, args.people, width)

    partner_records = {p: read_encoded(encoded[p]).record_count for p in partners}
    caps = None
    if args.mixed:  # the smallest partner's records the most S1 compares a query whole against
        caps = (exhaustive.QUERY_STREAM * min(partner_records.values()), 0)
    s1, s2, key, member_key, stop_roles, pids, s1_service = start_roles(
        work, args.roles == "processes", args.role_data, caps
    )
    plain = combiner_setup(s1, s2, key, member_key)
    proposed: list[int] = []  # the pairs S1 proposes a query
    evaluated: list[int] = []  # those evaluated: C learns each one's link bit
    timed: list[tuple[int, float, bool]] = []  # a query's proposals (records, s, refused)

    def servers(names: list[str], records: list[int], bits: list[int]) -> Counted:
        return Counted(plain.servers(names, records, bits), proposed, evaluated, timed)

    setup = dataclasses.replace(plain, servers=servers)
    server = create_server("127.0.0.1:0", work / "matcher", ADMIN, workers=2, two_server=setup)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN) as op:
            members = ["north", *partners]
            clk = op.create_project("clks", members, args.disclosure, mode="clk")
            two = op.create_project("shares", members, args.disclosure, mode="two-server")
            for project in ("clks", "shares"):  # no limit in the way of the measurement
                op.set_query_limits(project, per_minute=10**6, per_day=10**7)
        net = ["--server", target, "--quiet"]
        upload_seconds: dict[str, float] = {}
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
                        "--clk",  # encoded --two-server: its CLKs to the CLK project all the same
                        "--token",
                        clk.tokens[name],
                        *net,
                    ]
                )
                == 0
            )
            t0 = time.perf_counter()
            assert cli(["upload", str(encoded[name]), "--project", "shares", "--token",
                        two.tokens[name], *net]) == 0  # fmt: skip
            upload_seconds[name] = time.perf_counter() - t0
        time.sleep(args.pause)
        presorter = getattr(s1_service, "presorter", None)  # None: processes, or an older tree
        sorted_first = "unknown" if presorter is None else str(presorter.wait(0))
        load = os.getloadavg()[0]
        wall: dict[str, list[float]] = {"clk": [], "two-server": []}
        cpu: dict[str, list[float]] = {"clk": [], "two-server": []}
        # each query's people's partners
        held: dict[str, list[list[list[str]]]] = {"clk": [], "two-server": []}
        pairs: list[int] = []
        spent: list[int] = []  # pairs evaluated a query
        s1_bytes: list[int] = []
        s2_bytes: list[int] = []
        proposals: list[list[tuple[int, float, bool]]] = []  # each two-server query's
        with (
            MatcherClient(target, clk.tokens["north"]) as a,
            MatcherClient(target, two.tokens["north"]) as b,
        ):
            roles_cpu: list[float] = []  # S1's and S2's processes', a two-server query
            for row in clks:
                for mode in ("clk", "two-server"):
                    proposed.clear()
                    evaluated.clear()
                    timed.clear()
                    r0 = proc_cpu(pids)
                    t0, c0 = time.perf_counter(), time.process_time()
                    if mode == "clk":
                        answer = a.query(
                            "clks",
                            [r.tobytes() for r in row],  # the query's people's CLKs
                            clk_bits=asked.clk_bits,
                            fingerprint=asked.fingerprint,
                            purpose="bench",
                            fallback_bits=asked.fallback_bits,
                            rule=asked.rule,
                        )
                    else:
                        upload = sharing.shared_upload(
                            row, secret, sharing.plan_of(schema), asked.fallback_bits
                        )
                        answer = b.query(
                            "shares",
                            upload,
                            clk_bits=asked.clk_bits,
                            fingerprint=asked.fingerprint,
                            purpose="bench",
                            schema_digest=asked.schema_digest,
                            rule=asked.rule,
                            allow_band_keys=True,  # (it measures the band-key round too)
                        )
                    wall[mode].append(time.perf_counter() - t0)
                    cpu[mode].append(time.process_time() - c0)
                    if mode == "two-server":
                        roles_cpu.append(proc_cpu(pids) - r0)
                    held[mode].append([sorted(m.partner for m in r) for r in answer.results])
                    if mode == "two-server":
                        pairs.append(sum(proposed))
                        spent.append(sum(evaluated))
                        proposals.append(list(timed))
                        s1_bytes.append(s1_sent(upload, max(partner_records.values()), caps))
                        s2_bytes.append(sum(p.ByteSize() for p in upload_parts("q", "s2", upload)))
        load_after = os.getloadavg()[0]
    finally:
        server.stop(grace=None)
        stop_roles()
    n = len(clks)
    sizes = ", ".join(f"{p} {partner_records[p]:,}" for p in partners)
    where = "with them" if args.roles == "here" else "each a process of its own"
    where += ", each with a data dir" if args.role_data else ""
    print(
        f"\n{n} queries of {args.people} person(s) (north's records) in each mode against "
        f"{len(partners)} partner(s) ({sizes} records; messy fixture, seed {args.seed}); "
        f"client and matcher in one process, S1 and S2 {where}, on loopback; "
        f"load average {load:.1f} before, {load_after:.1f} after"
    )
    # The first query of each mode apart: S1 sorts the partner's band keys for its first join,
    # the client draws the band positions for its first upload (both kept for the next).
    print(f"upload (wall s, CLI `upload` to the matcher, S1 and S2): "
          f"{', '.join(f'{p} {t:.2f}' for p, t in upload_seconds.items())}; {args.pause:.0f} s "
          f"later the first query (S1's sorts done then: {sorted_first})")  # fmt: skip
    if s1_service is not None:
        print(s1_memory(s1_service))
    print(f"{'per query':<22}{'CLK project':>14}{'two-server':>14}{'ratio':>9}")
    for what, got in (("wall", wall), ("CPU", cpu)):
        x, y = got["clk"][0], got["two-server"][0]
        print(f"{what + ' first (ms)':<22}{1000 * x:>14.1f}{1000 * y:>14.1f}{y / x:>8.1f}x")
        for q in (50, 99):
            x, y = pct(got["clk"][1:], q), pct(got["two-server"][1:], q)
            print(f"{what + f' p{q} (ms)':<22}{1000 * x:>14.1f}{1000 * y:>14.1f}{y / x:>8.1f}x")
    if pids:  # the queries' CPU at S1 and S2, beside the figures above (this process's)
        print(f"S1 and S2 (their processes, /proc's 10 ms ticks): CPU a two-server query, "
              f"first {1000 * roles_cpu[0]:.0f} ms, then p50 {1000 * pct(roles_cpu[1:], 50):.0f}"
              f" ms, mean {1000 * sum(roles_cpu[1:]) / max(1, n - 1):.1f} ms, p99 "
              f"{1000 * pct(roles_cpu[1:], 99):.0f} ms")  # fmt: skip
    same = sum(x == y for x, y in zip(held["clk"], held["two-server"], strict=True))
    by = {p: sum(p in h for q in held["two-server"] for h in q) for p in partners}
    people = n * args.people
    print(
        f"held (two-server): {', '.join(f'by {p} {k} of {people}' for p, k in by.items())}; "
        f"the same answer as the CLK project's for {same} of {n}"
    )
    print(
        f"pairs S1 proposed a query, all partners: median {pct(pairs, 50):.0f}, max "
        f"{max(pairs)}; evaluated (C learns their link bits): median {pct(spent, 50):.0f}, "
        f"max {max(spent)}; sent a query: S1 {pct(s1_bytes, 50) / 1e3:.1f} "
        f"kB, S2 {pct(s2_bytes, 50) / 1e3:.1f} kB; parts by blocks: {len(Counted.blocked)} "
        f"in {n} queries (--path {args.path})"
    )
    if caps is not None:
        print_mixed(proposals, partner_records, s1_service, n)
    return 0


def print_mixed(proposals: list[list[tuple[int, float, bool]]], partner_records: dict[str, int],
                s1: Any, queries: int) -> None:  # fmt: skip
    """`--mixed`: the proposals a two-server query made (refused for want of band keys, or
    abandoned: made to a partner in a try S1 refused), how long the blocked partners' took
    (what the smallest partner's search waits on, where every proposal comes before any
    search), and the query records S1 counted."""
    small = min(partner_records.values())
    refused = [sum(r for _, _, r in got) for got in proposals]
    # Proposals made beyond one a partner searched: made in a try another partner's refusal
    # ended, so abandoned (none searched).
    abandoned = [sum(not r for _, _, r in got) - len(partner_records) for got in proposals]
    blocked = [max((s for records, s, r in got if records > small and not r), default=0.0)
               for got in proposals]  # fmt: skip
    whole = [max((s for records, s, r in got if records == small), default=0.0)
             for got in proposals]  # fmt: skip
    counted = s1.queries.counter.used("shares", "north", time.time())[0]
    print(
        f"--mixed: proposals a query: median {pct([len(g) for g in proposals], 50):.0f} "
        f"(refused for want of band keys: median {pct(refused, 50):.0f}; made and abandoned "
        f"with them: median {pct(abandoned, 50):.0f}); the slowest blocked partner's "
        f"proposal p50 {1000 * pct(blocked, 50):.1f} ms, p99 {1000 * pct(blocked, 99):.1f} "
        f"ms; the smallest partner's ({small:,} records, whole) p50 "
        f"{1000 * pct(whole, 50):.1f} ms; S1 counted {counted} query records for "
        f"{queries} single-record queries"
    )


if __name__ == "__main__":
    raise SystemExit(main())
