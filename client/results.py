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

from collections.abc import Iterable, Iterator
from pathlib import Path

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import InputError
from blindmatch.client.remote.model import ResultHit, Results

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


def result_rows(
    results: Results,
    encoded: Encoded,
    also_sha256: str = "",
    hits: Iterable[ResultHit] | None = None,
) -> Iterator[list[str]]:
    """`join_results`' rows one at a time, as `blindmatch results` writes them (a row per
    hit is never held twice over). The upload is checked, and the ids read, at the call.
    `hits`: the hits as they arrive (`MatcherClient.results_to`), rather than `results.hits`."""
    if results.upload_sha256 not in (encoded.sha256, also_sha256 or encoded.sha256):
        raise InputError(
            f"{encoded.path}: these results are from run {results.run_id}, which used a "
            "different upload than this encoded folder; upload it and `blindmatch run` again, "
            "or pass the --encoded folder that was uploaded"
        )
    if results.disclosure == "count":
        return iter([[p, str(n)] for p, n in results.counts.items()])
    ids = encoded.read_ids()
    return _hit_rows(results, ids, encoded.path, results.hits if hits is None else hits)


def _repeated(ids: list[str]) -> frozenset[str]:
    """The ids on more than one row (a folder encoded with `--on-duplicate-id keep-all`)."""
    once: set[str] = set()
    more: set[str] = set()
    for i in ids:
        (more if i in once else once).add(i)
    return frozenset(more)


def _hit_rows(
    results: Results, ids: list[str], folder: Path, hits: Iterable[ResultHit]
) -> Iterator[list[str]]:
    # At the hits level one row per (id, partner): only an id on several rows can repeat
    # one, so only those are remembered (before refcarry every row written was, ~0.1 GiB a
    # million).
    repeated = _repeated(ids) if results.disclosure == "hits" else frozenset()
    seen: set[tuple[str, str]] = set()
    for hit in hits:
        if hit.row >= len(ids):
            raise InputError(f"{folder}: result row {hit.row} is beyond the id list")
        row = [ids[hit.row], hit.partner]
        if ids[hit.row] in repeated:
            if (ids[hit.row], hit.partner) in seen:
                continue
            seen.add((ids[hit.row], hit.partner))
        level = results.level_of(hit.partner)
        if results.disclosure in ("mapping", "scores"):
            row.append(str(hit.partner_row) if level in ("mapping", "scores") else "")
        if results.disclosure == "scores":
            row.append(f"{hit.score:.4f}" if level == "scores" else "")
        yield row
