"""A watch in a two-server project: how long after a partner's upload the watch is told
(docs/realtime.md "Watching in a two-server project"):

    .venv/bin/python benchmarks/twoserver_watch.py [--size 14286] [--seed 3] [--watched 10]
        [--uploads 10] [--roles here|processes] [--watches 1] [--at-once N] [--band-keys]
        [--exhaustive-pairs N] [--rule] [--watch-by-pairs] [--standing-records N]

S2, S1 and a matcher that is their combiner on loopback gRPC ports (S1 and S2 in this process,
or with `--roles processes` each a `blindmatch two-server role` process of its own, as
benchmarks/twoserver_query.py starts them); the messy fixture (benchmarks/messy.py). North
watches its own first `--watched` records (encoded as `encode --two-server` encodes them, sent
to S1 and S2 under a query ticket: `MatcherClient.watch` with a `SharedUpload`,
client/remote/twoserver_realtime.py `_watch`); south (south-police, ~35% of `--size` people,
~5,000 at the default) then uploads its encoded folder `--uploads` times (`blindmatch upload`,
each a new upload at S1 and S2). Per upload: the upload's wall seconds (the command), then from
its return until the matcher has compared it with the watch (`TwoServerWatches.compared`) and
until the watch's last event for it arrived at north's client; p50 and max; and how many events
each upload gave (the watched records south holds, the same each time). Then `--uploads` uploads
by west (retail-bcrp, ~860, of the same population: it holds a few of north's people), the same
figures. With `--watches K` north holds K watches (each of `--watched` other records of its
own), which each upload is compared with at once (`--at-once 1`: one after the other); the step
timings are then summed over them.

The watches are sent without band keys (`MatcherClient.watch`'s default since 2026-12-05;
`--band-keys`: with them at once, as before); printed: how long a watch took to open (the
records sent to S1 and S2 until the matcher registered it) and, with S1 here, the band-key
bytes S1 received under the watches' names. `--exhaustive-pairs N` (S1 here): S1's caps (N and
a smaller-member cap of 0); 0 blocks every pair, so a keyless watch is ended at south's first
upload and opened again with its keys, and a query catches up on that upload (its events
`caught_up`, counted apart; the first upload's "last event" then includes the re-opening,
which the next upload waits for).

`--rule`: the members encode under schemas/person-uk.json (its rule over both CLKs) rather
than the rule-less schema, so a partner of at least 16,000 records (south at `--size 46000`
or more) is converted ahead of the queries as its upload completes, and the watch's
comparison of it waits for that conversion and goes standing (watchstand, 2026-12-07);
`--watch-by-pairs` has it go by pairs at once, as before watchstand (the conversion still
made, beside it: `serve --two-server-watch-wait-seconds 0`); `--standing-records N`: a
partner of N records or more is so (core/partpath.py STANDING_RECORDS, 16,000 as shipped: a
smaller `--size` within 4 GB). Per upload also, with S1 and S2 here: this process's CPU
from the upload until its comparison and its conversion ended (both, whichever ends last).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.messy import write_exports
from benchmarks.polling import wait_for
from benchmarks.twoserver_query import ADMIN, SCHEMA, pct, start_roles
from benchmarks.workdir import add_keep, work_dir
from blindmatch.cli.app import main as cli
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import MatcherError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import WatchEvent
from blindmatch.matcher.core import partpath
from blindmatch.matcher.domain import WATCH_WAIT_SECONDS
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.server import create_server

LATE = "no comparison or event in time"


def timed() -> dict[str, float]:
    """With S1 and S2 in this process: the wall seconds of each comparison
    (`twoquery.search_partner`), of S1's sorts of band keys on any thread (`Sealed.sorted_keys`:
    S1 sorts a new upload's keys after its reply, beside the comparison), and of the link-bit
    circuit on S1's proposal (`tworun.proposed_links`), summed since last reset."""
    from blindmatch.matcher.core import twoblocking, tworun
    from blindmatch.matcher.realtime import twoquery

    spent = {"search": 0.0, "sort": 0.0, "circuit": 0.0}

    def wrap(owner: Any, name: str, what: str) -> None:
        inner = getattr(owner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[what] += time.perf_counter() - t0

        setattr(owner, name, call)

    wrap(twoquery, "search_partner", "search")
    wrap(twoblocking.Sealed, "sorted_keys", "sort")
    wrap(tworun, "proposed_links", "circuit")
    return spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=14_286, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--watched", type=int, default=10, help="north's records watched")
    ap.add_argument("--uploads", type=int, default=10, help="uploads by south, then by west")
    ap.add_argument(
        "--watches",
        type=int,
        default=1,
        choices=range(1, 9),
        help="north's watches, each of --watched other records of its own",
    )
    ap.add_argument("--at-once", type=int, default=0,
                    help="watches an upload is compared with at once (twowatch.WATCHES_AT_ONCE; "
                    "1: one after the other; default: the code's)")  # fmt: skip
    ap.add_argument("--roles", choices=("here", "processes"), default="here",
                    help="S1 and S2 in this process, or each a process of its own")  # fmt: skip
    ap.add_argument(
        "--band-keys",
        action="store_true",
        help="open the watches with their band keys (before 2026-12-05: always)",
    )
    ap.add_argument(
        "--exhaustive-pairs",
        type=int,
        default=None,
        metavar="N",
        help="S1's cap (S1 here; its smaller-member cap then 0); 0: every pair "
        "blocked, so a watch without band keys is opened again with them",
    )
    ap.add_argument("--rule", action="store_true",
                    help="encode under schemas/person-uk.json (its rule): a partner of 16,000 "
                    "records or more is converted ahead and watched standing")  # fmt: skip
    ap.add_argument("--watch-by-pairs", action="store_true",
                    help="the watches' comparison by pairs at once, not waiting for the "
                    "upload's conversion (as before watchstand)")  # fmt: skip
    ap.add_argument("--standing-records", type=int, default=partpath.STANDING_RECORDS,
                    help="a partner of this many records or more converted (--rule)")  # fmt: skip
    add_keep(ap)
    args = ap.parse_args()
    partpath.STANDING_RECORDS = args.standing_records
    if args.at_once:
        from blindmatch.matcher.realtime import twowatch

        twowatch.WATCHES_AT_ONCE = args.at_once  # type: ignore[attr-defined,unused-ignore]
    with work_dir("bm-tswatch-", keep=args.keep) as work:
        return bench(args, work)


def bench(args: argparse.Namespace, work: Path) -> int:
    """The benchmark in `work` (deleted by `main` afterwards)."""
    exports = write_exports(work / "exports", seed=args.seed, size=args.size)
    secret_file = work / "linkage.secret"
    cli(["secret", "new", str(secret_file)])
    secret = secret_file.read_bytes().strip()
    schema_file = SCHEMA.parent / "person-uk.json" if args.rule else SCHEMA
    encoded = {}
    for name, org in (("south", "south-police"), ("west", "retail-bcrp")):
        encoded[name] = work / f"{name}.encoded"
        source = exports[org]
        assert cli(["encode", str(source.csv), "--schema", str(schema_file), "--secret-file",
                    str(secret_file), "--mapping", str(source.mapping), "--out",
                    str(encoded[name]), "--two-server", "--quiet"]) == 0  # fmt: skip
    schema = load_schema(schema_file)
    north = exports["north-police"]
    asked = encode_csv(north.csv, schema, load_mapping(north.mapping, schema), secret)
    clks = np.frombuffer(asked.clks, np.uint8).reshape(-1, asked.clk_bits // 8)
    n = args.watched
    watched = [sharing.shared_upload(clks[k * n : (k + 1) * n], secret, sharing.plan_of(schema),
                                     asked.fallback_bits) for k in range(args.watches)]  # fmt: skip

    spent = timed() if args.roles == "here" else None
    caps = None if args.exhaustive_pairs is None else (args.exhaustive_pairs, 0)
    s1, s2, key, member_key, stop_roles, _, s1_service = start_roles(
        work, args.roles == "processes", caps=caps
    )
    keys_at_s1 = band_keys_received(s1_service)
    # --watch-by-pairs: as before watchstand, no comparison waits for a conversion (`serve
    # --two-server-watch-wait-seconds 0`)
    wait = 0.0 if args.watch_by_pairs else WATCH_WAIT_SECONDS
    setup = combiner_setup(s1, s2, key, member_key, watch_wait=wait)
    made: Any = setup.servers([], [], [])  # (its conversions: `converted`)
    made.close()

    def converted() -> bool:
        return made.conversions.idle(0)

    server = create_server("127.0.0.1:0", work / "matcher", ADMIN, workers=2, two_server=setup)
    target = f"127.0.0.1:{server.port}"
    arrived: list[float] = []  # when each event reached north's client
    caught: list[float] = []  # when each event a re-opened watch's catch-up found arrived
    returned: list[float] = []  # when each upload's command returned
    opens: list[float] = []  # each watch's open, wall seconds
    notices: list[str] = []
    try:
        with MatcherClient(target, ADMIN) as op:
            two = op.create_project("shares", ["north", "south", "west"], mode="two-server")
            op.set_query_limits("shares", per_minute=10**6, per_day=10**7, allow_watch=True)
        net = ["--server", target, "--quiet"]
        north_client = MatcherClient(target, two.tokens["north"])

        def follow(records: sharing.SharedUpload) -> None:
            t0 = time.perf_counter()
            stream = north_client.watch(
                "shares", records, clk_bits=asked.clk_bits,
                fingerprint=asked.fingerprint, purpose="bench",
                schema_digest=asked.schema_digest, rule=asked.rule,
                on_ready=lambda: opens.append(time.perf_counter() - t0),
                on_notice=notices.append, band_keys=args.band_keys,
                allow_band_keys=True,  # (it measures the watch opened again with them)
            )  # fmt: skip
            event: WatchEvent
            try:
                for event in stream:
                    if event.caught_up:
                        caught.append(time.perf_counter())
                    arrived.append(time.perf_counter())  # (a list's append: thread-safe)
            except MatcherError:  # the watch closed with north's client, at the end
                pass

        def settled() -> bool:
            """Every watch open, and every one opened again caught up (or said it was not):
            the next upload is then compared with them all."""
            asked = sum("is over S1's unblocked bound" in n for n in notices)
            done = sum(n.startswith(("Caught up", "NOT COMPARED:")) for n in notices)
            return asked == done and len(server.realtime.watches) == args.watches

        for records in watched:
            threading.Thread(target=follow, args=(records,), daemon=True).start()
        watches = server.realtime.two_watches
        wait_for(lambda: len(opens) == args.watches, 600, what=LATE)
        load = os.getloadavg()[0]
        rows: dict[str, list[tuple[float, float, float, int, float]]] = {"south": [], "west": []}
        parts: dict[str, list[tuple[float, float, float]]] = {"south": [], "west": []}
        for name in ("south", "west"):
            for _ in range(args.uploads):
                before, compared = len(arrived), watches.compared
                if spent is not None:
                    spent.update(search=0.0, sort=0.0, circuit=0.0)
                t0, c0 = time.perf_counter(), time.process_time()
                assert cli(["upload", str(encoded[name]), "--project", "shares", "--token",
                            two.tokens[name], *net]) == 0  # fmt: skip
                t1 = time.perf_counter()
                returned.append(t1)
                t2 = wait_for(lambda: watches.compared > compared, 600, what=LATE)  # noqa: B023
                time.sleep(0.05)  # the events are put once recorded, just after
                wait_for(settled, 600, what=LATE)  # watches ended by it opened again, and caught up
                got = len(arrived) - before
                last = arrived[-1] if got else t2
                wait_for(converted, 3600, what=LATE)
                cpu = time.process_time() - c0
                rows[name].append((t1 - t0, t2 - t1, last - t1, got, cpu))
                if spent is not None:
                    parts[name].append((spent["search"], spent["sort"], spent["circuit"]))
        load_after = os.getloadavg()[0]
        north_client.close()
    finally:
        server.stop(grace=None)
        stop_roles()
    where = "in this process" if args.roles == "here" else "each a process of its own"
    print(
        f"\nnorth watches {args.watched} of its records in each of {args.watches} watch(es) "
        f"(compared {watches_at_once()} at once); {args.uploads} uploads each by south "
        f"({read_count(encoded['south'])} records) and west ({read_count(encoded['west'])}); "
        f"S1 and S2 {where}, loopback; load average {load:.1f} before, {load_after:.1f} after"
    )
    print(f"watches opened {'with' if args.band_keys else 'without'} band keys; S1's cap "
          f"{'as shipped' if caps is None else f'{caps[0]:,} pairs'}; a watch's open (ms): p50 "
          f"{pct([1000 * x for x in opens], 50):.1f}, max {1000 * max(opens):.1f}; band-key "
          f"bytes S1 received under the watches' and queries' names: "
          f"{'not seen (S1 a process)' if keys_at_s1 is None else keys_at_s1}; notices "
          f"{len(notices)}; caught-up events {len(caught)}")  # fmt: skip
    for notice in sorted(set(notices)):
        print(f"  notice x{notices.count(notice)}: {notice[:240]}")
    if caught:  # the first upload ended the watches: re-opened, and caught up
        print(f"south's first upload's return -> the last caught-up event: "
              f"{1000 * (max(caught) - returned[0]):.1f} ms")  # fmt: skip
    print(f"schema {schema_file.name}; the watches' comparison of an upload converted ahead: "
          f"{'by pairs at once' if args.watch_by_pairs else 'standing, once converted'}; "
          f"uploads converted ahead {made.conversions.converted}, watches' comparisons "
          f"standing {watches.stood}")  # fmt: skip
    print(f"{'per upload (ms)':<34}{'p50':>9}{'max':>9}")
    for name in ("south", "west"):
        r = rows[name]
        for i, what in ((0, "upload (the command)"), (1, "its return -> compared"),
                        (2, "its return -> last event")):  # fmt: skip
            values = [1000 * x[i] for x in r]
            print(f"{name + ': ' + what:<34}{pct(values, 50):>9.1f}{max(values):>9.1f}")
        if args.roles == "here":  # this process's CPU: the upload, its conversion, comparison
            values = [1000 * x[4] for x in r]
            print(f"{name + ': CPU, upload to both ends':<34}{pct(values, 50):>9.1f}"
                  f"{max(values):>9.1f}")  # fmt: skip
        if parts[name]:  # S1 and S2 here: the comparison's wall, and S1's sort in it
            for i, what in ((0, "compared (search_partner)"), (1, "S1 sorting keys (any thread)"),
                            (2, "of which the circuit")):  # fmt: skip
                values = [1000 * x[i] for x in parts[name]]
                print(f"{name + ': ' + what:<34}{pct(values, 50):>9.1f}{max(values):>9.1f}")
        events = sorted({x[3] for x in r})
        print(f"{name}: events an upload: {events}")
    return 0


def band_keys_received(service: Any) -> list[int] | None:
    """With S1 here: the band-key bytes S1 receives under each query's or watch's name
    (`member@tag`), a list added to as they come; None with S1 a process."""
    if service is None:
        return None
    got: list[int] = []
    upload = service.upload

    def seen(parts: Any, vouched: str = "") -> Any:
        parts = list(parts)
        if parts and "@" in parts[0].member:
            got.append(sum(len(p.band_counts) + len(p.band_keys) + len(p.sealed) for p in parts))
        return upload(iter(parts), vouched)

    service.upload = seen
    return got


def watches_at_once() -> int:
    from blindmatch.matcher.realtime import twowatch

    return twowatch.WATCHES_AT_ONCE


def read_count(folder: Path) -> int:
    from blindmatch.client.encoding.encoded import read_encoded

    return read_encoded(folder).record_count


if __name__ == "__main__":
    raise SystemExit(main())
