"""The report page's request references (docs/report.md, docs/requests.md): from a member's
own audit export, the references it issued, every resolution it can see, both ways, and its
withdrawals.

A partner resolving one of the member's references learns which of its records the member
holds a match for: a disclosure of the member's information that the page's audit summary
left out (requestswalk, 2026-12-07: it showed only `request.issue 306` among the entries per
action). Pure: entries in, rows out; `report_html` renders them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blindmatch.client.words import counted

RESOLVED_HEADER = ("time", "resolved by", "issued by", "reference", "run", "purpose", "records")
ISSUED_HEADER = ("time", "purpose", "run", "references")
WITHDRAWN_HEADER = ("time", "purpose", "reference", "partner", "run", "resolved before")


@dataclass
class RequestTables:
    summary: str = ""  # one sentence of counts; empty: no reference in the export
    resolved: list[tuple[str, ...]] = field(default_factory=list)  # newest first
    issued: list[tuple[str, ...]] = field(default_factory=list)  # newest first
    withdrawn: list[tuple[str, ...]] = field(default_factory=list)  # newest first
    shown_of: int = 0  # the longest of the lists before `limit` cut it

    def tables(self) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
        """(header, rows) of each table that has rows, in the page's order."""
        every = ((RESOLVED_HEADER, self.resolved), (ISSUED_HEADER, self.issued),
                 (WITHDRAWN_HEADER, self.withdrawn))  # fmt: skip
        return [(header, rows) for header, rows in every if rows]


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def _run(detail: dict[str, Any]) -> str:
    """A reference's run, or what issued it where none did: a two-server query's answer or a
    watch's event, which its entries do not tell apart (before tworefs: "a query's answer" of
    a watch's too, as `resolve` said before 2026-12-06)."""
    return str(detail.get("run_id") or "a query's or a watch's answer")


def request_tables(entries: Sequence[dict[str, Any]], me: str, limit: int) -> RequestTables:
    """`me`'s references issued (`request.issue`), resolutions (`request.resolve`: its
    partners' of its references, without their purpose or record count, which its export
    withholds; and its own of references sent to it) and withdrawals (`request.withdraw`,
    its own: before 2026-12-08 the page counted none), the newest `limit` of each."""
    issued = [e for e in entries if e["action"] == "request.issue" and e["actor"] == me]
    resolved = [e for e in entries if e["action"] == "request.resolve"]
    withdrawn = [e for e in entries if e["action"] == "request.withdraw" and e["actor"] == me]
    if not issued and not resolved and not withdrawn:
        return RequestTables()
    count = sum(
        len(refs) if isinstance(refs, list) else 1
        for e in issued
        for refs in ((e.get("detail") or {}).get("references") or {}).values()
    )
    theirs = sum(1 for e in resolved if e["actor"] != me)
    said = (
        [f"You issued {counted(count, 'reference')} in {counted(len(issued), 'request')}"]
        if issued
        else []
    )
    if theirs:
        said.append(
            f"partners resolved yours {counted(theirs, 'time')}, each telling that partner "
            "which of its records you hold a match for"
        )
    if len(resolved) > theirs:
        said.append(
            f"you resolved references partners sent you {counted(len(resolved) - theirs, 'time')}"
        )
    if withdrawn:
        said.append(
            f"you withdrew {counted(len(withdrawn), 'reference')} you were issued, which "
            "their partners can resolve no more"
        )
    summary = "; ".join(said) + "."
    longest = max(len(resolved), len(issued), len(withdrawn))
    out = RequestTables(summary[0].upper() + summary[1:], shown_of=longest)
    for e in reversed(resolved[-limit:]):
        detail = e.get("detail") or {}
        records = detail.get("records")
        out.resolved.append(
            (
                _iso(e["time"]),
                e["actor"],
                str(detail.get("requester", "")),
                str(detail.get("reference", "")),
                _run(detail),
                e.get("purpose", "") if e["actor"] == me else "(withheld: the partner's)",
                "" if records is None else str(records),
            )
        )
    for e in reversed(issued[-limit:]):
        detail = e.get("detail") or {}
        refs = detail.get("references") or {}
        listed = "; ".join(
            f"{p}: {', '.join(r) if isinstance(r, list) else r}" for p, r in sorted(refs.items())
        )
        out.issued.append((_iso(e["time"]), str(e.get("purpose", "")), _run(detail), listed))
    for e in reversed(withdrawn[-limit:]):
        detail = e.get("detail") or {}
        out.withdrawn.append(
            (
                _iso(e["time"]),
                str(e.get("purpose", "")),
                str(detail.get("reference", "")),
                str(detail.get("partner", "")),
                _run(detail),
                "yes" if detail.get("resolved") else "no",
            )
        )
    return out
