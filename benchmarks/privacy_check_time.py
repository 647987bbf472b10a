"""`privacy-check`'s time on one export, this tree beside another (the code before a change).

    nice -n 10 .venv/bin/python benchmarks/privacy_check_time.py [--population 5000] [--seed 1]
        [--org north-police] [--records N] [--schema schemas/person-uk-field-level.json]
        [--baseline TREE] [--keep]

Writes `benchmarks/messy.py`'s exports (`--population`, `--seed`) in a work dir, takes one
organisation's (`--org`; its first `--records` rows, default all: 1,750 of north-police at
5,000 people), and runs the check `blindmatch privacy-check DATA --schema SCHEMA` runs
(`client.tools.privacy.check.check_csv`), in a fresh process for each tree: `--baseline`'s
(another checkout: a copy of the tree before a change, `git archive REV | tar -x -C TREE`),
then this one. The member's secret and the attacker's key are fixed (from `--seed`), so both
runs attack the same encodings with the same plaintext. Printed: each run's wall and CPU
seconds (the child process, user and system), and whether every figure the check prints
(records and values re-identified, graph-matching claims) is the same in both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, work_dir

ROOT = Path(__file__).resolve().parent.parent

# Run in the child, with the tree measured first on its path: the check, the attacker's key
# fixed (graphcheck draws a fresh one per run otherwise), its figures as JSON on stdout.
CHILD = """
import json, sys, types
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import check, graphcheck
attacker = bytes.fromhex(sys.argv[6])
graphcheck.secrets = types.SimpleNamespace(token_bytes=lambda n: attacker[:n])
report = check.check_csv(Path(sys.argv[2]), load_schema(Path(sys.argv[3])), Path(sys.argv[4]),
                         bytes.fromhex(sys.argv[5]))
print(json.dumps([[r.attack, r.encoding, r.field, r.records, r.records_reidentified, r.values,
                   r.values_reidentified, r.claims] for r in report.results]))
"""


def export(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The organisation's export (its first `--records` rows) and its mapping."""
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "messy.py"), str(work / "messy"),
         "--population", str(args.population), "--seed", str(args.seed)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    data = work / "messy" / f"{args.org}.csv"
    if args.records:
        lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
        data = work / f"{args.org}-{args.records}.csv"
        data.write_text("".join(lines[: args.records + 1]), encoding="utf-8")
    return data, work / "messy" / f"{args.org}.toml"


def measure(tree: Path, data: Path, schema: Path, mapping: Path, seed: int) -> dict[str, Any]:
    """One check in a fresh process on `tree`'s code: wall and CPU seconds, its figures."""
    secret = hashlib.sha256(f"privacy-check-time member {seed}".encode()).hexdigest()
    attacker = hashlib.sha256(f"privacy-check-time attacker {seed}".encode()).hexdigest()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), str(data), str(schema), str(mapping), secret,
         attacker],
        cwd=tree, capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "figures": json.loads(done.stdout.splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--org", default="north-police")
    parser.add_argument("--records", type=int, default=0, help="the export's first N rows (0: all)")
    parser.add_argument("--schema", type=Path, default=ROOT / "schemas/person-uk-field-level.json")
    parser.add_argument("--baseline", type=Path, help="another tree, measured first")
    add_keep(parser)
    args = parser.parse_args()
    trees = [("baseline", args.baseline.resolve())] if args.baseline else []
    trees.append(("this tree", ROOT))
    with work_dir("bm-pcheck-time-", keep=args.keep) as work:
        data, mapping = export(work, args)
        rows = sum(1 for _ in data.open(encoding="utf-8")) - 1
        print(f"privacy-check of {data.name} ({rows} records), schema {args.schema.name}")
        runs: dict[str, dict[str, Any]] = {}
        for name, tree in trees:
            runs[name] = measure(tree, data, args.schema.resolve(), mapping, args.seed)
            run = runs[name]
            print(f"  {name:10} wall {run['wall']:7.1f} s   CPU {run['cpu']:7.1f} s   ({tree})",
                  flush=True)  # fmt: skip
        if len(runs) == 2:
            same = runs["baseline"]["figures"] == runs["this tree"]["figures"]
            print(f"  every figure the same in both: {'yes' if same else 'NO'}")
            if not same:
                for old, new in zip(runs["baseline"]["figures"], runs["this tree"]["figures"],
                                    strict=False):  # fmt: skip
                    if old != new:
                        print(f"    before {old}\n    after  {new}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
