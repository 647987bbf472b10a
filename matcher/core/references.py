"""Request references: from a member's hit to a formal request its partner can act on.

A member that learns a partner holds one of its records (HITS or above) asks the matcher
for a *request reference*: a random, opaque string the matcher maps to (the partner, the
partner's rows that matched). The member quotes it in its formal request; only that
partner can resolve it, to its own rows, which its client turns into its own record ids
on its own machine. The requester learns nothing about the partner's record from it.

Pure rules here; storage/request_store.py keeps references, use cases audit them.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from blindmatch.matcher.domain import Level
from blindmatch.matcher.errors import FailedPrecondition, InvalidArgument

PREFIX = "bmr-"
REFERENCE_RE = re.compile(r"^bmr-[a-z2-7]{26}$")
MAX_ROWS = 64  # rows of one record (ids repeated by keep-all) per reference request
MAX_HITS = 10_000  # hits in one request for references (IssueRequestRefs)


def new_reference() -> str:
    """A fresh reference: 128 random bits, base32, e.g. `bmr-3f...` (30 characters)."""
    text = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
    return PREFIX + text


def check_reference(text: str) -> str:
    """`text` as a well-formed reference (spaces trimmed, any case), or InvalidArgument."""
    reference = text.strip().lower()
    if not REFERENCE_RE.match(reference):
        raise InvalidArgument(
            f"reference: {text[:40]!r} is not a request reference (they look like "
            "bmr- and 26 letters and digits); copy it whole from the request"
        )
    return reference


@dataclass(frozen=True)
class RequestRef:
    """One issued reference, as the matcher keeps it."""

    reference: str
    project: str
    requester: str
    partner: str
    run_id: str
    partner_rows: tuple[int, ...]  # the partner's rows in the upload the run used
    partner_sha256: str  # that upload
    issued: float


def referable(
    links: Iterable[tuple[int, str, int]],
    partner: str,
    levels: Mapping[str, Level],
    project_level: Level,
    gone: Sequence[str] = (),
) -> dict[str, list[int]]:
    """For one record's `links` (own row, partner, partner row), the partners a reference
    may be issued for (only `partner`, when given), each with its matched rows.

    A reference may be issued only where the member learns which of its records the
    partner holds (HITS or above for that partner): never to fish for a hit it was not
    shown. Each refusal says why, in terms of what the member may learn.
    """
    if project_level < Level.HITS:
        raise FailedPrecondition(
            "this project discloses only counts: no record is known to be held by a partner, "
            "so there is nothing to refer to"
        )
    if partner and partner not in levels:
        raise InvalidArgument(f"partner: {partner!r} is not another member of this project")
    found: dict[str, set[int]] = {}
    for _row, p, partner_row in links:
        if (not partner or p == partner) and levels.get(p, Level.COUNT) >= Level.HITS:
            found.setdefault(p, set()).add(partner_row)
    if not found:
        if partner and levels[partner] < Level.HITS:
            raise FailedPrecondition(
                f"{partner} consents only to counts: you learn no record of yours it holds, "
                "so there is nothing to refer to"
            )
        if gone:  # asked of every partner; before tworefs: "check the record id", which was right
            who = gone[0] if len(gone) == 1 else f"{', '.join(gone[:-1])} and {gone[-1]} each"
            raise FailedPrecondition(
                "the latest run found no match for this record that you may learn at the "
                f"partners whose data it still holds; {who} erased its data from this "
                "project since that run (or took no part in it), and a match there went with "
                "it: no reference can be issued for it"
            )
        whom = partner or "any partner"
        raise FailedPrecondition(
            f"the latest run found no match for this record at {whom} that you may learn; "
            "check the record id against your results"
        )
    return {p: sorted(rows) for p, rows in sorted(found.items())}
