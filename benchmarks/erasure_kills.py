"""SIGKILL `blindmatch serve` at random moments of erasures: how many restarts still serve
the erased member's standing index.

    .venv/bin/python benchmarks/erasure_kills.py [--trials 8] [--records 20000] [--seed 5]

A matcher process of its own (benchmarks/faults.py `Server`) holds project p; each trial,
member north puts a standing index of `--records` records and uploads 5,000, then erases
its data while the matcher is killed after a random delay across the Erase call (as long as
the quicker of two uninterrupted erasures, timed first). After the restart: was the erasure
logged (its `erase` entry), and does partner south's query of five of north's records still
find north? Run from a checkout, it measures that checkout's code (before the fix: an
erasure logged and its index served again after the restart, most trials; after: none).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import sqlite3
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.faults import Server
from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population, write
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client import MatcherClient
from blindmatch.client.errors import BlindmatchError
from blindmatch.client.remote.retry import NO_RETRY


def erasures(data_dir: Path) -> int:
    with closing(sqlite3.connect(f"file:{data_dir / 'blindmatch.sqlite'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM audit WHERE action='erase'").fetchone()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--records", type=int, default=20_000, help="north's standing index")
    parser.add_argument("--seed", type=int, default=5)
    add_keep(parser)
    args = parser.parse_args()
    with work_dir("bm-erasure-kills-", keep=args.keep) as tmp:
        return _run(args, tmp)


def _run(args: argparse.Namespace, tmp: Path) -> int:
    served = Server(tmp / "data", 0, "bm_admin_" + secrets.token_hex(8))
    served.start()
    rng = random.Random(args.seed)
    outcomes: list[str] = []
    try:
        with MatcherClient(served.target, served.admin_token) as op:
            tokens = op.create_project("p", ["north", "south"]).tokens
        many = population(1, args.records, 0.0, seed=63)[0]
        puts = [(f"r{i}", many.clks[i].tobytes()) for i in range(args.records)]
        uploaded = write(population(1, 5_000, 0.0, seed=64)[0], tmp / "north.encoded")
        took: list[float] = []
        for trial in range(args.trials + 2):
            with MatcherClient(served.target, tokens["north"]) as north:
                north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
                north.upload("p", uploaded)
            before = erasures(served.data_dir)
            done: list[float] = []

            def erase(done: list[float] = done) -> None:
                t0 = time.monotonic()
                with (
                    contextlib.suppress(BlindmatchError),
                    MatcherClient(served.target, tokens["north"], retry=NO_RETRY) as north,
                ):
                    north.erase("p")
                    done.append(time.monotonic() - t0)

            thread = threading.Thread(target=erase)
            thread.start()
            if trial < 2:  # not killed: how long an erasure takes here
                thread.join(timeout=60)
                took += done
                continue
            time.sleep(rng.uniform(0, min(took)))
            served.kill()
            thread.join(timeout=60)
            erased = erasures(served.data_dir) > before
            served.start()
            with MatcherClient(served.target, tokens["south"]) as south:
                answer = south.query("p", [c for _, c in puts[:5]], clk_bits=CLK_BITS,
                                     fingerprint=FINGERPRINT, purpose="erasure-kills")  # fmt: skip
            found = any(m.partner == "north" for hits in answer.results for m in hits)
            outcomes.append(
                "not erased" if not erased else "erased, yet served" if found else "erased"
            )
    finally:
        served.stop()
    served_again = outcomes.count("erased, yet served")
    print(f"{args.trials} kills across erasures of {args.records:,} indexed records "
          f"(an uninterrupted erasure {min(took) * 1e3:.0f} ms): {outcomes.count('erased')} "
          f"erased, {served_again} erased yet its index served after the restart, "
          f"{outcomes.count('not erased')} not erased")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
