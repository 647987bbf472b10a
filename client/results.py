"""Joining the matcher's row positions back to local record ids, and writing them.

The output file depends on the disclosure level:

    count    partner,shared_subjects
    hits     record_id,partner                      (the default)
    mapping  record_id,partner,partner_row
    scores   record_id,partner,partner_row,score

The level is the most this member learns about any partner. A partner that
consented to less appears at its own level: only in the counts (count), or
with `partner_row`/`score` left empty (hits, mapping).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from blindmatch.client.api import Results
from blindmatch.client.encoded import Encoded
from blindmatch.client.errors import InputError

HEADERS = {
    "count": ["partner", "shared_subjects"],
    "hits": ["record_id", "partner"],
    "mapping": ["record_id", "partner", "partner_row"],
    "scores": ["record_id", "partner", "partner_row", "score"],
}


def join_results(results: Results, encoded: Encoded) -> list[list[str]]:
    """Rows for the output file, with this member's own local ids."""
    if results.upload_sha256 != encoded.sha256:
        raise InputError(
            f"{encoded.path}: these results are from run {results.run_id}, which used a "
            "different upload than this encoded folder; upload it and `blindmatch run` again, "
            "or pass the --encoded folder that was uploaded"
        )
    if results.disclosure == "count":
        return [[p, str(n)] for p, n in results.counts.items()]
    ids = encoded.read_ids()
    rows = []
    seen: set[tuple[str, str]] = set()  # ids repeat in folders encoded with keep-all
    for hit in results.hits:
        if hit.row >= len(ids):
            raise InputError(f"{encoded.path}: result row {hit.row} is beyond the id list")
        row = [ids[hit.row], hit.partner]
        if results.disclosure == "hits":
            if (ids[hit.row], hit.partner) in seen:
                continue
            seen.add((ids[hit.row], hit.partner))
        level = results.level_of(hit.partner)
        if results.disclosure in ("mapping", "scores"):
            row.append(str(hit.partner_row) if level in ("mapping", "scores") else "")
        if results.disclosure == "scores":
            row.append(f"{hit.score:.4f}" if level == "scores" else "")
        rows.append(row)
    return rows


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
