"""Query tickets whose records no query or watch claimed, forgotten at S1 and S2 by the
matcher once the ticket has expired (docs/realtime.md "Queries in a two-server project").

A two-server query or watch sends its records to S1 and S2 under a query ticket, then asks
the matcher (Query or Watch), which has S1 and S2 forget them when the query is answered or
refused, or the watch ends. A client stopped in between (Ctrl-C or SIGTERM while its records
are being sent, a crash, a lost connection) never asks: the records would stay at S1 and S2,
in memory, until the matcher restarted (twoforget.py). Only the combiner may tell S1 and S2
to forget, so the matcher keeps each query ticket it issued until a query or watch of its
member claims it (`claim`); one still unclaimed when its ticket expires (it admits nothing
after that, core/tickets.py QUERY_TTL_SECONDS) has S1 and S2 forget its records (`sweep`,
every CHECK_SECONDS on a thread of its own): so at most QUERY_TTL_SECONDS + CHECK_SECONDS
after the ticket was issued. A server that does not answer is asked again at the next sweep
(it holds them in memory only: restarted, it has lost them already). Kept in memory: a
matcher that restarts has S1 and S2 forget every query's records anyway (twoforget.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from blindmatch.matcher.core import tickets
from blindmatch.matcher.usecases.tworuns import TwoServerSetup

log = logging.getLogger("blindmatch.matcher.realtime")

CHECK_SECONDS = 30.0  # how often the tickets issued are looked at


class UnclaimedTickets:
    """The query tickets issued and not yet claimed, each with when it expires by `clock`
    (the matcher's): `issued`, `claim`, `sweep`; `start`, `close`."""

    def __init__(
        self, setup: TwoServerSetup | None, clock: Callable[[], float] = time.time
    ) -> None:
        """`setup` None (a matcher without S1 and S2): nothing is ever issued or swept."""
        self.setup = setup
        self.clock = clock
        self.pending: dict[str, float] = {}  # query records' name at S1 and S2: expiry
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True,
                                         name="bm-forget-unclaimed")  # fmt: skip

    def issued(self, name: str, seconds: float) -> None:
        """A query ticket for `name`, admitting its records for `seconds` from now."""
        if self.setup is not None and tickets.is_query(name):
            with self._lock:
                self.pending[name] = self.clock() + seconds

    def claim(self, project: str, member: str, ticket: str) -> None:
        """A query or watch of `member` in `project` names `ticket`: from now on its records
        are that query's or watch's to forget. A ticket not this member's, or not the
        matcher's, claims nothing."""
        if self.setup is None:
            return
        try:
            name, _ = tickets.verify(self.setup.member_key, ticket, 0.0)  # expired or not
        except ValueError:
            return
        if tickets.owner(name)[:2] == (project, member):
            with self._lock:
                self.pending.pop(name, None)

    def sweep(self) -> list[str]:
        """Have S1 and S2 forget the records of every ticket expired unclaimed; the names
        both forgot (one a server failed stays pending, asked again next time)."""
        if self.setup is None:
            return []
        now = self.clock()
        with self._lock:
            due = sorted(n for n, expires in self.pending.items() if expires <= now)
        done = []
        for name in due:
            project, query = name.split("/")[:2]
            forgot = self.setup.forget(project, query)
            failed = [f"{f.server}: {f.error}" for f in forgot if f.error]
            if failed:
                log.warning("%s: the records of query ticket %s, expired unclaimed, are not "
                            "forgotten yet (%s); asking again in %.0f s", project, query,
                            "; ".join(failed), CHECK_SECONDS)  # fmt: skip
                continue
            with self._lock:
                self.pending.pop(name, None)
            done.append(name)
            log.info("%s: S1 and S2 forgot the records sent under query ticket %s, which no "
                     "query or watch claimed before it expired", project, query)  # fmt: skip
        return done

    def start(self) -> None:
        if self.setup is not None:
            self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            try:
                self.sweep()
            except Exception:  # a failed sweep must not end the thread; the next one retries
                log.exception("forgetting unclaimed query tickets' records failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)


__all__ = ["CHECK_SECONDS", "UnclaimedTickets"]
