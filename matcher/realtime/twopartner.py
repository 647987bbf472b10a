"""One partner's current upload searched for a two-server query's (or watch's) records at S1
and S2 (docs/realtime.md "Queries in a two-server project"; realtime/twoquery.py drives a
query over every partner, realtime/twowatch.py a watch over each later upload).

`open_partner` has S1 propose the pairs between the query's records and the partner's upload
(refused `band_keys_needed` where S1 blocks the query and holds its records without band keys:
`Opened.keys`), `searched_partner` runs the link-bit circuit on the proposal (`query_links`,
its parts at once), and `first_proposed` proposes to the largest partner first, alone: S1
blocks a given query by the partner's records (core/exhaustive.py `run_cap`), so a query
refused there is refused with nothing else proposed or counted, and one proposed there is
compared whole against every smaller partner.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, partpath, tworun
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.twoserver import Combiner
from blindmatch.matcher.domain import (
    NO_RULE,
    RECORDS_NOT_HELD,
    Encoding,
    Rule,
    Upload,
    counted,
)
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.tworuns import TwoServerSetup
from blindmatch.protos.wire import (
    BAND_KEYS_NEEDED,
    BAND_KEYS_REFUSED,
    BLOCKED_PARTNER_METADATA,
    fingerprint_id,
)


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
    transcript: linkbit.Transcript, standing: bool = False,
) -> tuple[Candidates, int]:  # fmt: skip
    """`query_links` once S1 has proposed (`described`), each part by blocks or by pairs
    (core/partpath.py `by_shape`, as a run's), or a query's whole part against its partner
    converted once where `standing` (`partpath.for_query`)."""
    # (over gRPC, where the matcher keeps its conversions: rpc/twoserver_standdeal.py)
    kept = getattr(servers, "conversions", None) is not None
    parts = (partpath.for_query(described, servers.records, combiner.rule)  # type: ignore[attr-defined]
             if standing and kept else partpath.by_shape(described, combiner.rule))  # fmt: skip
    found = _parts_links(servers, combiner, parts, transcript)
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
    standing: bool = False  # a query's (not a watch's): its whole part may go standing

    def close(self) -> None:
        """The servers' channels closed (once)."""
        close = getattr(self.servers, "close", None)
        if close is not None and not self.closed:
            self.closed = True
            close()


def open_partner(
    setup: TwoServerSetup, threshold: float, name: str, records: int, p: Partner,
    standing: bool = False,
) -> Opened:  # fmt: skip
    """S1's proposal between the query's records and partner `p`'s upload (`standing`: a
    query's, whose whole part may go against the partner converted once)."""
    combiner = Combiner(None, threshold, clks=len(p.bits), rule=p.rule)
    servers = setup.servers([name, p.name], [records, p.records], list(p.bits))
    out = Opened(p, servers, combiner, name, standing=standing)
    try:
        out.described = servers.propose(combiner.lacking(), combiner.cutoffs, combiner.rule)
    except errors.FailedPrecondition as exc:
        if BAND_KEYS_REFUSED in str(exc):  # S1's --query-band-keys refuse: no keys asked
            out.close()
            raise keys_refused(str(exc), records, p) from None
        if BAND_KEYS_NEEDED in str(exc):
            out.keys = str(exc)
        else:
            out.why = _not_whole(exc, name, p, out)
    except BaseException:
        out.close()
        raise
    return out


class KeysRefused(errors.FailedPrecondition):
    """S1 refuses a query (or watch) its caps block, asking for no band keys (its
    `--query-band-keys refuse`): the member told why, the partner named."""


def keys_refused(why: str, records: int, p: Partner) -> KeysRefused:
    """S1's refusal `why` (core/exhaustive.py `keys_refused`) with the partner named."""
    over = why.split(" is over S1's ", 1)[-1]
    return KeysRefused(
        f"this query of {counted(records, 'record')} against {p.member} "
        f"({counted(p.records, 'record')}) is over S1's {over}"
    )


def _not_whole(exc: errors.FailedPrecondition, name: str, p: Partner, opened: Opened) -> str:
    """Why partner `p` is not searched: its upload is not whole at S1 and S2; else raised
    (its servers closed), as the query's records' absence or as it came."""
    if f"holds no upload of {p.name!r}" in str(exc):
        return f"its upload is not whole at S1 and S2 ({exc}); {p.member} must upload again"
    opened.close()
    if f"holds no upload of {name!r}" in str(exc):
        raise errors.FailedPrecondition(
            f"{RECORDS_NOT_HELD} ({exc}): send them again under a fresh query ticket"
        ) from None
    raise exc


def searched_partner(opened: Opened) -> PartnerFound:
    """An opened partner's links (the circuit on S1's proposal), its servers closed after."""
    out = PartnerFound(why=opened.why or opened.keys, keys=opened.keys)
    try:
        if opened.described is not None:
            out.links, out.pairs = proposed_query_links(
                opened.servers,
                opened.combiner,
                opened.described,
                out.transcript,
                opened.standing,
            )
    except errors.FailedPrecondition as exc:
        out.links, out.pairs = None, 0
        out.why = _not_whole(exc, opened.servers_name, opened.partner, opened)
    finally:
        opened.close()
    return out


def search_partner(
    setup: TwoServerSetup, threshold: float, name: str, records: int, p: Partner,
    standing: bool = False,
) -> PartnerFound:  # fmt: skip
    """One partner's upload searched for the query's records at S1 and S2 (`standing`: a
    query's, not a watch's)."""
    return searched_partner(open_partner(setup, threshold, name, records, p, standing))


def keys_needed(opened: list[Opened]) -> None:
    """Refuse the query where S1 refused a partner for want of its band keys
    (`band_keys_needed`): nothing searched, every partner's proposal closed."""
    refused = [o for o in opened if o.keys]
    if not refused:
        return
    for o in opened:
        o.close()
    raise keys_refusal(refused[0].partner.member, refused[0].keys)


def keys_refusal(partner: str, why: str) -> errors.FailedPrecondition:
    """The refusal, naming `partner` in its trailing metadata too (as a watch's end does: the
    client's `--allow-band-keys` refusal names it)."""
    exc = errors.FailedPrecondition(
        f"{BAND_KEYS_NEEDED}: S1 blocks this query against {partner}'s upload ({why}), so it "
        "needs the query's band keys, which it was sent without: send the records again with "
        "them under a fresh query ticket (`blindmatch query --allow-band-keys` does so)"
    )
    exc.trailing = ((BLOCKED_PARTNER_METADATA, partner),)
    return exc


def first_proposed(
    setup: TwoServerSetup,
    threshold: float,
    name: str,
    records: int,
    partners: list[Partner],
    standing: bool = False,
) -> tuple[list[Opened], list[Partner]]:
    """S1's proposal against the largest partner first, alone (the next largest where its
    upload is not whole at S1 and S2): S1 blocks a given query against a partner by the
    partner's records (core/exhaustive.py `run_cap`), so a query it compares whole against the
    largest it compares whole against every one, and a query it refuses for want of band
    keys is refused here (`keys_needed`) with no other partner proposed to and nothing
    counted. (the partners opened, the largest proposed last; those left, largest first)"""
    ordered = sorted(partners, key=lambda p: -p.records)
    opened: list[Opened] = []
    try:
        for k, p in enumerate(ordered):
            opened.append(open_partner(setup, threshold, name, records, p, standing))
            keys_needed(opened)
            if opened[-1].described is not None:
                return opened, ordered[k + 1 :]
    except BaseException:  # those opened before (not whole) closed too
        for o in opened:
            o.close()
        raise
    return opened, []


__all__ = [
    "PARTS",
    "KeysRefused",
    "Opened",
    "Partner",
    "PartnerFound",
    "first_proposed",
    "keys_needed",
    "keys_refusal",
    "keys_refused",
    "open_partner",
    "partner_upload",
    "proposed_query_links",
    "query_links",
    "search_partner",
    "searched_partner",
]
