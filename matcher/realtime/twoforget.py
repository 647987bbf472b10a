"""What a matcher killed left at S1 and S2, forgotten by the next one to start
(docs/realtime.md "Watching in a two-server project").

A query's or a watch's records are at S1 and S2 (in memory only) under a query ticket's
name (`project/member@tag/tag`, core/tickets.py) until the matcher tells them to forget
them; a matcher killed cannot, so the next one to start has S1 and S2 forget every query's
and watch's records of its live two-server projects (`Forget` of member `@`,
core/tickets.py QUERY_MARK). `LeftRecords` asks S1 and S2 at once, each on a thread of its
own, so that one that does not answer neither delays the other nor the matcher's start (it
waits at most START_SECONDS for both first passes, counted from `begin`: the start's other
bounded wait, for its erasures' Forgets, runs meanwhile rather than after), and neither
skips any project: a server
that fails keeps its projects *pending* and is asked again after RETRY_WAITS (logged at
WARNING the first time and every WARN_EVERY attempts, at INFO once it answers), until it
has forgotten them all or the matcher stops (tests pass shorter waits: server.py
`create_server`'s `retry_waits`).

A query ticket of a project still pending at a server would let a new query's records reach
S1 and S2 before the retry, which would then forget them too. So the matcher asks that
server itself before it issues one (`settle`, rpc/servicer.py `TwoServerTicket`): the
ticket is issued once the project is forgotten everywhere, or refused UNAVAILABLE naming the
server (a query needs both anyway). The records a server held stay there in memory only,
so a server that restarts meanwhile has lost them already.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence

from blindmatch.matcher import errors
from blindmatch.matcher.core import tickets
from blindmatch.matcher.domain import counted
from blindmatch.matcher.usecases.tworuns import Forgot, TwoServerSetup

log = logging.getLogger("blindmatch.matcher.realtime")

SERVERS = ("S1", "S2")
START_SECONDS = 2.0  # how long the matcher's start waits for S1's and S2's first passes
RETRY_WAITS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # before asking a server again (then the last)
WARN_EVERY = 10  # a server still failing is logged at WARNING every this many attempts


class LeftRecords:
    """S1's and S2's forgetting of the query and watch records of `projects` a matcher
    killed left there: `start`, then `settle` before a query ticket, `close` at the end."""

    def __init__(
        self, setup: TwoServerSetup, projects: Iterable[str], waits: Sequence[float] = RETRY_WAITS
    ) -> None:
        """`waits`: the seconds before each try again (then the last, over and over)."""
        self.setup, self.waits = setup, tuple(waits)
        names = sorted(set(projects))
        self.pending: dict[str, set[str]] = {s: set(names) for s in SERVERS}
        self.forgot: dict[str, int] = dict.fromkeys(SERVERS, 0)  # records' uploads dropped
        self.attempts: dict[str, int] = dict.fromkeys(SERVERS, 0)
        self._locks = {s: threading.Lock() for s in SERVERS}
        self._first = {s: threading.Event() for s in SERVERS}
        self._stop = threading.Event()
        self._began: float | None = None  # (time.monotonic) when `begin` asked them
        self._threads = [threading.Thread(target=self._follow, args=(s,), daemon=True,
                                          name=f"bm-forget-left-{s}") for s in SERVERS]  # fmt: skip

    def start(self, wait: float = START_SECONDS) -> None:
        """Ask S1 and S2 at once; return when both have been asked once, or after `wait`
        seconds (the rest goes on on their threads)."""
        self.begin()
        self.first_passes(wait)

    def begin(self) -> None:
        """Ask S1 and S2 at once, on their threads, without waiting (`first_passes` waits):
        the matcher's start goes on meanwhile (its erasures' Forgets, usecases/erasure.py)."""
        if self._began is not None or not any(self.pending.values()):
            return
        self._began = time.monotonic()
        for t in self._threads:
            t.start()

    def first_passes(self, wait: float = START_SECONDS) -> None:
        """Return when S1 and S2 have both been asked once, or `wait` seconds after `begin`
        (the time since counts: a start that did other work meanwhile waits only the rest)."""
        if self._began is None:
            return
        deadline = self._began + wait
        for s in SERVERS:
            self._first[s].wait(max(0.0, deadline - time.monotonic()))

    def _pending(self, server: str) -> list[str]:
        """The projects pending at `server` now, in order."""
        with self._locks[server]:
            return sorted(self.pending[server])

    def _forget(self, server: str, project: str) -> Forgot:
        """`server`'s Forget of `project`'s query and watch records, under its lock; the
        project is no longer pending there once it answers."""
        if project not in self.pending[server]:
            return Forgot(server)
        f = self.setup.forget_one(server, project, tickets.QUERY_MARK)
        if not f.error:
            self.pending[server].discard(project)
            self.forgot[server] += f.dropped
            if f.dropped:
                log.info("%s: %s forgot %d query's and watch's records left from before",
                         project, server, f.dropped)  # fmt: skip
        return f

    def _pass(self, server: str) -> str:
        """Ask `server` for each project pending there, stopping at the first it does not
        answer: its error ("" when none is left)."""
        for project in self._pending(server):
            with self._locks[server]:
                f = self._forget(server, project)
            if f.error:
                return f.error
        return ""

    def _follow(self, server: str) -> None:
        while not self._stop.is_set():
            error = self._pass(server)
            self.attempts[server] += 1
            self._first[server].set()
            n = self.attempts[server]
            if not error:
                if n > 1:
                    log.info("%s forgot the queries' and watches' records left from before, "
                             "asked %d times", server, n)  # fmt: skip
                return
            wait = self.waits[min(n - 1, len(self.waits) - 1)]
            pending = self._pending(server)
            (log.warning if n == 1 or n % WARN_EVERY == 0 else log.info)(
                "at start-up: %s has not forgotten the queries' and watches' records a matcher "
                "stopped without closing left there, in %s (%s): %s; asking again in "
                "%.0f s (attempt %d); until then no query ticket of those projects is issued "
                "unless %s answers", server, counted(len(pending), "project"),
                ", ".join(pending[:5]), error, wait, n, server,
            )  # fmt: skip
            self._stop.wait(wait)

    def settle(self, project: str) -> None:
        """Before a query ticket of `project`: each server with it pending is asked now;
        Unavailable naming the server if it does not answer."""
        for server in SERVERS:
            if project not in self.pending[server]:
                continue
            with self._locks[server]:
                f = self._forget(server, project)
            if f.error:
                address = self.setup.s1 if server == "S1" else self.setup.s2
                raise errors.Unavailable(
                    f"{server} ({address}) has not yet forgotten the queries' and watches' "
                    f"records a matcher stopped without closing left there in project {project!r} "
                    f"({f.error}); no query may send it records until it has: try again "
                    "when it answers"
                )

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(1.0)


__all__ = ["RETRY_WAITS", "START_SECONDS", "LeftRecords"]
