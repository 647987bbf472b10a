"""Which partners C converts ahead of their queries in a two-server project (standahead,
issue 18 (b); docs/operations.md "The first query against an upload"): a member's upload as
it completes at the matcher (`uploaded`), and at the matcher's start every current upload
of the live two-server projects (`at_start`: S1 and S2 may hold them converted by an earlier
matcher, whose seeds died with it). Each is handed to the set-up's `convert_ahead`
(rpc/twoserver_standahead.py: queued, converted one at a time where a query's part against
it would go standing and S1 allows it); a project of one member is never queried, so none of
its uploads is.
"""

from __future__ import annotations

from blindmatch.matcher.domain import TWO_SERVER, Project, Upload
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.tworuns import TwoServerSetup


def uploaded(store: Store, setup: TwoServerSetup | None, project: str, member: str,
             upload_id: str) -> None:  # fmt: skip
    """`member`'s two-server upload `upload_id` completed: its conversion queued, where it is
    still the member's current upload."""
    if setup is None:
        return
    upload = store.current_uploads(project).get(member)
    if upload is not None and upload.id == upload_id:
        _ahead(store, setup, store.project(project), upload)


def at_start(store: Store, setup: TwoServerSetup | None) -> None:
    """The matcher starts: every live two-server project's current uploads queued."""
    if setup is None:
        return
    for name in store.live_projects():
        if store.mode_of(name) != TWO_SERVER:
            continue
        project = store.project(name)
        for _member, upload in sorted(store.current_uploads(name).items()):
            _ahead(store, setup, project, upload)


def _ahead(store: Store, setup: TwoServerSetup, project: Project, upload: Upload) -> None:
    """A member's `upload` queued where another member may query it (its name at S1 and S2,
    widths and rule, as realtime/twopartner.py `partner_upload` reads them for a query
    under the project's schema)."""
    part = store.two_server_part(upload.id)
    if part is None or len(store.members(project.name)) < 2:
        return  # (not at S1 and S2; or no other member to query it)
    name, bits = part
    setup.convert_ahead(name, upload.record_count, tuple(bits), project.threshold,
                        store.score_rule(upload.id))  # fmt: skip


__all__ = ["at_start", "uploaded"]
