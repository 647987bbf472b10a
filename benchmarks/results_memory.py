"""Peak resident memory of `blindmatch results` for a member with many hits, this checkout
beside a baseline's (docs/performance.md "`results` writes its hits as they come
(2026-12-08)").

    nice -n 10 .venv/bin/python benchmarks/results_memory.py [--records 1000000]
        [--partners 1] [--level hits] [--baseline main] [--keep]

Members: north holds `--records` random 1024-bit CLKs (ids N-0000001...), and each of the
`--partners` others the same CLKs under its own ids, so that the run finds every record of
north's at every partner: `--records` x `--partners` hits. A real matcher on loopback (in
this process, its data dir in a work dir deleted at the end) runs them (LSH blocking), then
each checkout's `blindmatch results --out` runs in a process of its own (the baseline's
tree `git archive`d into the work dir, run through PYTHONPATH) against that matcher: printed
for each, its peak RSS (VmHWM, read as it exits), its wall time, the
rows it wrote and a SHA-256 of the file (checked equal: the same file, byte for byte); then
the ratio, this checkout's peak over the baseline's. The anchor is the baseline, in the same
run, on the same matcher.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.workdir import add_keep, baseline_tree, work_dir
from blindmatch.client import MatcherClient
from blindmatch.client.encoding.encoded import write_encoded
from blindmatch.matcher.server import create_server

ROOT = Path(__file__).resolve().parent.parent

# In the checkout's own process: `blindmatch results` (argv[1:]), then its peak RSS (KiB):
# VmHWM, its own address space's (`ru_maxrss` keeps the forking parent's across exec: this
# process's, which holds the matcher and the uploads).
WORKER = """
import json, re, sys, time
from blindmatch.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
wall = time.perf_counter() - t0
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1])
print(json.dumps({"rc": rc, "peak_kib": peak, "wall": wall}), file=sys.stderr)
"""


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partners", type=int, default=1)
    parser.add_argument("--level", default="hits", choices=["hits", "mapping", "scores"])
    parser.add_argument("--baseline", default="main", help="git ref to compare (default main)")
    add_keep(parser)
    args = parser.parse_args()
    n, members = args.records, ["north"] + [f"p{k}" for k in range(1, args.partners + 1)]
    print(f"results of {n:,} records at {args.partners} partner(s), level {args.level}")
    with work_dir("bm-resultsmem-", keep=args.keep) as work:
        base = baseline_tree(args.baseline, work, ROOT)
        rng = np.random.default_rng(1)
        clks = rng.integers(0, 256, (n, 128), dtype=np.uint8).tobytes()
        fingerprint = hashlib.sha256(b"results_memory").digest()
        encoded = {
            m: write_encoded(
                work / f"{m}.encoded",
                clks=clks,
                clk_bits=1024,
                fingerprint=fingerprint,
                ids=[f"{m[0].upper()}-{i:07d}" for i in range(n)],
                report={},
                rule=None,
            )
            for m in members
        }
        del clks
        server = create_server("127.0.0.1:0", work / "data", "admin", workers=2)
        target = f"127.0.0.1:{server.port}"
        try:
            with MatcherClient(target, "admin") as op:
                proj = op.create_project("mem", members, args.level, 0.95, "lsh")
            for m in members:
                with MatcherClient(target, proj.tokens[m]) as c:
                    c.upload("mem", encoded[m])
            t0 = time.perf_counter()
            with MatcherClient(target, proj.tokens["north"]) as c:
                run = c.start_run("mem")
                last = [s for s in c.watch_run("mem", run.run_id)][-1]
            assert last.state == "done", last
            print(f"run: {time.perf_counter() - t0:.1f} s, load average {load()}", flush=True)
            got = {}
            for name, tree in (("baseline", base), ("this", ROOT)):
                out = work / f"{name}.csv"
                argv = ["results", "--project", "mem", "--token", proj.tokens["north"],
                        "--encoded", str(encoded["north"].path), "--out", str(out),
                        "--server", target]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": str(tree)}
                done = subprocess.run([sys.executable, "-c", WORKER, *argv], env=env,
                                      capture_output=True, text=True, cwd=tree)  # fmt: skip
                said = json.loads(done.stderr.strip().splitlines()[-1])
                assert said["rc"] == 0, done.stderr
                rows = sum(1 for _ in out.open()) - 1
                digest = hashlib.sha256(out.read_bytes()).hexdigest()
                got[name] = said["peak_kib"]
                print(
                    f"{name} ({args.baseline if name == 'baseline' else 'checkout'}): peak RSS "
                    f"{said['peak_kib'] / 1024:,.0f} MiB, {said['wall']:.1f} s, {rows:,} rows, "
                    f"sha256 {digest[:16]}",
                    flush=True,
                )
                got[name + "_digest"] = digest
                out.unlink()
            assert got["baseline_digest"] == got["this_digest"], "the files differ"
            print(
                f"peak RSS, this checkout / baseline: {got['this'] / got['baseline']:.2f} "
                f"(load average {load()})"
            )
        finally:
            server.stop(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
