"""Real-time hit/no-hit: standing indexes, instant queries, quotas, watches.

How a query is answered, in order (`Realtime.query`):

1. check the request: the CLKs' length and the (schema, secret) fingerprint must be the
   project's (`check_encoding`);
2. count its records against the member's rate limit and quota (`quota.QueryMeter`);
3. search every partner's standing index (`Snapshot.search` of its `MemberIndex`: LSH
   look-up plus exact Dice, matcher/index.py and matcher/lshindex.py);
4. reduce what was found to what each partner allows (`partner_levels`, `disclose_query`,
   both pure: consent plugs in at `partner_levels`);
5. record the query, answered or refused, with its purpose (`record_query`, the one hook
   an audit log attaches to).

Query encodings are used for the search and dropped with the reply: nothing of them is
written anywhere. Watches (`Realtime.watch`) keep their CLKs in memory only while the
member's stream is open, and only in projects where the operator allowed watching.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blindmatch.matcher import audit, errors
from blindmatch.matcher.auth import same_hash
from blindmatch.matcher.disclose import Level, effective_level
from blindmatch.matcher.index import (
    MemberIndex,
    Segment,
    as_words,
    search,
    search_snapshots,
    warm_up,
)
from blindmatch.matcher.index_store import Encoding, IndexStore, LoggedQuery
from blindmatch.matcher.quota import DAY, DEFAULT_LIMITS, Limits, QueryMeter
from blindmatch.matcher.store import Project, Store

log = logging.getLogger("blindmatch.matcher.realtime")

MAX_QUERY_RECORDS = 1_000
MAX_INDEX_RECORDS = 50_000_000
MAX_CLK_BITS = 8192
REF_RE = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
DIGEST_BYTES = 8


def clk_digest(clk: bytes) -> bytes:
    """The 8-byte digest ListIndex reports for each CLK, so a member can compute a diff."""
    return hashlib.blake2b(clk, digest_size=DIGEST_BYTES).digest()


# -- pure parts ------------------------------------------------------------------------------


def check_clk_bits(clk_bits: int, where: str) -> None:
    if clk_bits == 0 or clk_bits % 64 or clk_bits > MAX_CLK_BITS:
        raise errors.InvalidArgument(
            f"{where}: {clk_bits} is not a multiple of 64 between 64 and {MAX_CLK_BITS}"
        )


def check_encoding(encoding: Encoding, existing: Mapping[str, Encoding]) -> None:
    """Refuse CLKs made with another CLK length, schema or secret than the project's.

    `existing` names what the project already holds ("north's index", "south's upload").
    """
    for what, other in existing.items():
        if other.clk_bits != encoding.clk_bits:
            raise errors.FailedPrecondition(
                f"CLKs of {encoding.clk_bits} bits, but {what} has {other.clk_bits}-bit CLKs; "
                "encode with the project's shared schema"
            )
        if not same_hash(other.fingerprint, encoding.fingerprint):
            raise errors.FailedPrecondition(
                f"these encodings were made with a different schema or secret than {what}, "
                "already in the project; encode again with the schema and secret agreed for "
                "this project"
            )


def partner_levels(
    project: Project, partners: Sequence[str], consents: Mapping[str, Level | None]
) -> dict[str, Level]:
    """The most the caller may learn about each partner in this project: the lesser of
    the project's level and that partner's consent (the same rule as batch results)."""
    return {p: effective_level(project.disclosure, consents.get(p)) for p in partners}


def audit_event(record: QueryRecord) -> audit.Event:
    """The audit log's view of a query, watch or notification (never its CLKs)."""
    action = {"query": "query", "watch": "watch", "notify": "watch.notify"}[record.kind]
    detail: dict[str, object] = {"records": record.records}
    if record.refused:
        action = "query.refused"
        detail.update(kind=record.kind, refused=record.refused)
    else:
        detail["records_with_hits"] = record.records_with_hits
    return audit.Event(
        record.member,
        action,
        record.project,
        record.member,
        purpose=record.purpose,
        disclosed=dict(record.disclosed),
        detail=detail,
    )


