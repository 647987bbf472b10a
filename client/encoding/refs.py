"""Row references: what the matcher's standing index holds instead of local ids.

A member's standing index at the matcher holds its CLKs under *row references*: opaque
strings the member derives from its local ids with a key only it holds,

    ref = hex(HMAC-SHA256(ref_key, local_id))[:32]

so the same record keeps the same reference across re-encodes (and can be replaced or
removed by it), partners and the matcher cannot recover or test a local id from it (the
linkage secret is shared, so it is not the key), and the member can turn a reference
back into its own id whenever a partner quotes one. The ref key is a local file, made on
first use; losing it only means the next sync replaces the whole index.

`plan_sync` diffs what the matcher lists (refs and CLK digests, `protos.wire.clk_digest`)
against the records of an ENCODED folder; `client.remote.index.sync_index` sends the
differences.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import InputError
from blindmatch.client.files import write_bytes

REF_HEX = 32


def load_ref_key(path: str | Path, *, create: bool = False) -> tuple[bytes, bool]:
    """The member's ref key, made (0600) when missing and `create`; returns (key, created)."""
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            raise InputError(
                f"{path}: ref key not found; it is the file `blindmatch index add` or `sync` "
                "made when this index was first built"
            ) from None
        # Whole or none (a signal part-way left an empty key, "too short" ever after), never
        # over one made meanwhile (`FileExistsError`).
        write_bytes(path, (secrets.token_hex(32) + "\n").encode(), replace=False)
        return path.read_bytes().strip(), True
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a ref key file") from None
    if len(key) < 16:
        raise InputError(f"{path}: too short to be a ref key (at least 16 characters)")
    return key, False


def row_refs(ids: Iterable[str], key: bytes) -> list[str]:
    """The opaque reference of each local id (see the module docstring)."""
    return [hmac.new(key, i.encode("utf-8"), hashlib.sha256).hexdigest()[:REF_HEX] for i in ids]


def resolve_refs(encoded: Encoded, key: bytes) -> dict[str, str]:
    """ref -> local id for an ENCODED folder's records (to follow up a quoted ref)."""
    ids = encoded.read_ids()
    return dict(zip(row_refs(ids, key), ids, strict=True))


@dataclass(frozen=True)
class SyncPlan:
    puts: list[str]  # refs to add or replace
    removes: list[str]  # refs to remove


def plan_sync(local: Mapping[str, bytes], remote: Mapping[str, bytes]) -> SyncPlan:
    """What to send so that the matcher holds exactly `local` (ref -> CLK digest)."""
    puts = sorted(ref for ref, d in local.items() if remote.get(ref) != d)
    removes = sorted(ref for ref in remote if ref not in local)
    return SyncPlan(puts, removes)
