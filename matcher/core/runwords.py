"""What a member is told of a run an erasure cancelled, and the older wording reworded.

Since privtests2 a run an erasure cancelled fails with `ERASED_DURING_RUN` (its status and
its `run.failed` entry): that the project's uploads changed and it must run again, not that
a partner erased its data (the operator's entry keeps who: `erased_by`). Runs cancelled, and
`run.failed` entries logged, before then still hold the old message, "cancelled: a member
erased its data ..."; `as_members_read` words such a message as today's code does wherever
a member reads it (a run's status, the member's audit view). The stored row and the hashed
audit entry are left as they are: the operator's log still says what was written.
"""

from __future__ import annotations

ERASED_DURING_RUN = (
    "cancelled: the project's uploads changed while this run was queued or running, so "
    "nothing it found is stored; start a new run"
)
# The message before privtests2 (matcher/storage/retention_store.py, 8e1d3781 to 4fa2f2ab).
ERASED_BEFORE = "cancelled: a member erased its data"


def as_members_read(message: str) -> str:
    """`message` as a member reads it: an erasure's cancellation in today's words."""
    return ERASED_DURING_RUN if message.startswith(ERASED_BEFORE) else message


def detail_as_read(key: str, value: object) -> object:
    """An audit entry's detail value as a member reads it (`message` reworded)."""
    return as_members_read(value) if key == "message" and isinstance(value, str) else value
