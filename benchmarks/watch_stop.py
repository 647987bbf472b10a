"""How long `RunningServer.stop` takes with watches open, and what their clients are told
(docs/realtime.md "Watching for later matches", "When the matcher stops"):

    .venv/bin/python benchmarks/watch_stop.py [--size 600] [--seed 3] [--watches 4]
        [--grace 5] [--keep]

A matcher on a loopback port in this process; the messy fixture (benchmarks/messy.py): south
(south-police, ~35% of `--size` people) indexes its records, and north opens `--watches`
watches (`MatcherClient.watch`, each of one of south's records, each on a thread of its own).
Then the matcher is stopped with `--grace` seconds for the calls in flight, and measured: from
calling `stop` until it returns, and what each watch's generator raised. Twice, each on a
fresh matcher: `before`, with `Watches.end_all` a no-op (the code before 2026-12-05: an open
watch, which waits for nothing but its next event, held the stop for the whole grace), and
`now`.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.messy import write_exports
from benchmarks.workdir import add_keep, work_dir
from blindmatch.cli.app import main as cli
from blindmatch.client.encoding.encoded import Encoded, read_encoded
from blindmatch.client.encoding.refs import load_ref_key
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.index import add_to_index
from blindmatch.matcher.realtime.watches import Watches
from blindmatch.matcher.server import create_server

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
ADMIN = secrets.token_urlsafe(24)


def wait_for(done: object, seconds: float = 60.0) -> None:
    deadline = time.perf_counter() + seconds
    while not done():  # type: ignore[operator]
        if time.perf_counter() > deadline:
            raise TimeoutError("not in time")
        time.sleep(0.005)


def stop_with_watches(
    args: argparse.Namespace, work: Path, encoded: Encoded, key: bytes
) -> tuple[float, list[str]]:
    """A fresh matcher under `work`, south's index, `--watches` watches of north's open: the
    seconds `stop(grace)` took, and what each watch was told at its end."""
    server = create_server("127.0.0.1:0", work / "matcher", ADMIN, workers=2)
    target = f"127.0.0.1:{server.port}"
    told: list[str] = []
    clk_bytes = encoded.clk_bytes
    clks = next(encoded.iter_chunks(args.watches))
    try:
        with MatcherClient(target, ADMIN) as op:
            tokens = op.create_project("watch", ["north", "south"]).tokens
            op.set_query_limits("watch", allow_watch=True)
        with MatcherClient(target, tokens["south"]) as south:
            add_to_index(south, "watch", encoded, key, encoded.read_ids())
        north = MatcherClient(target, tokens["north"])

        def watch(i: int) -> None:
            stream = north.watch(
                "watch", clks[i * clk_bytes : (i + 1) * clk_bytes], clk_bits=encoded.clk_bits,
                fingerprint=encoded.fingerprint, purpose="case 24/118",
                fallback_bits=encoded.fallback_bits, rule=encoded.rule,
            )  # fmt: skip
            try:
                for _ in stream:
                    pass
                told.append("ended without an error")
            except Exception as exc:
                told.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=watch, args=(i,), daemon=True)
                   for i in range(args.watches)]  # fmt: skip
        for t in threads:
            t.start()
        wait_for(lambda: len(server.realtime.watches) == args.watches)
        started = time.perf_counter()
        server.stop(grace=args.grace)
        took = time.perf_counter() - started
        for t in threads:
            t.join(30)
        north.close()
    except BaseException:
        server.stop(grace=None)
        raise
    return took, told


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=600, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--watches", type=int, default=4, help="watches open when it stops")
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
        end_all = Watches.end_all
        Watches.end_all = lambda self, why: 0  # type: ignore[method-assign,assignment]
        try:
            before = stop_with_watches(args, work / "before", encoded, key)
        finally:
            Watches.end_all = end_all  # type: ignore[method-assign]
        now = stop_with_watches(args, work / "now", encoded, key)
    print(f"stop(grace={args.grace:g}) with {args.watches} watch(es) open")
    print(f"{'':8}{'stop took':>10}  what the first watch's client was told")
    for name, (took, told) in (("before", before), ("now", now)):
        print(f"{name:8}{took:>9.3f}s  {told[0] if told else '(nothing)'}")
        if len(set(told)) > 1 or len(told) != args.watches:
            print(f"{'':8}  all {len(told)}: {sorted(set(told))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
