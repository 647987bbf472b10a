"""Members' upload streams at S1 and S2, capped and ended when idle (twoattack, 2026-12-07).

A role answers every call from one pool of request threads (twoserver_service.py `THREADS`),
and an upload holds one for as long as its stream is open. Before this, a member holding one
upload ticket (any project's) could open sixteen upload streams that sent nothing and so hold
every thread: the combiner's calls (`Holds`, `Propose`, `Evaluate`) then waited for a thread,
and every project's runs, queries and uploads at that role stopped. Now a role keeps at most
`IN_ALL` member uploads open (half its threads: the parties' calls always find one), at most
`PER_MEMBER` of one project member (by its ticket's name), refusing the next at once with
`Busy` (RESOURCE_EXHAUSTED, marked retryable); and it ends an upload whose client sent
nothing for `STREAM_IDLE_SECONDS` (DEADLINE_EXCEEDED; nothing of it is kept), as the
matcher's own streams are (rpc/streams.py).

A ticket admits one upload to each role: a second under a name the role holds, or is
receiving, is refused FAILED_PRECONDITION (a query ticket's records may be sent again until
a query counts them: rpc/twoserver_queries.py `check_upload`). Before, a member's ticket
replayed within its hour after the matcher took the upload replaced what S1 or S2 held under
that name, unseen by the matcher, whose header (its count, the SHA-256 of S2's shares) then
described other shares.
The members' key (stand-alone roles) admits an upload under a name held, which replaces it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from blindmatch.matcher.core import tickets
from blindmatch.matcher.domain import STREAM_IDLE_SECONDS
from blindmatch.matcher.errors import Busy, DeadlineExceeded, FailedPrecondition
from blindmatch.matcher.rpc.callreads import CallReads
from blindmatch.matcher.rpc.streams import _IdleSweep
from blindmatch.matcher.rpc.twoserver_role import NAMES

IN_ALL = 8  # member uploads open at once at a role: half its request threads
PER_MEMBER = 4  # of one project member (a ticket's project/member)


@dataclass(eq=False)
class _Open:
    who: str  # project/member of the ticket; "" for the members' key (stand-alone)
    name: str  # the ticket's name (project/member/tag); ""
    reads: CallReads
    waiting_since: float | None = field(default=None)


class UploadGuard(_IdleSweep):
    """The member uploads open at one role (`party`: "S1", "S2" or "the combiner")."""

    def __init__(self, party: str, idle_seconds: float = STREAM_IDLE_SECONDS) -> None:
        self.party, self.idle_seconds = party, idle_seconds
        self._lock = threading.Lock()
        self._open: list[_Open] = []
        self.refused = 0  # uploads refused as busy since the role started
        super().__init__(f"bm-{party}-uploads", 1.0)

    @contextmanager
    def guarded(self, vouched: str, context: Any, parts: Iterator[Any]) -> Iterator[Iterator[Any]]:
        """`parts` of an upload admitted under `vouched` (a ticket's name; "" the members'
        key), counted in now (`Busy` past a cap) and out when the block ends."""
        who = "/".join(vouched.split("/")[:2]) if vouched else ""
        with self._lock:
            if (
                vouched
                and not tickets.is_query(vouched)
                and any(s.name == vouched for s in self._open)
            ):
                raise FailedPrecondition(
                    f"member: {self.party} is receiving an upload under {vouched!r} already (a "
                    "ticket admits one upload to each role): ask the matcher for a new ticket"
                )
            mine = sum(1 for s in self._open if who and s.who == who)
            if who and mine >= PER_MEMBER:
                self.refused += 1
                raise Busy(f"{self.party} refused this upload: {who} has {mine} uploads open, "
                           f"at most {PER_MEMBER}; retry once one has ended")  # fmt: skip
            if len(self._open) >= IN_ALL:
                self.refused += 1
                raise Busy(
                    f"{self.party} refused this upload: {len(self._open)} members' uploads are "
                    f"open, at most {IN_ALL} (the rest of its threads are the parties'); retry "
                    "shortly"
                )
            stream = _Open(who, vouched, CallReads(context))
            self._open.append(stream)
        try:
            yield self._read(stream, stream.reads.reading(parts))
        finally:
            with self._lock:
                if stream in self._open:
                    self._open.remove(stream)

    @staticmethod
    def _read(stream: _Open, parts: Iterator[Any]) -> Iterator[Any]:
        while True:
            stream.waiting_since = time.monotonic()
            try:
                part = next(parts)
            except StopIteration:
                return
            finally:
                stream.waiting_since = None
            yield part

    def open_uploads(self) -> int:
        with self._lock:
            return len(self._open)

    def end_idle(self) -> int:
        """End every upload that waited longer than `idle_seconds` for its next part."""
        waited = time.monotonic() - self.idle_seconds
        with self._lock:
            idle = [
                s for s in self._open if s.waiting_since is not None and s.waiting_since < waited
            ]
            for s in idle:
                self._open.remove(s)
        for s in idle:
            s.reads.stop(DeadlineExceeded(
                f"Upload: no part from the client for {self.idle_seconds:g} s; {self.party} "
                "ended the upload and keeps nothing of it"
            ))  # fmt: skip
        return len(idle)


_MADE = threading.Lock()


def guarded_upload(service: Any, parts: Iterator[Any], context: Any) -> Any:
    """A role's `Upload` (`service`: rpc/twoserver_role.py's `_Role`), through its guard,
    made (and its idle sweep started) at its first upload; `close_guard` stops it."""
    vouched = service.vouched(context)
    with _MADE:
        guard = getattr(service, "upload_guard", None)
        if guard is None:
            guard = service.upload_guard = UploadGuard(NAMES[service.role])
            guard.start()
    with guard.guarded(vouched, context, parts) as guarded:
        if vouched in service.held and not tickets.is_query(vouched):  # (a ticket replayed)
            raise FailedPrecondition(
                f"member: {NAMES[service.role]} holds an upload under {vouched!r} already, and "
                "a ticket admits one upload to each role (the matcher may have taken it): ask "
                "the matcher for a new ticket (`blindmatch upload` does)"
            )
        return service.upload(guarded, vouched)


def close_guard(service: Any) -> None:
    guard = getattr(service, "upload_guard", None)
    if guard is not None:
        guard.close()


__all__ = ["IN_ALL", "PER_MEMBER", "UploadGuard", "close_guard", "guarded_upload"]
