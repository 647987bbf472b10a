"""The CLI walk's own encodings through `match` in process: are its hits the CLI's?

    .venv/bin/python benchmarks/cliwalk.py --population 2000 --big-population 1000000 --keep
    .venv/bin/python benchmarks/walkinprocess.py WORK_DIR [--project big]

`cliwalk.py --keep` leaves its work dir: each member's ENCODED folder (`MEMBER.encoded`; a
member of both projects has the walk's as `walk-MEMBER.encoded`), the hits `results` wrote
(`PROJECT-MEMBER-hits.csv`) and the truth `evaluate` read, of the members that project
linked (`PROJECT-truth.csv`: `walk-truth.csv`, `big-truth.csv` for the `--big-population`
project). This puts the project's members'
CLKs through `matcher.usecases.runs.match` (default blocking, the schema's fallback and
rule, threshold 0.8: what `run` does with a default project) and prints how many hits the
two share, `evaluate`'s count of each (over both members' hits, as the walk sums them) and
the in-process run's count of pairs (a record linked to its own person's record), the
stricter count `benchmarks/popprec.py` also gives. docs/evaluation.md, "The recall gap
between the CLI walk and popprec".
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.tools.evaluate import quality
from blindmatch.client.tools.truth import read_truth
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.usecases import runs

THRESHOLD = 0.8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path, help="the work dir `cliwalk.py --keep` left")
    parser.add_argument(
        "--project", choices=("walk", "big"), default="big",
        help="the walk's project: walk, or big (the --big-population project)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work, project = args.work, args.project
    truth = read_truth(work / f"{project}-truth.csv")
    names = sorted(p.name.removeprefix(f"{project}-").removesuffix("-hits.csv")
                   for p in work.glob(f"{project}-*-hits.csv"))  # fmt: skip
    clks, ids = [], []
    for name in names:
        folder = work / f"{project}-{name}.encoded"  # a member of both: the walk's, renamed
        folder = folder if folder.is_dir() else work / f"{name}.encoded"
        enc = read_encoded(folder)
        raw = np.fromfile(folder / "clks.bin", dtype=np.uint8)
        clks.append(raw.reshape(enc.record_count, enc.clk_bits // 8))
        with open(folder / "local" / "ids.csv", newline="") as fh:
            ids.append([row["record_id"] for row in csv.DictReader(fh)])
        bits, rule = enc.fallback_bits, Rule(*enc.rule) if enc.rule else NO_RULE
    result = runs.match(clks, THRESHOLD, fallback_bits=bits, rule=rule, workers=args.workers)
    links = result.links
    mine = set()
    pairs = 0
    codes = [truth.records[n].codes(i) for n, i in zip(names, ids, strict=True)]
    for d, r, p, pr in zip(links.dset.tolist(), links.row.tolist(), links.partner.tolist(),
                           links.partner_row.tolist(), strict=True):  # fmt: skip
        mine.add((names[d], ids[d][r], names[p]))
        pairs += int(codes[d][r] == codes[p][pr] >= 0)
    cli = set()
    for name in names:
        with open(work / f"{project}-{name}-hits.csv", newline="", encoding="utf-8") as fh:
            cli |= {(name, row["record_id"], row["partner"]) for row in csv.DictReader(fh)}
    print(f"{' and '.join(names)}: match in process ({result.method}) {len(mine)} hits, "
          f"the CLI's {len(cli)}, {len(mine & cli)} in both")  # fmt: skip
    print(f"  the CLI's hits, as evaluate counts them: {quality(cli, truth)}")
    print(f"  in process, as evaluate counts them:   {quality(mine, truth)}")
    print(
        f"  in process, as pairs: {pairs} of {len(mine)} hits link a record to its own "
        "person's record"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
