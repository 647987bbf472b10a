"""How long a member's index change waits while a look-up server is hung (docs/operations.md
"A hung look-up server"): a matcher and two look-up servers (reading its data dir) on
loopback; north puts an index; server 1 is replaced by a gRPC server on its port that takes
every call and never answers (benchmarks/erasure_start.py `Hung`: a server stuck, or a proxy
in front of a dead host); south changes its index (the forward to server 1 hangs, under the
matcher's index writer lock), and, once server 1 holds that forward, west changes its own:
west's wall time is how long a hung server holds every other member's writes (server 1
resting, after the queries below, is not sent south's change: both are stored at once;
`--changes-first` makes the changes before any query, server 1 not resting yet). Then, server
1 being behind, the matcher asks it to read its shards again (a query, or, once server 1
rests after a missed deadline, the probe in the background: it hangs too, up to
RELOAD_SECONDS); once it holds that call, south removes records: how long that change waits.

Each query's wall with server 1 hung (`--queries` of them, one after another, each of 5 of
north's records; the client does not retry): first (before the changes above) while server 1
has missed no change (its `Search` hangs, up to SEARCH_SECONDS), then once it is behind
(after the remove above: its `Reload` hangs, up to RELOAD_SECONDS); each printed with how it
ended (answered: how many hits; refused).

    nice -n 10 .venv/bin/python benchmarks/lookup_hang.py

The machine's cores are shared: wall times are noisy.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.erasure_start import Hung
from benchmarks.ports import on_free_ports
from benchmarks.synthclks import CLK_BITS, members
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.errors import UnavailableError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.matcher.rpc.lookup_client import LookupServers
from blindmatch.matcher.rpc.lookup_service import RunningLookupServer, create_lookup_server
from blindmatch.matcher.server import RunningServer, create_server

FINGERPRINT = b"lookup-hang benchmark fingerprint"[:32]
NAMES = ("north", "south", "west")


def run(folder: Path, rows: int, queries: int, changes_first: bool) -> None:
    admin = secrets.token_urlsafe(16)

    def started(ports: list[int]) -> tuple[list[str], RunningServer, list[RunningLookupServer]]:
        """Ports picked before the matcher starts: it names its look-up servers, and makes
        the data dir they read. A port taken meanwhile: all stopped, picked again."""
        addresses = [f"127.0.0.1:{port}" for port in ports]
        matcher = create_server("127.0.0.1:0", folder, admin, workers=1, lookup_servers=addresses)
        lookups: list[RunningLookupServer] = []
        try:
            for i, address in enumerate(addresses):
                lookups.append(create_lookup_server(address, folder, i, 2, wait=True))
        except OSError:
            for lookup in lookups:
                lookup.stop(grace=None)
            matcher.stop(grace=None)
            raise
        return addresses, matcher, lookups

    addresses, matcher, lookups = on_free_ports(2, started)
    target = f"127.0.0.1:{matcher.port}"
    clks = members(len(NAMES), rows, overlap=0.2, seed=7)
    hole: Hung | None = None

    def change(name: str, start: int, end: int = rows) -> float:
        with MatcherClient(target, tokens[name], timeout=300) as member:
            began = time.perf_counter()
            member.change_index("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                puts=[(f"{name}-{i}", clks[NAMES.index(name)][i].tobytes())
                                      for i in range(start, end)])  # fmt: skip
            return time.perf_counter() - began

    def timed_queries(when: str) -> None:
        """`queries` queries by north, one after another: each one's wall and outcome."""
        walls, ended = [], []
        with MatcherClient(target, tokens["north"], timeout=120, retry=NO_RETRY) as north:
            for _ in range(queries):
                began = time.perf_counter()
                try:
                    got = north.query("trial", clks[0][:5].tobytes(), clk_bits=CLK_BITS,
                                      fingerprint=FINGERPRINT, purpose="benchmark")  # fmt: skip
                    ended.append(f"answered ({sum(len(r) for r in got.results)} hits)")
                except UnavailableError:
                    ended.append("refused UNAVAILABLE")
                walls.append(time.perf_counter() - began)
        print(f"queries with server 1 hung, {when}: wall "
              + ", ".join(f"{w:.3f} s" for w in walls) + "; " + ", ".join(ended))  # fmt: skip

    try:
        with MatcherClient(target, admin) as op:
            tokens = op.create_project("trial", list(NAMES), disclosure="scores").tokens
        change("north", 0)
        change("west", 0, 5)  # (what north's queries find: its first 5 people)
        lookups[1].stop(grace=None)
        hole = Hung(int(addresses[1].rsplit(":", 1)[1]))
        if not changes_first:  # (server 1 then rests: it missed a search's deadline)
            timed_queries("having missed no change (its Search hangs)")
        hole.events.clear()
        took: dict[str, float] = {}
        asked = len(hole.methods)
        south = threading.Thread(target=lambda: took.update(south=change("south", 0)))
        south.start()
        while "Apply" not in hole.methods[asked:] and south.is_alive():  # server 1 holds
            time.sleep(0.01)  # south's forward (or south's change is done: not sent to it)
        reached = "Apply" in hole.methods[asked:]
        took["west"] = change("west", 0)
        south.join()
        remote = matcher.realtime.remote
        assert isinstance(remote, LookupServers)
        print(f"look-up server 1 hung ({'not ' if changes_first else ''}resting); {rows} "
              f"records a change: south's change {took['south']:.2f} s wall (its forward "
              f"{'held by server 1' if reached else 'not sent to server 1'}), west's change "
              f"(made after south's began) {took['west']:.2f} s wall")  # fmt: skip
        print(f"behind: {remote.behind()}")
        refused: list[str] = []

        def ask() -> None:
            with MatcherClient(target, tokens["north"], timeout=60) as north:
                try:
                    north.query("trial", clks[0][:5].tobytes(), clk_bits=CLK_BITS,
                                fingerprint=FINGERPRINT, purpose="benchmark")  # fmt: skip
                    refused.append("answered")
                except UnavailableError as exc:
                    refused.append(f"refused UNAVAILABLE ({str(exc)[:90]}...)")

        held = [e for e, _ in hole.events].count("in")
        query = threading.Thread(target=ask)
        query.start()
        while [e for e, _ in hole.events].count("in") == held:  # server 1 holds the Reload
            time.sleep(0.01)
        with MatcherClient(target, tokens["south"], timeout=300) as south_member:
            began = time.perf_counter()
            south_member.change_index("trial", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                      removes=[f"south-{i}" for i in range(10)])  # fmt: skip
            removed = time.perf_counter() - began
        query.join()
        print(f"south's remove made while the matcher asks server 1 to read its shards again: "
              f"{removed:.3f} s wall; the query: {refused[0]}")  # fmt: skip
        timed_queries("behind (its Reload hangs)")
    finally:
        matcher.stop(grace=None)
        lookups[0].stop(grace=None)
        if hole is not None:
            hole.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="records in each change")
    parser.add_argument(
        "--queries", type=int, default=3, help="queries timed with server 1 hung, twice"
    )
    parser.add_argument(
        "--changes-first",
        action="store_true",
        help="change the indexes before any query (server 1 hung but not resting: its forward "
        "is waited for up to its deadline); the queries having missed no change are not timed",
    )
    add_keep(parser)
    args = parser.parse_args()
    with work_dir("bm-lookup-hang-", keep=args.keep) as work:
        run(work / "data", args.rows, args.queries, args.changes_first)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
