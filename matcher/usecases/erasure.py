"""Erasure: a member deletes everything the matcher holds of its data in a project, now.

Its uploads (rows and files), every result row that involves its records, in its own
results and its partners', and its standing index; the audit log keeps the fact and the
counts. Erasure wins over runs: a run of the project that is queued or running is
cancelled (`RetentionStore.erase_member`), and stores nothing when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from blindmatch.matcher.domain import Erasure
from blindmatch.matcher.realtime.engine import Realtime
from blindmatch.matcher.storage.store import Store

log = logging.getLogger("blindmatch.matcher")


def erase(
    store: Store,
    realtime: Realtime,
    project: str,
    member: str,
    then: Callable[[], object] | None = None,
) -> Erasure:
    """Erase `member`'s data in `project`; `then` runs inside the erasure's transaction once
    it goes ahead (the matcher ends the member's open streams there: none commits after)."""
    erased = store.erase_member(project, member, then)
    realtime.erase_member(project, member)
    log.info(
        "%s/%s: erased %d uploads, %d result rows, %d named users",
        project,
        member,
        erased.uploads,
        erased.links,
        erased.users,
    )
    return erased
