"""Shards of the standing indexes, held by look-up servers (docs/scale.md).

A member's index is split by a hash of each record's ref into `shards` parts
(`shard_of`); a look-up server (`blindmatch lookup-server`) holds part `shard` of every
index of every project, as `Shards`: each part a `core.index.MemberIndex` (or
`FallbackIndex`) with its own LSH tables, searched by the same native batch look-up as the
matcher's in-process indexes (lookups.py). The matcher stays the front: it checks,
meters, records and discloses; it forwards each change it has stored durably
(`ShardChange`, under its writer's lock, so in order) and fans each query out to every
server (`RemoteLookups`, at the gRPC edge: rpc/lookup_client.py), then merges the
(member, ref, score) answers.

Durability stays in the matcher's index.sqlite. A look-up server reads its shards from it on
start (storage/shard_source.py) and again when the matcher asks (`reload`: after a change it
could not forward; answered at once, taken after an apply holding the lock). It listens
before it reads, and queues the changes forwarded meanwhile; once read, it applies the queue
in order. Replaying changes already in what it read is harmless: a put or remove, replayed
in order over a later state, ends where the sequence ends (each ref's last operation wins),
so nothing acknowledged is lost between the read and the queue. Searches are refused
(`Unavailable`) until it is ready, never answered from part of the shards.

A look-up server without a data dir (on another machine: SQLite's readers must share the
writer's host) starts empty and is loaded by its matcher instead (`replace`, from the
`Load` stream the matcher sends from its memory: `StandingIndexes.shard_records`). Until
then it refuses searches (`FailedPrecondition`: the matcher then loads it) and drops
forwarded changes, which the load carries. Changes stored while the matcher loads it are
not held up: the matcher queues them for this server and replays them, in order, once the
load is in (what the load carries of them too is harmless, as above), and answers no
query through it until then.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.core.fallback import Rule
from blindmatch.matcher.core.fallbackindex import FallbackIndex, load_index
from blindmatch.matcher.core.index import MemberIndex, as_words
from blindmatch.matcher.domain import Encoding, counted
from blindmatch.matcher.realtime.lookups import Answer, Lookups
from blindmatch.matcher.storage.shard_source import (
    NewerLayout,
    ShardRecords,
    read_after_stop,
    read_shards,
)

log = logging.getLogger("blindmatch.matcher.lookupserver")

ERASE_MEMBER = "member"
ERASE_PROJECT = "project"


def shard_of(ref: str, shards: int) -> int:
    """Which of `shards` parts of an index holds the record `ref` (the same everywhere)."""
    digest = hashlib.blake2b(ref.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


@dataclass(frozen=True)
class ShardChange:
    """A change the matcher has stored: records put and removed, or an index erased."""

    project: str
    member: str
    encoding: Encoding | None = None  # the index's, after the change
    threshold: float | None = None  # the project's
    puts: Sequence[tuple[str, bytes]] = ()
    removes: Sequence[str] = ()
    erase: str = ""  # ERASE_MEMBER, ERASE_PROJECT, or "" for puts and removes
    # The index is laid out anew (another fallback CLK or rule, `encoding`): every shard
    # takes the change, even one it puts nothing in, and lays its records out anew.
    layout: bool = False

    def part(self, shard: int, shards: int) -> ShardChange | None:
        """What of this change falls in one shard (None: nothing)."""
        if self.erase:
            return self
        puts = [(r, c) for r, c in self.puts if shard_of(r, shards) == shard]
        removes = [r for r in self.removes if shard_of(r, shards) == shard]
        if not puts and not removes and not self.layout:
            return None
        return ShardChange(self.project, self.member, self.encoding, self.threshold, puts,
                           removes, layout=self.layout)  # fmt: skip


class Fence(NamedTuple):
    """A forward's place in its matcher's order: pb.ShardFence."""

    matcher: str  # an id of the matcher's process
    seq: int  # the n-th change it forwarded (0: none yet)
    epoch: int = 0  # when that process started (ns since 1970): orders processes (0: unknown)


# shard, shards -> that shard of every index the matcher holds, and the projects' thresholds
# (`StandingIndexes.shard_records`): what a look-up server without a data dir is loaded with
ShardSource = Callable[[int, int], tuple[dict[tuple[str, str], ShardRecords], dict[str, float]]]


class RemoteLookups(Protocol):
    """The matcher's side of its look-up servers (rpc/lookup_client.py)."""

    def search(
        self,
        project: str,
        members: Sequence[str],
        queries: npt.NDArray[np.uint64],
        threshold: float,
        local: Callable[[], Answer] | None = None,
    ) -> Answer: ...

    def forward(self, change: ShardChange) -> None: ...

    def behind(self) -> list[str]: ...

    def holding(self, project: str, member: str) -> list[str]: ...

    def older_of(self, names: Sequence[str]) -> dict[str, str]: ...

    def catch_up(self) -> None: ...

    def attach(self, source: ShardSource) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


