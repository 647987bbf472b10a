"""What `admin check`'s cross-check of the standing indexes against the audit log costs
(matcher/storage/index_audit.py), beside the whole check.

    .venv/bin/python benchmarks/check_index_audit.py [--changes 5000] [--repeat 3]

A matcher (in this process, on loopback) holds a project whose member north changes its
standing index `--changes` times (3 records added, 1 removed a change: one `index.change`
audit entry each); the matcher stops, and `check_data_dir` and the cross-check alone are
timed `--repeat` times (wall and CPU seconds; the files are in the page cache). The
machine's other load counts in every wall second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client import MatcherClient
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.index_audit import check_index_audit
from blindmatch.matcher.storage.integrity import check_data_dir

ADMIN = "bm_admin_benchmark_0123456789abcdef"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    add_keep(parser)
    args = parser.parse_args(argv)
    with work_dir("check-index-audit-", keep=args.keep) as root:
        return bench(args, root)


def bench(args: argparse.Namespace, root: Path) -> int:
    """The benchmark in `root` (deleted by `main` afterwards)."""
    data_dir = root / "matcher"
    server = create_server("127.0.0.1:0", data_dir, ADMIN)
    clks = population(1, 3 * args.changes + 3, 0.0, seed=5)[0].clks
    try:
        with MatcherClient(f"127.0.0.1:{server.port}", ADMIN) as op:
            tokens = op.create_project("region", ["north", "south"]).tokens
        with MatcherClient(f"127.0.0.1:{server.port}", tokens["north"]) as north:
            for k in range(args.changes):
                puts = [(f"r{3 * k + i}", clks[3 * k + i].tobytes()) for i in range(3)]
                north.change_index("region", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                   puts=puts, removes=[f"r{3 * (k - 1)}"] if k else [])  # fmt: skip
    finally:
        server.stop(grace=None)
    files = DataDir(data_dir)
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        report = check_data_dir(data_dir)
        t1, c1 = time.perf_counter(), time.process_time()
        problems = check_index_audit(files.db, files.index_db)
        t2, c2 = time.perf_counter(), time.process_time()
        print(f"{args.changes} changes, {report.audit_entries} audit entries, "
              f"{report.index_records} records, ok {report.ok and not problems}: "
              f"check_data_dir {t1 - t0:.3f} s wall {c1 - c0:.3f} s CPU; the cross-check "
              f"alone {t2 - t1:.3f} s wall {c2 - c1:.3f} s CPU")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
