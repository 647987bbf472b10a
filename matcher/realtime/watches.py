"""Watches: a member's standing question, answered when a partner later indexes a match.

A watch holds its CLKs in memory only while the member's stream is open, and only in
projects where the operator allowed watching. When a partner's index change puts new
records, each open watch of another member is searched against just those records; a
match is disclosed at that partner's level (the same ladder as queries and batch
results) and recorded as a notification, in the audit log, before any of the change's
notifications is sent (if that record fails, none is). A two-server project's watch
(twowatch.py) holds no CLK here, only its records' name at S1 and S2: each partner's new upload
is compared with them there, and its notifications go the same way (`deliver`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core.disclose import Match, QueryDisclosure, disclose_query
from blindmatch.matcher.core.fallback import NO_RULE, Rule
from blindmatch.matcher.core.fallbackindex import searchable
from blindmatch.matcher.core.segment import Hits
from blindmatch.matcher.domain import NOTIFY, Encoding, Level, Project, QueryRecord, counted

log = logging.getLogger("blindmatch.matcher.realtime")

# A watch's notification: (watched record, partner, match or None at COUNT).
Notification = tuple[int, str, Match | None]


@dataclass
class Watch:
    """A member's open watch: the CLKs it watches and the events waiting for it."""

    project: str
    member: str
    purpose: str
    words: np.ndarray
    events: queue.Queue[Notification | None] = field(default_factory=queue.Queue)
    ended: str = ""  # why the matcher ended the watch (its project expired), if it did
    user: str = ""  # the member's named user who opened it (its notifications' audit entries)
    # How `ended` is told: the error its stream ends with (made from `ended`).
    ended_as: Callable[[str], errors.ServiceError] = errors.NotFound
    # A two-server project's (twowatch.py): the watched records' name at S1 and S2 (`words`
    # empty: the matcher holds none of them), how many, and their encoding's facts.
    name: str = ""
    records: int = 0
    encoding: Encoding | None = None
    # A two-server watch's partner -> the upload it was last compared with, by itself or by
    # its catch-up query (twowatch.py `claim`): each upload's matches told once.
    compared: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """How many records it watches."""
        return self.records if self.name else len(self.words)

    def end(self, why: str, as_: Callable[[str], errors.ServiceError]) -> None:
        """End it (its stream is told `as_(why)`, then forgets it), at once: a stream
        waiting for its next event wakes (None in `events`: nothing to tell)."""
        self.ended_as, self.ended = as_, why
        self.events.put(None)

    def next_event(self, timeout: float) -> Notification | None:
        """The next event, or None after `timeout` seconds."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


class Watches:
    """The open watches of every project."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Watch] = []
        self._ended: errors.ServiceError | None = None  # why, once `end_all` has been called

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def watching(self, project: str, *, besides: str) -> bool:
        """Whether a member other than `besides` watches in `project`."""
        with self._lock:
            return any(w.project == project and w.member != besides for w in self._open)

    def of(self, project: str, *, besides: str) -> list[Watch]:
        """The open watches in `project` of members other than `besides`."""
        with self._lock:
            return [w for w in self._open if w.project == project and w.member != besides]

    def every(self) -> list[Watch]:
        with self._lock:
            return list(self._open)

    def add(self, watch: Watch) -> None:
        """Hold `watch` open; once `end_all` has been called (the matcher stopping), ended
        at once as those were: a watch accepted just as the stop began does not wait the
        stop's grace either."""
        with self._lock:
            self._open.append(watch)
            ended = self._ended
        if ended is not None:
            watch.end(str(ended), _told(ended))

    def remove(self, watch: Watch) -> None:
        """Forget a watch and its CLKs (when its stream ends)."""
        with self._lock:
            self._open = [w for w in self._open if w is not watch]

    def end_project(self, project: str, why: str) -> None:
        """End and forget every watch in `project`, telling each why."""
        with self._lock:
            for w in self._open:
                if w.project == project:
                    w.end(why, errors.NotFound)
            self._open = [w for w in self._open if w.project != project]

    def end_all(self, why: errors.ServiceError) -> int:
        """End every open watch now, its stream told `why` (the matcher stopping: server.py
        `RunningServer.stop`), and any added later (`add`); how many. Each is forgotten as
        its stream ends (a two-server watch's records forgotten by S1 and S2 then, or at
        `TwoServerWatches.close`)."""
        with self._lock:
            self._ended = why  # and any added from now on (`add`)
            watches = [w for w in self._open if not w.ended]
        for w in watches:
            w.end(str(why), _told(why))
        return len(watches)

    def notify(
        self,
        project: Project,
        partner: str,
        level: Level,
        refs: Sequence[str],
        words: np.ndarray,
        record: Callable[[Sequence[QueryRecord]], None],
        clock: Callable[[], float],
        fallback_bits: int = 0,
        rule: Rule = NO_RULE,
    ) -> None:
        """Tell every other member's watch in `project` which of `partner`'s newly put
        records (`refs`, `words`) match it, as far as `level` (what a member may learn
        about `partner`) allows; scored as a query would be (`fallback_bits`: the
        fallback rule's, core.fallbackindex, and `rule` over both CLKs)."""
        watches = [w for w in self.of(project.name, besides=partner) if not w.name]
        if not watches:
            return
        added = searchable(words, refs, fallback_bits, rule)
        found = [
            (w, [(i, added.search(q, project.threshold)) for i, q in enumerate(w.words)])
            for w in watches
        ]
        deliver(project.name, partner, level, found, record, clock)


def _told(why: errors.ServiceError) -> Callable[[str], errors.ServiceError]:
    """`Watch.ended_as` for a watch ended with `why` itself."""

    def told(_: str) -> errors.ServiceError:
        return why

    return told


def deliver(
    project: str,
    partner: str,
    level: Level,
    found: Sequence[tuple[Watch, Sequence[tuple[int, Hits]]]],
    record: Callable[[Sequence[QueryRecord]], None],
    clock: Callable[[], float],
    refer: Callable[[Watch, QueryDisclosure], QueryDisclosure] | None = None,
) -> int:
    """Tell each watch which of its records (index, hits) `partner` now holds, as far as
    `level` allows (`refer`: a two-server project's, its rows made request references at
    `mapping`): each a notification recorded (durably, all in one write) before any is
    sent; none is sent if that fails. How many were sent."""
    events: list[tuple[Watch, Notification]] = []
    records: list[QueryRecord] = []
    for watch, hits_of in found:
        for i, hits in hits_of:
            if not hits:
                continue
            answer = disclose_query([{partner: hits}], {partner: level})
            if refer is not None:
                answer = refer(watch, answer)
            match = answer.results[0][0] if answer.results[0] else None
            events.append((watch, (i, partner, match)))
            records.append(
                QueryRecord(
                    clock(),
                    project,
                    watch.member,
                    NOTIFY,
                    watch.purpose,
                    1,
                    records_with_hits=1,
                    disclosed={partner: level.label},
                    user=watch.user,
                )
            )
    if not events:
        return 0
    try:
        record(records)  # durable in the audit log first
    except Exception:
        log.exception("%s not recorded, so not sent", counted(len(events), "watch notification"))
        return 0
    for watch, event in events:
        watch.events.put(event)
    return len(events)
