"""A two-server watch's comparison of a partner's upload waiting for that upload's conversion
ahead of the queries (watchstand; docs/realtime.md "Watching in a two-server project"), for
realtime/twowatch.py: the comparison goes standing once C holds the conversion, by pairs
where it failed or was not started (rpc/twoserver_standahead.py `Ahead.when_made`, which
also says at once where the conversion would be turned down as unfit), where the partner
asks for its next upload's ticket meanwhile (`release`), and, since watchcap, once the wait
reaches the set-up's cap (`TwoServerSetup.watch_wait`, `serve
--two-server-watch-wait-seconds`; 0: no comparison waits) whether the conversion is being
made or still queued behind others: the conversion goes on for the queries, and one log
line says the watch's comparison stopped waiting. Since watchunfit the conversion's end where
C will not hold it (S1 or S2 refusing or failing it at piece 0 or later, no room beside the
partners used recently, dropped half-made, the matcher's stop) sends the comparison by pairs
as soon as C knows, not after the give-up's calls or another conversion, one log line saying
why. Each comparison is submitted once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from blindmatch.matcher.usecases.tworuns import TwoServerSetup

log = logging.getLogger("blindmatch.matcher.realtime")

Submit = Callable[[bool], None]  # the comparison submitted: standing, or by pairs (False)


@dataclass(frozen=True)
class _Wait:
    project: str
    partner: str
    submit: Submit
    cap: threading.Timer


class Waits:
    """The comparisons waiting for their upload's conversion, by upload id. `gave_up`: those
    sent by pairs at the cap; `not_made`: those sent by pairs as C told the conversion will not
    be held (tests, the logs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits: dict[str, _Wait] = {}
        self._closed = False
        self.gave_up = self.not_made = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._waits)

    def defer(self, setup: TwoServerSetup, name: str, upload_id: str, project: str,
              partner: str, submit: Submit) -> bool:  # fmt: skip
        """Whether the comparison of `partner`'s upload `upload_id` (`name` at S1 and S2)
        waits for its conversion: if so `submit(standing)` is called once, as the conversion
        ends, at the cap, at `release`; never once `close`d."""
        cap = setup.watch_wait
        if not setup.converts_ahead or cap <= 0:
            return False
        timer = threading.Timer(cap, self._end, (upload_id, False, cap))
        timer.daemon = True
        with self._lock:
            if self._closed:
                return False
            self._waits[upload_id] = _Wait(project, partner, submit, timer)
        timer.start()  # (before it is asked: the cap holds behind queued conversions too)
        if setup.when_converted(name, lambda held, why: self._told(upload_id, held, why)):
            return True
        with self._lock:
            wait = self._waits.pop(upload_id, None)
        if wait is None:  # (the cap passed already: submitted by pairs)
            return True
        timer.cancel()
        return False

    def _end(self, upload_id: str, standing: bool, cap: float | None = None,
             why: str = "", told: bool = False) -> None:  # fmt: skip
        """The wait's end: its comparison submitted (once; `cap`: the cap's timer ended it;
        `why`: by pairs for it; `told`: by `Ahead.when_made`)."""
        with self._lock:
            wait = self._waits.pop(upload_id, None)
            self.gave_up += wait is not None and cap is not None
            self.not_made += wait is not None and told and not standing
        if wait is None:
            return  # (ended already)
        wait.cap.cancel()
        if cap is not None:
            log.info(
                "%s/%s's upload compared with the two-server watches by pairs: its conversion "
                "ahead of the queries was not made within %g s (--two-server-watch-wait-"
                "seconds); the conversion goes on for the queries", wait.project,
                wait.partner, cap,
            )  # fmt: skip
        elif not standing:
            log.info("%s/%s's upload compared with the two-server watches by pairs: %s",
                     wait.project, wait.partner, why)  # fmt: skip
        wait.submit(standing)

    def _told(self, upload_id: str, held: bool, why: str) -> None:
        """`Ahead.when_made`'s telling: C holds the conversion, or will not (`why`)."""
        why = f"its conversion ahead of the queries will not be held: {why}"
        self._end(upload_id, held, why=why, told=True)

    def release(self, project: str, member: str) -> None:
        """`member`'s comparisons still waiting submitted by pairs now."""
        with self._lock:
            ids = [u for u, w in self._waits.items() if (w.project, w.partner) == (project, member)]
        why = (f"{member} asked for its next upload's ticket (that upload replaces this one at "
               "S1 and S2)")  # fmt: skip
        for upload_id in ids:
            self._end(upload_id, False, why=why)

    def close(self) -> None:
        """The matcher stops: no waiting comparison is submitted."""
        with self._lock:
            self._closed = True
            waits, self._waits = list(self._waits.values()), {}
        for wait in waits:
            wait.cap.cancel()


__all__ = ["Waits"]
