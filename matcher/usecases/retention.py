"""Retention: delete expired projects' data at start-up and then periodically.

The rule (what expires, what is deleted) lives in `Store.expire_projects`; this
is only the clock that calls it, on one background thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from blindmatch.matcher.storage.store import Store

log = logging.getLogger("blindmatch.matcher")

SWEEP_INTERVAL = 60.0  # seconds between sweeps


class Sweeper:
    """Calls `store.expire_projects()` now and every `interval` seconds until stopped."""

    def __init__(self, store: Store, interval: float = SWEEP_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        # Called with each expired project's name: other stores of project data (the
        # real-time indexes) delete theirs too.
        self.on_expired: list[Callable[[str], None]] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="blindmatch-sweep", daemon=True)

    def sweep(self, replays: Mapping[str, Mapping[str, object]] | None = None) -> list[str]:
        """Expire what is past its date now; `replays`: by project, the entry of a replaced
        data dir's log its expiry replays (usecases/restore.py)."""
        expired = self.store.expire_projects(replays)
        for name in expired:
            for hook in self.on_expired:
                hook(name)
            log.info("project %s expired: its encodings and results are deleted", name)
        return expired

    def start(self) -> None:
        self.sweep()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # a failed sweep must not end the thread; the next one retries
                log.exception("retention sweep failed")
