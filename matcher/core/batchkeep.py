"""What S1 and S2 keep of each batch of the proposal they evaluated until the combiner C
acknowledges it (docs/privacy-design.md "Resuming a pair of members a failure cut", design
(2); docs/protocol.md "A batch cut mid-way, resumed"): the batch's output shares, exactly
the bytes the server gave (or would have given) C, so that a batch whose answer C lost (the
matcher restarted, a connection cut, S2 killed before `Collect`) can be asked again by its
id alone and answered with the same bytes: C learns nothing it could not have received
once, whatever it dealt, and nothing is evaluated or counted again.

Bounded: at most `MAX_BATCHES` batches (the oldest dropped first) and `TTL_SECONDS` each;
a batch goes at `acknowledge`, when either member's upload is replaced or dropped
(`forget`), and at expiry. A batch of the proposal at 16,384 pairs and four cut-offs is
(4 + 64) x 2,048 bytes = 139 KB; C acknowledges each batch once its answer is journaled, so
an honest run leaves about one batch a run on each server; the bound is 64 x 139 KB = 8.9 MB
a server (memory, and the same on disk with a data dir: `directory`, one file a batch,
written before the shares leave the server and reloaded at a restart, so that a role
restarted after the rounds still answers; the folder 0700 and its files 0600 whatever the
umask, those made before 2026-12-06 by the umask (0755, 0644) tightened at the start). A
keep made with `memory=False` and a directory holds each batch's bytes on disk only, read
back by `get` (each batch's inputs: S2's are 5.2 MB a batch, up to 84 MB in memory
otherwise, for a rerun that is rare).

What a kept batch is refused with says why (`Gone`): never kept (or lost by a role without
a data dir), acknowledged, expired, or its uploads replaced."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

MAX_BATCHES = 64
MAX_INPUTS = 16  # batches whose inputs a role keeps (S2's: its setup, 2.5-5.1 MB each)
TTL_SECONDS = 7 * 24 * 3600.0
_GONE_REMEMBERED = 4096  # ids whose reason a refusal can still name
_HEADER = 4  # bytes of the JSON header's length at the start of a batch's file


class Gone(LookupError):
    """A batch the server holds no shares of; the message says why."""


@dataclass(frozen=True)
class Kept:
    """One batch's output shares, as the server gave them, and what its refusal checks."""

    batch: str
    members: tuple[str, str]  # the uploads' names (project/member/tag), as the batch named
    pairs: int
    shares: bytes
    rounds: int = 0
    sent: int = 0  # S1: bytes of the rounds each way
    received: int = 0
    at: float = 0.0  # when kept (wall clock)


