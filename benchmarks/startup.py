"""How long a short command takes to start, beside the interpreter and the imports it avoids.

    .venv/bin/python benchmarks/startup.py [--runs 10] [--compare OTHER/bin/blindmatch]

Runs each command `--runs` times as a fresh process and prints the median wall time, and
as ratios: `blindmatch --help` and `--version` against a bare `python -c pass` (the floor
any Python command pays) and against importing clkhash and gRPC alone (what the command
line used to import before printing its help). `--compare` times another installed
`blindmatch` (an older checkout's .venv/bin/blindmatch, say) in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(sys.executable).parent


def seconds(cmd: list[str]) -> float:
    """Wall time of one run of `cmd`, start to exit."""
    started = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--compare", type=Path, help="another blindmatch executable to time")
    args = parser.parse_args()
    blindmatch = shutil.which("blindmatch", path=str(HERE)) or "blindmatch"
    python = sys.executable
    cases = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import clkhash, grpc'": [python, "-c", "import clkhash, grpc"],
        "blindmatch --help": [blindmatch, "--help"],
        "blindmatch --version": [blindmatch, "--version"],
    }
    if args.compare:
        cases[f"{args.compare} --help"] = [str(args.compare), "--help"]
    # Interleave the cases run by run, so load that comes and goes hits each alike.
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, cmd in cases.items():
            times[name].append(seconds(cmd))
    medians = {name: statistics.median(t) for name, t in times.items()}
    floor = medians["python -c pass"]
    heavy = medians["python -c 'import clkhash, grpc'"]
    print(f"median wall time of {args.runs} runs each (fresh processes)")
    for name, median in medians.items():
        print(
            f"  {name:<48} {median * 1000:7.0f} ms   {median / floor:5.2f}x python   "
            f"{median / heavy:5.2f}x clkhash+grpc import"
        )


if __name__ == "__main__":
    main()
