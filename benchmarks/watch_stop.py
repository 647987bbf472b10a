"""How long `RunningServer.stop` takes with watches, run watches and query streams open, and
what their clients are told (docs/realtime.md "When the matcher stops", docs/operations.md
"Stopping the matcher"):

    .venv/bin/python benchmarks/watch_stop.py [--size 600] [--seed 3] [--watches 4]
        [--run-watches 0] [--query-streams 0] [--grace 5] [--keep]

A matcher on a loopback port in this process; the messy fixture (benchmarks/messy.py): south
(south-police, ~35% of `--size` people) indexes its records, and north opens `--watches`
watches (`MatcherClient.watch`, each of one of south's records, each on a thread of its own).
Both upload the same records and a run over them is queued but never handed to the runs, so
`--run-watches` run watches (`MatcherClient.watch_run`, without retries: what it is told, not
its reconnecting; north's and south's in turn) follow it until the stop; and north opens
`--query-streams` query streams (the QueryStream RPC, as a query session: one question
answered, then waiting for the next). Then the matcher is stopped with `--grace` seconds for
the calls in flight, and measured: from calling `stop` until it returns, and what each
client was told. Twice, each on a fresh matcher: `before`, with `RunningServer.end_streams`
a no-op (the code before 2026-12-05: an open watch, run watch or query stream, which waits
for nothing but its next event, progress or question, held the stop for the whole grace),
and `now`. (By default watches only, as this measured first: `--run-watches 0
--query-streams 0`.)
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.messy import write_exports
from benchmarks.polling import wait_for
from benchmarks.workdir import add_keep, work_dir
from blindmatch.cli.app import main as cli
from blindmatch.client.encoding.encoded import Encoded, read_encoded
from blindmatch.client.encoding.refs import load_ref_key
from blindmatch.client.remote.channel import translate_errors
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.convert import query_request
from blindmatch.client.remote.index import add_to_index
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
ADMIN = secrets.token_urlsafe(24)


def told_by(what: str, told: dict[str, list[str]], follow: Iterator[object]) -> None:
    """Follow a stream to its end; note under `what` how it ended."""
    try:
        for _ in follow:
            pass
        told[what].append("ended without an error")
    except Exception as exc:
        told[what].append(f"{type(exc).__name__}: {exc}")


def stop_with_streams(
    args: argparse.Namespace, work: Path, encoded: Encoded, key: bytes
) -> tuple[float, dict[str, list[str]]]:
    """A fresh matcher under `work`, south's index, `--watches` watches, `--run-watches` run
    watches and `--query-streams` query streams open: the seconds `stop(grace)` took, and
    what each stream's client was told at its end, by kind."""
    server = create_server("127.0.0.1:0", work / "matcher", ADMIN, workers=2)
    target = f"127.0.0.1:{server.port}"
    told: dict[str, list[str]] = {"watch": [], "run watch": [], "query stream": []}
    clk_bytes = encoded.clk_bytes
    clks = next(encoded.iter_chunks(max(1, args.watches, args.query_streams)))
    hush = threading.Event()
    try:
        with MatcherClient(target, ADMIN) as op:
            tokens = op.create_project("watch", ["north", "south"]).tokens
            op.set_query_limits("watch", allow_watch=True)
        with MatcherClient(target, tokens["south"]) as south:
            add_to_index(south, "watch", encoded, key, encoded.read_ids())
        if args.run_watches:
            for member in ("north", "south"):
                with MatcherClient(target, tokens[member]) as client:
                    client.upload("watch", encoded, progress=False)
        run_id = server.store.create_run("watch")[0].id if args.run_watches else ""
        members = {m: MatcherClient(target, tokens[m], retry=NO_RETRY) for m in tokens}
        north = members["north"]

        def clk(i: int) -> bytes:
            return clks[i * clk_bytes : (i + 1) * clk_bytes]

        def watch(i: int) -> None:
            told_by("watch", told, north.watch(
                "watch", clk(i), clk_bits=encoded.clk_bits, fingerprint=encoded.fingerprint,
                purpose="case 24/118", fallback_bits=encoded.fallback_bits, rule=encoded.rule,
            ))  # fmt: skip

        def run_watch(i: int) -> None:
            told_by("run watch", told, members[("north", "south")[i % 2]].watch_run(
                "watch", run_id))  # fmt: skip

        asked = threading.Semaphore(0)

        def query_stream(i: int) -> None:
            def questions() -> Iterator[pb.QueryRequest]:
                yield query_request("watch", clk(i), encoded.clk_bits, encoded.fingerprint,
                                    "case 24/118", encoded.fallback_bits, encoded.rule)  # fmt: skip
                hush.wait()  # the next question never comes

            def answers() -> Iterator[object]:
                with grpc.insecure_channel(target) as channel, translate_errors(target):
                    replies = pb_grpc.MatcherStub(channel).QueryStream(
                        questions(), metadata=[("authorization", f"Bearer {tokens['north']}")]
                    )
                    yield next(replies)
                    asked.release()
                    yield from replies

            told_by("query stream", told, answers())

        threads = [threading.Thread(target=f, args=(i,), daemon=True)
                   for n, f in ((args.watches, watch), (args.run_watches, run_watch),
                                (args.query_streams, query_stream))
                   for i in range(n)]  # fmt: skip
        for t in threads:
            t.start()
        for _ in range(args.query_streams):
            asked.acquire(timeout=60)
        wait_for(lambda: len(server.realtime.watches) == args.watches
                 and sum(server.streams.open_streams("watch", m, "WatchRun")
                         for m in tokens) == args.run_watches, 60)  # fmt: skip
        started = time.perf_counter()
        server.stop(grace=args.grace)
        took = time.perf_counter() - started
        hush.set()
        for t in threads:
            t.join(30)
        for client in members.values():
            client.close()
    except BaseException:
        hush.set()
        server.stop(grace=None)
        raise
    return took, told


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=600, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--watches", type=int, default=4, help="watches open when it stops")
    ap.add_argument("--run-watches", type=int, default=0, help="run watches open (at most 8)")
    ap.add_argument("--query-streams", type=int, default=0, help="query streams open")
    ap.add_argument("--grace", type=float, default=5.0, help="stop's grace, seconds")
    add_keep(ap)
    args = ap.parse_args()
    with work_dir("bm-watchstop-", keep=args.keep) as work:
        south = write_exports(work / "exports", seed=args.seed, size=args.size)["south-police"]
        secret_file = work / "linkage.secret"
        cli(["secret", "new", str(secret_file)])
        assert cli(["encode", str(south.csv), "--schema", str(SCHEMA), "--secret-file",
                    str(secret_file), "--mapping", str(south.mapping), "--out",
                    str(work / "south.encoded"), "--quiet"]) == 0  # fmt: skip
        encoded = read_encoded(work / "south.encoded")
        key, _ = load_ref_key(work / "south.refkey", create=True)
        end_streams = RunningServer.end_streams
        RunningServer.end_streams = lambda self: 0  # type: ignore[method-assign]
        try:
            before = stop_with_streams(args, work / "before", encoded, key)
        finally:
            RunningServer.end_streams = end_streams  # type: ignore[method-assign]
        now = stop_with_streams(args, work / "now", encoded, key)
    print(f"stop(grace={args.grace:g}) with {args.watches} watch(es), {args.run_watches} run "
          f"watch(es) and {args.query_streams} query stream(s) open")  # fmt: skip
    print(f"{'':8}{'stop took':>10}  what the first client of each kind was told")
    for name, (took, told) in (("before", before), ("now", now)):
        print(f"{name:8}{took:>9.3f}s")
        for kind, n in (("watch", args.watches), ("run watch", args.run_watches),
                        ("query stream", args.query_streams)):  # fmt: skip
            if not n:
                continue
            said = told[kind]
            print(f"{'':10}{kind}: {said[0] if said else '(nothing)'}")
            if len(set(said)) > 1 or len(said) != n:
                print(f"{'':12}all {len(said)}: {sorted(set(said))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
