"""A query in a two-server project (docs/realtime.md "Queries in a two-server project"): the
matcher, as the combiner C, never holds a CLK, so it searches the partners' current
two-server uploads at S1 and S2.

The querying member encodes its query records as `encode --two-server` does and sends their
shares to S1 and S2 under a query ticket (`tworuns.issue_ticket(query=True)`: a name of its
own, `project/member@tag/tag`, core/tickets.py `query_name`, that replaces none of the
member's uploads), then asks the matcher. For each partner with a current upload the matcher
drives `query_links` over S1 and S2 (`TwoServerSetup.servers`, as a run's; the
partners at once, each on a thread of its own, over the matcher's kept channels): S1
proposes the pairs between the query's records and the partner's by the sealed band keys, S1
and S2 evaluate the link-bit circuit on them, and C learns each proposed pair's link bit, and
for a linking pair its bucket and rows; every pair is fresh (a new name), so S1's and S2's
once-a-pair budget and S1's checks of what C may evaluate are the run's, unchanged. Last,
whatever happened, S1 and S2 are told to forget the query's records (`Forget` of
`member@tag`). The matcher writes nothing of them: the engine (engine.py) records the query
in the query log and audit log as any query. S1 and S2 count the query against their own
query limit (core/querylimit.py) at its first proposal: beyond it the search is refused
RESOURCE_EXHAUSTED, which the engine reports as a quota refusal.

One partner's search (S1's proposal, the circuit on it, the largest partner proposed to
first) is realtime/twopartner.py's; its names are this module's too.

A query's records come to S1 without their band keys first (SharedPart.band_keys_withheld;
docs/protocol.md "A query without band keys"): S1 then proposes only where it compares the
query unblocked against the partner, and refuses a partner it blocks (`band_keys_needed`,
core/exhaustive.py `keys_needed`). Whether S1 blocks a given query against a partner
depends on the partner's records (over a bound: blocked), so the largest partner is proposed
to first, alone (`first_proposed`): refused, the query is refused FAILED_PRECONDITION
starting `band_keys_needed` (costing the member nothing) with no other partner proposed to
and nothing counted at S1 or S2, and the client sends the records again with their keys
under a fresh ticket; proposed, every smaller partner is compared as whole, and the others
are proposed to and searched at once, none waiting on another's proposal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import TypeVar

from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, tickets
from blindmatch.matcher.core.disclose import QueryDisclosure
from blindmatch.matcher.domain import MAX_QUERY_RECORDS, Encoding, Project, counted
from blindmatch.matcher.realtime import twopartner
from blindmatch.matcher.realtime.twopartner import (
    Opened,
    Partner,
    PartnerFound,
    first_proposed,
    keys_needed,
    open_partner,
    partner_upload,
    query_links,
    search_partner,
    searched_partner,
)
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.tworuns import Forgot, TwoServerSetup, not_set_up
from blindmatch.protos.wire import WATCH_COMPARES

log = logging.getLogger("blindmatch.matcher.realtime")
T = TypeVar("T")
U = TypeVar("U")

PARTNERS_AT_ONCE = 8  # partners a query searches at once (each a proposal at S1:
# rpc/twoserver_proposals.py MAX_PROPOSALS)
NO_UPLOAD = "no upload at S1 and S2 (its records are searched once it uploads: `blindmatch upload`)"

# found[i][partner]: (ref, score) of the partner's records that hold queried record i
Found = list[dict[str, list[tuple[str, float]]]]


@dataclass
class Searched:
    """What a two-server query found: per queried record, each partner's linking records (its
    upload's rows as refs `row:N`, with their bucket), the partners searched and those that
    could not be, and what crossed between the parties."""

    found: Found
    partners: list[str]
    not_searched: dict[str, str] = field(default_factory=dict)
    pairs: int = 0
    transcript: linkbit.Transcript = field(default_factory=linkbit.Transcript)
    forgot: list[Forgot] = field(default_factory=list)
    uploads: dict[str, str] = field(default_factory=dict)  # partner -> SHA-256 of the upload


def referenced(store: Store, project: str, member: str, purpose: str,
               answer: QueryDisclosure, searched: Searched) -> QueryDisclosure:  # fmt: skip
    """`answer` with each partner's `row:N` (at `mapping`) replaced by a request reference
    (docs/requests.md): a row alone names no upload, and the partner's is replaced by its
    next upload, so the reference keeps which upload was searched, resolves for that partner
    only (`blindmatch resolve`, refusing another ENCODED folder), and its resolution is
    audited and shown to the querying member, as a batch hit's."""
    hits = [(m.partner, int(ref.removeprefix("row:")), searched.uploads[m.partner])
            for matches in answer.results for m in matches for ref in m.refs]  # fmt: skip
    refs = iter(store.issue_query_refs(project, member, purpose, hits))
    results = [[replace(m, refs=tuple(next(refs) for _ in m.refs)) for m in matches]
               for matches in answer.results]  # fmt: skip
    return replace(answer, results=results)


