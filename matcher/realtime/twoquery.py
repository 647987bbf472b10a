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

A query's records come to S1 without their band keys first (SharedPart.band_keys_withheld;
docs/protocol.md "A query without band keys"): S1 then proposes only where it compares the
query unblocked against the partner, and refuses a partner it blocks (`band_keys_needed`,
core/exhaustive.py `keys_needed`). Whether S1 blocks a query against a partner depends on
the partner's records alone (over its bound: blocked), so the largest partner is proposed
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
from blindmatch.matcher.core import linkbit, tickets, tworun
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.disclose import QueryDisclosure
from blindmatch.matcher.core.twoserver import Combiner
from blindmatch.matcher.domain import MAX_QUERY_RECORDS, NO_RULE, Encoding, Project, Rule, Upload
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.tworuns import Forgot, TwoServerSetup, not_set_up
from blindmatch.protos.wire import BAND_KEYS_NEEDED, fingerprint_id

log = logging.getLogger("blindmatch.matcher.realtime")
T = TypeVar("T")
U = TypeVar("U")

PARTNERS_AT_ONCE = 8  # partners a query searches at once (each a proposal at S1:
# rpc/twoserver_proposals.py MAX_PROPOSALS)
NO_UPLOAD = "no upload at S1 and S2 (its records are searched once it uploads: `blindmatch upload`)"

# found[i][partner]: (ref, score) of the partner's records that hold queried record i
Found = list[dict[str, list[tuple[str, float]]]]


def query_links(
    servers: tworun.Servers, combiner: Combiner, transcript: linkbit.Transcript | None = None
) -> tuple[Candidates, int]:
    """A query's links (docs/realtime.md "Queries in a two-server project"): S1 proposes the
    pairs between the query's records (member 0) and one partner's upload (member 1), and C
    learns each proposed pair's link bit, and a linking pair's bucket and rows, as in `drive`;
    no solving (each queried record is answered on its own, as a CLK-mode query is) and so no
    extras. (the links, how many pairs S1 proposed)"""
    transcript = transcript if transcript is not None else linkbit.Transcript()
    described = servers.propose(combiner.lacking(), combiner.cutoffs, combiner.rule)
    return proposed_query_links(servers, combiner, described, transcript)


def proposed_query_links(
    servers: tworun.Servers, combiner: Combiner, described: list[tworun.Proposed],
    transcript: linkbit.Transcript,
) -> tuple[Candidates, int]:  # fmt: skip
    """`query_links` once S1 has proposed (`described`)."""
    found = _parts_links(servers, combiner, described, transcript)
    return (merge(found) if found else Candidates.empty()), sum(p.pairs for p in described)


# The parts of a query's proposal (a CLK each) at once: each its own batches, so one part's
# rounds between S1 and S2 overlap the other's (each part's calls are the same as one after
# the other; S1 and S2 check and count each batch as it comes). Its own pool: a partner's
# search (the `_search` pool) waits on its parts here, which submit nothing further.
PARTS = ThreadPoolExecutor(16, "bm-twoquery-part")


