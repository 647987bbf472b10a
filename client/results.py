"""Joining the matcher's row positions back to local record ids (`client.files` writes them).

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

from collections.abc import Iterator
from pathlib import Path

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import InputError
from blindmatch.client.remote.model import Results

HEADERS = {
    "count": ["partner", "shared_subjects"],
    "hits": ["record_id", "partner"],
    "mapping": ["record_id", "partner", "partner_row"],
    "scores": ["record_id", "partner", "partner_row", "score"],
}


def join_results(results: Results, encoded: Encoded, also_sha256: str = "") -> list[list[str]]:
    """Rows for the output file, with this member's own local ids. `also_sha256`: the
    folder's two-server upload's, as the matcher acknowledged it (a two-server project)."""
    return list(result_rows(results, encoded, also_sha256))


def result_rows(results: Results, encoded: Encoded, also_sha256: str = "") -> Iterator[list[str]]:
    """`join_results`' rows one at a time, as `blindmatch results` writes them (a row per
    hit is never held twice over). The upload is checked, and the ids read, at the call."""
    if results.upload_sha256 not in (encoded.sha256, also_sha256 or encoded.sha256):
        raise InputError(
            f"{encoded.path}: these results are from run {results.run_id}, which used a "
            "different upload than this encoded folder; upload it and `blindmatch run` again, "
            "or pass the --encoded folder that was uploaded"
        )
    if results.disclosure == "count":
        return iter([[p, str(n)] for p, n in results.counts.items()])
    return _hit_rows(results, encoded.read_ids(), encoded.path)


def _hit_rows(results: Results, ids: list[str], folder: Path) -> Iterator[list[str]]:
    seen: set[tuple[str, str]] = set()  # ids repeat in folders encoded with keep-all
    for hit in results.hits:
        if hit.row >= len(ids):
            raise InputError(f"{folder}: result row {hit.row} is beyond the id list")
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
        yield row
