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
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

TERMINATED = 128 + signal.SIGTERM  # the exit status of a benchmark ended by SIGTERM


class _Terminate:
    """The SIGTERM handler inside the block: SystemExit the first time, nothing after (a
    second SIGTERM, or `_poke`'s, does not cut the deletion short)."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.raised:
            self.raised = True
            raise SystemExit(TERMINATED)


def _poke(woken: socket.socket, handler: _Terminate) -> None:
    """A thread beside the block: the kernel may hand the process's SIGTERM to any thread
    (gRPC's), and CPython runs the Python handler only when the main thread runs Python
    again, which a main thread asleep in a bare `join()` or `Event.wait()` never does. The C
    handler writes the signal's number to the wakeup fd from whatever thread took it; this
    sends SIGTERM once more to the main thread itself, which wakes it (EINTR) to run the
    handler. Once: the poke writes the fd too (matcher/server.py `serve_forever` waits on
    the fd the same way); not where the main thread took it and ran the handler."""
    with contextlib.suppress(OSError):
        while (got := woken.recv(1)) and got[0] != signal.SIGTERM:
            pass
        if got and not handler.raised:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Inside the block, SIGTERM raises SystemExit (so `finally` blocks run), once, whichever
    thread the kernel hands it to (`_poke`); the handler and wakeup fd before it are put back
    after. Signal handlers belong to the main thread: elsewhere, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    woken, waker = socket.socketpair()
    waker.setblocking(False)
    handler = _Terminate()
    before = signal.signal(signal.SIGTERM, handler)
    previous = signal.set_wakeup_fd(waker.fileno(), warn_on_full_buffer=False)
    poker = threading.Thread(target=_poke, args=(woken, handler), name="sigterm-poke",
                             daemon=True)  # fmt: skip
    poker.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        waker.close()  # the poke thread's recv ends (b"")
        poker.join()  # before the old handler is back: a poke after it could kill
        woken.close()
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


def baseline_tree(ref: str, work: Path, repo: Path) -> Path:
    """`repo`'s tree at git `ref`, `git archive`d into `work`/baseline (a baseline's code, run
    through PYTHONPATH)."""
    base = work / "baseline"
    base.mkdir()
    archive = subprocess.run(["git", "archive", ref], cwd=repo, check=True,
                             capture_output=True).stdout  # fmt: skip
    (work / "baseline.tar").write_bytes(archive)
    with tarfile.open(work / "baseline.tar") as tar:
        tar.extractall(base, filter="data")
    return base


__all__ = ["add_keep", "baseline_tree", "work_dir"]
