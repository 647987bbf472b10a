"""S1's big fields of an upload (its band keys and tokens) as the parts come
(rpc/twoserver_uploads.py `read_upload`): in memory up to a threshold, then in a file,
written by a thread of the spool's own. With a data dir the file is the store's own
(`Kept`: `F.NAME.tmp` in the store's folder, hashed as it is written), which the store
then renames into place (storage/role_store.py `write`'s `apart`), so an upload reaches
S1's disk once; without one, an unlinked temporary file."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.storage.datadir import FILE_MODE

SPILL_BYTES = 64 << 20


class Spool:
    """A field's bytes as the parts add them (`+=`): in memory up to `spill` bytes, then,
    with a `folder`, in a file of its own there, which `array` maps read-only: the file
    `keep_as` (owner-only, kept, its SHA-256 taken as it is written: `digest`), or else an
    unlinked one (`tempfile.TemporaryFile`). S1's tokens and band keys are about 97% of an
    upload (13 bytes a key and 32 or more of tokens, against 264 bytes a record of shares):
    mapped, they stay out of S1's memory but for the pages a join reads (docs/performance.md
    "Two-server share files and S1's memory at 20,000 records").

    Past `spill` the parts' bytes are written by a thread of the spool's own, a chunk
    (`spill` / 32, 2 MB) a write, at most AHEAD chunks behind the parts: S1 takes the next
    part while the last ones go to disk, where each part's write held up the upload (4.1 of
    S1's 9.7 s at 10,000 records, docs/performance.md "S1's upload and its disk"); a kept
    file's chunks are hashed on a second thread meanwhile."""

    AHEAD = 2  # chunks queued for the writer before `+=` waits for it

    def __init__(
        self, folder: Path | None, spill: int = SPILL_BYTES, keep_as: Path | None = None
    ) -> None:
        self.folder, self.spill, self.keep_as, self.buf = folder, spill, keep_as, bytearray()
        self.file: IO[bytes] | None = None
        self.size = 0
        self.queued: list[memoryview] = []  # the parts' bytes not yet handed to the writer
        self.queued_bytes = 0
        self.writer: ThreadPoolExecutor | None = None
        self.hasher: ThreadPoolExecutor | None = None
        self.hash = hashlib.sha256()
        self.writing: deque[Future[None]] = deque()
        self.mapped: mmap.mmap | bytes = b""

    @property
    def kept(self) -> bool:
        """Whether the bytes went to the file `keep_as` (else they are in memory)."""
        return self.keep_as is not None and self.file is not None

    @property
    def digest(self) -> str:
        """The SHA-256 of a kept file's bytes (hex), once `array` has them all."""
        return self.hash.hexdigest()

    def __iadd__(self, data: bytes | memoryview) -> Spool:
        view = memoryview(data).cast("B")
        if self.file is None and self.folder is not None and self.size + view.nbytes > self.spill:
            self.file = self._open()
            self.writer = ThreadPoolExecutor(1, thread_name_prefix="spool")
            if self.keep_as is not None:
                self.hasher = ThreadPoolExecutor(1, thread_name_prefix="spool-hash")
            self.queued, self.queued_bytes = [memoryview(self.buf)], len(self.buf)
            self.buf = bytearray()
        if self.file is not None:
            self.queued.append(view)  # (the part's own bytes, not copied here)
            self.queued_bytes += view.nbytes
            if self.queued_bytes >= self.spill // 32:
                self._hand_over()
        else:
            self.buf += view
        self.size += view.nbytes
        return self

    def _open(self) -> IO[bytes]:
        if self.keep_as is None:
            return tempfile.TemporaryFile(dir=self.folder, prefix=".upload-", buffering=0)
        fd = os.open(self.keep_as, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
        return os.fdopen(fd, "r+b", buffering=0)

    def _hand_over(self) -> None:
        """The queued bytes to the writer (and the hasher), as one chunk, once it has at
        most AHEAD - 1 more."""
        assert self.writer is not None and self.file is not None
        while len(self.writing) >= self.AHEAD:
            self.writing.popleft().result()
        pieces, self.queued, self.queued_bytes = tuple(self.queued), [], 0
        if self.hasher is not None:
            self.writing.append(self.hasher.submit(_hash_all, self.hash, pieces))
        self.writing.append(self.writer.submit(_write_all, self.file.fileno(), pieces))

    def array(self, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """The bytes as one array of `dtype`: over the buffer, or mapped from the file."""
        if self.file is None:
            return np.frombuffer(self.buf, np.dtype(dtype))
        if self.queued:
            self._hand_over()
        self.close()
        return np.frombuffer(self.mapped, np.dtype(dtype))

    def close(self) -> None:
        """Wait for the writes, end the threads and map the file (`mapped`), then close it
        (the map keeps an unlinked file until it is dropped)."""
        if self.file is None or self.file.closed:
            return
        try:
            while self.writing:
                self.writing.popleft().result()
        finally:
            for pool in (self.writer, self.hasher):
                if pool is not None:
                    pool.shutdown()
            size = os.fstat(self.file.fileno()).st_size
            self.mapped = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            self.file.close()


def _write_all(fd: int, pieces: tuple[memoryview, ...]) -> None:
    """`pieces` written to `fd` one after the other, IOV_MAX (1,024) a write (`os.writev`),
    not copied."""
    for lo in range(0, len(pieces), 1024):
        batch = pieces[lo : lo + 1024]
        done = os.writev(fd, batch)
        for piece in batch:  # what a short write left
            if done >= piece.nbytes:
                done -= piece.nbytes
                continue
            rest, done = piece[done:], 0
            while rest:
                rest = rest[os.write(fd, rest) :]


def _hash_all(digest: Any, pieces: tuple[memoryview, ...]) -> None:
    """`pieces` added to `digest` in order (hashlib lets go of the GIL for each)."""
    for piece in pieces:
        digest.update(piece)


@dataclass
class Kept:
    """Where S1's spool writes an upload's band keys and tokens for the store to keep (S1
    with a data dir): its folder and the upload's file name F (storage/role_store.py
    `new_file`); each array spooled to `F.NAME.tmp` there (NAME as `Held.named` has it,
    e.g. `sealed0.keys`)."""

    folder: Path
    file: str
    spools: dict[str, Spool] = field(default_factory=dict)

    def spool(self, name: str, spill: int) -> Spool:
        """The spool of array `name`, its file this upload's."""
        self.spools[name] = Spool(self.folder, spill, self.folder / f"{self.file}.{name}.tmp")
        return self.spools[name]

    def written(self) -> dict[str, str]:
        """The arrays that went to their files, in the upload's order, with their SHA-256
        (the store's `apart`); the rest stayed in memory."""
        return {n: self.spools[n].digest for n in sorted(self.spools) if self.spools[n].kept}

    def discard(self) -> None:
        """Delete the spooled files (an upload refused, or not kept: a query's), once their
        writes end (a write that failed, as the one the upload was refused for, does not
        stop the others' deletion); arrays already mapped from them stay readable."""
        for name, spool in self.spools.items():
            with contextlib.suppress(OSError):
                spool.close()
            (self.folder / f"{self.file}.{name}.tmp").unlink(missing_ok=True)


__all__ = ["SPILL_BYTES", "Kept", "Spool"]