AnyIndex = MemberIndex | FallbackIndex


@dataclass
class Shards:
    """Shard `shard` of `shards` of every standing index, on one look-up server."""

    data_dir: Path | None  # None: loaded by the matcher (`replace`), not read
    shard: int
    shards: int
    started: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # (project, member) -> its encoding and this shard's index of it; replaced whole on a
    # change (under the lock), so a search reads it without the lock.
    _indexes: dict[tuple[str, str], tuple[Encoding, AnyIndex]] = field(default_factory=dict)
    _thresholds: dict[str, float] = field(default_factory=dict)
    # Changes forwarded while the shards are being read; None when ready.
    _queue: list[ShardChange] | None = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wanted: int = 1  # reads asked for (a read that ends with more asked reads again)
    _reading: bool = True  # the first read is to come (`load`)
    failed: str = ""  # why the last read failed
    _loaded: bool = False  # without a data dir: whether the matcher has loaded it
    # (matcher, seq): the last forwarded change what the shards were read or loaded from
    # holds (the read or load the matcher asked for last); one of them arriving later is
    # dropped (`apply`): a forward the matcher gave up on and reread for, arriving late
    _fence: Fence = field(default_factory=lambda: Fence("", 0))
    # The newest matcher process heard from (its epoch): a change from an older one arriving
    # later is dropped, and the shards read or loaded again (`_take`)
    _epoch: int = 0
    lookups: Lookups = field(default_factory=Lookups)
    # Reloads asked for and not yet taken (each one's `after`): taken by whoever holds the
    # lock next (`_take_asked`), so that a Reload does not wait for a long apply's lock;
    # searches are refused from the moment one is asked.
    _asked: list[Fence | None] = field(default_factory=list)
    _asked_lock: threading.Lock = field(default_factory=threading.Lock)
    # The matcher's stop record found unchanged before the running or last read began
    # (storage/shard_source.py `read_after_stop`; pb.ShardState `read_after_stop`): that
    # read holds every change stored before it. The first read's is looked for here, before
    # the server listens, so that a matcher starting beside it is told at once.
    read_after_stop: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.shards:
            raise ValueError(f"shard {self.shard} of {self.shards}: need 0 <= shard < shards")
        if self.data_dir is not None:
            self.read_after_stop = read_after_stop(self.data_dir)

    @property
    def ready(self) -> bool:
        return self._queue is None and not self._asked

    @property
    def loaded(self) -> bool:
        """Read from a data dir, or loaded by the matcher: holds what it should."""
        return self.data_dir is not None or self._loaded

    @property
    def records(self) -> int:
        return sum(len(index) for _, index in self._indexes.values())

    def reload(self, wait: bool = False, after: Fence | None = None) -> None:
        """Read every shard again from index.sqlite, in a thread (`wait`: here); searches
        are refused until it is done, changes forwarded meanwhile are queued (`after`:
        those up to it dropped, the read holds them). Returns at once, without waiting for
        the lock (which an apply building a large index may hold for seconds, longer than
        the matcher waits for a Reload): the asking is taken by whoever holds the lock
        next, before anything else (`_take_asked`); searches are refused from now on."""
        if self.data_dir is None:
            raise errors.FailedPrecondition(
                "this look-up server has no data dir to read its shards from: its matcher "
                "loads them (Load)"
            )
        with self._asked_lock:
            self._asked.append(after)
        if wait:
            self._take_asked_now()
        else:
            threading.Thread(target=self._take_asked_now, name="blindmatch-shards",
                             daemon=True).start()  # fmt: skip

    def retry_failed(self) -> None:
        """Read the shards again if the last read failed and none is running or asked for
        (the matcher asks whether a read is in: it counts this server as behind until one
        is, rpc/lookup_client.py `_reread`)."""
        if self.failed and self.data_dir is not None and not self._reading and not self._asked:
            self.reload()

    def _take_asked_now(self) -> None:
        """Take the reloads asked for (unless an apply has), under the lock; then read."""
        with self._lock:
            start = self._take_asked()
        if start:
            self._read()

    def _take_asked(self) -> bool:
        """The lock is held: the reloads asked for since it was last taken, each one's
        fence taken and a read asked for (queued behind a running read, which reads again).
        Whether the caller must start the read (none was running)."""
        with self._asked_lock:
            asked, self._asked = self._asked, []
        if not asked:
            return False
        for after in asked:
            self._fence_at(after)
        self._wanted += 1
        if self._queue is None:
            self._queue = []
        if self._reading:
            return False  # the running read reads again when it ends
        self._reading = True
        return True

    def load(self) -> None:
        """The first read, at start (here, in this thread); without a data dir, nothing:
        the matcher loads it."""
        if self.data_dir is None:
            with self._lock:
                self._reading = False
            return
        self._read()

    def replace(
        self,
        indexes: dict[tuple[str, str], ShardRecords],
        thresholds: dict[str, float],
        after: Fence | None = None,
    ) -> None:
        """Hold these shards, loaded by the matcher, and nothing else; ready at once.
        What it sent holds every change forwarded before the load (those dropped here);
        the changes made during the load the matcher replays after it (`Apply`)."""
        if self.data_dir is not None:
            raise errors.FailedPrecondition(
                f"this look-up server reads its shards from {self.data_dir}; only one "
                "without a data dir is loaded by its matcher"
            )
        started = time.perf_counter()
        built = {key: (part.encoding, _build(part, thresholds.get(key[0])))
                 for key, part in indexes.items()}  # fmt: skip
        with self._lock:
            self._fence_at(after)
            self._indexes, self._thresholds = built, dict(thresholds)
            self._queue, self._reading, self.failed, self._loaded = None, False, "", True
        log.info(
            "shard %d of %d: %d records of %d indexes loaded by the matcher, built in %.1f s",
            self.shard,
            self.shards,
            self.records,
            len(built),
            time.perf_counter() - started,
        )

    def _read(self) -> None:
        assert self.data_dir is not None  # `reload` and `load` read only from a data dir
        while True:
            seen = read_after_stop(self.data_dir)  # (before the read: `read_after_stop`)
            with self._lock:
                wanted = self._wanted
                if wanted > 1:  # a read asked for since the first (the first's is older)
                    self.read_after_stop = seen
            started = time.perf_counter()
            try:
                found, thresholds = read_shards(
                    self.data_dir, lambda ref: shard_of(ref, self.shards) == self.shard
                )
                built = {
                    key: (part.encoding, _build(part, thresholds.get(key[0])))
                    for key, part in found.items()
                }
            except NewerLayout as exc:  # (what it holds is kept, and not searched)
                if str(exc) != self.failed:
                    log.error("shard %d of %d not read again: %s", self.shard, self.shards, exc)
                with self._lock:
                    self.failed, self._reading = str(exc), False
                return
            except Exception as exc:  # a damaged or missing file: say so on every search
                log.exception("reading the shards from %s failed", self.data_dir)
                with self._lock:
                    self.failed = f"reading its shards from index.sqlite failed: {exc}"
                    self._reading = False
                return
            with self._lock:
                self._indexes, self._thresholds = built, thresholds
                queue = self._queue or []
                for change in queue:
                    self._apply(change)
                self.failed = ""
                if self._wanted == wanted:
                    self._queue, self._reading = None, False
                    log.info(
                        "shard %d of %d: %d records of %d indexes read in %.1f s "
                        "(%d changes queued meanwhile)",
                        self.shard,
                        self.shards,
                        self.records,
                        len(built),
                        time.perf_counter() - started,
                        len(queue),
                    )
                    return
                self._queue = []  # read again: what it reads holds what was queued

    def _fence_at(self, after: Fence | None) -> None:
        """The lock is held."""
        if after is None or self._older(after):
            return  # (an older matcher process's: what it holds the server holds, or drops)
        self._epoch = max(self._epoch, after.epoch)
        if after.seq and (after.matcher != self._fence.matcher or after.seq > self._fence.seq):
            self._fence = after

    def _older(self, fence: Fence) -> bool:
        """Whether `fence` is a matcher process's older than one heard from since."""
        return 0 < fence.epoch < self._epoch

    def apply(self, change: ShardChange, sent: Fence | None = None) -> bool:
        """A change the matcher stored (queued while the shards are being read; dropped
        before the matcher has loaded a server without a data dir: the load carries it;
        dropped if the read or load the matcher asked for since holds it: `sent` up to the
        fence). Whether it was taken (applied or queued)."""
        with self._lock:
            start = self._take_asked()  # (a Reload asked for before it: first)
            taken = self._take(change, sent)
            start = self._take_asked() or start  # (one it asked for itself: `_take`)
        if start:
            threading.Thread(target=self._read, name="blindmatch-shards", daemon=True).start()
        return taken

    def _take(self, change: ShardChange, sent: Fence | None) -> bool:
        """`apply`'s under the lock."""
        if not self.loaded:
            return False
        if sent is not None and self._older(sent):
            # A forward of a matcher process older than one heard from since (restarted):
            # it arrives late, perhaps after changes it must precede. Dropped; what the
            # shards are read or loaded from next holds it (the old process stored it first).
            log.warning("dropped a change forwarded by an earlier matcher process, arriving "
                        "after its successor's: %s", "reading the shards again" if self.data_dir
                        else "waiting for the matcher to load them again")  # fmt: skip
            if self.data_dir is not None:
                with self._asked_lock:
                    self._asked.append(None)  # (taken by `apply`, next)
            else:
                self._loaded = False  # searches: FAILED_PRECONDITION, and the matcher loads it
            return False
        if sent is not None:
            self._epoch = max(self._epoch, sent.epoch)  # (a newer process's first forward)
            if sent.matcher == self._fence.matcher and sent.seq <= self._fence.seq:
                log.info("dropped a change forwarded before the read or load the matcher "
                         "asked for after it (which holds it): it arrived late")  # fmt: skip
                return False
        if self._queue is not None:
            self._queue.append(change)
        else:
            self._apply(change)
        return True

    def _apply(self, change: ShardChange) -> None:
        """Apply one change; replayed over a later state it changes nothing wrongly."""
        project, member = change.project, change.member
        if change.threshold is not None:
            self._thresholds[project] = change.threshold
        if change.erase == ERASE_PROJECT:
            self._indexes = {k: v for k, v in self._indexes.items() if k[0] != project}
            return
        key = (project, member)
        if change.erase == ERASE_MEMBER:
            self._indexes = {k: v for k, v in self._indexes.items() if k != key}
            return
        held = self._indexes.get(key)
        encoding = change.encoding or (held[0] if held else None)
        if encoding is None:
            return  # removes from an index this shard never held
        index = held[1] if held else None
        removes = [r for r in change.removes if index is not None and r in index]
        puts = list(change.puts)
        words = as_words(b"".join(c for _, c in puts), encoding.clk_bits)
        if index is not None and held is not None and _layout(held[0]) != _layout(encoding):
            # Another CLK length or fallback layout (a change of layout reaches every shard,
            # with or without puts in it: `ShardChange.layout`): build anew from what stays.
            gone = set(removes) | {r for r, _ in puts}
            kept = [r for r in index.refs() if r not in gone]
            if held[0].clk_bits != encoding.clk_bits:
                kept = []  # the matcher removed every old record (its rule)
            old = np.array([index.clk(r) for r in kept], dtype=np.uint64)
            rows = np.concatenate([old.reshape(-1, words.shape[1]), words])
            index = _build(ShardRecords(encoding, kept + [r for r, _ in puts], rows.tobytes()),
                           self._thresholds.get(project))  # fmt: skip
        elif index is None:
            if not puts:
                return
            index = _build(
                ShardRecords(encoding, [r for r, _ in puts], words.tobytes()),
                self._thresholds.get(project),
            )
        else:
            index.apply([r for r, _ in puts], words, removes)
        indexes = {k: v for k, v in self._indexes.items() if k != key}
        if len(index):
            indexes[key] = (encoding, index)
        self._indexes = indexes  # replaced whole: a search reads it without the lock

    def search(
        self,
        project: str,
        members: Sequence[str],
        queries: npt.NDArray[np.uint64],
        threshold: float,
    ) -> Answer:
        """Each query row's hits in this server's shards of `members`' indexes (members it
        holds nothing of: no hits)."""
        if not self.loaded:
            raise errors.FailedPrecondition(
                f"shard {self.shard} of {self.shards} holds nothing yet: this look-up server "
                "has no data dir and waits for its matcher to load it"
            )
        if self.failed:  # try again (the matcher's data dir made meanwhile, say)
            failed = self.failed
            self.reload()
            raise errors.Unavailable(f"{failed}; reading them again")
        if self._queue is not None or self._asked:
            raise errors.Unavailable(
                f"shard {self.shard} of {self.shards} is being read from index.sqlite; "
                "try again in a moment"
            )
        indexes = self._indexes  # one version of it for the whole search
        held = {m: indexes.get((project, m)) for m in members}
        width = queries.shape[1] * 64 if queries.ndim == 2 else 0
        for m, h in held.items():
            if h is not None and h[0].clk_bits != width:  # no "no match" for another layout
                raise errors.InvalidArgument(
                    f"clk_bits: {width}, but {m}'s index in {project} holds "
                    f"{h[0].clk_bits}-bit CLKs"
                )
        snapshots = {m: h[1].snapshot for m, h in held.items() if h is not None}
        found = self.lookups.search(snapshots, queries, threshold) if snapshots else None
        return [
            {m: (found[i].get(m, []) if found else []) for m in members}
            for i in range(len(queries))
        ]


def _build(part: ShardRecords, threshold: float | None) -> AnyIndex:
    enc = part.encoding
    words = as_words(part.clks, enc.clk_bits)
    return load_index(enc.clk_bits, enc.fallback_bits, part.refs, words, threshold, rule=enc.rule)


def _layout(encoding: Encoding) -> tuple[int, int, Rule]:
    return encoding.clk_bits, encoding.fallback_bits, encoding.rule


def describe_shards(addresses: Sequence[str]) -> str:
    """How the matcher's indexes are spread, for its log."""
    return (
        f"real-time look-ups go to {counted(len(addresses), 'look-up server')}, each index "
        f"split by ref into {counted(len(addresses), 'shard')}: "
        + ", ".join(f"shard {i} at {a}" for i, a in enumerate(addresses))
    )