def query_name(setup: TwoServerSetup, project: str, member: str, ticket: str, now: float) -> str:
    """The query's records' name at S1 and S2, from its ticket: one the matcher signed, for a
    query, to this member of this project."""
    if not ticket:
        raise errors.InvalidArgument(
            "two_server_ticket: required in a two-server project (the query's records go to "
            "S1 and S2 under a query ticket, TwoServerTicket with `query`; `clks` stays empty)"
        )
    try:
        name, _ = tickets.verify(setup.member_key, ticket, now)
    except ValueError as exc:
        raise errors.InvalidArgument(f"two_server_ticket: {exc}") from None
    if not tickets.is_query(name):
        raise errors.InvalidArgument(
            "two_server_ticket: an upload ticket; a query needs a query ticket (TwoServerTicket "
            "with `query`)"
        )
    owner = tickets.owner(name)[:2]
    if owner != (project, member):
        raise errors.PermissionDenied(
            f"two_server_ticket: issued to {owner[1]!r} of {owner[0]!r}, not to {member!r} of "
            f"{project!r}"
        )
    return name


def check_records(records: int) -> None:
    if not 0 < records <= MAX_QUERY_RECORDS:
        raise errors.InvalidArgument(
            f"two_server_records: {records}; the query's records at S1 and S2, 1 to "
            f"{MAX_QUERY_RECORDS}"
        )


def search(
    store: Store,
    setup: TwoServerSetup | None,
    project: Project,
    member: str,
    encoding: Encoding,
    ticket: str,
    records: int,
    watched: Callable[[str], bool] = lambda name: False,
    claim: Callable[[str, str], bool] | None = None,
) -> Searched:
    """Every partner's current upload searched for the query's `records` records (at S1 and
    S2 under `ticket`'s name), then the query's records forgotten at both. A partner without
    an upload, or whose upload is not whole at S1 and S2, is `not_searched` (why); S1 or S2
    down fails the query naming it (Unavailable). `claim(partner, upload_id)`: a catch-up
    query's (twowatch.py `CatchUp`), False for an upload its watch compares instead."""
    if setup is None:
        raise not_set_up("query")
    name = query_name(setup, project.name, member, ticket, time.time())
    check_records(records)
    if watched(name):  # a query would have S1 and S2 forget an open watch's records
        raise errors.InvalidArgument(
            "two_server_ticket: an open watch's; a query sends its records under a query "
            "ticket of its own"
        )
    try:
        out = _search(store, setup, project, member, encoding, name, records, claim)
    finally:
        # The query's records go from S1 and S2 whatever happened (a server that cannot be
        # reached holds them in memory only, until it restarts).
        forgot = setup.forget(project.name, name.split("/")[1])
    out.forgot = forgot
    log.info(
        "%s/%s: a two-server query of %s: %s searched, %d not, %d pairs "
        "through the circuit, %d rounds", project.name, member, counted(records, "record"),
        counted(len(out.partners), "partner"),
        len(out.not_searched), out.pairs, out.transcript.rounds,
    )  # fmt: skip
    return out


def forget_refused(
    setup: TwoServerSetup | None, project: str, member: str, ticket: str,
    watched: Callable[[str], bool],
) -> None:  # fmt: skip
    """A query refused before its search (its purpose, its records, the member's quota): S1
    and S2 forget the records it sent them, if its ticket is this member's and no open
    watch's (never raising)."""
    if setup is None:
        return
    try:
        name = query_name(setup, project, member, ticket, time.time())
    except errors.ServiceError:
        return  # no records of this member's under it to forget
    if not watched(name):
        setup.forget(project, name.split("/")[1])


