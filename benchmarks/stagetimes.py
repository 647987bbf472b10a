"""What a run's stage timings tell a member about its partners (srvleft, 2026-12-07).

Three members on a real matcher on loopback: `a` (the watcher, sharing nobody), `b` and `c`
of fixed sizes. Between cells only what `a` may not learn changes: how many people `b` and
`c` share (`--overlaps`), and, in the size cells, `b`'s size (which `a` learns anyway:
DescribeProject's `record_count`). `a` follows the run as a member does (WatchRun), times
each stage by its statuses' arrival, and the script prints each stage's seconds beside the
first cell's, as ratios, with the run's whole time.

    .venv/bin/python benchmarks/stagetimes.py --records 3000 --overlaps 0 1 --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.knownclks import CLK_BYTES, Dataset, _noisy, write
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client import MatcherClient
from blindmatch.matcher.server import create_server

TOKEN = "bm_admin_benchmark_stagetimes"


def datasets(records: int, overlap: float, seed: int, b_records: int) -> dict[str, Dataset]:
    """`a` shares nobody; `c` holds `overlap` of `b`'s people (noisy copies)."""
    rng = np.random.default_rng(seed)

    def fresh(n: int, first: int) -> Dataset:
        clks = rng.integers(0, 256, (n, CLK_BYTES), dtype=np.uint8)
        return Dataset(clks, np.arange(first, first + n, dtype=np.int64))

    a, b = fresh(records, 0), fresh(b_records, 10**7)
    shared = int(min(records, b_records) * overlap)
    c_rest = fresh(records - shared, 2 * 10**7)
    c = Dataset(
        np.ascontiguousarray(np.concatenate([_noisy(rng, b.clks[:shared]), c_rest.clks])),
        np.concatenate([b.subjects[:shared], c_rest.subjects]),
    )
    return {"a": a, "b": b, "c": c}


def one_run(root: Path, data: dict[str, Dataset], n: int) -> dict[str, float]:
    """Seconds of each stage `a` sees, and "run" (start to done), of one run."""
    server = create_server("127.0.0.1:0", root / f"data{n}", TOKEN, workers=2)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, TOKEN) as op:
            tokens = op.create_project("p", list(data)).tokens
        for name, ds in data.items():
            with MatcherClient(target, tokens[name]) as member:
                member.upload("p", write(ds, root / f"{name}{n}.encoded"))
        seen: list[tuple[float, str]] = []
        with MatcherClient(target, tokens["a"]) as a:
            began = time.perf_counter()
            run = a.start_run("p")
            for status in a.watch_run("p", run.run_id):
                seen.append((time.perf_counter(), status.stage or "queued"))
        out: dict[str, float] = {"run": seen[-1][0] - began}
        for (t0, stage), (t1, _) in itertools.pairwise(seen):
            out[stage] = out.get(stage, 0.0) + (t1 - t0)
        return out
    finally:
        server.stop(grace=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000, help="a's and c's records")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.0, 1.0],
                        help="shares of b's people c holds, a cell each")  # fmt: skip
    parser.add_argument("--b-sizes", type=int, nargs="*", default=[],
                        help="b's records in further cells (overlap 0)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    add_keep(parser)
    args = parser.parse_args(argv)
    cells = [(f"overlap {o:g}", o, args.records) for o in args.overlaps]
    cells += [(f"b of {s}", 0.0, s) for s in args.b_sizes]
    with work_dir("bm-stagetimes-", keep=args.keep) as root:
        n, rows = 0, []
        for label, overlap, b_records in cells:
            runs = []
            for r in range(args.repeats):
                n += 1
                runs.append(one_run(root, datasets(args.records, overlap, r, b_records), n))
            stages = sorted({s for run in runs for s in run})
            rows.append((label, {s: statistics.median(x.get(s, 0.0) for x in runs)
                                 for s in stages}))  # fmt: skip
    anchor = rows[0][1]
    print(f"records {args.records}; median of {args.repeats} runs; ratio to {rows[0][0]}")
    for label, medians in rows:
        said = "  ".join(
            f"{s} {v:.3f}s ({v / anchor[s]:.2f}x)" if anchor.get(s) else f"{s} {v:.3f}s"
            for s, v in sorted(medians.items())
        )
        print(f"  {label:>12}: {said}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
