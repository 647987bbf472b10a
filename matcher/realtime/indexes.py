"""Every member's standing index: durable in index.sqlite, searched in memory.

At start-up each index is loaded from the `IndexStore` into a `core.index.MemberIndex`.
A change is checked whole (references, CLK lengths, the project's encoding), announced in
the audit log (durable first: storage/audit_log.py), written in one durable transaction,
and only then applied in memory, so it is visible to the very next query and a failed
change leaves no trace but its announcement and the entry that voids it. Announcements a
crash left without their change are voided at start-up, before anything is served. A
change sent with a retry id that was already stored is acknowledged again, as it was,
and changes nothing. Queries read `snapshots`, which a change replaces whole, without a
lock. A change stored whose application in memory then fails (out of memory) is still
acknowledged and forwarded to the look-up servers, and the member's index is read again
from index.sqlite; until that succeeds nothing in its project is answered from memory
(queries, listings and look-up server loads are refused: `_built`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence

import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import audit
from blindmatch.matcher.core.encodings import (
    Held,
    check_clk_bits,
    check_compatible,
    check_fingerprint,
)
from blindmatch.matcher.core.fallback import checked_rule
from blindmatch.matcher.core.fallbackindex import FallbackIndex, FallbackSnapshot, load_index
from blindmatch.matcher.core.index import MemberIndex, Snapshot, as_words
from blindmatch.matcher.domain import (
    CLIENT_UPLOAD_ID_RE,
    MAX_INDEX_RECORDS,
    ChangeSummary,
    Encoding,
    counted,
    retried_change,
)
from blindmatch.matcher.realtime.indexchecks import check_refs, check_restated, digest_of
from blindmatch.matcher.realtime.indexwarm import warm_up_all
from blindmatch.matcher.realtime.shards import ERASE_MEMBER, ERASE_PROJECT, ShardChange, shard_of
from blindmatch.matcher.storage.audit_log import VOID
from blindmatch.matcher.storage.index_store import IndexStore, StoredChange
from blindmatch.matcher.storage.shard_source import ShardRecords
from blindmatch.matcher.storage.store import Store
from blindmatch.protos.wire import clk_digest, fingerprint_id

log = logging.getLogger("blindmatch.matcher.realtime")


__all__ = ["ChangeSummary", "StandingIndexes"]


class StandingIndexes:
    """The indexes of every member of every project, in memory and in `index_store`.

    `merge_cpus`: where the indexes' background merges run (None: where the change that
    starts one is handled). `forward`: look-up servers hold the searchable shards
    (realtime/shards.py), told of each stored change through it.
    """

    def __init__(
        self,
        store: Store,
        index_store: IndexStore,
        merge_cpus: frozenset[int] | None = None,
        forward: Callable[[ShardChange], None] | None = None,
    ) -> None:
        self.store = store
        self.index_store = index_store
        self.merge_cpus = merge_cpus
        # With look-up servers (realtime/shards.py): every stored change is forwarded to
        # them, under the writer's lock (in order), and the indexes here keep refs and
        # CLKs for the checks and listings, without LSH tables.
        self.forward = forward
        self._indexes: dict[tuple[str, str], MemberIndex | FallbackIndex] = {}
        # project -> {member: index}, sorted by member; replaced whole on a change, so a
        # query reads it without a lock.
        self._by_project: dict[str, dict[str, MemberIndex | FallbackIndex]] = {}
        self._encodings: dict[tuple[str, str], Encoding] = {}
        # Members whose erasure has not deleted their index from disk yet: kept in memory
        # (dropped with the stored copy), searched by no query, changed by no change.
        self._erasing: set[tuple[str, str]] = set()
        self._write_lock = threading.Lock()
        # Members whose stored change could not be applied in memory (`change`): read
        # again from index.sqlite before anything is answered from their project.
        self._unbuilt: set[tuple[str, str]] = set()
        # Announcements whose changes are stored: forgotten with the next announcement.
        self._settled: list[int] = []
        self._reconcile()
        for key, encoding in index_store.encodings().items():
            refs, clks = index_store.records(*key)
            index = self._load(key[0], encoding, refs, as_words(clks, encoding.clk_bits))
            self._set_index(key, index, encoding)
        warm_up_all(self._by_project, self._threshold)
        log.info("loaded %d standing indexes", len(self._indexes))

    def _reconcile(self) -> None:
        """Settle every announcement whose change is stored; void the others (cut short)."""
        stored, cut_short = [], []
        for seq, project, member, change_id in self.store.audit.announced():
            found = self.index_store.stored_change(project, member, change_id)
            if found is not None and found.audit_seq == seq:
                stored.append(seq)
            else:
                cut_short.append((seq, project, member, change_id))
        self.store.audit.settle(stored)
        if cut_short:
            self.store.audit.void(cut_short)
            log.warning(
                "%s announced in the audit log and never stored (cut short); the log now "
                "says so (%s)",
                counted(len(cut_short), "index change"),
                VOID,
            )

    def _threshold(self, project: str) -> float | None:
        """The project's threshold, which its indexes' LSH tables are built for."""
        try:
            return self.store.project(project).threshold
        except errors.NotFound:
            return None

    def _load(
        self, project: str, encoding: Encoding, refs: Sequence[str], words: np.ndarray
    ) -> MemberIndex | FallbackIndex:
        """A member's index of these records, searched as its encoding says (without LSH
        tables when look-up servers hold the searchable shards)."""
        threshold = None if self.forward is not None else self._threshold(project)
        return load_index(
            encoding.clk_bits, encoding.fallback_bits, refs, words, threshold, self.merge_cpus,
            encoding.rule,
        )  # fmt: skip

    def _set_index(
        self,
        key: tuple[str, str],
        index: MemberIndex | FallbackIndex | None,
        encoding: Encoding | None,
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

    # -- reading -----------------------------------------------------------------------------

    def get(self, project: str, member: str) -> MemberIndex | FallbackIndex | None:
        return self._indexes.get((project, member))

    def snapshots(self, project: str, *, besides: str) -> dict[str, Snapshot | FallbackSnapshot]:
        """What a query by `besides` searches: every partner's index, by partner."""
        if self._unbuilt:  # (a change stored, not applied in memory: `change`)
            with self._write_lock:
                self._built(project)
        return {
            m: index.snapshot
            for m, index in self._by_project.get(project, {}).items()
            if m != besides and (project, m) not in self._erasing
        }

    def held(self, project: str, *, besides: str | None = None) -> list[Held]:
        """The encodings the project holds (indexes and uploads), for the compatibility rule."""
        held = [
            Held(f"{m}'s index", enc, ident=fingerprint_id(enc.fingerprint))
            for (p, m), enc in self._encodings.items()
            if p == project and m != besides and (p, m) not in self._erasing
        ]
        for m, upload in self.store.current_uploads(project).items():
            if m != besides:
                held.append(
                    Held(
                        f"{m}'s upload",
                        self.store.upload_encoding(upload),
                        ident=fingerprint_id(upload.fingerprint),
                    )
                )
        return held

    def listing(self, project: str, member: str) -> tuple[int, list[str], list[bytes]]:
        """(clk_bits, refs, digests) of the member's index."""
        with self._write_lock:
            self._built(project)
            index = self._indexes.get((project, member))
            if index is None or (project, member) in self._erasing:
                return 0, [], []
            refs = sorted(index.refs())
            digests = [clk_digest(index.clk(r).tobytes()) for r in refs]
            return index.clk_bits, refs, digests

    def shard_records(
        self, shard: int, shards: int
    ) -> tuple[dict[tuple[str, str], ShardRecords], dict[str, float]]:
        """Shard `shard` of `shards` of every index, from memory, and every project's
        threshold: what a look-up server without a data dir is loaded with (the same as
        `storage.shard_source.read_shards` reads of index.sqlite). Each index as of one
        change, read without the writer's lock; the caller queues every change forwarded
        from before this read on and replays it after the load (a change both read here
        and queued is applied twice, which is harmless: realtime/shards.py)."""
        if self._unbuilt:  # (a change stored, not applied in memory: `change`)
            with self._write_lock:
                self._built()
        found: dict[tuple[str, str], ShardRecords] = {}
        thresholds: dict[str, float] = {}
        for key, index in list(self._indexes.items()):
            encoding = self._encodings.get(key)
            if encoding is None or key in self._erasing:
                continue
            refs, words = index.rows()
            keep = [i for i, r in enumerate(refs) if shard_of(r, shards) == shard]
            if keep:
                clks = np.ascontiguousarray(words[keep]).tobytes()
                found[key] = ShardRecords(encoding, [refs[i] for i in keep], clks)
            threshold = self._threshold(key[0])
            if threshold is not None:
                thresholds[key[0]] = threshold
        return found, thresholds

    # -- changing ----------------------------------------------------------------------------

    def change(
        self,
        project: str,
        member: str,
        encoding: Encoding,
        puts: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
        client_change_id: str = "",
        check: Callable[[], None] | None = None,
    ) -> tuple[ChangeSummary, np.ndarray | None, bool]:
        """Apply one member's change: announced in the audit log, durable, then visible to
        the next query. Returns the summary, the CLKs put, as words, for the watches (None:
        nothing changed now), and whether it was a retry of a change already stored.
        `check` runs inside the announcing transaction and may refuse the change (the
        member's token revoked meanwhile): nothing is announced or stored then."""
        check_clk_bits(encoding.clk_bits, "header.clk_bits")
        check_fingerprint(encoding.fingerprint, "header.fingerprint")
        fallback = encoding.fallback_bits
        if fallback and (fallback % 64 or fallback >= encoding.clk_bits):
            raise errors.InvalidArgument(
                "header.fallback_bits: a multiple of 64 below clk_bits (or 0: no fallback CLK)"
            )
        rule = encoding.rule
        checked_rule(rule.gap, rule.offset, rule.reach, fallback, "header.rule")
        if client_change_id and not CLIENT_UPLOAD_ID_RE.fullmatch(client_change_id):
            raise errors.InvalidArgument(
                "header.client_change_id: 1 to 128 of the characters A-Z a-z 0-9 _ . -"
            )
        check_refs(puts, removes, encoding.clk_bits)
        key = (project, member)
        digest = digest_of(encoding, puts, removes) if client_change_id else ""
        with self._write_lock:
            self._built(project)  # (checked against memory: it must be what is stored)
            if key in self._erasing:  # its erasure's deletion first (else its old records stay)
                self._erase(project, member, "your erasure in this project is not complete yet")
            if client_change_id:
                earlier = self.index_store.stored_change(project, member, client_change_id)
                if earlier is not None:
                    kept = (earlier.digest, earlier.summary)
                    return retried_change(client_change_id, digest, kept), None, True
            index = self._indexes.get(key)
            if removes:
                unknown = [r for r in removes if index is None or r not in index]
                if unknown:
                    shown = ", ".join(repr(r) for r in unknown[:5])
                    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                    raise errors.NotFound(
                        f"remove.refs: {counted(len(unknown), 'reference')} not in your index: "
                        f"{shown}{more}; nothing was changed"
                    )
            if puts:
                mine = self._encodings.get(key)
                held = self.held(project, besides=member)
                if mine is not None and len(removes) < len(index or ()):
                    ident = fingerprint_id(mine.fingerprint)
                    # (its own index may be laid out anew: `relayout` below)
                    held.append(Held("your index", mine, ident=ident, layout=False))
                check_compatible(encoding, held, ident=fingerprint_id(encoding.fingerprint))
            replaced = sum(1 for r, _ in puts if index is not None and r in index)
            size_after = (len(index) if index else 0) - len(removes) + len(puts) - replaced
            if size_after > MAX_INDEX_RECORDS:
                raise errors.ResourceExhausted(
                    f"the index would hold {size_after} records, over this matcher's limit "
                    f"of {MAX_INDEX_RECORDS}"
                )
            if not puts and not removes:
                check_restated(self._encodings.get(key), encoding)
                return ChangeSummary(0, 0, 0, size_after), None, False
            if index is not None and index.clk_bits != encoding.clk_bits and puts:
                index = None  # every old record is being removed (checked above)
            held_as = self._encodings.get(key)
            relayout = bool(
                index is not None
                and held_as is not None
                and puts
                and (held_as.fallback_bits, held_as.rule) != (encoding.fallback_bits, encoding.rule)
            )
            # A remove-only change keeps the index's encoding, whatever its header says.
            stored = encoding if puts else self._encodings.get(key, encoding)
            summary = ChangeSummary(len(puts) - replaced, replaced, len(removes), size_after)
            change_id = client_change_id or f"~{uuid.uuid4().hex}"  # "~": never a client's
            put_words = as_words(b"".join(c for _, c in puts), stored.clk_bits)
            self._store_change(
                project,
                member,
                stored,
                puts,
                removes,
                StoredChange(change_id, 0, digest, summary),
                check,
            )
            try:  # (stored: whatever fails from here on, memory is read again from storage)
                if relayout:  # a client that says otherwise of the fallback CLK: search anew
                    refs, clks = self.index_store.records(project, member)
                    index = self._load(project, stored, refs, as_words(clks, stored.clk_bits))
                elif index is None:
                    index = self._load(project, encoding, [r for r, _ in puts], put_words)
                else:
                    index.apply([r for r, _ in puts], put_words, removes)
                self._set_index(key, index if size_after else None, stored if size_after else None)
            except Exception:  # out of memory, say: rebuilt from index.sqlite (`_rebuild`)
                log.exception(
                    "%s/%s: the change %s is stored, but applying it in memory "
                    "failed: reading the index again",
                    project,
                    member,
                    change_id,
                )
                self._unbuilt.add(key)
            if self.forward is not None:  # (stored: the look-up servers take it all the same)
                threshold = self._threshold(project)
                self.forward(ShardChange(project, member, stored, threshold, puts, removes,
                                         layout=relayout))  # fmt: skip
            if key in self._unbuilt:
                try:
                    self._rebuild(key)
                except Exception:  # still out of memory: queries refused until it is read
                    log.exception(
                        "%s/%s: reading the index again failed; queries in the "
                        "project are refused until it is read",
                        project,
                        member,
                    )
        return summary, put_words, False

    def _rebuild(self, key: tuple[str, str]) -> None:
        """Read a member's index again from index.sqlite into memory (a stored change that
        could not be applied there); the writer's lock is held."""
        encoding = self.index_store.encodings().get(key)
        if encoding is None:  # (emptied by the change)
            self._set_index(key, None, None)
        else:
            refs, clks = self.index_store.records(*key)
            index = self._load(key[0], encoding, refs, as_words(clks, encoding.clk_bits))
            self._set_index(key, index, encoding)
        self._unbuilt.discard(key)
        log.info("%s/%s: the index is read again from index.sqlite", *key)

    def _built(self, project: str | None = None) -> None:
        """Read again each index of `project` (None: every one) whose stored change could
        not be applied in memory; Unavailable while one still cannot be (its memory is not
        what is stored: no query or load is answered from it). The writer's lock is held."""
        for key in sorted(k for k in self._unbuilt if project is None or k[0] == project):
            try:
                self._rebuild(key)
            except Exception as exc:
                raise errors.Unavailable(
                    f"{key[1]}'s standing index in project {key[0]} is stored but not yet "
                    f"in this matcher's memory (reading it failed: {exc}); try again in a "
                    "moment"
                ) from exc

    def _store_change(
        self,
        project: str,
        member: str,
        encoding: Encoding,
        puts: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
        change: StoredChange,
        check: Callable[[], None] | None = None,
    ) -> None:
        """Announce the change in the audit log (durable), then store it beside its
        announcement; a change that could not be stored is voided in the log at once (or,
        if even that fails, at the next start-up). The writer's lock is held."""
        done = change.summary
        seq = self.store.audit.announce(
            audit.Event(
                member,
                "index.change",
                project,
                member,
                detail={
                    "change_id": change.change_id,
                    "added": done.added,
                    "replaced": done.replaced,
                    "removed": done.removed,
                    "record_count": done.record_count,
                },
            ),
            change.change_id,
            settled=self._settled,
            check=check,
        )
        self._settled = []
        try:
            self.index_store.apply_change(
                project,
                member,
                encoding,
                puts,
                removes,
                size_after=done.record_count,
                change=StoredChange(change.change_id, seq, change.digest, done),
            )
        except BaseException:
            try:
                self.store.audit.void([(seq, project, member, change.change_id)])
            except Exception:  # the disk is still full, say: start-up voids it
                log.exception("could not void index change %s yet", change.change_id)
            raise
        self._settled.append(seq)

    def erase_member(self, project: str, member: str) -> int:
        """Forget a member's standing index, on disk and in memory (erasure); its records. Searched
        by no query from the start; one whose deletion fails (a full disk) stays in memory,
        unsearched, until it is deleted (`_erasing`: the retry, or the member's next change)."""
        with self._write_lock:
            self._erasing.add((project, member))
            held = len(self._indexes.get((project, member)) or ())
            self._erase(project, member)
            return held

    def erase_left(self, project: str, member: str, seq: int) -> int | None:
        """The erasure logged as `seq` finished: what it left of the member's index deleted
        (its records; None: nothing left, or an index since), read and deleted under the
        writer's lock, so that a change the member makes meanwhile is not taken for it."""
        with self._write_lock:
            left = self.index_store.left_by_erasure(project, member, seq)
            if left is not None or (project, member) in self._erasing:
                self._erasing.add((project, member))
                self._erase(project, member)
            return left

    def erase_again(self, project: str, member: str) -> None:
        """Forward the member's erasure again (to look-up servers that missed it), in order
        with the other changes; not once the member has an index since."""
        with self._write_lock:
            if self.forward is not None and (project, member) not in self._indexes:
                self.forward(ShardChange(project, member, erase=ERASE_MEMBER))

    def _erase(self, project: str, member: str, refused: str = "") -> None:
        """The deletion (the writer's lock held); failing, Unavailable if `refused`."""
        try:
            self._settle()  # before the stored changes they are checked against go
            self.index_store.erase_member(project, member)
        except Exception as exc:
            if not refused:
                raise
            raise errors.Unavailable(f"{refused} (its standing index is not deleted yet: "
                                     f"{exc}); try again in a moment") from exc  # fmt: skip
        self._set_index((project, member), None, None)
        self._erasing.discard((project, member))
        self._unbuilt.discard((project, member))
        if self.forward is not None:
            self.forward(ShardChange(project, member, erase=ERASE_MEMBER))

    def erase_project(self, project: str) -> None:
        """Forget every index, limit and query record of an expired project."""
        with self._write_lock:
            self._settle()
            self.index_store.erase_project(project)
            self._erasing = {k for k in self._erasing if k[0] != project}
            self._unbuilt = {k for k in self._unbuilt if k[0] != project}
            for key in [k for k in self._indexes if k[0] == project]:
                self._set_index(key, None, None)
            self._by_project.pop(project, None)
            if self.forward is not None:
                self.forward(ShardChange(project, "", erase=ERASE_PROJECT))

    def _settle(self) -> None:
        self.store.audit.settle(self._settled)
        self._settled = []