def _partners(store: Store, project: Project, member: str, encoding: Encoding,
              out: Searched, claim: Callable[[str, str], bool] | None = None,
              ) -> list[Partner]:  # fmt: skip
    """The partners to search (each with a current upload whose encoding is the query's);
    those without one named in `out.not_searched`, and so are those whose upload a catch-up
    query's watch compares (`claim` False)."""
    uploads = store.current_uploads(project.name)
    found = []
    for partner in sorted(store.members(project.name)):
        if partner == member:
            continue
        p = partner_upload(store, partner, uploads.get(partner), encoding)
        if p is None:
            out.not_searched[partner] = NO_UPLOAD
        elif claim is not None and not claim(partner, uploads[partner].id):
            out.not_searched[partner] = (
                f"{WATCH_COMPARES} (its upload completed after the watch was registered: the "
                "watch tells its matches)"
            )
        else:
            out.uploads[partner] = p.sha256
            found.append(p)
    return found


def _at_once(fn: Callable[..., T], items: list[U], *args: object) -> list[T]:
    """`fn(*args, item)` for each item, at once (PARTNERS_AT_ONCE at most); the first
    item's error, in order."""
    if len(items) < 2:
        return [fn(*args, item) for item in items]
    with ThreadPoolExecutor(min(len(items), PARTNERS_AT_ONCE), "bm-twoquery") as pool:
        jobs = [pool.submit(fn, *args, item) for item in items]
        wait(jobs)
    errors_ = [j.exception() for j in jobs]
    if any(e is not None for e in errors_):  # the others' servers closed before raising
        for j in jobs:
            got: object = j.result() if j.exception() is None else None
            if isinstance(got, Opened):
                got.close()
    return [j.result() for j in jobs]


def _search(
    store: Store,
    setup: TwoServerSetup,
    project: Project,
    member: str,
    encoding: Encoding,
    name: str,
    records: int,
    claim: Callable[[str, str], bool] | None = None,
) -> Searched:
    out = Searched([{} for _ in range(records)], [])
    partners = _partners(store, project, member, encoding, out, claim)
    # The largest partner proposed to first, alone: refused for want of band keys, nothing
    # else is proposed or counted (`first_proposed`). Then the partners at once
    # (PARTNERS_AT_ONCE at most): each the rest of its own proposal at S1 and its own
    # batches, so one partner's wait on S1 and S2 overlaps another's.
    opened, rest = first_proposed(setup, project.threshold, name, records, partners, True)

    def searched(item: Opened | Partner) -> PartnerFound:
        if isinstance(item, Opened):
            return searched_partner(item)
        return search_partner(setup, project.threshold, name, records, item, True)

    items: list[Opened | Partner] = [*opened, *rest]
    got_by = {(o.partner.member if isinstance(o, Opened) else o.member): got
              for o, got in zip(items, _at_once(searched, items), strict=True)}  # fmt: skip
    results = [got_by[p.member] for p in partners]
    keyless = [(p, got) for p, got in zip(partners, results, strict=True) if got.keys]
    if keyless:  # a smaller partner S1 blocks (not by its records alone): sent again, with keys
        raise twopartner.keys_refusal(keyless[0][0].member, keyless[0][1].keys)
    for p, got in zip(partners, results, strict=True):
        for (a, b), n in got.transcript.sent.items():
            out.transcript.count(a, b, n)
        out.transcript.rounds += got.transcript.rounds
        out.transcript.pairs += got.transcript.pairs
        if got.links is None:
            out.not_searched[p.member] = got.why
            continue
        out.partners.append(p.member)
        out.pairs += got.pairs
        links = got.links
        for row, partner_row, score in zip(links.rec0.tolist(), links.rec1.tolist(),
                                           links.sims.tolist(), strict=True):  # fmt: skip
            out.found[row].setdefault(p.member, []).append((f"row:{partner_row}", score))
    for per_partner in out.found:
        for hits in per_partner.values():
            hits.sort(key=lambda h: -h[1])
    return out


__all__ = [
    "NO_UPLOAD",
    "Opened",
    "Partner",
    "PartnerFound",
    "Searched",
    "check_records",
    "first_proposed",
    "forget_refused",
    "keys_needed",
    "open_partner",
    "partner_upload",
    "query_links",
    "query_name",
    "referenced",
    "search",
    "search_partner",
    "searched_partner",
]