@dataclass(frozen=True)
class Match:
    """One partner holding a queried record; refs and scores only where allowed."""

    partner: str
    refs: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()


@dataclass
class QueryAnswer:
    results: list[list[Match]]  # one list per queried record, in order
    counts: dict[str, int]  # per partner: how many queried records it holds
    levels: dict[str, Level]  # what each partner's part of the answer was limited to


def disclose_query(
    found: Sequence[Mapping[str, Sequence[tuple[str, float]]]], levels: Mapping[str, Level]
) -> QueryAnswer:
    """Reduce raw search results to what each partner's level allows.

    `found[i][partner]` lists (ref, score) for queried record i, best first. A partner at
    COUNT appears only in `counts`; at HITS by name; at MAPPING with its refs; at SCORES
    with the scores too.
    """
    counts = {p: 0 for p in sorted(levels)}
    results: list[list[Match]] = []
    for per_partner in found:
        matches = []
        for partner in sorted(per_partner):
            hits = per_partner[partner]
            if not hits:
                continue
            counts[partner] += 1
            level = levels[partner]
            if level >= Level.SCORES:
                matches.append(Match(partner, tuple(r for r, _ in hits), tuple(s for _, s in hits)))
            elif level >= Level.MAPPING:
                matches.append(Match(partner, tuple(r for r, _ in hits)))
            elif level >= Level.HITS:
                matches.append(Match(partner))
        results.append(matches)
    return QueryAnswer(results, counts, dict(levels))


@dataclass(frozen=True)
class QueryRecord:
    """One query (or watch, or notification), answered or refused: what an audit records."""

    time: float
    project: str
    member: str  # who asked
    kind: str  # "query", "watch" or "notify"
    purpose: str
    records: int
    disclosed: dict[str, str] = field(default_factory=dict)  # partner -> level name, if any held
    records_with_hits: int = 0
    refused: str = ""  # why it was refused; empty when answered


def record_query(record: QueryRecord) -> None:
    """The one hook every query, watch and notification passes through.

    It writes to the standard `logging` here; an audit log attaches by replacing or
    wrapping this function. Answered queries go at DEBUG: the audit log and the query
    log hold every one, and a line per query on the server log would cost the query
    path a lock and a write each (at thousands a second). Refusals go at WARNING.
    """
    if record.refused:
        log.warning(
            "%s refused: %s/%s, %d record(s), purpose %r: %s",
            record.kind,
            record.project,
            record.member,
            record.records,
            record.purpose,
            record.refused,
        )
        return
    if not log.isEnabledFor(logging.DEBUG):
        return
    log.debug(
        "%s: %s/%s, %d record(s), purpose %r, disclosed %s",
        record.kind,
        record.project,
        record.member,
        record.records,
        record.purpose,
        ", ".join(f"{p} ({lvl})" for p, lvl in sorted(record.disclosed.items())) or "nothing",
    )


@dataclass(frozen=True)
class MemberVolume:
    member: str
    queries: int
    records: int
    records_with_hits: int
    peak_per_minute: int
    per_day_limit: int
    distinct_purposes: int
    refused: int
    flags: tuple[str, ...]


# A member is flagged when its volume is this many times the median of its project's
# members (and at least MIN_FLAGGED records), when it used this share of its daily quota,
# or when many records yield almost no hits (the signature of enumeration).
VOLUME_FACTOR = 3.0
MIN_FLAGGED = 50
QUOTA_SHARE = 0.8
PROBE_RECORDS = 100
PROBE_HIT_RATE = 0.01


