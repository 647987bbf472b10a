"""A query's and a watch's records in a project in two-server mode (docs/realtime.md
"Queries in a two-server project", "Watching for later matches"): their shares sent to S1 and
S2 under a query ticket (`send_records`; to S1 without band keys first where a query is
concerned: docs/protocol.md "A query without band keys"), then the matcher asked
(`_query`) or watched (`_watch`). Called as `MatcherClient.query` and `MatcherClient.watch`
with a `SharedUpload` in place of CLKs: the one public way to ask or watch in either mode."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blindmatch.client.encoding.sharing import SharedUpload
from blindmatch.client.errors import InputError, MatcherError, RejectedError
from blindmatch.client.remote.channel import translate_errors
from blindmatch.client.remote.convert import query_answer, score_rule, watch_events
from blindmatch.client.remote.model import QueryAnswer, TwoServerTicket, WatchEvent
from blindmatch.client.remote.peers import drop_peer_channels, peer_channel
from blindmatch.client.remote.twoserver import RoleClient, shares_sha256, ticket
from blindmatch.client.words import counted
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos.wire import BAND_KEYS_NEEDED, BLOCKED_PARTNER_METADATA, WATCH_COMPARES

log = logging.getLogger("blindmatch.client")
QUERY_SECONDS = 300.0  # a two-server query: S1 joins each partner's band keys, then the circuit
NO_UPLOAD = "no upload at S1 and S2"  # a partner a query did not search (twoquery.NO_UPLOAD)

if TYPE_CHECKING:
    from blindmatch.client.remote.client import MatcherClient


def send_records(
    client: MatcherClient,
    project: str,
    upload: SharedUpload,
    fingerprint: bytes,
    schema_digest: str,
    rule: tuple[float, float, float] | None,
    s1: str,
    s2: str,
    keys: bool = True,
) -> TwoServerTicket:
    """A query's (or a watch's) records to S1 and S2 under a query ticket (checked against the
    project's uploads first; to S1 without band keys unless `keys`); the ticket. Stopped (a
    Ctrl-C, SIGTERM as `watch` raises it) it returns at once, both uploads ended where they
    were; what reached S1 or S2 the matcher has them forget once the ticket expires unclaimed
    (docs/realtime.md "A query or watch stopped while its records are sent")."""
    widths = [8 * s.shape[1] for s in upload.s2.shares]
    header = pb.UploadHeader(
        project=project, clk_bits=0, record_count=len(upload), fingerprint=fingerprint,
        sha256=shares_sha256(upload.s2.shares), schema_digest=schema_digest,
        rule=score_rule(rule), two_server_bits=widths,
    )  # fmt: skip
    t = ticket(client, project, header, query=True)
    where = {"s1": s1 or t.s1, "s2": s2 or t.s2}
    roles = {role: RoleClient(role, where[role], t.ticket, client.credentials,
                              insecure=client.insecure,
                              channel=peer_channel(client, where[role]),
                              on_wait=client.on_wait)
             for role in ("s1", "s2")}  # fmt: skip
    failed: dict[str, BaseException] = {}

    def send(role: str) -> None:
        try:
            roles[role].upload(t.name, upload, rule, keys)
        except BaseException as exc:  # (its thread's end: told to the caller below)
            failed[role] = exc

    # To S1 and S2 at once (S2's part is small: it waits on S1's), each on a daemon thread,
    # over the channels the client keeps to them: a Ctrl-C or SIGTERM while they are sent
    # closes both channels, which ends both uploads at once, and neither is waited for (nor
    # holds the process at its exit).
    sending = [threading.Thread(target=send, args=(role,), daemon=True,
                                name=f"bm-query-upload-{role}") for role in roles]  # fmt: skip
    try:
        for thread in sending:
            thread.start()
        for thread in sending:
            thread.join()
    except BaseException:
        drop_peer_channels(client)
        raise
    for role in roles:  # S1's error first
        if role in failed:
            raise failed[role]
    return t


@dataclass(frozen=True)
class _Records:
    """A query's or a watch's records and the facts sent with them (`two_server_records`): what
    `_query` and `_watch` share (and a re-opened watch's catch-up query is asked with)."""

    client: MatcherClient
    project: str
    upload: SharedUpload
    clk_bits: int
    fingerprint: bytes
    purpose: str
    schema_digest: str
    rule: tuple[float, float, float] | None
    s1: str
    s2: str
    allow_keys: bool = False  # the caller's allow_band_keys: S1 may be sent the band keys

    def sent(self, keys: bool) -> pb.QueryRequest:
        """The records to S1 and S2 under a fresh query ticket (to S1 with their band keys
        if `keys`, only where the caller allows it), and the request that asks or watches
        with that ticket."""
        if keys and not self.allow_keys:  # refused here: nothing is sent
            raise InputError("band keys: sending a query's or watch's band keys to S1 needs "
                             "allow_band_keys (`--allow-band-keys`)")  # fmt: skip
        t = send_records(self.client, self.project, self.upload, self.fingerprint,
                         self.schema_digest, self.rule, self.s1, self.s2, keys)  # fmt: skip
        widths = [8 * s.shape[1] for s in self.upload.s2.shares]
        return pb.QueryRequest(
            project=self.project, purpose=self.purpose, clk_bits=self.clk_bits,
            fingerprint=self.fingerprint, fallback_bits=widths[1] if len(widths) > 1 else 0,
            rule=score_rule(self.rule), two_server_ticket=t.ticket,
            two_server_records=len(self.upload),
        )  # fmt: skip

    def query(self, with_keys: bool, catch_up: str = "") -> QueryAnswer:
        """`_query` of these records (`with_keys`: with their band keys at once; `catch_up`:
        the catch-up of the open watch under that query ticket, QueryRequest.catch_up_ticket)."""
        client = self.client
        timeout = max(client.timeout, QUERY_SECONDS)
        for keys in (True,) if with_keys else (False, True):
            request = self.sent(keys)
            request.catch_up_ticket = catch_up
            try:
                with translate_errors(client.target):
                    reply = client._stub.Query(request, metadata=client._metadata(),
                                               timeout=timeout)  # fmt: skip
            except RejectedError as exc:
                if keys or BAND_KEYS_NEEDED not in str(exc):
                    raise
                if not self.allow_keys:
                    raise keys_held_back(exc, len(self.upload), blocked_partner(exc)) from None
                continue
            return query_answer(reply)
        raise AssertionError("unreachable: the second try sends the keys")


def two_server_records(
    client: MatcherClient,
    project: str,
    upload: SharedUpload,
    *,
    clk_bits: int,
    fingerprint: bytes,
    purpose: str,
    schema_digest: str = "",
    rule: tuple[float, float, float] | None = None,
    s1: str = "",
    s2: str = "",
    allow_band_keys: bool = False,
) -> _Records:
    """A two-server query's or watch's records (`upload`: `shared_upload` of their CLKs) and
    facts, as `MatcherClient.query` and `MatcherClient.watch` ask or watch them (`_query`,
    `_watch`). `allow_band_keys`: the records may go to S1 with their band keys where S1
    asks for them (default: never; `keys_held_back`)."""
    return _Records(client, project, upload, clk_bits, fingerprint, purpose, schema_digest,
                    rule, s1, s2, allow_band_keys)  # fmt: skip


def keys_held_back(exc: MatcherError, records: int, partner: str, watch: bool = False,
                   ) -> RejectedError:  # fmt: skip
    """The refusal, told to the caller, of a query (or watch) S1 asks the band keys of where
    the caller did not allow them (`allow_band_keys`, `--allow-band-keys`): nothing was sent
    with them (docs/privacy-design.md "S1's band keys: partners of mixed sizes, and
    watches")."""
    what = f"this {'watch' if watch else 'query'} of {records} record{'s' * (records != 1)}"
    error = RejectedError(
        f"{what} against {partner} is over S1's bound: S1 asks for the {what.split()[1]}'s "
        f"band keys, which would show S1 which of {partner}'s records share a keyed band with "
        "them, query after query (a view that re-identified "
        "1.79-3.58% of a stream of single-record queries with 50 known pairs: "
        'docs/privacy-design.md "S1\'s band keys: partners of mixed sizes, and watches"). '
        "Nothing was sent with keys. Rerun with --allow-band-keys to send them, or ask S1's "
        "operator to raise --standing-bytes and --query-whole-pairs."
    )
    error.trailing = exc.trailing
    return error


def _query(asked: _Records) -> QueryAnswer:
    """A query in a project in two-server mode (docs/realtime.md "Queries in a two-server
    project"; `MatcherClient.query` with a `SharedUpload`): the query's records, encoded as
    `encode --two-server` encodes an upload (`shared_upload` of their CLKs, `clk_bits` wide
    with the fallback), go to S1 and S2 under a query ticket (checked against the project's
    uploads first), then the matcher answers which partners' current uploads hold each, and
    has S1 and S2 forget them. The matcher receives no CLK: the header's facts (widths,
    fingerprint, rule) only.

    The records go to S1 without their band keys first: where S1 blocks the query against a
    partner (an upload over its unblocked bound) the matcher refuses it `band_keys_needed`,
    costing nothing, and they go again with their keys under a fresh ticket (docs/protocol.md
    "A query without band keys") where the caller allows it (`allow_band_keys`), else the
    query is refused (`keys_held_back`), nothing sent with keys; a re-opened watch's catch-up
    sends them at once (`_Records.query`)."""
    return asked.query(with_keys=False)


def _watch(
    asked: _Records,
    *,
    timeout: float | None = None,
    on_ready: Callable[[], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    band_keys: bool = False,
) -> Iterator[WatchEvent]:
    """A watch in a project in two-server mode (docs/realtime.md "Watching in a two-server
    project"; `MatcherClient.watch` with a `SharedUpload`): the watched records go to S1 and
    S2 as a query's first try does (`_query`: to S1 without their band keys), then the
    matcher's Watch stream tells of each partner's later upload that holds one of them, as a
    CLK project's watch does; S1 and S2 forget them when the watch ends. Runs until closed;
    the records are sent when the generator is first advanced, and `on_ready` is called once
    the matcher has registered the watch.

    Where S1 would block the watch against a partner's later upload (over its unblocked
    bound), the matcher ends it `band_keys_needed` naming the partner (in its trailing
    metadata `blindmatch-blocked-partner`: `blocked_partner`); where the caller allows band
    keys (`allow_band_keys`; else the watch ends, `keys_held_back`) the watch is then
    opened again with them, and once that one is registered a query of the same
    records (with the keys, the same purpose) searches every partner's current upload, its
    matches yielded as events `caught_up` (every partner's: the ended watch may have missed
    others' uploads too), before the re-opened watch's; a caught-up match of a (record,
    partner) this watch told already is not told again (`untold`). What happened is said to
    `on_notice` (else logged at WARNING): the keys sent and why, and, where the catch-up could
    not be made (a quota, a server down), which partner's upload was not compared. Re-opening
    refused, the generator raises, naming that partner's upload. `band_keys`: send them at
    once (as before 2026-12-05: S1 holds them whatever the partners' sizes; no re-opening;
    refused, InputError, unless `allow_band_keys`)."""
    client, records = asked.client, asked
    notice = on_notice or log.warning
    told: set[tuple[int, str]] = set()  # (record, partner) matches told by this watch
    ticket = ""  # the open watch's query ticket (its catch-up query names it)

    def opened(keys: bool, ready: Callable[[], Iterable[WatchEvent] | None] | None,
               ) -> Iterator[WatchEvent]:  # fmt: skip
        nonlocal ticket
        request = records.sent(keys)
        ticket = request.two_server_ticket
        with translate_errors(client.target):
            stream = client._stub.Watch(request, metadata=client._metadata(), timeout=timeout)
            for event in watch_events(stream, ready):
                if event.index is not None:
                    told.add((event.index, event.partner))
                yield event

    try:
        yield from opened(band_keys, on_ready)
        return
    except RejectedError as exc:
        if band_keys or not needs_band_keys(exc):
            raise
        partner = blocked_partner(exc)
        if not asked.allow_keys:  # the watch ends, nothing sent with keys
            raise keys_held_back(exc, len(asked.upload), partner, watch=True) from None
    notice(
        f"{partner}'s new upload is over S1's unblocked bound, so S1 needs the watched "
        f"records' band keys to compare it: the watch is opened again with them (S1 holds "
        f"them until it ends), and a query of the same records with them catches up on "
        f"{partner}'s upload (and any partner's since), counted against the quota as a query"
    )

    ready = False

    def catch_up() -> Iterator[WatchEvent]:
        nonlocal ready
        ready = True
        try:
            answer = records.query(with_keys=True, catch_up=ticket)
        except Exception as exc:  # the watch goes on; the gap is said, naming the partner
            notice(
                f"NOT COMPARED: {partner}'s upload that needed the band keys (and any "
                f"partner's upload completed before the watch was opened again) was not "
                f"compared with the watched records: the catch-up query failed ({exc}); "
                "the watch goes on for later uploads; query these records (`blindmatch "
                "query`) once that is put right"
            )
            return
        # A partner with no upload has nothing to compare, and one whose upload the watch
        # compares is told by it (QueryRequest.catch_up_ticket); any other is a gap.
        missed = "; ".join(f"{p}: {why}" for p, why in answer.not_searched.items()
                           if not why.startswith((NO_UPLOAD, WATCH_COMPARES)))  # fmt: skip
        if missed:
            notice(f"NOT COMPARED by the catch-up query (the watch goes on): {missed}")
        found = caught_up(answer)
        events = untold(found, told)
        again = len(found) - len(events)
        already = f" ({again} more this watch had told already, not told again)" if again else ""
        notice(f"Caught up on {partner}'s upload: {counted(len(events), 'event')} from the query "
               f"of every partner's current upload{already}; the watch goes on with the band "
               "keys")  # fmt: skip
        yield from events

    try:
        yield from opened(True, catch_up)
    except MatcherError as exc:
        if ready:  # ended later, as any watch may: said as it is
            raise
        raise type(exc)(
            f"{exc} (opening the watch again with its band keys, which {partner}'s new upload "
            f"needed: {partner}'s upload was not compared with the watched records)"
        ) from exc


def needs_band_keys(exc: MatcherError) -> bool:
    """Whether `exc` is a two-server watch's `band_keys_needed` end (twowatch.py
    `keys_needed`): by its trailing metadata, or its text from a matcher that sends none."""
    return BLOCKED_PARTNER_METADATA in exc.trailing or BAND_KEYS_NEEDED in str(exc)


def blocked_partner(exc: MatcherError) -> str:
    """The partner a watch's `band_keys_needed` end names, read from its trailing metadata
    (`blindmatch-blocked-partner`), never from its text: "a partner" where it has none."""
    return exc.trailing.get(BLOCKED_PARTNER_METADATA) or "a partner"


def caught_up(answer: QueryAnswer) -> list[WatchEvent]:
    """A catch-up query's answer as watch events: each (record, partner) it found, and a
    partner at `count` once for each record it holds (as its watch events are)."""
    events = [WatchEvent(m.partner, i, m, caught_up=True)
              for i, matches in enumerate(answer.results) for m in matches]  # fmt: skip
    for partner, n in answer.counts.items():
        if answer.partner_levels.get(partner) == "count":
            events += [WatchEvent(partner, None, None, caught_up=True)] * n
    return events


def untold(events: Iterable[WatchEvent], told: Collection[tuple[int, str]]) -> list[WatchEvent]:
    """The catch-up's `events` less those of a (record, partner) in `told` (the watch told
    that match already, from an earlier upload). A partner at `count` names no record, so its
    events are all kept: which records the earlier ones were about is not known."""
    return [e for e in events if e.index is None or (e.index, e.partner) not in told]


__all__ = [
    "QUERY_SECONDS",
    "blocked_partner",
    "caught_up",
    "keys_held_back",
    "needs_band_keys",
    "send_records",
    "two_server_records",
    "untold",
]
