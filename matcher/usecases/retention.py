"""Retention: delete expired projects' data at start-up and then periodically.

The rule (what expires, what is deleted) lives in `Store.expire_projects`; this
is only the clock that calls it, on one background thread. The operator's `EndProject`
(`admin end-project`, matcher/rpc/admin_calls.py) ends a project before its date through the
same sweep (`Sweeper.end`): the same deletion, hooks and `project.expire` entry, its detail
saying the operator ended it and why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from blindmatch.matcher.errors import InvalidArgument
from blindmatch.matcher.storage.store import Store

log = logging.getLogger("blindmatch.matcher")

SWEEP_INTERVAL = 60.0  # seconds between sweeps
MAX_REASON_CHARS = 1000  # an operator's reason for ending a project (kept in the audit log)


@dataclass(frozen=True)
class Ended:
    """A project the operator ended: its `project.expire` entry's detail (with its `seq`),
    and what each `on_expired` hook returned, in order."""

    detail: dict[str, object]
    said: list[object]


class Sweeper:
    """Calls `store.expire_projects()` now and every `interval` seconds until stopped."""

    def __init__(self, store: Store, interval: float = SWEEP_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        # Called with each expired project's name: other stores of project data (the
        # real-time indexes) delete theirs too.
        # What a hook returns is handed back by `end` (S1's and S2's forgetting, say).
        self.on_expired: list[Callable[[str], object]] = []
        self._lock = threading.RLock()  # one sweep at a time: a project expires once
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="blindmatch-sweep", daemon=True)

    def sweep(
        self,
        replays: Mapping[str, Mapping[str, object]] | None = None,
        ending: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Expire what is past its date now; `replays`: by project, the entry of a replaced
        data dir's log its expiry replays (usecases/restore.py); `ending`: by project, the
        operator's reason for ending it now (`end`)."""
        expired, _ = self._sweep(replays, ending)
        return expired

    def end(self, name: str, reason: str) -> Ended:
        """The operator ends live project `name` now, before its date, for `reason`: it
        expires as at its date (its data deleted, its streams ended, S1 and S2 told to
        forget it), its `project.expire` entry saying the operator ended it and why.
        NotFound: no such project, or it has expired."""
        reason = reason.strip()
        if not reason:
            raise InvalidArgument("reason: required (why the project is ended, for the audit log)")
        if len(reason) > MAX_REASON_CHARS:
            raise InvalidArgument(f"reason: at most {MAX_REASON_CHARS} characters")
        with self._lock:
            self.store.project(name)  # NotFound: none, or expired
            told: dict[str, dict[str, object]] = {}
            _, said = self._sweep(None, {name: reason}, told)
        return Ended(told[name], said[name])

    def _sweep(
        self,
        replays: Mapping[str, Mapping[str, object]] | None,
        ending: Mapping[str, str] | None,
        told: dict[str, dict[str, object]] | None = None,
    ) -> tuple[list[str], dict[str, list[object]]]:
        said: dict[str, list[object]] = {}
        with self._lock:
            expired = self.store.expire_projects(replays, ending, told)
            for name in expired:
                said[name] = [hook(name) for hook in self.on_expired]
                how = "ended by the operator" if ending and name in ending else "expired"
                log.info("project %s %s: its encodings and results are deleted", name, how)
        return expired, said

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
