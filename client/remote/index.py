"""Maintaining a member's standing index at the matcher from an ENCODED folder.

Records go up under their row references (`client.encoding.refs`), never local ids.
`sync_index` is the friendly way: it lists what the matcher holds (refs and CLK
digests), diffs that against the folder, and sends only the differences: as one atomic
change, or, past `SYNC_PART_BYTES` of references and CLKs (or the matcher's own limit for one
change, `serve --max-index-change-mib`), as several, each atomic and with its own
`client_change_id` (a retry of one after a lost acknowledgement changes nothing twice; a sync
cut short is finished by running it again, which sends only what is still different).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blindmatch.client.encoding.encoded import CLKS, Encoded
from blindmatch.client.encoding.refs import SyncPlan, plan_sync, row_refs
from blindmatch.client.errors import InputError, NotFoundError, RejectedError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import IndexSummary
from blindmatch.client.words import word
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


# References and CLKs one change of a sync carries at most: a quarter of the matcher's
# default limit (256 MiB): about 420,000 1,024-bit records under 32-character row references.
SYNC_PART_BYTES = 64 * 1024**2
# How the matcher refuses a change over its limit (matcher/rpc/streams.py, HeldChanges).
_OVER_LIMIT = re.compile(r"more than ([\d.]+) MiB of references and CLKs")


@dataclass(frozen=True)
class SyncPart:
    """One change of a sync, as sent: which (from 1), of how many planned so far."""

    number: int
    planned: int
    summary: IndexSummary


def sync_index(
    client: MatcherClient,
    project: str,
    encoded: Encoded,
    key: bytes,
    *,
    part_bytes: int = SYNC_PART_BYTES,
    progress: Callable[[SyncPart], None] | None = None,
) -> tuple[SyncPlan, IndexSummary]:
    """Make the member's index at the matcher hold exactly this ENCODED folder's records.

    The differences go as one change when they carry at most `part_bytes` of references
    and CLKs, as several otherwise (removals first, then puts in reference order), each told
    to `progress` once stored. A change the matcher refuses as over its own limit is cut to
    that limit and sent again. The summary adds the parts up (the record count is the last's).
    """
    refs = row_refs(_unique_ids(encoded), key)
    clks = dict(zip(refs, _read_clks(encoded), strict=True))
    plan = plan_sync({r: clk_digest(c) for r, c in clks.items()}, client.list_index(project))
    # (ref, CLK) to put, or (ref, None) to remove; the bytes the matcher counts for each.
    items: list[tuple[str, bytes | None]] = [(r, None) for r in plan.removes]
    items += [(r, clks[r]) for r in plan.puts]
    sizes = [len(r) + (len(c) if c is not None else 0) for r, c in items]
    done, number, budget = 0, 0, part_bytes
    summaries: list[IndexSummary] = []
    while done < len(items) or not summaries:
        end, carried = done, 0
        while end < len(items) and (end == done or carried + sizes[end] <= budget):
            carried += sizes[end]
            end += 1
        if carried > budget:
            raise InputError(
                f"{encoded.path}: one record's reference and CLK ({carried} bytes) are more "
                f"than the matcher takes in one index change ({budget} bytes)"
            )
        part = items[done:end]
        try:
            summary = client.change_index(
                project,
                clk_bits=encoded.clk_bits,
                fingerprint=encoded.fingerprint,
                puts=[(r, c) for r, c in part if c is not None],
                removes=[r for r, c in part if c is None],
                fallback_bits=encoded.fallback_bits,
                rule=encoded.rule,
            )
        except RejectedError as exc:
            limit = _OVER_LIMIT.search(str(exc))
            if limit is None or budget <= 1:
                raise
            # Nothing of the refused change was applied: send it again, smaller.
            budget = min(budget // 2, int(float(limit.group(1)) * 1024**2 * 0.98)) or 1
            continue
        done, number = end, number + 1
        summaries.append(summary)
        if progress is not None:
            left = sum(sizes[done:])
            progress(SyncPart(number, number + -(-left // budget), summary))
    return plan, IndexSummary(
        added=sum(s.added for s in summaries),
        replaced=sum(s.replaced for s in summaries),
        removed=sum(s.removed for s in summaries),
        record_count=summaries[-1].record_count,
        replayed=all(s.replayed for s in summaries),
    )


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
            f"{encoded.path}: no record with {word(len(unknown), 'id')} "
            f"{', '.join(map(repr, unknown[:5]))}"
        )
    refs = row_refs(wanted, key)
    return client.change_index(
        project,
        clk_bits=encoded.clk_bits,
        fingerprint=encoded.fingerprint,
        puts=[(r, clks[i]) for r, i in zip(refs, wanted, strict=True)],
        fallback_bits=encoded.fallback_bits,
        rule=encoded.rule,
    )


def remove_from_index(
    client: MatcherClient, project: str, key: bytes, ids: Sequence[str]
) -> IndexSummary:
    """Remove the records with these local ids; all or nothing. Ids the index does not hold
    are named by id in the refusal (the matcher names only their references)."""
    refs = row_refs(ids, key)
    try:
        return client.change_index(project, clk_bits=64, fingerprint=bytes(32), removes=refs)
    except NotFoundError as exc:
        missing = [i for i, r in zip(ids, refs, strict=True) if repr(r) in str(exc)]
        if not missing:
            raise
        every = "" if len(missing) < len(ids) else (
            " (none of the ids given is: is this the ref key the index was built with?)"
        )  # fmt: skip
        raise NotFoundError(
            f"not in your index of {project}: {word(len(missing), 'id')} "
            f"{', '.join(repr(i) for i in missing)}"
            f"{every}; nothing was removed ({exc})"
        ) from None
