"""What `blindmatch admin backup` of a matcher's data dir costs beside a member uploading
again and again (matcher/storage/backup.py: each upload deletes the file of the one before,
so a snapshot may name a file gone by the time it is copied).

    .venv/bin/python benchmarks/backup_churn.py [--members 4] [--records 20000]
        [--backups 10] [--pause 0] [--seed 0]

A matcher (in this process, on loopback) holds a project of `--members` members, each with
an upload of `--records` synthetic 1,024-bit CLKs (benchmarks/knownclks.py). Then member
m0 uploads again in a loop (`--pause` seconds between its uploads; 0: back to back) while
`--backups` backups are taken one after the other: for each, whether it succeeded, the
snapshots it took (`attempts`) and its wall and CPU seconds (the CPU is this process's:
the matcher runs in it too, serving the uploads meanwhile). The machine's other load counts
in the wall seconds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.knownclks import population, write
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client import MatcherClient
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.backup import BackupError, backup_data_dir

TOKEN = "bm_admin_benchmark_backup_churn"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--records", type=int, default=20000, help="records a member")
    parser.add_argument("--backups", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between m0's uploads")
    parser.add_argument("--seed", type=int, default=0)
    add_keep(parser)
    args = parser.parse_args()
    with work_dir("bm-backupchurn-", keep=args.keep) as tmp:
        return _measure(args, tmp)


def _measure(args: argparse.Namespace, tmp: Path) -> int:
    """The benchmark, its data dirs and backups under `tmp`."""
    server = create_server("127.0.0.1:0", tmp / "live", TOKEN)
    target = f"127.0.0.1:{server.port}"
    try:
        names = [f"m{i}" for i in range(args.members)]
        with MatcherClient(target, TOKEN) as op:
            tokens = op.create_project("churn", names).tokens
        data = population(args.members, args.records, 0.3, args.seed)
        encoded = {n: write(ds, tmp / f"{n}.encoded") for n, ds in zip(names, data, strict=True)}
        for name in names:
            with MatcherClient(target, tokens[name]) as member:
                member.upload("churn", encoded[name])
        print(f"{args.members} members x {args.records:,} records; m0 uploads again every "
              f"{args.pause} s while {args.backups} backups are taken")  # fmt: skip
        done, sent = threading.Event(), [0]

        def again() -> None:
            with MatcherClient(target, tokens["m0"]) as member:
                while not done.is_set():
                    member.upload("churn", encoded["m0"])
                    sent[0] += 1
                    done.wait(args.pause)

        thread = threading.Thread(target=again)
        thread.start()
        rows: list[tuple[bool, int, float, float]] = []
        try:
            while sent[0] < 1:
                done.wait(0.01)
            for k in range(args.backups):
                out = tmp / f"backup-{k}"
                w0, c0 = time.perf_counter(), time.process_time()
                try:
                    attempts, ok = backup_data_dir(tmp / "live", out).attempts, True
                except BackupError:
                    attempts, ok = 0, False
                rows.append((ok, attempts, time.perf_counter() - w0, time.process_time() - c0))
                shutil.rmtree(out, ignore_errors=True)
        finally:
            done.set()
            thread.join()
        good = [r for r in rows if r[0]]
        each = [r[1] if r[0] else "failed" for r in rows]
        print(f"{sent[0]} uploads of m0 meanwhile; {len(good)} of {len(rows)} backups "
              f"succeeded; snapshots each: {each}")  # fmt: skip
        for what, i in (("wall", 2), ("CPU", 3)):
            print(f"  {what} s a backup (all): median {statistics.median(r[i] for r in rows):.2f},"
                  f" max {max(r[i] for r in rows):.2f}")  # fmt: skip
    finally:
        server.stop(grace=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
