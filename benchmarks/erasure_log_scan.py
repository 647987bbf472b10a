"""What finding erasures cut short from the audit log costs a start-up (and `admin check`).

    .venv/bin/python benchmarks/erasure_log_scan.py --entries 1000000 --erasures 1000

A matcher's data dir, its audit table filled with `--entries` entries (straight into SQLite,
hashes not chained: the scan reads only action, project, member, seq and detail), of which
`--erasures` are `erase` entries of as many members and the rest queries; every member's
standing index holds a change before its erasure only for one member in ten (the state a
matcher from before erasure intents left), and `clks/` a file of an erased upload for one
in a hundred. Times `found_in_log` (storage/erasure_log.py) as start-up runs it: the median
of `--repeats`, CPU and wall, and how many it found. Then the start-up's blanking of erased
members' logged queries (usecases/erasure.py `complete_cut_short`: `Store.last_erasures`,
then `IndexStore.forget_queries_before`), over a query log of `--queries`
rows spread over the members, each before its member's erasure: the first pass blanks them
all (a data dir from before erasures blanked them), the next ones find nothing to blank
(every start after), medians of `--repeats`.
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
    parser.add_argument("--queries", type=int, default=100_000,
                        help="query log rows for the blanking's timing")  # fmt: skip
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
        blank(work, args.queries, erase_every, len(erased), args.repeats)


def blank(work: Path, queries: int, erase_every: int, members: int, repeats: int) -> None:
    """The start-up's blanking of erased members' logged queries, timed."""
    with closing(sqlite3.connect(work / "index.sqlite")) as index:
        index.executemany(
            "INSERT INTO query_log VALUES (?,?,?,?,?,?,?,?,?)",
            [((q % members) * erase_every + 1.0, "p", f"m{q % members}", "query",
              f"case {q}", 10, 1, "", "") for q in range(queries)],
        )  # fmt: skip
        index.commit()
    for f in (work / "clks").iterdir():  # (a store refuses files others may read)
        f.chmod(0o600)
    store, index_store = Store(work), IndexStore(work)
    try:
        passes: list[tuple[float, float, int]] = []
        for _ in range(repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            done = index_store.forget_queries_before(store.last_erasures())
            passes.append((time.perf_counter() - t0, time.process_time() - c0, done))
    finally:
        store.close()
        index_store.close()
    wall, cpu, done = passes[0]
    print(f"{queries:,} logged queries of {members:,} erased members: the first start blanks "
          f"{done:,} in {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU; a start after finds "
          f"nothing in {statistics.median(p[0] for p in passes[1:]) * 1000:.0f} ms wall, "
          f"{statistics.median(p[1] for p in passes[1:]) * 1000:.0f} ms CPU "
          f"(median of {repeats})")  # fmt: skip


if __name__ == "__main__":
    main()