def volume_report(
    entries: Sequence[LoggedQuery],
    members: Sequence[str],
    limits: Mapping[str, Limits],
    hours: int,
) -> list[MemberVolume]:
    """Per-member query volume over the window `entries` cover, unusual volume flagged."""
    by_member: dict[str, list[LoggedQuery]] = {m: [] for m in members}
    for e in entries:
        by_member.setdefault(e.member, []).append(e)
    records = {m: sum(e.records for e in es if not e.refused) for m, es in by_member.items()}
    median = statistics.median(records.values()) if records else 0
    window_days = max(hours / 24.0, 1e-9)
    report = []
    for member, es in sorted(by_member.items()):
        answered = [e for e in es if not e.refused]
        per_minute: dict[int, int] = {}
        for e in answered:
            per_minute[int(e.time // 60)] = per_minute.get(int(e.time // 60), 0) + e.records
        n = records[member]
        hits = sum(e.records_with_hits for e in answered)
        limit = limits.get(member, DEFAULT_LIMITS)
        flags = []
        others = [records[m] for m in records if m != member]
        baseline = statistics.median(others) if others else median
        if n >= MIN_FLAGGED and n > VOLUME_FACTOR * baseline:
            flags.append(
                f"{n} records queried, over {VOLUME_FACTOR:g}x the other members' median "
                f"({baseline:g})"
            )
        if n >= QUOTA_SHARE * limit.per_day * window_days:
            flags.append(f"used {n / (limit.per_day * window_days):.0%} of its quota")
        if n >= PROBE_RECORDS and hits <= PROBE_HIT_RATE * n:
            flags.append(f"{hits} of {n} queried records hit: looks like probing")
        refused = len(es) - len(answered)
        if refused:
            flags.append(f"{refused} queries refused for exceeding limits")
        report.append(
            MemberVolume(
                member=member,
                queries=len(answered),
                records=n,
                records_with_hits=hits,
                peak_per_minute=max(per_minute.values(), default=0),
                per_day_limit=limit.per_day,
                distinct_purposes=len({e.purpose for e in answered}),
                refused=refused,
                flags=tuple(flags),
            )
        )
    return report


# -- the query log writer -----------------------------------------------------------------------


# The query log's group commit: entries gathered for at most this long, or this many.
BATCH_WINDOW = 0.05
BATCH_MAX = 2000


class QueryLog:
    """Writes query volume entries and their audit events off the request path, in batches.

    A query only appends to a list (the writer is woken for the first entry of a batch,
    not for every one); the writer gathers what arrives within `BATCH_WINDOW` and writes
    it in one transaction per store, so a busy matcher pays for two fsynced commits per
    window, not per query. A crash loses at most that window (docs/security.md).
    """

    def __init__(
        self, store: IndexStore, audit_sink: Callable[[list[audit.Event]], None] | None = None
    ) -> None:
        self._store = store
        self._audit_sink = audit_sink
        self._cond = threading.Condition()
        self._pending: list[tuple[LoggedQuery, audit.Event]] = []
        self._added = self._written = 0
        self._hurry = self._closing = False
        self._thread = threading.Thread(target=self._loop, name="blindmatch-qlog", daemon=True)
        self._thread.start()

    def add(self, entry: LoggedQuery, event: audit.Event) -> None:
        with self._cond:
            self._pending.append((entry, event))
            self._added += 1
            if len(self._pending) in (1, BATCH_MAX):
                self._cond.notify_all()

    def flush(self) -> None:
        """Block until everything added so far is written."""
        with self._cond:
            target = self._added
            self._hurry = True
            self._cond.notify_all()
            while self._written < target and self._thread.is_alive():
                self._cond.wait(0.5)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _next_batch(self) -> tuple[list[tuple[LoggedQuery, audit.Event]], bool]:
        """Wait for entries, then for the window to close; (the batch, closing)."""
        with self._cond:
            while not self._pending and not self._closing and not self._hurry:
                self._cond.wait()
            until = time.monotonic() + BATCH_WINDOW
            while not (self._closing or self._hurry or len(self._pending) >= BATCH_MAX):
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._pending = self._pending, []
            self._hurry = False
            return batch, self._closing

    def _loop(self) -> None:
        while True:
            batch, closing = self._next_batch()
            try:
                if batch:
                    self._store.log_queries([entry for entry, _ in batch])
                    if self._audit_sink is not None:
                        self._audit_sink([event for _, event in batch])
            except Exception:  # the log must not take the matcher down
                log.exception("could not write %d query log entries", len(batch))
            finally:
                with self._cond:
                    self._written += len(batch)
                    self._cond.notify_all()
            if closing and not batch:
                return


# -- watches ----------------------------------------------------------------------------------


@dataclass
class Watch:
    """A member's open watch: the CLKs it watches and the events waiting for it."""

    project: str
    member: str
    purpose: str
    words: np.ndarray
    events: queue.Queue[tuple[int, str, Match | None]] = field(default_factory=queue.Queue)
    ended: str = ""  # why the matcher ended the watch (its project expired), if it did

    def next_event(self, timeout: float) -> tuple[int, str, Match | None] | None:
        """(watched record, partner, match or None at COUNT), or None after `timeout`."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


# -- the service core ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeSummary:
    added: int
    replaced: int
    removed: int
    record_count: int


class Realtime:
    """Standing indexes in memory (loaded at start-up), queries, limits and watches."""

    def __init__(
        self,
        store: Store,
        data_dir: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        merge_cpus: frozenset[int] | None = None,
    ) -> None:
        """`merge_cpus`: where the indexes' background merges run (None: where the
        change that starts one is handled)."""
        self.store = store
        self.merge_cpus = merge_cpus
        self.index_store = IndexStore(data_dir)
        self.clock = clock
        self.meter = QueryMeter()
        self._indexes: dict[tuple[str, str], MemberIndex] = {}
        # project -> {member: index}, sorted by member; replaced whole on a change, so a
        # query reads it without a lock.
        self._by_project: dict[str, dict[str, MemberIndex]] = {}
        self._encodings: dict[tuple[str, str], Encoding] = {}
        self._write_lock = threading.Lock()
        self._watches: list[Watch] = []
        self._watch_lock = threading.Lock()
        for key, encoding in self.index_store.encodings().items():
            refs, clks = self.index_store.records(*key)
            index = MemberIndex.load(
                encoding.clk_bits,
                refs,
                as_words(clks, encoding.clk_bits),
                threshold=self._threshold(key[0]),
                merge_cpus=merge_cpus,
            )
            self._set_index(key, index, encoding)
        self._warm_up()
        now = self.clock()
        for e in self.index_store.logged_queries(now - DAY):
            if not e.refused:
                self.meter.seed(e.project, e.member, e.time, e.records)
        self.qlog = QueryLog(self.index_store, audit_sink=store.record_many)
        log.info("loaded %d standing indexes", len(self._indexes))

    def close(self) -> None:
        self.qlog.close()
        self.index_store.close()

    def _warm_up(self) -> None:
        """Run each project's tables through `index.warm_up` before the first query."""
        started, lookups = time.perf_counter(), 0
        for project, members in self._by_project.items():
            threshold = self._threshold(project)
            if threshold:
                snapshots = {m: index.snapshot for m, index in members.items()}
                lookups += warm_up(snapshots, threshold)
        if lookups:
            log.info(
                "warmed the standing indexes' look-up tables with %d look-ups in %.1f s",
                lookups,
                time.perf_counter() - started,
            )

    def _threshold(self, project: str) -> float | None:
        """The project's threshold, which its indexes' LSH tables are built for."""
        try:
            return self.store.project(project).threshold
        except errors.NotFound:
            return None

    def _set_index(
        self, key: tuple[str, str], index: MemberIndex | None, encoding: Encoding | None
    ) -> None:
        """Install (or, with None, drop) a member's index; the writer's lock is held."""
        project = key[0]
        if index is None or encoding is None:
            self._indexes.pop(key, None)
            self._encodings.pop(key, None)
        else:
            self._indexes[key] = index
            self._encodings[key] = encoding
        self._by_project[project] = {
            m: self._indexes[(p, m)] for p, m in sorted(self._indexes) if p == project
        }

    # -- what the project holds ------------------------------------------------------------

    def _project_encodings(
        self, project: str, *, besides: str | None = None
    ) -> dict[str, Encoding]:
        held = {
            f"{m}'s index": enc
            for (p, m), enc in self._encodings.items()
            if p == project and m != besides
        }
        for m, upload in self.store.current_uploads(project).items():
            if m != besides:
                held[f"{m}'s upload"] = Encoding(upload.clk_bits, upload.fingerprint)
        return held

    def index_size(self, project: str, member: str) -> int:
        index = self._indexes.get((project, member))
        return len(index) if index else 0

    # -- index maintenance -----------------------------------------------------------------

    def change_index(
        self,
        project: str,
        member: str,
        encoding: Encoding,
        puts: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
    ) -> ChangeSummary:
        """Apply one member's change: durable, then visible to the next query."""
        check_clk_bits(encoding.clk_bits, "header.clk_bits")
        if len(encoding.fingerprint) != 32:
            raise errors.InvalidArgument("header.fingerprint: must be 32 bytes")
        clk_bytes = encoding.clk_bits // 8
        seen: set[str] = set()
        for what, refs in (("put", [r for r, _ in puts]), ("remove", removes)):
            for ref in refs:
                if not REF_RE.match(ref):
                    raise errors.InvalidArgument(
                        f"{what}.refs: {ref[:40]!r} is not a valid reference (1-128 of "
                        "A-Z a-z 0-9 . _ : ~ -)"
                    )
                if ref in seen:
                    raise errors.InvalidArgument(
                        f"{what}.refs: {ref!r} appears more than once in this change"
                    )
                seen.add(ref)
        bad = next((i for i, (_, clk) in enumerate(puts) if len(clk) != clk_bytes), None)
        if bad is not None:
            raise errors.InvalidArgument(
                f"put.clks: record {bad} ({puts[bad][0]!r}) has {len(puts[bad][1])} bytes, "
                f"not {clk_bytes} ({encoding.clk_bits}-bit CLKs as the header says)"
            )
        key = (project, member)
        with self._write_lock:
            index = self._indexes.get(key)
            if removes:
                unknown = [r for r in removes if index is None or r not in index]
                if unknown:
                    shown = ", ".join(repr(r) for r in unknown[:5])
                    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                    raise errors.NotFound(
                        f"remove.refs: {len(unknown)} reference(s) not in your index: "
                        f"{shown}{more}; nothing was changed"
                    )
            if puts:
                mine = self._encodings.get(key)
                held = self._project_encodings(project, besides=member)
                if mine is not None and len(removes) < len(index or ()):
                    held["your index"] = mine
                check_encoding(encoding, held)
            replaced = sum(1 for r, _ in puts if index is not None and r in index)
            size_after = (len(index) if index else 0) - len(removes) + len(puts) - replaced
            if size_after > MAX_INDEX_RECORDS:
                raise errors.ResourceExhausted(
                    f"the index would hold {size_after} records, over this matcher's limit "
                    f"of {MAX_INDEX_RECORDS}"
                )
            if not puts and not removes:
                return ChangeSummary(0, 0, 0, size_after)
            if index is not None and index.clk_bits != encoding.clk_bits and puts:
                index = None  # every old record is being removed (checked above)
            # A remove-only change keeps the index's encoding, whatever its header says.
            stored = encoding if puts else self._encodings.get(key, encoding)
            self.index_store.apply_change(
                project, member, stored, puts, removes, size_after=size_after
            )
            put_words = as_words(b"".join(c for _, c in puts), stored.clk_bits)
            if index is None:
                index = MemberIndex.load(
                    encoding.clk_bits,
                    [r for r, _ in puts],
                    put_words,
                    threshold=self._threshold(project),
                    merge_cpus=self.merge_cpus,
                )
            else:
                index.apply([r for r, _ in puts], put_words, removes)
            if size_after:
                self._set_index(key, index, stored)
            else:
                self._set_index(key, None, None)
        summary = ChangeSummary(len(puts) - replaced, replaced, len(removes), size_after)
        self.store.record(
            audit.Event(
                member,
                "index.change",
                project,
                member,
                detail={
                    "added": summary.added,
                    "replaced": summary.replaced,
                    "removed": summary.removed,
                    "record_count": summary.record_count,
                },
            )
        )
        if puts:
            self._notify_watchers(project, member, [r for r, _ in puts], put_words)
        return summary

    def erase_member(self, project: str, member: str) -> None:
        """Forget a member's standing index, on disk and in memory (erasure)."""
        with self._write_lock:
            self.index_store.erase_member(project, member)
            self._set_index((project, member), None, None)

    def erase_project(self, project: str) -> None:
        """Forget every index, watch and query record of an expired project."""
        with self._write_lock:
            self.index_store.erase_project(project)
            for key in [k for k in self._indexes if k[0] == project]:
                self._set_index(key, None, None)
            self._by_project.pop(project, None)
        with self._watch_lock:
            for w in self._watches:
                if w.project == project:
                    w.ended = f"project {project!r} expired; its encodings are deleted"
            self._watches = [w for w in self._watches if w.project != project]

    def list_index(self, project: str, member: str) -> tuple[int, list[str], list[bytes]]:
        """(clk_bits, refs, digests) of the member's index."""
        with self._write_lock:
            index = self._indexes.get((project, member))
            if index is None:
                return 0, [], []
            refs = sorted(index.refs())
            digests = [clk_digest(index.clk(r).tobytes()) for r in refs]
            return index.clk_bits, refs, digests

    # -- queries -------------------------------------------------------------------------------

    def limits_for(self, project: str, member: str) -> Limits:
        table = self.index_store.limits()
        default = table.get((project, ""), (0, 0))
        own = table.get((project, member), (0, 0))
        return Limits(
            per_minute=own[0] or default[0] or DEFAULT_LIMITS.per_minute,
            per_day=own[1] or default[1] or DEFAULT_LIMITS.per_day,
        )

    def _check_query(
        self, project: Project, member: str, purpose: str, encoding: Encoding, clks: bytes
    ) -> np.ndarray:
        # The same rules as a results request's purpose; a query always needs one.
        if not audit.check_purpose(purpose, required=False, project=project.name):
            raise errors.InvalidArgument(
                "purpose: required; say why you are asking (a case reference, say)"
            )
        check_clk_bits(encoding.clk_bits, "clk_bits")
        if len(encoding.fingerprint) != 32:
            raise errors.InvalidArgument("fingerprint: must be 32 bytes")
        clk_bytes = encoding.clk_bits // 8
        if not clks or len(clks) % clk_bytes:
            raise errors.InvalidArgument(
                f"clks: {len(clks)} bytes is not a whole, non-zero number of "
                f"{encoding.clk_bits}-bit CLKs"
            )
        count = len(clks) // clk_bytes
        if count > MAX_QUERY_RECORDS:
            raise errors.InvalidArgument(
                f"clks: {count} records in one query; at most {MAX_QUERY_RECORDS}"
            )
        check_encoding(encoding, self._project_encodings(project.name))
        return as_words(clks, encoding.clk_bits)

    def _take_quota(self, project: str, member: str, kind: str, purpose: str, n: int) -> None:
        now = self.clock()
        try:
            self.meter.take(project, member, n, self.limits_for(project, member), now)
        except errors.ResourceExhausted as exc:
            self._record(QueryRecord(now, project, member, kind, purpose, n, refused=str(exc)))
            raise

    def _record(self, record: QueryRecord) -> None:
        record_query(record)
        self.qlog.add(
            LoggedQuery(
                record.time,
                record.project,
                record.member,
                record.kind,
                record.purpose,
                record.records,
                record.records_with_hits,
                record.refused,
            ),
            audit_event(record),
        )

    def query(
        self, project_name: str, member: str, purpose: str, encoding: Encoding, clks: bytes
    ) -> tuple[QueryAnswer, list[str]]:
        """Which partners hold each queried CLK; also the partners that were searched."""
        project = self.store.project(project_name)
        words = self._check_query(project, member, purpose, encoding, clks)
        self._take_quota(project.name, member, "query", purpose, len(words))
        snapshots = {
            m: index.snapshot
            for m, index in self._by_project.get(project.name, {}).items()
            if m != member
        }
        found = [search_snapshots(snapshots, q, project.threshold) for q in words]
        levels = partner_levels(project, list(snapshots), self.store.consents(project.name))
        answer = disclose_query(found, levels)
        self._record(
            QueryRecord(
                self.clock(),
                project.name,
                member,
                "query",
                purpose,
                len(words),
                disclosed={p: answer.levels[p].name.lower() for p, n in answer.counts.items() if n},
                records_with_hits=sum(1 for f in found if any(f.values())),
            )
        )
        return answer, list(snapshots)

    # -- watches ---------------------------------------------------------------------------------

    def watch(
        self, project_name: str, member: str, purpose: str, encoding: Encoding, clks: bytes
    ) -> Watch:
        """Register a watch; events arrive when a partner later indexes a match."""
        project = self.store.project(project_name)
        if project.name not in self.index_store.allow_watch():
            raise errors.FailedPrecondition(
                f"watching is not allowed in project {project.name!r}; the operator allows it "
                "with `blindmatch admin query-limits --allow-watch`"
            )
        words = self._check_query(project, member, purpose, encoding, clks)
        self._take_quota(project.name, member, "watch", purpose, len(words))
        watch = Watch(project.name, member, purpose, words)
        with self._watch_lock:
            self._watches.append(watch)
        self._record(QueryRecord(self.clock(), project.name, member, "watch", purpose, len(words)))
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Forget a watch and its CLKs (when its stream ends)."""
        with self._watch_lock:
            self._watches = [w for w in self._watches if w is not watch]

    def _notify_watchers(
        self, project_name: str, partner: str, refs: list[str], words: np.ndarray
    ) -> None:
        with self._watch_lock:
            watches = [
                w for w in self._watches if w.project == project_name and w.member != partner
            ]
        if not watches:
            return
        project = self.store.project(project_name)
        added = Segment.build(words, refs)
        for watch in watches:
            level = partner_levels(project, [partner], self.store.consents(project.name))[partner]
            for i, q in enumerate(watch.words):
                rows, scores = search(added.words, added.popcounts, q, project.threshold)
                if not len(rows):
                    continue
                hits = [
                    (added.refs[r], s) for r, s in zip(rows.tolist(), scores.tolist(), strict=True)
                ]
                answer = disclose_query([{partner: hits}], {partner: level})
                match = answer.results[0][0] if answer.results[0] else None
                watch.events.put((i, partner, match))
                self._record(
                    QueryRecord(
                        self.clock(),
                        project.name,
                        watch.member,
                        "notify",
                        watch.purpose,
                        1,
                        disclosed={partner: level.name.lower()},
                        records_with_hits=1,
                    )
                )

    # -- operator ---------------------------------------------------------------------------------

    def set_limits(
        self, project: str, member: str, per_minute: int, per_day: int, allow_watch: bool | None
    ) -> Limits:
        self.store.project(project)  # NotFound for an unknown project
        if member and member not in self.store.members(project):
            raise errors.NotFound(f"no member {member!r} in project {project!r}")
        current = self.index_store.limits().get((project, member), (0, 0))
        per_minute, per_day = per_minute or current[0], per_day or current[1]
        self.index_store.set_limits(project, member, per_minute, per_day)
        if allow_watch is not None:
            self.index_store.set_allow_watch(project, allow_watch)
        self.store.record(
            audit.Event(
                audit.OPERATOR,
                "query.limits",
                project,
                member,
                detail={
                    "per_minute": per_minute,
                    "per_day": per_day,
                    "allow_watch": allow_watch,
                },
            )
        )
        return self.limits_for(project, member)

    def report(self, project: str, hours: int) -> list[MemberVolume]:
        self.store.project(project)
        self.qlog.flush()
        entries = [
            e
            for e in self.index_store.logged_queries(self.clock() - hours * 3600, project)
            if e.kind in ("query", "watch")
        ]
        members = self.store.members(project)
        limits = {m: self.limits_for(project, m) for m in members}
        return volume_report(entries, members, limits, hours)
