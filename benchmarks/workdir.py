"""A benchmark's temporary work dir, deleted when the benchmark ends: on exit, on failure,
on Ctrl-C (KeyboardInterrupt) and on SIGTERM (`kill`, a CI job's timeout: inside the block a
SIGTERM raises SystemExit, so the deletion runs; the handler before it is put back after),
unless asked to keep it (`--keep`, `add_keep`), then named on stderr to inspect. A
benchmark's work dir can hold gigabytes (encoded uploads, data dirs); left in /tmp, they
filled the disk.

    with work_dir("bm-tsquery-", keep=args.keep) as work:
        ...
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

TERMINATED = 128 + signal.SIGTERM  # the exit status of a benchmark ended by SIGTERM


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(TERMINATED)


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Inside the block, SIGTERM raises SystemExit (so `finally` blocks run); the handler
    before it is put back after. Signal handlers belong to the main thread: elsewhere,
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextmanager
def work_dir(prefix: str, keep: bool = False, parent: Path | None = None) -> Iterator[Path]:
    """A new temporary folder (`prefix`, under `parent` or the system's temporary folder),
    deleted with everything in it when the block ends, however it ends; `keep`: left, and
    named on stderr. A SIGTERM inside the block ends it too (SystemExit), on the main
    thread."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        with _sigterm_exits():
            yield path
    finally:
        if keep:
            print(f"the work dir is kept: {path}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def add_keep(parser: argparse.ArgumentParser) -> None:
    """`--keep`: keep the work dir (named on stderr) rather than delete it at the end."""
    parser.add_argument(
        "--keep", action="store_true",
        help="keep the temporary work dir (its path printed at the end) to inspect it; "
        "by default it is deleted on exit, failure, Ctrl-C and SIGTERM",
    )  # fmt: skip


__all__ = ["add_keep", "work_dir"]
