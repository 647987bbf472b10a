"""Whether a backup's two snapshots (the database with the audit log, `index.sqlite` with
the standing indexes) hold the same index changes beside a member changing its index, and
what taking them together costs the member's changes (matcher/storage/backup.py
`read_together`).

    .venv/bin/python benchmarks/backup_index.py [--records 100000] [--pairs 40] [--seed 0]

A matcher (in this process, on loopback) holds a project whose member north has a standing
index of `--records` synthetic 1,024-bit CLKs; north then changes it in a loop (3 records
added, 1 removed a change) while `--pairs` snapshot pairs are taken into a scratch folder,
first one after the other (the way `admin backup` took them before: the database, then the
index), then together (`read_together`, as now). For each way: how many pairs held an index
change that their audit log lacked (a restored matcher would list records no entry accounts
for), the seconds to open the pair (for `read_together`, the index's write lock is held
inside that), the wall seconds of a pair, and north's ChangeIndex latency meanwhile (median,
max). The machine's other load counts in every wall second.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client import MatcherClient
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.backup import copy_database, read_together, snapshot
from blindmatch.matcher.storage.datadir import DataDir

TOKEN = "bm_admin_benchmark_backup_index"


def unaudited(pair: Path) -> int:
    """Changes the pair's index holds that its log has no entry for (by seq and id)."""
    with closing(sqlite3.connect(pair / "index.sqlite")) as idx:
        stored = idx.execute("SELECT audit_seq, change_id FROM index_changes").fetchall()
    with closing(sqlite3.connect(pair / "blindmatch.sqlite")) as db:
        logged = dict(db.execute("SELECT seq, detail FROM audit WHERE action='index.change'"))
    return sum(1 for seq, cid in stored if seq not in logged or cid not in logged[seq])


def take(source: DataDir, pair: Path, together: bool) -> float:
    """One snapshot pair into `pair`; the seconds to open it (together) or 0."""
    pair.mkdir()
    if not together:
        snapshot(source.db, pair / "blindmatch.sqlite")
        snapshot(source.index_db, pair / "index.sqlite")
        return 0.0
    t0 = time.perf_counter()
    with read_together(source.db, source.index_db) as conns:
        opened = time.perf_counter() - t0
        for conn, name in zip(conns, ("blindmatch.sqlite", "index.sqlite"), strict=True):
            copy_database(conn, pair / name)
    return opened


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="north's standing index")
    parser.add_argument("--pairs", type=int, default=40, help="snapshot pairs each way")
    parser.add_argument("--seed", type=int, default=0)
    add_keep(parser)
    args = parser.parse_args()
    with work_dir("bm-backupindex-", keep=args.keep) as tmp:
        return _measure(args, tmp)


def _measure(args: argparse.Namespace, tmp: Path) -> int:
    """The benchmark, its data dirs and backups under `tmp`."""
    server = create_server("127.0.0.1:0", tmp / "live", TOKEN)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, TOKEN) as op:
            token = op.create_project("churn", ["north", "south"]).tokens["north"]
        clks = population(1, args.records, 0.0, args.seed)[0].clks
        base = [(f"b{i}", clks[i].tobytes()) for i in range(args.records)]
        with MatcherClient(target, token) as north:
            north.change_index("churn", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=base)
        live = tmp / "live"
        size = sum(p.stat().st_size for p in live.glob("index.sqlite*") if p.is_file())
        print(
            f"north's index: {args.records:,} records ({size / 1e6:.0f} MB index.sqlite and "
            f"its WAL); {args.pairs} snapshot pairs each way beside north changing it in a loop"
        )
        done, latencies, k = threading.Event(), [], [0]

        def churn() -> None:
            with MatcherClient(target, token) as north:
                while not done.is_set():
                    n = k[0]
                    puts = [(f"c{3 * n + i}", clks[(3 * n + i) % len(clks)].tobytes())
                            for i in range(3)]  # fmt: skip
                    removes = [f"c{3 * (n - 1)}"] if n else []
                    t0 = time.perf_counter()
                    north.change_index(
                        "churn", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts,
                        removes=removes,
                    )  # fmt: skip
                    latencies.append(time.perf_counter() - t0)
                    k[0] += 1

        thread = threading.Thread(target=churn)
        thread.start()
        try:
            for together in (False, True):
                latencies.clear()
                bad, opened, walls = 0, [], []
                for p in range(args.pairs):
                    pair = tmp / f"pair-{together}-{p}"
                    w0 = time.perf_counter()
                    opened.append(take(DataDir(tmp / "live"), pair, together))
                    walls.append(time.perf_counter() - w0)
                    bad += unaudited(pair) > 0
                    shutil.rmtree(pair)
                lat = sorted(latencies)
                way = "together (now)" if together else "one after the other (before)"
                lock = (
                    f"opening (lock inside) median {statistics.median(opened) * 1e3:.2f} ms, "
                    f"max {max(opened) * 1e3:.2f} ms; "
                    if together
                    else ""
                )
                print(
                    f"{way}: {bad} of {args.pairs} pairs held an index change their log "
                    f"lacked; pair wall s median {statistics.median(walls):.3f}; {lock}"
                    f"{len(lat)} ChangeIndex meanwhile, median "
                    f"{statistics.median(lat) * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms"
                )
        finally:
            done.set()
            thread.join()
    finally:
        server.stop(grace=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
