"""Request references on the member's side (docs/requests.md): from one of its own record
ids to the row positions the matcher knows, and from a reference a partner sent back to
its own record ids. Both read `ENCODED/local/ids.csv`, which never leaves the machine."""

from __future__ import annotations

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import InputError
from blindmatch.client.remote.model import ResolvedRef


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


def local_ids(resolved: ResolvedRef, encoded: Encoded) -> list[str]:
    """This member's record ids a resolved reference points at, in row order, once each."""
    if resolved.upload_sha256 != encoded.sha256:
        raise InputError(
            f"{encoded.path}: reference {resolved.reference} is to the upload that run "
            f"{resolved.run_id} used (SHA-256 {resolved.upload_sha256[:16]}...), not to this "
            f"encoded folder ({encoded.sha256[:16]}...); pass the --encoded folder you uploaded "
            "for that run"
        )
    ids = encoded.read_ids()
    found: list[str] = []
    for row in resolved.rows:
        if row >= len(ids):
            raise InputError(f"{encoded.path}: referenced row {row} is beyond the id list")
        if ids[row] not in found:
            found.append(ids[row])
    return found
