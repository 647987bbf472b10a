"""A benchmark's temporary work dir, deleted when the benchmark ends: on exit, on failure and
on Ctrl-C (KeyboardInterrupt), unless asked to keep it (`--keep`, `add_keep`), then named on
stderr to inspect. A benchmark's work dir can hold gigabytes (encoded uploads, data dirs);
left in /tmp, they filled the disk.

    with work_dir("bm-tsquery-", keep=args.keep) as work:
        ...
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def work_dir(prefix: str, keep: bool = False, parent: Path | None = None) -> Iterator[Path]:
    """A new temporary folder (`prefix`, under `parent` or the system's temporary folder),
    deleted with everything in it when the block ends, however it ends; `keep`: left, and
    named on stderr."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
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
        "by default it is deleted on exit, failure and Ctrl-C",
    )  # fmt: skip


__all__ = ["add_keep", "work_dir"]
