"""What an erasure's completion costs, and a backup beside one huge index change.

    .venv/bin/python benchmarks/erasure_repair.py [--records 100000] [--huge 500000] [--repeats 3]

A matcher in this process holds project p, whose member north has a standing index of
`--records` synthetic 1,024-bit CLKs and an upload of 20,000. Each repeat, on a fresh data dir:

- *erasure*: north's Erase through gRPC (its transaction, the upload file, the index, both
  checkpoints, and now the erasure intent forgotten after them), wall ms of the call;
- *cut short*: the same data, then the store's part of the erasure alone
  (`store.erase_member`: its transaction, the upload file, the database's checkpoint; the
  standing index left, as a kill at `erase.logged` leaves it), the matcher stopped;
  `admin check`'s erasure part (`check_erasures`, which waits `GRACE_S` before it reports
  what is left) timed, and on the first data dir; then the store and the real-time
  side opened on the data dir as `serve` opens them, and the start-up repair
  (`complete_cut_short`) timed, wall and CPU;
- the transaction each erasure adds (`erasure_done`), median of 50.

Then a backup (`backup_data_dir`) is started while north stores one change of `--huge`
records: how long the change held the index's write lock, how long the backup waited, and
how often it said so (`--lock-wait` seconds between messages). The machine's other load
counts in every wall second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population, write
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client import MatcherClient
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.matcher.realtime.engine import Realtime
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.matcher.storage import backup
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.erasure_check import check_erasures
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.erasure import complete_cut_short

TOKEN = "bm_admin_benchmark_erasure_repair"


def filled(data_dir: Path, puts: list[tuple[str, bytes]], upload: Encoded
           ) -> tuple[RunningServer, str]:  # fmt: skip
    server = create_server("127.0.0.1:0", data_dir, TOKEN)
    target = f"127.0.0.1:{server.port}"
    with MatcherClient(target, TOKEN) as op:
        token = op.create_project("p", ["north", "south"]).tokens["north"]
    with MatcherClient(target, token) as north:
        north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
        north.upload("p", upload)
    return server, token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="north's standing index")
    parser.add_argument("--huge", type=int, default=500_000, help="records of the huge change")
    parser.add_argument("--lock-wait", type=float, default=1.0, help="seconds between messages")
    parser.add_argument("--repeats", type=int, default=3)
    add_keep(parser)
    args = parser.parse_args()
    with work_dir("bm-erasure-", keep=args.keep) as tmp:
        return _run(args, tmp)


def _run(args: argparse.Namespace, tmp: Path) -> int:
    clks = population(1, max(args.records, args.huge), 0.0, seed=1)[0].clks
    puts = [(f"r{i}", clks[i].tobytes()) for i in range(args.records)]
    upload = write(population(1, 20_000, 0.0, seed=2)[0], tmp / "north.encoded")
    erase_ms, clean_ms, check_ms, repair_ms, repair_cpu = [], [], [], [], []
    for r in range(args.repeats):
        server, token = filled(tmp / f"erase-{r}", puts, upload)
        try:
            with MatcherClient(f"127.0.0.1:{server.port}", token) as north:
                t0 = time.perf_counter()
                north.erase("p")
                erase_ms.append((time.perf_counter() - t0) * 1e3)
        finally:
            server.stop(grace=None)
        t0 = time.perf_counter()
        assert check_erasures(DataDir(tmp / f"erase-{r}")) == ([], [])
        clean_ms.append((time.perf_counter() - t0) * 1e3)
        data_dir = tmp / f"cut-{r}"
        server, _ = filled(data_dir, puts, upload)
        try:
            server.store.erase_member("p", "north")
        finally:
            server.stop(grace=None)
        t0 = time.perf_counter()
        problems, _ = check_erasures(DataDir(data_dir))
        check_ms.append((time.perf_counter() - t0) * 1e3)
        assert len(problems) == 1, problems
        store = Store(data_dir)
        realtime = Realtime(store, data_dir)
        try:
            w0, c0 = time.perf_counter(), time.process_time()
            (done,) = complete_cut_short(store, realtime)
            repair_ms.append((time.perf_counter() - w0) * 1e3)
            repair_cpu.append((time.process_time() - c0) * 1e3)
            assert done["index_records"] == args.records  # (its file went in the step)
        finally:
            realtime.close()
            store.close()
    store = Store(tmp / "cut-0")
    try:
        spent = []
        for i in range(50):  # (an intent of its own each time: a delete to commit)
            with store.db.tx() as tx:
                tx.execute("INSERT INTO erasure_intents VALUES (?,?,?,?)",
                           (-1 - i, "p", "north", "[]"))  # fmt: skip
            t0 = time.perf_counter()
            store.erasure_done("p", "north", -1 - i)
            spent.append((time.perf_counter() - t0) * 1e3)
    finally:
        store.close()
    med = statistics.median
    print(f"north: {args.records:,} indexed records and an upload of 20,000; "
          f"{args.repeats} repeats, medians (min-max)")  # fmt: skip
    for name, xs in (("Erase RPC, whole erasure", erase_ms),
                     ("admin check's erasure part, nothing cut short", clean_ms),
                     ("admin check's erasure part, one cut short (GRACE_S in it)", check_ms),
                     ("start-up repair of it, wall", repair_ms),
                     ("start-up repair of it, CPU", repair_cpu)):  # fmt: skip
        print(f"  {name}: {med(xs):.1f} ms ({min(xs):.1f}-{max(xs):.1f})")
    print(f"  the transaction each erasure adds (erasure_done): {med(spent):.2f} ms "
          f"median of 50, max {max(spent):.2f}")  # fmt: skip
    huge_backup(tmp, clks, args.huge, args.lock_wait)
    return 0


def huge_backup(tmp: Path, clks: object, records: int, lock_wait: float) -> None:
    """A backup started while one change of `records` records is being stored."""
    backup.LOCK_WAIT_S = lock_wait
    server = create_server("127.0.0.1:0", tmp / "huge", TOKEN)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, TOKEN) as op:
            token = op.create_project("p", ["north", "south"]).tokens["north"]
        puts = [(f"h{i}", clks[i].tobytes()) for i in range(records)]  # type: ignore[index]
        change: list[float] = []

        def store_it() -> None:
            with MatcherClient(target, token) as north:
                t0 = time.perf_counter()
                north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
                change.append(time.perf_counter() - t0)

        told: list[float] = []
        writer = threading.Thread(target=store_it)
        writer.start()
        index_wal = tmp / "huge" / "index.sqlite-wal"
        while writer.is_alive() and (not index_wal.exists() or index_wal.stat().st_size < 1e6):
            time.sleep(0.01)  # (the change is being written: the lock is held)
        t0 = time.perf_counter()
        backup.backup_data_dir(tmp / "huge", tmp / "huge-backup", waiting=told.append)
        waited = time.perf_counter() - t0
        writer.join()
        print(f"backup started while one change of {records:,} records was stored: the "
              f"change took {change[0]:.1f} s; the backup {waited:.1f} s, saying it was waiting "
              f"{len(told)} time(s) (every {lock_wait:g} s), and succeeded")  # fmt: skip
    finally:
        server.stop(grace=None)


if __name__ == "__main__":
    sys.exit(main())
