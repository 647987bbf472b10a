"""What index changes being received hold (`HeldChanges`): at most so many bytes one change,
so many all changes at once (moved out of rpc/streams.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from blindmatch.matcher.domain import INDEX_CHANGES_HELD, MAX_INDEX_CHANGE_BYTES
from blindmatch.matcher.errors import Busy, ResourceExhausted


def _mib(n: int) -> str:
    return f"{n / 1024**2:g} MiB"


class HeldChanges:
    """Bytes of references and CLKs that index changes being received hold: at most
    `per_change` one change (more is refused, naming the limit: nothing of it is applied),
    `INDEX_CHANGES_HELD` times that all changes at once (more waits: refused as busy)."""

    def __init__(self, per_change: int = MAX_INDEX_CHANGE_BYTES) -> None:
        if per_change < 1:
            raise ValueError("index changes: the limit must be positive")
        self.per_change = per_change
        self.in_all = per_change * INDEX_CHANGES_HELD
        self._lock = threading.Lock()
        self._held = 0

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    @contextmanager
    def holding(self) -> Iterator[Callable[[int], None]]:
        """A function to call with each message's size before keeping it; what it counted
        is released when the change is done."""
        mine = 0

        def hold(size: int) -> None:
            nonlocal mine
            if mine + size > self.per_change:
                raise ResourceExhausted(
                    f"the index change carries more than {_mib(self.per_change)} of references "
                    "and CLKs, this matcher's limit for one change (serve "
                    "--max-index-change-mib); nothing was changed: send it as several changes"
                )
            with self._lock:
                if self._held + size > self.in_all:
                    raise Busy(
                        f"index changes being received hold {_mib(self._held)} already, at "
                        f"most {_mib(self.in_all)} together; nothing was changed: retry shortly"
                    )
                self._held += size
            mine += size

        try:
            yield hold
        finally:
            with self._lock:
                self._held -= mine
