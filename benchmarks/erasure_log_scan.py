"""What finding erasures cut short from the audit log costs a start-up (and `admin check`).

    .venv/bin/python benchmarks/erasure_log_scan.py --entries 1000000 --erasures 1000

A matcher's data dir, its audit table filled with `--entries` entries (straight into SQLite,
hashes not chained: the scan reads only action, project, member, seq and detail), of which
`--erasures` are `erase` entries of as many members and the rest queries; every member's
standing index holds a change before its erasure only for one member in ten (the state a
matcher from before erasure intents left), and `clks/` a file of an erased upload for one
in a hundred. Times `found_in_log` (storage/erasure_log.py) as start-up runs it: the median
of `--repeats`, CPU and wall, and how many it found.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, work_dir
from blindmatch.matcher.storage.erasure_log import found_in_log, unreferenced_files
from blindmatch.matcher.storage.index_store import IndexStore
from blindmatch.matcher.storage.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--erasures", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    add_keep(parser)
    args = parser.parse_args()
    with work_dir("bm-erasurelog-", keep=args.keep) as work:
        Store(work).close()
        IndexStore(work).close()
        with closing(sqlite3.connect(work / "blindmatch.sqlite")) as db:
            rows = []
            erase_every = max(1, args.entries // max(1, args.erasures))
            for seq in range(1, args.entries + 1):
                detail: dict[str, object]
                member = f"m{(seq - 1) // erase_every}"
                if seq % erase_every == 0:
                    action, detail = "erase", {"uploads": 1, "links": 0}
                elif seq % erase_every == 1:
                    action, detail = "upload", {"upload_id": f"u{seq}"}
                else:
                    action, detail = "query", {"records": 10}
                rows.append((seq, float(seq), member, action, "p", member, "", "{}",
                             json.dumps(detail), "", ""))  # fmt: skip
            db.executemany("INSERT INTO audit (seq, time, actor, action, project, member, "
                           "purpose, disclosed, detail, prev_hash, hash) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)  # fmt: skip
            db.commit()
        erased = [s for s in range(erase_every, args.entries + 1, erase_every)]
        with closing(sqlite3.connect(work / "index.sqlite")) as index:
            index.executemany(
                "INSERT INTO index_changes VALUES (?,?,?,?,?,?,?,?,?,?)",
                [("p", f"m{s // erase_every - 1}", f"c{s}", s - 2, "", 1, 0, 0, 1, 0.0)
                 for s in erased[::10]],
            )  # fmt: skip
            index.commit()
        for s in erased[::100]:
            (work / "clks" / f"u{s - erase_every + 1}.bin").write_bytes(b"\0" * 128)
        took, cpu, found = [], [], 0
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            with (closing(sqlite3.connect(work / "blindmatch.sqlite")) as db,
                  closing(sqlite3.connect(work / "index.sqlite")) as index):  # fmt: skip
                listed = [f.stem for f in (work / "clks").iterdir()]
                found = len(found_in_log(db, index, unreferenced_files(db, listed)))
            took.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(
            f"{args.entries:,} audit entries, {len(erased):,} erasures: found {found} cut "
            f"short in {statistics.median(took) * 1000:.0f} ms wall, "
            f"{statistics.median(cpu) * 1000:.0f} ms CPU (median of {args.repeats})"
        )


if __name__ == "__main__":
    main()
