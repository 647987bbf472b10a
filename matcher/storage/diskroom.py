"""Disk space promised to uploads (and index changes) in flight: an upload's room is checked
against what the disk has free less what the uploads still being received were promised and
have not written yet, so that uploads started together cannot each pass the check alone and
then fill the disk between them (eating `serve --min-free-mb`'s reserve, which keeps room
for the databases and the audit log, or failing part-way with a full disk).

Before this (attackwalk, 2026-12-07) each upload was checked against the free space alone:
two members each starting an upload of most of the free space were both admitted; and an
index change was not checked at all (a member could grow `index.sqlite` into the reserve).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from blindmatch.matcher.errors import ResourceExhausted

log = logging.getLogger("blindmatch.matcher")
MIB = 1024 * 1024


class Claim:
    """One upload's promised bytes; `wrote` counts those it has written (the disk's free
    space shows them from then on)."""

    def __init__(self, nbytes: int) -> None:
        self.remaining = nbytes

    def wrote(self, nbytes: int) -> None:
        self.remaining = max(0, self.remaining - nbytes)


class DiskRoom:
    """The room on `root`'s disk for uploads, keeping `min_free_bytes` free."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        self._claims: set[Claim] = set()

    def promised(self) -> int:
        """Bytes promised to uploads in flight and not written yet."""
        with self._lock:
            return sum(c.remaining for c in self._claims)

    @contextmanager
    def claim(self, nbytes: int, what: str = "upload") -> Iterator[Claim]:
        """Room for `what` (an upload, an index change) of `nbytes`, held while it is
        written; refused (RESOURCE_EXHAUSTED, before any byte is written) where it would
        leave less than `min_free_bytes` free once every claim held has written what it
        promised."""
        with self._lock:
            free = shutil.disk_usage(self.root).free
            promised = sum(c.remaining for c in self._claims)
            if free - promised - nbytes < self.min_free_bytes:
                self._refuse(nbytes, free, promised, what)
            claim = Claim(nbytes)
            self._claims.add(claim)
        try:
            yield claim
        finally:
            with self._lock:
                self._claims.discard(claim)

    def _refuse(self, nbytes: int, free: int, promised: int, what: str) -> None:
        reserve = self.min_free_bytes
        in_flight = (
            f", {promised / MIB:.1f} MiB of it promised to uploads in progress" if promised else ""
        )
        log.warning(  # the operator's to act on: the member is told only to ask them
            "refused an %s of %.1f MiB: %.1f MiB free on %s's disk%s, %.1f MiB kept in "
            "reserve (serve --min-free-mb); free space there%s",
            what, nbytes / MIB, free / MIB, self.root, in_flight, reserve / MIB,
            " or lower --min-free-mb" if reserve else "",
        )  # fmt: skip
        raise ResourceExhausted(
            f"not enough disk space on the matcher for this {what} ({nbytes / MIB:.1f} MiB "
            f"needed, {free / MIB:.1f} MiB free{in_flight}, {reserve / MIB:.1f} MiB kept "
            "in reserve); nothing was stored; "
            + ("try again once those uploads end, or " if promised else "")
            + "ask the operator to free space"
        )
