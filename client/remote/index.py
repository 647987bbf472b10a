"""Maintaining a member's standing index at the matcher from an ENCODED folder.

Records go up under their row references (`client.encoding.refs`), never local ids.
`sync_index` is the friendly way: it lists what the matcher holds (refs and CLK
digests), diffs that against the folder, and sends one atomic change with only the
differences.
"""

from __future__ import annotations

from collections.abc import Sequence

from blindmatch.client.encoding.encoded import CLKS, Encoded
from blindmatch.client.encoding.refs import SyncPlan, plan_sync, row_refs
from blindmatch.client.errors import InputError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import IndexSummary
from blindmatch.protos.wire import clk_digest


def _unique_ids(encoded: Encoded) -> list[str]:
    """The folder's ids; a standing index keys records by id, so they must not repeat."""
    ids = encoded.read_ids()
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise InputError(
            f"{encoded.path}: record id {repeated!r} appears more than once (encoded with "
            "--on-duplicate-id keep-all); an index holds one record per id: encode with "
            "keep-first for it"
        )
    return ids


def _read_clks(encoded: Encoded) -> list[bytes]:
    data = (encoded.path / CLKS).read_bytes()
    size = encoded.clk_bytes
    return [data[i * size : (i + 1) * size] for i in range(encoded.record_count)]


def sync_index(
    client: MatcherClient, project: str, encoded: Encoded, key: bytes
) -> tuple[SyncPlan, IndexSummary]:
    """Make the member's index at the matcher hold exactly this ENCODED folder's records."""
    refs = row_refs(_unique_ids(encoded), key)
    clks = dict(zip(refs, _read_clks(encoded), strict=True))
    plan = plan_sync({r: clk_digest(c) for r, c in clks.items()}, client.list_index(project))
    summary = client.change_index(
        project,
        clk_bits=encoded.clk_bits,
        fingerprint=encoded.fingerprint,
        puts=[(r, clks[r]) for r in plan.puts],
        removes=plan.removes,
        fallback_bits=encoded.fallback_bits,
    )
    return plan, summary


def add_to_index(
    client: MatcherClient,
    project: str,
    encoded: Encoded,
    key: bytes,
    ids: Sequence[str] | None = None,
) -> IndexSummary:
    """Add or replace an ENCODED folder's records (all, or those with local `ids`)."""
    all_ids = _unique_ids(encoded)
    clks = dict(zip(all_ids, _read_clks(encoded), strict=True))
    wanted = list(ids) if ids is not None else all_ids
    unknown = [i for i in wanted if i not in clks]
    if unknown:
        raise InputError(
            f"{encoded.path}: no record with id(s) {', '.join(map(repr, unknown[:5]))}"
        )
    refs = row_refs(wanted, key)
    return client.change_index(
        project,
        clk_bits=encoded.clk_bits,
        fingerprint=encoded.fingerprint,
        puts=[(r, clks[i]) for r, i in zip(refs, wanted, strict=True)],
        fallback_bits=encoded.fallback_bits,
    )


def remove_from_index(
    client: MatcherClient, project: str, key: bytes, ids: Sequence[str]
) -> IndexSummary:
    """Remove the records with these local ids; all or nothing."""
    return client.change_index(
        project, clk_bits=64, fingerprint=bytes(32), removes=row_refs(ids, key)
    )
