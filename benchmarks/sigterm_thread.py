"""How often a server misses its SIGTERM when another thread takes it (docs/operations.md
"A SIGTERM that another thread takes"): each trial starts a child process with a thread
that starts threads without pause (as gRPC's pools do under load: each start blocks and
unblocks signals, a moment in which that thread may take a pending process signal), sends
it SIGTERM once it is waiting, and counts it hung if it has not exited `--wait` seconds
later (then kills it). Side by side, alternating, in the same run:

- `before`: the main thread waits for an event that the Python SIGTERM handler sets (what
  matcher/server.py `serve_forever` did before 2026-12-06);
- `serve_forever`: the real `serve_forever`, over a server that stops at once;
- `work_dir`: a benchmark's main thread asleep in a bare `Event.wait()` inside
  benchmarks/workdir.py `work_dir` (whose SIGTERM handler, before 2026-12-06, was `before`'s
  case: a handler the main thread never woke to run).

    nice -n 10 .venv/bin/python benchmarks/sigterm_thread.py --trials 60

The machine's load changes how often the other thread wins the signal; the count `before`
is the figure, `serve_forever` should be 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep

MODES = ("before", "serve_forever", "work_dir")


def _churn() -> None:
    """Start threads without pause, in a daemon thread."""

    def loop() -> None:
        while True:
            started = threading.Thread(target=lambda: None)
            started.start()
            started.join()

    threading.Thread(target=loop, daemon=True).start()


def child(mode: str, keep: bool = False) -> None:
    """Wait for SIGTERM as `mode` does; say "ready" once waiting, exit 0 once stopped."""
    _churn()
    if mode == "before":
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())
        print("ready", flush=True)
        stopped.wait()
    elif mode == "work_dir":
        from benchmarks.workdir import work_dir

        with work_dir("bm-sigterm-", keep=keep):
            print("ready", flush=True)
            threading.Event().wait()
    else:
        from blindmatch.matcher.server import serve_forever

        class AtOnce:
            def stop(self, grace: float | None = 1.0) -> None:
                pass

        serve_forever(AtOnce(), ready=lambda: print("ready", flush=True))
    os._exit(0)


def trial(mode: str, wait: float, keep: bool = False) -> bool:
    """Whether a child waiting as `mode` does exits within `wait` s of its SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, *(["--keep"] if keep else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {mode} child did not start (exit {proc.wait()})")
    time.sleep(0.2)  # (in its wait)
    proc.terminate()
    try:
        proc.wait(timeout=wait)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
    finally:
        proc.stdout.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=60, help="trials of each mode (default 60)")
    p.add_argument(
        "--wait", type=float, default=3.0, help="seconds after SIGTERM that count as hung"
    )
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    add_keep(p)  # (the work_dir child's)
    args = p.parse_args()
    if args.child:
        child(args.child, args.keep)
        return
    hung = dict.fromkeys(MODES, 0)
    for _ in range(args.trials):
        for mode in MODES:
            hung[mode] += not trial(mode, args.wait, args.keep)
    load = os.getloadavg()[0]
    print(
        f"{'mode':<15} {'trials':>6} {'hung':>5}   (load average {load:.1f}, {os.cpu_count()} CPUs)"
    )
    for mode in MODES:
        print(f"{mode:<15} {args.trials:>6} {hung[mode]:>5}")


if __name__ == "__main__":
    main()
