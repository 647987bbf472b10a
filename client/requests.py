"""Request references on the member's side (docs/requests.md): from one of its own record
ids to the row positions the matcher knows, and from a reference a partner sent back to
its own record ids. Both read `ENCODED/local/ids.csv`, which never leaves the machine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import InputError
from blindmatch.client.files import read_csv_lines
from blindmatch.client.remote.model import ResolvedRef


@dataclass(frozen=True)
class Hit:
    """One row of a results file: the member's own record, the partner holding it."""

    line: int  # in the file as an editor numbers it, the header being line 1
    record_id: str
    partner: str
    rows: list[int]  # the record's row positions in the ENCODED folder


def read_hits(path: Path, encoded: Encoded) -> list[Hit]:
    """The hits of a results file (`record_id,partner`, as `blindmatch results` writes at
    the hits level or above), each with its rows in `encoded`; every bad row is an
    `InputError` naming the file and row, before anything is asked of the matcher."""
    ids: dict[str, list[int]] = {}
    for position, rid in enumerate(encoded.read_ids()):
        ids.setdefault(rid, []).append(position)
    hits: list[Hit] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in read_csv_lines(path, ("record_id", "partner")):
        record_id, partner = (row["record_id"] or "").strip(), (row["partner"] or "").strip()
        where = f"{path}: row {line}"
        if not record_id or not partner:
            raise InputError(f"{where}: record_id and partner are both required")
        if record_id not in ids:
            raise InputError(
                f"{where}: no record id {record_id!r} in {encoded.path}/local/ids.csv; the "
                "results file and the --encoded folder must be the same member's, of one run"
            )
        if (record_id, partner) in seen:
            raise InputError(
                f"{where}: record {record_id!r} at {partner} is already on row "
                f"{seen[record_id, partner]}; one request reference per hit"
            )
        seen[record_id, partner] = line
        hits.append(Hit(line, record_id, partner, ids[record_id]))
    if not hits:
        raise InputError(f"{path}: no hits (the file has a header and no rows)")
    return hits


def rows_of(encoded: Encoded, record_id: str) -> list[int]:
    """The row positions of `record_id` in the ENCODED folder (several only for ids that
    `encode --on-duplicate-id keep-all` wrote more than once)."""
    rows = [row for row, rid in enumerate(encoded.read_ids()) if rid == record_id]
    if not rows:
        raise InputError(
            f"{encoded.path}: no record id {record_id!r} in local/ids.csv; give one of your own "
            "record ids (the record_id column of hits.csv)"
        )
    return rows


def local_ids(resolved: ResolvedRef, encoded: Encoded, also_sha256: str = "") -> list[str]:
    """This member's record ids a resolved reference points at, in row order, once each.
    `also_sha256`: the folder's two-server upload's, as the matcher acknowledged it."""
    if resolved.upload_sha256 not in (encoded.sha256, also_sha256 or encoded.sha256):
        # As the matcher's refusal (matcher/usecases/requests.py `upload_meant`): a watch's
        # reference is to the upload that fired it, not to one before (tworefs).
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(resolved.issued_unix))
        used, which = (
            (f"run {resolved.run_id} used", "you uploaded for that run")
            if resolved.run_id
            else ("the query searched or the watch compared",
                  f"of your last upload before {when}, when the reference was issued")
        )  # fmt: skip
        raise InputError(
            f"{encoded.path}: reference {resolved.reference} is to the upload that {used} "
            f"(SHA-256 {resolved.upload_sha256[:16]}...), not to this encoded folder "
            f"({encoded.sha256[:16]}...); pass the --encoded folder {which}"
        )
    ids = encoded.read_ids()
    found: list[str] = []
    for row in resolved.rows:
        if row >= len(ids):
            raise InputError(f"{encoded.path}: referenced row {row} is beyond the id list")
        if ids[row] not in found:
            found.append(ids[row])
    return found
