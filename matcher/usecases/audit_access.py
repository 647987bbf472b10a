"""Reading the audit log: the operator's whole log or a member's view, and verification.

Every read is itself recorded (`audit.export`, `audit.verify`). A member sees its view
(core/audit.py: `member_entries`): its own actions, what was done to it, project-wide
events without other members' overlaps, and its partners' disclosures about its records
only as one line per partner per closed UTC day.
"""

from __future__ import annotations

from blindmatch.matcher.core import audit
from blindmatch.matcher.errors import InvalidArgument
from blindmatch.matcher.storage.store import Store

_HEX = frozenset("0123456789abcdef")
MAX_SEQ = 2**63 - 1  # SQLite's largest INTEGER: no entry's seq is above it


def export_audit(store: Store, caller: str, project: str, after: int) -> list[audit.Entry]:
    """The entries `caller` (audit.OPERATOR, or a member of `project`) may see after
    `after` (`last_seen` says where they end when none is)."""
    if after > MAX_SEQ:  # a uint64 past SQLite's INTEGER was INTERNAL (benchmarks/rpcfuzz.py)
        raise InvalidArgument(f"after_seq: {after}; at most {MAX_SEQ} (a seq is a 64-bit integer)")
    if caller != audit.OPERATOR:
        store.project(project)  # expired: NotFound, like every member call
        # Recorded first, so that the view holds an entry after every day that has ended
        # (where that day's partner-disclosure lines are placed).
        store.audit.append(
            audit.Event(caller, "audit.export", project, caller, detail={"after_seq": after})
        )
        seen = audit.member_entries(
            store.audit.entries(project=project), project, caller, store.clock()
        )
        return [e for e in seen if e.seq > after]
    entries = store.audit.entries(project=project, after=after)
    store.audit.append(
        audit.Event(
            caller,
            "audit.export",
            project,
            "",
            detail={"after_seq": after, "entries": len(entries)},
        )
    )
    return entries


def last_seen(store: Store, caller: str, project: str) -> int:
    """The number of the last entry `caller` may see (0: none): the operator's, the log's
    last seq (of `project`'s entries, if given); a member's, its view's last (its view is
    numbered 1, 2, 3...: core/audit.py `member_entries`). For an export after it, which
    returns none: the caller is told where its numbers end."""
    if caller == audit.OPERATOR:
        return store.audit.last_seq(project=project)
    seen = audit.member_entries(
        store.audit.entries(project=project), project, caller, store.clock()
    )
    return seen[-1].seq if seen else 0


def verify_audit(store: Store, anchor_seq: int = 0, anchor_hash: str = "") -> audit.Verification:
    """Check the whole chain, and that the anchor (seq, hash) recorded elsewhere is in it."""
    anchor = None
    if anchor_seq or anchor_hash:
        digest = anchor_hash.lower()
        if not anchor_seq or len(digest) != 64 or not set(digest) <= _HEX:
            raise InvalidArgument(
                "anchor_seq/anchor_hash: give both, a seq of 1 or more and 64 hex digits"
            )
        anchor = (int(anchor_seq), digest)
    result = store.audit.verify(anchor)
    store.audit.append(
        audit.Event(
            audit.OPERATOR,
            "audit.verify",
            detail={"ok": result.ok, "entries": result.entries, "head_seq": result.head_seq},
        )
    )
    return result
