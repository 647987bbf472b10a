"""A test's way to stop the matcher exactly where a crash would: SIGKILL at a named point.

`BLINDMATCH_CRASH_AT=NAME` in the matcher's environment kills the process (SIGKILL: nothing
is flushed, closed or finished) when it reaches `crash_point(NAME)`. It is read only on the
paths that name a point, never on a request's hot path; unset (always, in production), a
point does nothing. The points:

    erase.logged   a member's erasure committed (its rows deleted, its `erase` entry and its
                   erasure intent in the log), before its upload files are unlinked, its
                   standing index deleted or the databases checkpointed
                   (storage/retention_store.py `erase_member`; tests/test_erasure_crash.py)
"""

from __future__ import annotations

import os
import signal

ENV = "BLINDMATCH_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process if `BLINDMATCH_CRASH_AT` names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
