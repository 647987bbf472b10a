"""`blindmatch evaluate` against a large truth file: wall time, CPU and peak RSS, a baseline
checkout beside this one, and whether their output is the same byte for byte.

    nice -n 10 .venv/bin/python benchmarks/evaluate_memory.py [--records 1001000 171600]
        [--population 2860000] [--scores] [--baseline REF]

A truth file is synthesised as docs/performance.md's walk had it (benchmarks/cliwalk.py
`--big-population 2860000`): member `north-police` with the first of `--records`, `retail-bcrp`
with the second, each record a person drawn from `--population` (entity ids 0..N-1; a person
may hold several records of one member, as messy.py's duplicates), ids as messy.py's
(NP100000, RB100000, ...). The results file is retail-bcrp's: 90% of its true hits and as
many false ones as make 20% of the rows false, `--scores`: with a score each (true ones
higher), so the sweep and its plots are made too. Each of the two checkouts runs
`python -m blindmatch evaluate --results R --truth T --member retail-bcrp --out-dir D` in a
process of its own (os.wait4: that process's peak RSS); `--baseline REF` (default `main`)
is `git archive`d into the work dir and run through PYTHONPATH. Printed: one line each, and
whether stdout (the work dir's paths made equal) and sweep.csv are the same. `--entity`: also
the truth file read as `client/tools/truth.py` `Truth` (what evaluate holds) in a process of
its own, then again with its `Truth.entity` made (the (member, record id) -> entity dict the
benchmarks ask for): each one's wall, CPU and peak RSS.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, baseline_tree, work_dir

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = (("north-police", "NP"), ("retail-bcrp", "RB"))


def write_files(folder: Path, records: list[int], population: int, seed: int,
                scores: bool) -> tuple[Path, Path]:  # fmt: skip
    """truth.csv (every record of both members) and retail-bcrp's results file."""
    rng = random.Random(seed)
    held: list[list[int]] = []
    truth = folder / "truth.csv"
    with open(truth, "w", encoding="utf-8") as fh:
        fh.write("member,record_id,entity_id\n")
        for (name, prefix), count in zip(MEMBERS, records, strict=True):
            people = [rng.randrange(population) for _ in range(count)]
            held.append(people)
            fh.writelines(f"{name},{prefix}{100000 + i},{p}\n" for i, p in enumerate(people))
    north = set(held[0])
    true = [i for i, p in enumerate(held[1]) if p in north]
    chosen = rng.sample(true, int(0.9 * len(true)))
    others = [i for i in range(len(held[1])) if held[1][i] not in north]
    false = rng.sample(others, min(len(others), len(chosen) // 4))
    rows = [(i, 0.85 + 0.15 * rng.random()) for i in chosen]
    rows += [(i, 0.75 + 0.15 * rng.random()) for i in false]
    rng.shuffle(rows)
    results = folder / "retail-hits.csv"
    with open(results, "w", encoding="utf-8") as fh:
        fh.write("record_id,partner" + (",score\n" if scores else "\n"))
        for i, score in rows:
            fh.write(f"RB{100000 + i},north-police" + (f",{score:.4f}\n" if scores else "\n"))
    return truth, results


def measure(label: str, pythonpath: Path, truth: Path, results: Path, out: Path) -> str:
    """One `evaluate` in a process of its own: its stdout; prints wall, CPU and peak RSS."""
    command = [sys.executable, "-m", "blindmatch", "evaluate", "--results", str(results),
               "--truth", str(truth), "--member", "retail-bcrp", "--out-dir", str(out)]  # fmt: skip
    return run(label, pythonpath, command).replace(str(out), "OUT")


# The truth file read as evaluate reads it, and (argv[2] "entity") `Truth.entity` made.
READ_TRUTH = """
import sys
from blindmatch.client.tools.truth import read_truth
truth = read_truth(sys.argv[1])
rows = len(truth.entity) if sys.argv[2] == "entity" else 0
print(rows or sum(len(r.ids) for r in truth.records.values()))
"""


def run(label: str, pythonpath: Path, command: list[str]) -> str:
    """`command` in a process of its own: its stdout; prints wall, CPU and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, cwd=pythonpath)
    assert proc.stdout is not None
    printed = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{label}: exited {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    print(f"{label:<24} wall {wall:6.1f} s  CPU {cpu:6.1f} s  peak RSS "
          f"{usage.ru_maxrss / 1024:7,.0f} MiB", flush=True)  # fmt: skip
    return printed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs=2, default=[1_001_000, 171_600])
    ap.add_argument("--population", type=int, default=2_860_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scores", action="store_true", help="results with scores (a sweep)")
    ap.add_argument("--baseline", default="main", help="git ref to compare with (default main)")
    ap.add_argument("--entity", action="store_true", help="also Truth read, and Truth.entity made")
    add_keep(ap)
    args = ap.parse_args()
    with work_dir("bm-evalmem-", keep=args.keep) as work:
        truth, results = write_files(work, args.records, args.population, args.seed,
                                     args.scores)  # fmt: skip
        print(f"truth: {sum(args.records):,} rows ({truth.stat().st_size / 2**20:.0f} MiB); "
              f"results: {results.read_text().count(chr(10)) - 1:,} rows", flush=True)  # fmt: skip
        base = baseline_tree(args.baseline, work, ROOT)
        before = measure(f"baseline ({args.baseline})", base, truth, results, work / "out-base")
        after = measure("this checkout", ROOT, truth, results, work / "out-now")
        same = before == after
        if args.scores:
            same = same and filecmp.cmp(work / "out-base" / "sweep.csv",
                                        work / "out-now" / "sweep.csv", shallow=False)  # fmt: skip
        print("output the same byte for byte" if same else "OUTPUT DIFFERS")
        print(after, end="")
        if args.entity:
            for what in ("records", "entity"):
                label = "Truth" if what == "records" else "Truth and Truth.entity"
                run(label, ROOT, [sys.executable, "-c", READ_TRUTH, str(truth), what])


if __name__ == "__main__":
    main()
