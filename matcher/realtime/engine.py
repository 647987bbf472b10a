"""Real-time hit/no-hit: instant queries against standing indexes, watches, quotas.

How a query is answered, in order (`Realtime.query`):

1. check the request: a purpose, CLKs of a valid length, and the project's CLK length
   and (schema, secret) fingerprint (`core.encodings.check_compatible`; admission.py);
2. count its records against the member's rate limit and quota (`core.quota.QueryMeter`;
   given back if the search in 3 fails: a query not answered costs nothing; one refused
   `UNAVAILABLE` is recorded as in 5, refused `unavailable: ...`);
3. search every partner's standing index (indexes.py; `core.segment`: LSH look-up plus
   exact Dice; `core.fallbackindex`: the batch runs' rule for an index with a fallback
   CLK), in one pass with the queries that arrive meanwhile (lookups.py), or, with
   look-up servers, every server's shards of them in parallel, merged (shards.py);
4. reduce what was found to what each partner allows: the lesser of the project's level
   and the partner's consent, read off the one disclosure ladder (`core.disclose`);
5. record the query, answered or refused, with its purpose, in the audit log, durably,
   before the answer leaves (a group commit: one fsync for the queries that arrive
   together), then in the server log and the query log (querylog.py). A query whose entry
   cannot be written (a full disk) is refused, not answered.

Steps 4 and 5 of the queries looked up in one pass are done by the thread that ran the
pass, once it has handed the look-ups on to the next pass: their records go to the audit
log in one write, and each waiting query is woken once, answered and recorded
(lookups.py), rather than once for its look-up and again for its audit entry.

Query encodings are used for the search and dropped with the reply: nothing of them is
written anywhere. Watches (watches.py) keep their CLKs in memory only while the member's
stream is open, and only in projects where the operator allowed watching.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from blindmatch.matcher import errors
from blindmatch.matcher.core import audit
from blindmatch.matcher.core.disclose import (
    QueryDisclosure,
    disclose_query,
    effective_level,
    effective_levels,
)
from blindmatch.matcher.core.quota import QueryMeter
from blindmatch.matcher.core.segment import Hits
from blindmatch.matcher.domain import (
    DAY,
    QUERY,
    TWO_SERVER,
    WATCH,
    WATCHING_OFF,
    Encoding,
    IndexPuts,
    Level,
    Project,
    QueryRecord,
)
from blindmatch.matcher.realtime import twoahead, twoquery
from blindmatch.matcher.realtime.admission import Admission
from blindmatch.matcher.realtime.indexes import ChangeSummary, StandingIndexes
from blindmatch.matcher.realtime.lookups import Lookups
from blindmatch.matcher.realtime.querylog import QueryLog
from blindmatch.matcher.realtime.shards import RemoteLookups
from blindmatch.matcher.realtime.twoforget import RETRY_WAITS, LeftRecords
from blindmatch.matcher.realtime.twounclaimed import UnclaimedTickets
from blindmatch.matcher.realtime.twowatch import TwoServerWatches
from blindmatch.matcher.realtime.watches import Notification, Watch, Watches
from blindmatch.matcher.storage.index_store import IndexStore
from blindmatch.matcher.storage.sqlite import refuse_damaged
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.tworuns import TwoServerSetup

# How often an open watch looks whether its stream is still open.
WATCH_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class QueryResult:
    disclosed: QueryDisclosure
    partners: list[str]  # whose standing indexes (two-server: current uploads) were searched
    level: Level  # the project's disclosure level
    not_searched: dict[str, str] = field(default_factory=dict)  # partner -> why


# A CLK project's partner that keeps no standing index: named, as a two-server partner with no
# upload is, so that an answer without it is never read as "it does not hold the person".
NO_INDEX = "no standing index (its records are searched once it keeps one: `blindmatch index sync`)"


def takes_clks(project: Project) -> Project:
    """`project`, refused FAILED_PRECONDITION in two-server mode: its matcher never holds a
    CLK, and standing indexes are CLKs (docs/operations.md); its queries and watches are
    answered over S1 and S2 instead (twoquery.py, twowatch.py)."""
    if project.mode == TWO_SERVER:
        raise errors.FailedPrecondition(
            f"project {project.name!r} runs in two-server mode: the matcher holds no CLKs, so "
            "it keeps no standing index. `blindmatch query` works: it searches the partners' "
            "latest two-server uploads at S1 and S2 (a partner updates its records by "
            'uploading again; docs/realtime.md "Queries in a two-server project")'
        )
    return project


class Realtime(Admission):
    """Standing indexes (loaded at start-up), queries, limits, watches and their log."""

    def __init__(
        self,
        store: Store,
        data_dir: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        merge_cpus: frozenset[int] | None = None,
        remote: RemoteLookups | None = None,
        two_server: TwoServerSetup | None = None,
        retry_waits: Sequence[float] = RETRY_WAITS,
    ) -> None:
        """`merge_cpus`: where the indexes' background merges run (None: where the
        change that starts one is handled). `remote`: look-up servers hold the indexes'
        searchable shards (shards.py); queries fan out to them, changes are forwarded.
        `retry_waits`: twoforget.py's, between its tries again."""
        self.store = store
        self.index_store = IndexStore(data_dir)
        self.clock = clock
        self.watches = Watches()
        self.meter = QueryMeter()
        # The look-ups of queries that arrive together, in one pass, their records in one
        # audit write (the query log is made below; a query comes only after both).
        self.lookups = Lookups(commit=lambda records: self.query_log.record_all(records))
        self.remote = remote
        self.two_server = two_server  # S1 and S2: two-server projects' queries (twoquery.py)
        try:
            forward = remote.forward if remote is not None else None
            self.indexes = StandingIndexes(store, self.index_store, merge_cpus, forward)
            if remote is not None:  # look-up servers without a data dir are loaded from here
                remote.attach(self.indexes.shard_records)
            for e in self.index_store.logged_queries(self.clock() - DAY):
                if not e.refused:
                    self.meter.seed(e.project, e.member, e.time, e.records)
        except errors.DataLoss as exc:  # a damaged page its opening check did not reach
            self.index_store.close()
            raise refuse_damaged(self.index_store.db.path, [str(exc.__cause__ or exc)]) from exc
        except BaseException:
            self.index_store.close()
            raise
        self.query_log = QueryLog(self.index_store, audit_sink=store.audit.append_all)
        if two_server is not None:  # (closed by `close`: a matcher started again on it)
            two_server.connect()
        # Two-server projects' watches: their records at S1 and S2, compared with each new
        # upload of a partner (twowatch.py).
        self.two_watches = TwoServerWatches(store, two_server, self.watches,
                                            self.query_log.record_all, self.clock)  # fmt: skip
        # What a matcher killed left at S1 and S2: forgotten by both at once, retried
        # (twoforget.py): asked now, waited for (bounded) by server.py.
        self.left = None if two_server is None else LeftRecords(two_server, [
            p for p in store.live_projects() if store.mode_of(p) == TWO_SERVER],
            retry_waits)  # fmt: skip
        if self.left is not None:
            self.left.begin()
        # Query tickets no query or watch claimed: their records forgotten once expired.
        self.unclaimed = UnclaimedTickets(two_server, clock)
        self.unclaimed.start()
        # The partners' conversions for standing queries, started now (twoahead.py).
        twoahead.at_start(store, two_server)

    def query_ticket(self, project: str) -> None:
        """Before a query ticket of `project` is issued (twoforget.py `settle`)."""
        if self.left is not None:
            self.left.settle(project)

    def close(self) -> None:
        if self.two_server is not None:  # a background standing conversion stopped
            self.two_server.close()
        if self.left is not None:
            self.left.close()
        self.unclaimed.close()
        self.two_watches.close()
        self.query_log.close()
        self.index_store.close()
        if self.remote is not None:
            self.remote.close()
        if self.two_server is not None:  # last: the watches' Forget went over them
            self.two_server.disconnect()

    # -- standing indexes --------------------------------------------------------------------

    def change_index(
        self,
        project: str,
        member: str,
        encoding: Encoding,
        puts: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
        client_change_id: str = "",
        check: Callable[[], None] | None = None,
    ) -> tuple[ChangeSummary, bool]:
        """Apply one member's change (audited, durable, then visible to the next query)
        and tell the other members' watches about the records it put. Returns the summary
        and whether the change was a retry of one already stored (acknowledged again).
        `check` runs inside the transaction that announces the change, and may refuse it."""
        takes_clks(self.store.project(project))  # expired: NotFound, like every member call
        # Room for what it puts (twice: SQLite's write-ahead log, then the database), as an
        # upload's, within `serve --min-free-mb` (attackwalk: it was never checked).
        room = (
            self.store.room.claim(2 * put_bytes(puts), "index change")
            if puts
            else contextlib.nullcontext()
        )
        with room:
            summary, put_words, replayed = self.indexes.change(
                project, member, encoding, puts, removes, client_change_id, check
            )
        if put_words is None:  # an empty change, or a retry: nothing happened now
            return summary, replayed
        if puts and self.watches.watching(project, besides=member):
            live = self.store.project(project)
            level = effective_level(live.disclosure, self.store.consents(project).get(member))
            refs = [r for r, _ in puts]
            self.watches.notify(
                live,
                member,
                level,
                refs,
                put_words,
                self.query_log.record_all,
                self.clock,
                fallback_bits=encoding.fallback_bits,
                rule=encoding.rule,
            )
        return summary, False

    def list_index(self, project: str, member: str) -> tuple[int, list[str], list[bytes]]:
        """(clk_bits, refs, digests) of the member's index."""
        self.store.project(project)  # expired: NotFound, like every member call
        return self.indexes.listing(project, member)

    def uploaded(self, project: str, member: str, upload_id: str) -> None:
        """A member's upload completed: in a two-server project, its records are converted
        for standing queries ahead of them (twoahead.py) and compared with the other
        members' open watches (twowatch.py: once so converted), after this returns."""
        try:
            twoahead.uploaded(self.store, self.two_server, project, member, upload_id)
        finally:
            self.two_watches.uploaded(project, member, upload_id)

    def erase_member(self, project: str, member: str) -> int:
        """Forget a member's standing index, on disk and in memory (erasure); its records."""
        return self.indexes.erase_member(project, member)

    def erase_project(self, project: str) -> None:
        """Forget every index, watch and query record of an expired project."""
        self.indexes.erase_project(project)
        self.watches.end_project(project, self.store.why_gone(project))  # expired, or ended

    # -- queries and watches ------------------------------------------------------------------

    def query(
        self,
        project_name: str,
        member: str,
        purpose: str,
        encoding: Encoding,
        clks: bytes,
        *,
        two_server_ticket: str = "",
        records: int = 0,
        catch_up_ticket: str = "",
    ) -> QueryResult:
        """Which partners hold each queried CLK, as far as each partner's level allows. In a
        two-server project: the `records` query records at S1 and S2 under
        `two_server_ticket` (`clks` empty), searched in the partners' current uploads (not
        those the open watch under `catch_up_ticket` compares: twowatch.py `CatchUp`)."""
        project = self.store.project(project_name)
        if project.mode == TWO_SERVER:
            self.unclaimed.claim(project.name, member, two_server_ticket)  # its to forget now
            return self._two_server_query(project, member, purpose, encoding, clks,
                                          two_server_ticket, records, catch_up_ticket)  # fmt: skip
        for field_, value in (("two_server_ticket", two_server_ticket),
                              ("two_server_records", records),  # was ignored (protowalk)
                              ("catch_up_ticket", catch_up_ticket)):  # fmt: skip
            if value:
                raise errors.InvalidArgument(
                    f"{field_}: project {project.name!r} is not a two-server project "
                    "(its queries send CLKs)"
                )
        words = self._check_query(project, purpose, encoding, clks, member)
        taken = self._take_quota(project.name, member, QUERY, purpose, len(words))
        snapshots = self.indexes.snapshots(project.name, besides=member)
        user = audit.current_user()  # this request's, taken on its own thread

        def finish(found: list[dict[str, Hits]]) -> tuple[QueryResult, QueryRecord]:
            consents = self.store.consents(project.name)  # every member's (cached)
            levels = effective_levels(project.disclosure, consents, member, snapshots)
            answer = disclose_query(found, levels)
            record = QueryRecord(
                self.clock(),
                project.name,
                member,
                QUERY,
                purpose,
                len(words),
                records_with_hits=sum(1 for f in found if any(f.values())),
                disclosed={p: answer.levels[p].label for p, n in answer.counts.items() if n},
                user=user,
            )
            unsearched = {p: NO_INDEX for p in consents if p != member and p not in snapshots}
            return QueryResult(answer, list(snapshots), project.disclosure, unsearched), record

        try:
            if self.remote is not None:  # every shard of every partner's index, merged
                mine = partial(self.lookups.search, snapshots, words, project.threshold)
                found = self.remote.search(project.name, list(snapshots), words,
                                           project.threshold, local=mine)  # fmt: skip
            else:
                # Looked up with the queries that arrive together; finished, recorded (one
                # audit write for the pass) and answered by the thread that ran the pass
                # (lookups.py).
                reply: QueryResult = self.lookups.answer(
                    snapshots, words, project.threshold, finish
                )
                return reply
        except errors.Unavailable as exc:  # not answered: it costs nothing, and is audited
            self.meter.refund(project.name, member, len(words), taken)
            self._record_unanswered(project.name, member, purpose, len(words), exc)
            raise
        except BaseException:  # not answered: it costs nothing
            self.meter.refund(project.name, member, len(words), taken)
            raise
        result, record = finish(found)
        self.query_log.record(record)
        return result

    def _two_server_query(
        self,
        project: Project,
        member: str,
        purpose: str,
        encoding: Encoding,
        clks: bytes,
        ticket: str,
        records: int,
        catch_up_ticket: str = "",
    ) -> QueryResult:
        """A two-server project's query (twoquery.py): the same purpose rule, quota, disclosure
        and records as a CLK-mode query's; the search over S1 and S2."""
        catch_up = None
        try:
            self._check_purpose(project, purpose)
            if catch_up_ticket:
                catch_up = self.two_watches.catching_up(project.name, member, catch_up_ticket)
            if clks:
                raise errors.InvalidArgument(
                    f"clks: project {project.name!r} runs in two-server mode: the matcher never "
                    "takes a CLK; the query's records go to S1 and S2 (`blindmatch query` does so)"
                )
            twoquery.check_records(records)
            taken = self._take_quota(project.name, member, QUERY, purpose, records)
        except BaseException:  # refused before its search: S1 and S2 forget its records now
            twoquery.forget_refused(self.two_server, project.name, member, ticket,
                                    self.two_watches.in_use)  # fmt: skip
            raise
        user = audit.current_user()
        try:
            claim = None if catch_up is None else catch_up.claim
            try:
                searched = twoquery.search(self.store, self.two_server, project, member,
                                           encoding, ticket, records, self.two_watches.in_use,
                                           claim)  # fmt: skip
            except BaseException:  # not answered: its watch compares those uploads after all
                if catch_up is not None:
                    catch_up.release()
                raise
        except errors.Unavailable as exc:  # not answered: it costs nothing, and is audited
            self.meter.refund(project.name, member, records, taken)
            self._record_unanswered(project.name, member, purpose, records, exc)
            raise
        except errors.ResourceExhausted as exc:  # S1's or S2's query limit (a quota's), or S1 busy
            self.meter.refund(project.name, member, records, taken)
            self.query_log.record(QueryRecord(self.clock(), project.name, member, QUERY, purpose,
                                              records, refused=str(exc), user=user))  # fmt: skip
            raise
        except BaseException:  # not answered: it costs nothing
            self.meter.refund(project.name, member, records, taken)
            raise
        levels = effective_levels(
            project.disclosure, self.store.consents(project.name), member, searched.partners
        )
        answer = twoquery.referenced(self.store, project.name, member, purpose,
                                     disclose_query(searched.found, levels), searched)  # fmt: skip
        self.query_log.record(
            QueryRecord(
                self.clock(), project.name, member, QUERY, purpose, records,
                records_with_hits=sum(1 for f in searched.found if any(f.values())),
                disclosed={p: answer.levels[p].label for p, n in answer.counts.items() if n},
                user=user,
            )
        )  # fmt: skip
        return QueryResult(answer, searched.partners, project.disclosure, searched.not_searched)

    def watch(
        self, project_name: str, member: str, purpose: str, encoding: Encoding, clks: bytes,
        *, two_server_ticket: str = "", records: int = 0,
    ) -> Watch:  # fmt: skip
        """Register a watch; events arrive when a partner later indexes a match (in a
        two-server project: later uploads one; its `records` records at S1 and S2 under
        `two_server_ticket`, `clks` empty, twowatch.py)."""
        project = self.store.project(project_name)
        user = audit.current_user()
        watch = None
        if project.mode == TWO_SERVER:  # its records at S1 and S2, forgotten if refused
            self.unclaimed.claim(project.name, member, two_server_ticket)
            watch = self.two_watches.open(project, member, purpose, encoding, clks,
                                          two_server_ticket, records, user)  # fmt: skip
        elif two_server_ticket or records:  # records were ignored (protowalk)
            raise errors.InvalidArgument(
                f"{'two_server_ticket' if two_server_ticket else 'two_server_records'}: "
                f"project {project.name!r} is not a two-server project (its watches send CLKs)"
            )
        try:
            if project.name not in self.index_store.allow_watch():
                raise errors.FailedPrecondition(
                    f"{WATCHING_OFF} in project {project.name!r}; the operator allows "
                    "it with `blindmatch admin query-limits --allow-watch`"
                )
            if watch is None:
                words = self._check_query(project, purpose, encoding, clks, member)
                watch = Watch(project.name, member, purpose, words, user=user)
            else:
                self._check_purpose(project, purpose)
            self._take_quota(project.name, member, WATCH, purpose, watch.size)
        except BaseException:
            if watch is not None:
                self.two_watches.forget(watch)
            raise
        self.watches.add(watch)
        self.query_log.record(
            QueryRecord(self.clock(), project.name, member, WATCH, purpose, watch.size, user=user)
        )
        return watch

    def follow(self, watch: Watch, is_active: Callable[[], bool]) -> Iterator[Notification]:
        """A watch's events while `is_active()`; NotFound when the matcher ends the watch."""
        while is_active():
            event = watch.next_event(timeout=WATCH_POLL_SECONDS)
            if watch.ended:
                raise watch.ended_as(watch.ended)
            if event is not None:
                yield event

    def unwatch(self, watch: Watch) -> None:
        """Forget a watch and its CLKs (when its stream ends); a two-server watch's records
        S1 and S2 forget."""
        self.watches.remove(watch)
        if watch.name:
            self.two_watches.forget(watch)


def put_bytes(puts: Sequence[tuple[str, bytes]]) -> int:
    """The bytes of an index change's references and CLKs (IndexPuts's without a copy)."""
    if isinstance(puts, IndexPuts):
        return len(puts.clks) + sum(map(len, puts.refs))
    return sum(len(ref) + len(clk) for ref, clk in puts)