def _parts_links(
    servers: tworun.Servers, combiner: Combiner, described: list[tworun.Proposed],
    transcript: linkbit.Transcript,
) -> list[Candidates]:  # fmt: skip
    """Each part's links (`tworun.proposed_links`), the parts with pairs at once; what
    crossed counted in `transcript`."""
    if sum(1 for p in described if p.pairs) < 2:
        seconds: dict[str, float] = {}
        return [tworun.proposed_links(servers, combiner, index, part, transcript, seconds)
                for index, part in enumerate(described)]  # fmt: skip
    own = [linkbit.Transcript() for _ in described]
    jobs = [PARTS.submit(tworun.proposed_links, servers, combiner, index, part, own[index], {})
            for index, part in enumerate(described)]  # fmt: skip
    wait(jobs)
    for got in own:
        for (a, b), n in got.sent.items():
            transcript.count(a, b, n)
        transcript.rounds += got.rounds
        transcript.pairs += got.pairs
    return [j.result() for j in jobs]  # the first part's error, in part order


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
) -> Searched:
    """Every partner's current upload searched for the query's `records` records (at S1 and
    S2 under `ticket`'s name), then the query's records forgotten at both. A partner without
    an upload, or whose upload is not whole at S1 and S2, is `not_searched` (why); S1 or S2
    down fails the query naming it (Unavailable)."""
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
        out = _search(store, setup, project, member, encoding, name, records)
    finally:
        # The query's records go from S1 and S2 whatever happened (a server that cannot be
        # reached holds them in memory only, until it restarts).
        forgot = setup.forget(project.name, name.split("/")[1])
    out.forgot = forgot
    log.info(
        "%s/%s: a two-server query of %d record(s): %d partner(s) searched, %d not, %d pairs "
        "through the circuit, %d rounds", project.name, member, records, len(out.partners),
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


@dataclass(frozen=True)
class Partner:
    """One partner's current upload to search: its name at S1 and S2, records, widths, rule."""

    member: str
    name: str
    records: int
    bits: tuple[int, ...]
    rule: Rule
    sha256: str = ""  # the upload's (a mapping answer's request references name it)


@dataclass
class PartnerFound:
    links: Candidates | None = None  # None: not searched (`why`)
    pairs: int = 0
    why: str = ""
    keys: str = ""  # S1 refused it for want of the query's band keys (`why` too)
    transcript: linkbit.Transcript = field(default_factory=linkbit.Transcript)


def partner_upload(store: Store, partner: str, upload: Upload | None,
                   encoding: Encoding) -> Partner | None:  # fmt: skip
    """`partner`'s `upload` to search for records of `encoding` (its name at S1 and S2,
    records, widths and the rule both carry); None without a two-server upload;
    FailedPrecondition for another encoding than the query's."""
    part = store.two_server_part(upload.id) if upload is not None else None
    if upload is None or part is None:
        return None
    partner_name, bits = part
    if encoding.clk_bits != sum(bits) or encoding.fingerprint != upload.fingerprint:
        raise errors.FailedPrecondition(
            f"clk_bits/fingerprint: the query's CLKs are {encoding.clk_bits} bits under "
            f"{fingerprint_id(encoding.fingerprint)}, {partner}'s upload's {sum(bits)} under "
            f"{fingerprint_id(upload.fingerprint)}: encode the query with the project's "
            "schema and secret"
        )
    rule = store.score_rule(upload.id)
    return Partner(partner, partner_name, upload.record_count, tuple(bits),
                   rule if rule == encoding.rule else NO_RULE, upload.sha256)  # fmt: skip


def _partners(store: Store, project: Project, member: str, encoding: Encoding,
              out: Searched) -> list[Partner]:  # fmt: skip
    """The partners to search (each with a current upload whose encoding is the query's);
    those without one named in `out.not_searched`."""
    uploads = store.current_uploads(project.name)
    found = []
    for partner in sorted(store.members(project.name)):
        if partner == member:
            continue
        p = partner_upload(store, partner, uploads.get(partner), encoding)
        if p is None:
            out.not_searched[partner] = NO_UPLOAD
        else:
            out.uploads[partner] = p.sha256
            found.append(p)
    return found


@dataclass
class Opened:
    """One partner's search proposed at S1 (`described`), or not searched (`why`), or
    refused for want of the query's band keys (`keys`: S1's refusal)."""

    partner: Partner
    servers: tworun.Servers
    combiner: Combiner
    servers_name: str  # the query's records' name at S1 and S2
    described: list[tworun.Proposed] | None = None
    why: str = ""
    keys: str = ""
    closed: bool = False

    def close(self) -> None:
        """The servers' channels closed (once)."""
        close = getattr(self.servers, "close", None)
        if close is not None and not self.closed:
            self.closed = True
            close()


def open_partner(
    setup: TwoServerSetup, threshold: float, name: str, records: int, p: Partner
) -> Opened:
    """S1's proposal between the query's records and partner `p`'s upload."""
    combiner = Combiner(None, threshold, clks=len(p.bits), rule=p.rule)
    servers = setup.servers([name, p.name], [records, p.records], list(p.bits))
    out = Opened(p, servers, combiner, name)
    try:
        out.described = servers.propose(combiner.lacking(), combiner.cutoffs, combiner.rule)
    except errors.FailedPrecondition as exc:
        if BAND_KEYS_NEEDED in str(exc):
            out.keys = str(exc)
        else:
            out.why = _not_whole(exc, name, p, out)
    except BaseException:
        out.close()
        raise
    return out


def _not_whole(exc: errors.FailedPrecondition, name: str, p: Partner, opened: Opened) -> str:
    """Why partner `p` is not searched: its upload is not whole at S1 and S2; else raised
    (its servers closed), as the query's records' absence or as it came."""
    if f"holds no upload of {p.name!r}" in str(exc):
        return f"its upload is not whole at S1 and S2 ({exc}); {p.member} must upload again"
    opened.close()
    if f"holds no upload of {name!r}" in str(exc):
        raise errors.FailedPrecondition(
            f"the query's records are not at S1 and S2 ({exc}): send them again under "
            "a fresh query ticket"
        ) from None
    raise exc


def searched_partner(opened: Opened) -> PartnerFound:
    """An opened partner's links (the circuit on S1's proposal), its servers closed after."""
    out = PartnerFound(why=opened.why or opened.keys, keys=opened.keys)
    try:
        if opened.described is not None:
            out.links, out.pairs = proposed_query_links(
                opened.servers, opened.combiner, opened.described, out.transcript
            )
    except errors.FailedPrecondition as exc:
        out.links, out.pairs = None, 0
        out.why = _not_whole(exc, opened.servers_name, opened.partner, opened)
    finally:
        opened.close()
    return out


def search_partner(
    setup: TwoServerSetup, threshold: float, name: str, records: int, p: Partner
) -> PartnerFound:
    """One partner's upload searched for the query's records at S1 and S2."""
    return searched_partner(open_partner(setup, threshold, name, records, p))


def keys_needed(opened: list[Opened]) -> None:
    """Refuse the query where S1 refused a partner for want of its band keys
    (`band_keys_needed`): nothing searched, every partner's proposal closed."""
    refused = [o for o in opened if o.keys]
    if not refused:
        return
    for o in opened:
        o.close()
    raise _keys_refusal(refused[0].partner.member, refused[0].keys)


def _keys_refusal(partner: str, why: str) -> errors.FailedPrecondition:
    return errors.FailedPrecondition(
        f"{BAND_KEYS_NEEDED}: S1 blocks this query against {partner}'s upload ({why}), so it "
        "needs the query's band keys, which it was sent without: send the records again with "
        "them under a fresh query ticket (`blindmatch query` does so)"
    )


def first_proposed(
    setup: TwoServerSetup, threshold: float, name: str, records: int, partners: list[Partner]
) -> tuple[list[Opened], list[Partner]]:
    """S1's proposal against the largest partner first, alone (the next largest where its
    upload is not whole at S1 and S2): S1 blocks a query against a partner by the partner's
    records alone (core/exhaustive.py `run_cap`), so a query it compares whole against the
    largest it compares whole against every one, and a query it refuses for want of band
    keys is refused here (`keys_needed`) with no other partner proposed to and nothing
    counted. (the partners opened, the largest proposed last; those left, largest first)"""
    ordered = sorted(partners, key=lambda p: -p.records)
    opened: list[Opened] = []
    for k, p in enumerate(ordered):
        opened.append(open_partner(setup, threshold, name, records, p))
        keys_needed(opened)
        if opened[-1].described is not None:
            return opened, ordered[k + 1 :]
    return opened, []


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
) -> Searched:
    out = Searched([{} for _ in range(records)], [])
    partners = _partners(store, project, member, encoding, out)
    # The largest partner proposed to first, alone: refused for want of band keys, nothing
    # else is proposed or counted (`first_proposed`). Then the partners at once
    # (PARTNERS_AT_ONCE at most): each the rest of its own proposal at S1 and its own
    # batches, so one partner's wait on S1 and S2 overlaps another's.
    opened, rest = first_proposed(setup, project.threshold, name, records, partners)

    def searched(item: Opened | Partner) -> PartnerFound:
        if isinstance(item, Opened):
            return searched_partner(item)
        return search_partner(setup, project.threshold, name, records, item)

    items: list[Opened | Partner] = [*opened, *rest]
    got_by = {(o.partner.member if isinstance(o, Opened) else o.member): got
              for o, got in zip(items, _at_once(searched, items), strict=True)}  # fmt: skip
    results = [got_by[p.member] for p in partners]
    keyless = [(p, got) for p, got in zip(partners, results, strict=True) if got.keys]
    if keyless:  # a smaller partner S1 blocks (not by its records alone): sent again, with keys
        raise _keys_refusal(keyless[0][0].member, keyless[0][1].keys)
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
    "query_name",
    "referenced",
    "search",
    "search_partner",
    "searched_partner",
]
