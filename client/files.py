"""Files the client writes for the user, atomically: the old file or the whole new one.

Each is written to a temporary file beside it and renamed into place. The temporary file
is made readable and writable by its owner only (`tempfile.mkstemp`), so the new file
is too, from the first byte (an operator token, say, is never readable by others).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path


def write_csv(path: str | Path, header: list[str], rows: list[list[str]]) -> None:
    """Write a CSV atomically: the old file or the whole new one, never half."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically: the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
