"""Watches in a two-server project (docs/realtime.md "Watching in a two-server project"): the
matcher, as the combiner C, never holds a CLK, so a watch's records are at S1 and S2 and a
partner's "later match" is a record of its next upload.

The watching member sends its records' shares to S1 and S2 under a query ticket, as a query's
(`project/member@tag/tag`, core/tickets.py `query_name`; S1 and S2 hold them in memory only,
never in their data dirs), then opens the watch with the ticket (engine.py `Realtime.watch`:
the same opt-in, purpose, quota and audit entry as a CLK watch). When a partner's upload
completes at the matcher (its header, the last of its parts: S1 and S2 hold their shares
already), `TwoServerWatches.uploaded` compares each open watch of another member of the
project with that upload, on a thread of its own (the upload's reply does not wait): the
query machinery (twoquery.py `search_partner`: S1's proposal between the watch's records and
the new upload, the link-bit circuit), and each watched record the upload holds is a
notification, disclosed at the partner's level and recorded before it is sent, as a CLK
watch's (watches.py `deliver`). Each such pair is new to S1 and S2 (the upload's name is), so
their once-a-pair budget holds; S1 and S2 count the watch's records against their own query
limit at its first comparison, once (core/querylimit.py; again only once a count has left
their window). Where C converts the upload ahead of the queries (realtime/twoahead.py: a
one-record query against it would go standing), the comparison waits for that conversion,
off the comparing thread (other uploads' comparisons and the upload's reply do not wait),
and then goes standing, as a query does (watchstand: ~2.5x less CPU a pair than by pairs);
by pairs where the conversion failed, was not started or would be turned down as unfit,
where the partner asks for its next upload's ticket first (`release`), and once the wait
reaches `serve --two-server-watch-wait-seconds` (twowait.py); the watches compared are those
open as the upload completed (`_deferred`). When the watch ends (its stream closed, its
token revoked, its member erased, its project expired, the matcher stopping: engine.py
`unwatch`, `close`), S1 and S2 are told to forget its records (`Forget` of `member@tag`);
a matcher killed cannot, so the next one to start has them forget every query's and watch's
records of its projects (twoforget.py).

A comparison that cannot be made ends the watch rather than passing an upload over in
silence: S1 or S2 down (UNAVAILABLE, naming it), S1's or S2's own query limit
(RESOURCE_EXHAUSTED, recorded as `query.refused`), the watch's records gone from S1 or S2
(FAILED_PRECONDITION: open it again under a fresh ticket), S1 still busy (its proposals all in
flight) after BUSY_WAITS (RESOURCE_EXHAUSTED, retryable), S1 blocking the watch against an
upload whose records it holds without their band keys (FAILED_PRECONDITION starting
`band_keys_needed`, the partner named in the trailing metadata `blindmatch-blocked-partner`
too: open it again with them; `MatcherClient.watch` does, reading the partner there). S1 busy is
asked again later, not waited for: the watches S1 was busy for are compared with that upload
again after the next of BUSY_WAITS (`later`: a timer, which puts the comparison back on the
comparing thread), while the comparing thread goes on with the other watches' comparisons
(their notifications are not held back by it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core.disclose import QueryDisclosure, effective_level
from blindmatch.matcher.core.segment import Hits
from blindmatch.matcher.domain import (
    RECORDS_NOT_HELD,
    WATCH,
    WATCH_RECORDS_NOT_HELD,
    Encoding,
    Project,
    QueryRecord,
    counted,
)
from blindmatch.matcher.realtime import twopartner, twoquery
from blindmatch.matcher.realtime.twowait import Waits
from blindmatch.matcher.realtime.watches import Watch, Watches, deliver
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.tworuns import TwoServerSetup, not_set_up
from blindmatch.protos.wire import BAND_KEYS_NEEDED, BLOCKED_PARTNER_METADATA

log = logging.getLogger("blindmatch.matcher.realtime")

Record = Callable[[Sequence[QueryRecord]], None]
Later = Callable[[float, Callable[[], None]], None]  # call a function after seconds
Found = list[tuple[int, Hits]]  # a watch's records an upload holds (record, hits)
WATCHES_AT_ONCE = twoquery.PARTNERS_AT_ONCE  # watches one upload is compared with at once
BUSY_WAITS = (1.0, 5.0, 30.0)  # seconds before asking a busy S1 again (then the watch ends)


# A watch's end where S1 blocks it against `partner`'s new upload (`blocks`: S1's why) and
# holds its records without their band keys: for people; the client reads the partner from
# the trailing metadata BLOCKED_PARTNER_METADATA (`keys_needed`), never from this text.
KEYS_NEEDED = (
    "{needed}: {partner}'s new upload could not be compared with this watch: S1 blocks the "
    "watch against it ({blocks}) and holds the watched records without their band keys; open "
    "it again with them (the records the partner uploaded since are not searched)"
)


def keys_needed(partner: str, blocks: str) -> errors.FailedPrecondition:
    """The watch's end where S1 blocks it against `partner`'s new upload: FAILED_PRECONDITION
    starting `band_keys_needed`, naming `partner` in its trailing metadata too."""
    exc = errors.FailedPrecondition(
        KEYS_NEEDED.format(needed=BAND_KEYS_NEEDED, partner=partner, blocks=blocks)
    )
    exc.trailing = ((BLOCKED_PARTNER_METADATA, partner),)
    return exc


class TwoServerWatches:
    """The two-server watches' side at the matcher: opening, comparing with each new upload,
    forgetting."""

    def __init__(
        self,
        store: Store,
        setup: TwoServerSetup | None,
        watches: Watches,
        record: Record,
        clock: Callable[[], float],
    ) -> None:
        self.store, self.setup, self.watches = store, setup, watches
        self.record, self.clock = record, clock
        # One upload's comparisons at a time, in the order the uploads completed.
        self._pool = ThreadPoolExecutor(1, "bm-twowatch")
        self._lock = threading.Lock()
        self._names: set[str] = set()  # the open watches' names at S1 and S2
        self.compared = 0  # uploads compared with watches (tests, the benchmark)
        self.stood = 0  # of which compared standing, once converted (`_deferred`)
        self.waits = Waits()  # the comparisons waiting for their upload's conversion
        self.retried = 0  # comparisons asked again of a busy S1
        self._timers: set[threading.Timer] = set()  # busy retries waiting (`close` cancels)
        self._closed = False
        # S1's and S2's side of a comparison (twoquery.py; a test's stand-in answers Busy),
        # and how a busy S1's comparisons are asked again later (`_after`: a timer).
        self.search = twoquery.search_partner
        self.later: Later = self._after

    def open(
        self, project: Project, member: str, purpose: str, encoding: Encoding, clks: bytes,
        ticket: str, records: int, user: str,
    ) -> Watch:  # fmt: skip
        """The watch of the `records` records at S1 and S2 under `ticket` (checked: the
        matcher's, a query ticket, this member's of this project, in use by no open watch).
        Its records are forgotten if it is refused after that (`forget`)."""
        if self.setup is None:
            raise not_set_up("watch")
        if clks:
            raise errors.InvalidArgument(
                f"clks: project {project.name!r} runs in two-server mode: the matcher never "
                "takes a CLK; a watch's records go to S1 and S2 under a query ticket "
                "(`MatcherClient.watch` with a `SharedUpload`)"
            )
        name = twoquery.query_name(self.setup, project.name, member, ticket, time.time())
        with self._lock:
            if name in self._names:
                raise errors.InvalidArgument(
                    "two_server_ticket: an open watch's; each watch sends its records under "
                    "a query ticket of its own"
                )
            self._names.add(name)
        empty = np.empty((0, 0), np.uint64)
        watch = Watch(project.name, member, purpose, empty, user=user, name=name,
                      records=records, encoding=encoding)  # fmt: skip
        try:
            twoquery.check_records(records)
        except BaseException:
            self.forget(watch)
            raise
        return watch

    def in_use(self, name: str) -> bool:
        """Whether an open watch's records are under `name` (a query must not forget them)."""
        with self._lock:
            return name in self._names

    def claim(self, watch: Watch, partner: str, upload_id: str) -> bool:
        """Whether `watch`'s records are to be compared with `partner`'s upload `upload_id`
        now, by the watch or by its catch-up query (`catching_up`): the first to ask, once
        an upload. So an upload that completes between a re-opened watch's registration and
        its catch-up query is told by one of them, not both."""
        with self._lock:
            if watch.compared.get(partner) == upload_id:
                return False
            watch.compared[partner] = upload_id
            return True

    def catching_up(self, project: str, member: str, ticket: str) -> CatchUp:
        """The catch-up of `member`'s open watch under the query ticket `ticket`
        (QueryRequest.catch_up_ticket): INVALID_ARGUMENT for a ticket not the matcher's, not
        this member's, FAILED_PRECONDITION where no such watch is open (ended meanwhile)."""
        if self.setup is None:
            raise not_set_up("query")
        try:
            name = twoquery.query_name(self.setup, project, member, ticket, time.time())
        except errors.ServiceError as exc:
            raise type(exc)(f"catch_up_ticket: {exc}".replace("two_server_ticket: ", "")) from None
        for watch in self.watches.of(project, besides=""):
            if watch.name == name and watch.member == member:
                return CatchUp(self, watch)
        raise errors.FailedPrecondition(
            "catch_up_ticket: no open watch of yours under it (ended?): a catch-up query is "
            "asked for a watch that is open"
        )

    def uploaded(self, project: str, member: str, upload_id: str) -> None:
        """`member`'s upload `upload_id` completed: compare it with the other members' open
        watches in `project`, on the comparing thread; where C is converting it ahead of the
        queries, once that conversion ended (`_deferred`)."""
        watches = [w for w in self.watches.of(project, besides=member) if w.name]
        if watches and not self._deferred(project, member, upload_id, watches):
            self._submit(project, member, upload_id)

    def _deferred(self, project: str, partner: str, upload_id: str,
                  watches: list[Watch]) -> bool:  # fmt: skip
        """Whether the upload's comparison with `watches` (those open as it completed) waits
        for its conversion ahead of the queries (realtime/twoahead.py queued it: a one-record
        query against it goes standing, rpc/twoserver_standahead.py `wanted`, and it is fit):
        compared standing once C holds the conversion, by pairs where it failed, was not
        started, the cap passed, or the partner asks for its next upload's ticket meanwhile
        (`release`: its shares then replace this upload's at S1 and S2): twowait.py."""
        part = self.store.two_server_part(upload_id)
        if self.setup is None or part is None:
            return False

        def compare(standing: bool) -> None:
            self._submit(project, partner, upload_id, watches, standing=standing)

        return self.waits.defer(self.setup, part[0], upload_id, project, partner, compare)

    def release(self, project: str, member: str) -> None:
        """`member` asked for its next upload's ticket: the comparisons of its uploads still
        waiting for their conversion go by pairs now, before that upload replaces them at
        S1 and S2."""
        self.waits.release(project, member)

    def _submit(
        self, project: str, partner: str, upload_id: str, only: Collection[Watch] | None = None,
        attempt: int = 0, standing: bool = False,
    ) -> None:  # fmt: skip
        with contextlib.suppress(RuntimeError):  # the matcher stopping: no more comparisons
            self._pool.submit(self._compare_logged, project, partner, upload_id, only, attempt,
                              standing)  # fmt: skip

    def _compare_logged(
        self, project: str, partner: str, upload_id: str, only: Collection[Watch] | None,
        attempt: int, standing: bool,
    ) -> None:  # fmt: skip
        try:
            self._compare(project, partner, upload_id, only, attempt, standing)
        except Exception:  # on the comparing thread: nobody else would hear of it
            log.exception("%s/%s's upload not compared with the two-server watches", project,
                          partner)  # fmt: skip

    def _compare(
        self, project_name: str, partner: str, upload_id: str,
        only: Collection[Watch] | None = None, attempt: int = 0, standing: bool = False,
    ) -> None:  # fmt: skip
        """Compare `partner`'s upload with the other members' open watches (`only`: those of
        them, asked again of a busy S1 for the `attempt`th time; `standing`: against its
        conversion, which C holds)."""
        try:
            project = self.store.project(project_name)
            upload = self.store.current_uploads(project_name).get(partner)
        except errors.NotFound:  # expired meanwhile: its watches ended with it
            return
        if upload is None or upload.id != upload_id:
            return  # replaced (or erased) meanwhile: the later upload is compared in turn
        watches = [w for w in self.watches.of(project_name, besides=partner) if w.name
                   and (only is None or any(w is o for o in only))]  # fmt: skip
        if attempt == 0:  # not one its catch-up query searched already (`claim`)
            watches = [w for w in watches if self.claim(w, partner, upload_id)]
        if not watches or self.setup is None:
            return
        start = time.perf_counter()
        level = effective_level(project.disclosure, self.store.consents(project_name).get(partner))
        # The watches at once (WATCHES_AT_ONCE at most), as a query's partners: each its own
        # proposal at S1 (S1 sorts the upload's band keys once, for the first), so one
        # watch's waits on S1 and S2 overlap another's.
        if len(watches) > 1 and WATCHES_AT_ONCE > 1:
            with ThreadPoolExecutor(min(len(watches), WATCHES_AT_ONCE), "bm-twowatch-c") as pool:
                got = list(pool.map(
                    lambda w: self._search(project, partner, upload_id, w, standing), watches
                ))  # fmt: skip
        else:
            got = [self._search(project, partner, upload_id, w, standing) for w in watches]
        found = [(w, hits) for w, hits in zip(watches, got, strict=True)
                 if isinstance(hits, list)]  # fmt: skip
        busy = [
            (w, exc) for w, exc in zip(watches, got, strict=True) if isinstance(exc, errors.Busy)
        ]
        # At `mapping` a partner's rows are request references to the upload compared, as a
        # two-server query's are (twoquery.py `referenced`).
        uploads = twoquery.Searched([], [], uploads={partner: upload.sha256})

        def refer(watch: Watch, answer: QueryDisclosure) -> QueryDisclosure:
            return twoquery.referenced(self.store, project_name, watch.member, watch.purpose,
                                       answer, uploads)  # fmt: skip

        sent = deliver(project_name, partner, level, found, self.record, self.clock, refer)
        if busy:
            self._busy(project_name, partner, upload_id, busy, attempt, standing)
        if attempt == 0:
            self.compared += 1
            self.stood += standing
        log.info(
            "%s/%s's upload compared with %s: %s in %.0f ms", project_name, partner,
            counted(len(watches), "two-server watch", "two-server watches"),
            counted(sent, "notification"), 1000 * (time.perf_counter() - start),
        )  # fmt: skip

    def _busy(
        self, project: str, partner: str, upload_id: str,
        busy: list[tuple[Watch, errors.Busy]], attempt: int, standing: bool = False,
    ) -> None:  # fmt: skip
        """S1 was busy comparing `partner`'s upload with the `busy` watches (its proposals
        all in flight): compare them again after the next of BUSY_WAITS, on the comparing
        thread (which goes on meanwhile); once those are spent, end them (Busy: S1 was busy
        all the while, not a limit of the member's)."""
        if attempt >= len(BUSY_WAITS):
            for watch, exc in busy:
                self._end(watch, exc)
            return
        wait = BUSY_WAITS[attempt]
        for watch, _ in busy:
            log.info("S1 busy: %s/%s's watch compared with %s's upload again in %.0f s",
                     watch.project, watch.member, partner, wait)  # fmt: skip
        self.retried += 1
        watches = [w for w, _ in busy]
        self.later(wait, lambda: self._submit(project, partner, upload_id, watches, attempt + 1,
                                              standing))  # fmt: skip

    def _after(self, seconds: float, then: Callable[[], None]) -> None:
        """`then` after `seconds`, on a timer of its own (`close` cancels those waiting)."""

        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
            then()

        timer = threading.Timer(seconds, fire)
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            self._timers.add(timer)
        timer.start()

    def _search(
        self, project: Project, partner: str, upload_id: str, watch: Watch, standing: bool
    ) -> Found | errors.Busy | None:
        """The watch's records `partner`'s upload holds (record, hits); S1's Busy (to be
        asked again later); or None: not compared (another encoding, an upload not whole at
        S1 and S2), or the watch ended. `standing`: its whole part against the upload's
        conversion, as a query's (realtime/twopartner.py `open_partner`)."""
        assert self.setup is not None and watch.encoding is not None
        try:
            upload = self.store.upload(upload_id)
            p = twoquery.partner_upload(self.store, partner, upload, watch.encoding)
            if p is None:
                return None
            got = self.search(self.setup, project.threshold, watch.name, watch.records, p,
                              standing)  # fmt: skip
        except errors.FailedPrecondition as exc:
            if watch.ended or not any(w is watch for w in self.watches.every()):
                return None  # ended meanwhile, its records forgotten: nothing to tell
            if isinstance(exc, twopartner.KeysRefused):  # S1 asks for no keys: ended, not sent
                why = str(exc).replace("this query of", "this watch of", 1)
                said = f"{partner}'s new upload could not be compared with this watch: {why}"
                return self._end(watch, errors.FailedPrecondition(said))
            if RECORDS_NOT_HELD in str(exc):
                return self._end(watch, errors.FailedPrecondition(
                    f"{WATCH_RECORDS_NOT_HELD}, which hold a watch's "
                    "records in memory only (S1 or S2 restarted since the watch was opened?): "
                    f"open it again (`blindmatch watch`, a fresh query ticket) ({exc})"
                ))  # fmt: skip
            log.warning("%s/%s's upload not compared with %s's watch: %s", project.name,
                        partner, watch.member, exc)  # fmt: skip
            return None
        except errors.Busy as exc:  # S1's proposals all in flight: asked again later
            return None if watch.ended else exc
        except errors.ResourceExhausted as exc:  # S1's or S2's own query limit
            self._record_refused(watch, str(exc))
            return self._end(watch, exc)
        except errors.ServiceError as exc:  # S1 or S2 down (UNAVAILABLE), or refusing
            return self._end(watch, type(exc)(
                f"{partner}'s new upload could not be compared with this watch: {exc}; open "
                "it again (the records the partner uploaded since are not searched)"
            ))  # fmt: skip
        if got.keys:  # S1 blocks it against this upload, and holds it without band keys
            return self._end(watch, keys_needed(partner, got.keys))
        if got.links is None:
            log.warning("%s/%s's upload not compared with %s's watch: %s", project.name,
                        partner, watch.member, got.why)  # fmt: skip
            return None
        by_record: dict[int, Hits] = {}
        links = got.links
        for row, partner_row, score in zip(links.rec0.tolist(), links.rec1.tolist(),
                                           links.sims.tolist(), strict=True):  # fmt: skip
            by_record.setdefault(row, []).append((f"row:{partner_row}", score))
        return [(i, sorted(h, key=lambda x: -x[1])) for i, h in sorted(by_record.items())]

    def _end(self, watch: Watch, exc: errors.ServiceError) -> Found | None:
        """End `watch`, telling its stream `exc` (its trailing metadata too; nothing found)."""
        log.warning("%s/%s's two-server watch ended: %s", watch.project, watch.member, exc)
        watch.end(str(exc), lambda _why: exc)
        self.watches.remove(watch)
        return None

    def _record_refused(self, watch: Watch, why: str) -> None:
        try:
            self.record([QueryRecord(self.clock(), watch.project, watch.member, WATCH,
                                     watch.purpose, watch.records, refused=why,
                                     user=watch.user)])  # fmt: skip
        except Exception:
            log.exception("a two-server watch's refusal not recorded")

    def forget(self, watch: Watch) -> None:
        """Have S1 and S2 forget `watch`'s records (it ended); a server that cannot be told
        holds them in memory only, until it restarts."""
        self._forget(watch.name)

    def _forget(self, name: str) -> None:
        """S1's and S2's Forget of the records under `name` (`project/member@tag/...`), if a
        watch holds them there still."""
        with self._lock:
            if name not in self._names:
                return
        project, member = name.split("/")[:2]
        if self.setup is not None:
            for f in self.setup.forget(project, member):
                if f.error:
                    log.warning("%s did not forget %s's watched records: %s", f.server,
                                member, f.error)  # fmt: skip
        with self._lock:  # in use until forgotten (a query on its name is refused till then)
            self._names.discard(name)

    def close(self) -> None:
        """The matcher stops: no more comparisons, and S1 and S2 forget every open watch's
        records."""
        with self._lock:
            self._closed = True
            timers, self._timers = self._timers, set()
        self.waits.close()
        for timer in timers:
            timer.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for watch in self.watches.every():
            if watch.name:
                self.forget(watch)
        # A watch the stop ended (`end_streams`) may be between leaving the registry and its
        # stream's own Forget (`Realtime.unwatch`): its records are forgotten here too, not
        # left to a stream that may still be on its way (S1 and S2 forget a name once).
        with self._lock:
            left = sorted(self._names)
        for name in left:
            self._forget(name)


class CatchUp:
    """A re-opened watch's catch-up query (QueryRequest.catch_up_ticket): the partners'
    uploads it searches, each claimed from the watch (`TwoServerWatches.claim`), and given
    back if the query fails (the watch compares them then, if their turn is still to come)."""

    def __init__(self, watches: TwoServerWatches, watch: Watch) -> None:
        self.watches, self.watch = watches, watch
        self.claimed: list[tuple[str, str]] = []

    def claim(self, partner: str, upload_id: str) -> bool:
        if not self.watches.claim(self.watch, partner, upload_id):
            return False
        self.claimed.append((partner, upload_id))
        return True

    def release(self) -> None:
        with self.watches._lock:
            for partner, upload_id in self.claimed:
                if self.watch.compared.get(partner) == upload_id:
                    del self.watch.compared[partner]
            self.claimed = []


__all__ = ["CatchUp", "TwoServerWatches"]