class BatchKeep:
    """A role's kept batches (`directory`: on disk as well, reloaded; `memory` False: their
    bytes on disk only, read back by `get`)."""

    def __init__(
        self,
        directory: Path | None = None,
        clock: Callable[[], float] = time.time,
        max_batches: int = MAX_BATCHES,
        ttl: float = TTL_SECONDS,
        memory: bool = True,
    ) -> None:
        self.directory, self.clock = directory, clock
        self.max_batches, self.ttl = max_batches, ttl
        self.memory = memory or directory is None
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)  # (made by the umask before 2026-12-06: 0755)
            self._load()

    def _file(self, batch: str) -> Path:
        assert self.directory is not None
        return self.directory / (hashlib.sha256(batch.encode()).hexdigest() + ".batch")

    def _load(self) -> None:
        assert self.directory is not None
        found = []
        for path in self.directory.glob("*.batch"):
            try:
                path.chmod(0o600)  # (written by the umask before 2026-12-06: 0644)
                found.append(self._read(path, whole=self.memory))
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)  # a torn write: the batch is not resumable
        for kept in sorted(found, key=lambda k: k.at):
            self._kept[kept.batch] = kept
        self._expire()

    @staticmethod
    def _read(path: Path, whole: bool = True) -> Kept:
        """A batch's file (`whole` False: its header, the bytes left out, checked whole)."""
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(_HEADER), "little")
            head = json.loads(f.read(n))
            size = os.fstat(f.fileno()).st_size - _HEADER - n
            shares = f.read() if whole else b""
        if size < 0 or (whole and len(shares) != size):
            raise ValueError(f"{path.name}: torn")
        return Kept(head["batch"], tuple(head["members"]), head["pairs"], shares,
                    head["rounds"], head["sent"], head["received"], head["at"])  # fmt: skip

    def _write(self, kept: Kept) -> None:
        head = json.dumps({"batch": kept.batch, "members": list(kept.members),
                           "pairs": kept.pairs, "rounds": kept.rounds, "sent": kept.sent,
                           "received": kept.received, "at": kept.at}).encode()  # fmt: skip
        path = self._file(kept.batch)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # shares: owner's only
        with os.fdopen(fd, "wb") as f:
            f.write(len(head).to_bytes(_HEADER, "little") + head + kept.shares)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _drop(self, batch: str, reason: str) -> None:
        """(Under the lock.)"""
        self._kept.pop(batch, None)
        self._gone[batch] = reason
        while len(self._gone) > _GONE_REMEMBERED:
            self._gone.popitem(last=False)
        if self.directory is not None:
            self._file(batch).unlink(missing_ok=True)

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl
        for batch in [b for b, k in self._kept.items() if k.at < cutoff]:
            self._drop(batch, f"expired ({self.ttl / 3600:g} hours after it was evaluated)")

    def put(self, kept: Kept) -> None:
        """Keep a batch's shares (durably first with a directory), the oldest beyond
        `max_batches` dropped."""
        kept = Kept(kept.batch, kept.members, kept.pairs, kept.shares, kept.rounds, kept.sent,
                    kept.received, self.clock())  # fmt: skip
        if self.directory is not None:
            self._write(kept)
        with self._lock:
            self._gone.pop(kept.batch, None)
            self._kept[kept.batch] = kept if self.memory else dataclasses.replace(kept, shares=b"")
            self._expire()
            while len(self._kept) > self.max_batches:
                oldest = next(iter(self._kept))
                self._drop(oldest, f"dropped: the server keeps at most {self.max_batches} "
                                   "batches not acknowledged")  # fmt: skip

    def get(self, batch: str) -> Kept:
        """The batch's kept shares, or `Gone` saying why there are none."""
        with self._lock:
            self._expire()
            kept = self._kept.get(batch)
            if kept is not None and self.memory:
                return kept
            if kept is not None:  # (on disk only: read back, its file written whole)
                try:
                    return dataclasses.replace(kept, shares=self._read(self._file(batch)).shares)
                except (OSError, ValueError, KeyError) as exc:
                    self._drop(batch, f"its kept file could not be read ({exc})")
            reason = self._gone.get(batch, "never evaluated here, or evaluated by a server "
                                           "that restarted without a data dir")  # fmt: skip
        raise Gone(f"batch {batch!r}: {reason}")

    def acknowledge(self, batches: Iterable[str]) -> int:
        """Drop the batches C holds the answers of: how many were held."""
        with self._lock:
            held = [b for b in batches if b in self._kept]
            for batch in held:
                self._drop(batch, "acknowledged: the combiner holds its answer")
        return len(held)

    def forget(self, names: Iterable[str]) -> int:
        """Drop the batches over any of the uploads `names` (replaced or dropped)."""
        gone = set(names)
        with self._lock:
            over = [b for b, k in self._kept.items() if gone & set(k.members)]
            for batch in over:
                self._drop(batch, "its uploads were replaced or dropped since")
        return len(over)

    def has(self, batch: str) -> bool:
        with self._lock:
            return batch in self._kept

    def drop(self, batch: str, reason: str) -> None:
        """Drop one batch (its id refused with `reason` after)."""
        with self._lock:
            self._drop(batch, reason)

    def held(self) -> int:
        with self._lock:
            return len(self._kept)

    def nbytes(self) -> int:
        """The kept batches' bytes held in memory (none with `memory` False)."""
        with self._lock:
            return sum(len(k.shares) for k in self._kept.values())


def pack(*parts: bytes) -> bytes:
    """Byte strings in one (each after its 4-byte length), for a kept batch's inputs."""
    return b"".join(len(p).to_bytes(_HEADER, "little") + p for p in parts)


def unpack(data: bytes) -> list[bytes]:
    parts, at = [], 0
    while at < len(data):
        n = int.from_bytes(data[at : at + _HEADER], "little")
        parts.append(data[at + _HEADER : at + _HEADER + n])
        at += _HEADER + n
    return parts


__all__ = [
    "MAX_BATCHES",
    "MAX_INPUTS",
    "TTL_SECONDS",
    "BatchKeep",
    "Gone",
    "Kept",
    "pack",
    "unpack",
]
