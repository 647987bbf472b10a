"""Every member's standing index: durable in index.sqlite, searched in memory.

At start-up each index is loaded from the `IndexStore` into a `core.index.MemberIndex`.
A change is checked whole (references, CLK lengths, the project's encoding), written in
one durable transaction, and only then applied in memory, so it is visible to the very
next query and a failed change leaves no trace. Queries read `snapshots`, which a change
replaces whole, without a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core.encodings import (
    Held,
    check_clk_bits,
    check_compatible,
    check_fingerprint,
)
from blindmatch.matcher.core.index import MemberIndex, Snapshot, as_words, warm_up
from blindmatch.matcher.domain import MAX_INDEX_RECORDS, REF_RE, Encoding
from blindmatch.matcher.storage.index_store import IndexStore
from blindmatch.matcher.storage.store import Store
from blindmatch.protos.wire import clk_digest

log = logging.getLogger("blindmatch.matcher.realtime")


@dataclass(frozen=True)
class ChangeSummary:
    added: int
    replaced: int
    removed: int
    record_count: int


class StandingIndexes:
    """The indexes of every member of every project, in memory and in `index_store`.

    `merge_cpus`: where the indexes' background merges run (None: where the change that
    starts one is handled).
    """

    def __init__(
        self, store: Store, index_store: IndexStore, merge_cpus: frozenset[int] | None = None
    ) -> None:
        self.store = store
        self.index_store = index_store
        self.merge_cpus = merge_cpus
        self._indexes: dict[tuple[str, str], MemberIndex] = {}
        # project -> {member: index}, sorted by member; replaced whole on a change, so a
        # query reads it without a lock.
        self._by_project: dict[str, dict[str, MemberIndex]] = {}
        self._encodings: dict[tuple[str, str], Encoding] = {}
        self._write_lock = threading.Lock()
        for key, encoding in index_store.encodings().items():
            refs, clks = index_store.records(*key)
            index = MemberIndex.load(
                encoding.clk_bits,
                refs,
                as_words(clks, encoding.clk_bits),
                threshold=self._threshold(key[0]),
                merge_cpus=merge_cpus,
            )
            self._set_index(key, index, encoding)
        self._warm_up()
        log.info("loaded %d standing indexes", len(self._indexes))

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

    # -- reading -----------------------------------------------------------------------------

    def get(self, project: str, member: str) -> MemberIndex | None:
        return self._indexes.get((project, member))

    def snapshots(self, project: str, *, besides: str) -> dict[str, Snapshot]:
        """What a query by `besides` searches: every partner's index, by partner."""
        return {
            m: index.snapshot
            for m, index in self._by_project.get(project, {}).items()
            if m != besides
        }

    def held(self, project: str, *, besides: str | None = None) -> list[Held]:
        """The encodings the project holds (indexes and uploads), for the compatibility rule."""
        held = [
            Held(f"{m}'s index", enc)
            for (p, m), enc in self._encodings.items()
            if p == project and m != besides
        ]
        for m, upload in self.store.current_uploads(project).items():
            if m != besides:
                held.append(Held(f"{m}'s upload", upload.encoding))
        return held

    def listing(self, project: str, member: str) -> tuple[int, list[str], list[bytes]]:
        """(clk_bits, refs, digests) of the member's index."""
        with self._write_lock:
            index = self._indexes.get((project, member))
            if index is None:
                return 0, [], []
            refs = sorted(index.refs())
            digests = [clk_digest(index.clk(r).tobytes()) for r in refs]
            return index.clk_bits, refs, digests

    # -- changing ----------------------------------------------------------------------------

    def change(
        self,
        project: str,
        member: str,
        encoding: Encoding,
        puts: Sequence[tuple[str, bytes]],
        removes: Sequence[str],
    ) -> tuple[ChangeSummary, np.ndarray | None]:
        """Apply one member's change: durable, then visible to the next query. Returns
        the summary and the CLKs put, as words, for the watches (None: nothing changed)."""
        check_clk_bits(encoding.clk_bits, "header.clk_bits")
        check_fingerprint(encoding.fingerprint, "header.fingerprint")
        _check_refs(puts, removes, encoding.clk_bits)
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
                held = self.held(project, besides=member)
                if mine is not None and len(removes) < len(index or ()):
                    held.append(Held("your index", mine))
                check_compatible(encoding, held)
            replaced = sum(1 for r, _ in puts if index is not None and r in index)
            size_after = (len(index) if index else 0) - len(removes) + len(puts) - replaced
            if size_after > MAX_INDEX_RECORDS:
                raise errors.ResourceExhausted(
                    f"the index would hold {size_after} records, over this matcher's limit "
                    f"of {MAX_INDEX_RECORDS}"
                )
            if not puts and not removes:
                return ChangeSummary(0, 0, 0, size_after), None
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
        return summary, put_words

    def erase_member(self, project: str, member: str) -> None:
        """Forget a member's standing index, on disk and in memory (erasure)."""
        with self._write_lock:
            self.index_store.erase_member(project, member)
            self._set_index((project, member), None, None)

    def erase_project(self, project: str) -> None:
        """Forget every index, limit and query record of an expired project."""
        with self._write_lock:
            self.index_store.erase_project(project)
            for key in [k for k in self._indexes if k[0] == project]:
                self._set_index(key, None, None)
            self._by_project.pop(project, None)


def _check_refs(puts: Sequence[tuple[str, bytes]], removes: Sequence[str], clk_bits: int) -> None:
    """Every reference valid and named once; every CLK put of the header's length."""
    clk_bytes = clk_bits // 8
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
            f"not {clk_bytes} ({clk_bits}-bit CLKs as the header says)"
        )
