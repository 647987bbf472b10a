"""A member's results: what the latest finished run found for its rows, as far as each
partner's level allows, recorded in the audit log before any of it leaves the matcher.

The run, the member's upload it used and its links are read in one snapshot
(`Store.stored_results`): a run finishing meanwhile never yields an older run's header
with none of its links."""

from __future__ import annotations

from dataclasses import dataclass

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.disclose import Disclosed, disclose, effective_levels
from blindmatch.matcher.domain import Level, Upload
from blindmatch.matcher.errors import FailedPrecondition
from blindmatch.matcher.storage.store import Store


@dataclass(frozen=True)
class MemberResults:
    run_id: str
    level: Level  # the most disclosed about any partner
    upload: Upload  # the member's upload the run used
    disclosed: Disclosed


def member_results(store: Store, project_name: str, member: str, purpose: str) -> MemberResults:
    """`member`'s results in the project, once the disclosure is in the audit log."""
    project = store.project(project_name)
    purpose = audit.check_purpose(purpose, required=project.require_purpose, project=project.name)
    stored = store.stored_results(project.name, member)
    if stored is None:
        raise FailedPrecondition(
            "no finished run in this project yet; start one with `blindmatch run`"
        )
    run, upload = stored.run, stored.upload
    if upload is None:
        raise FailedPrecondition(
            f"the latest run ({run.id}) holds no data of yours (you erased it); "
            "upload again and start a new run"
        )
    levels = effective_levels(project.disclosure, store.consents(project.name), member)
    disclosed = disclose(levels, stored.links)
    # Recorded before anything leaves: no audit entry, no disclosure.
    store.audit.append(
        audit.Event(
            member,
            "results.disclose",
            project.name,
            member,
            purpose=purpose,
            disclosed={p: level.label for p, level in levels.items()},
            detail={"run_id": run.id, "counts": {p: disclosed.counts.get(p, 0) for p in levels}},
        )
    )
    level = max(levels.values(), default=project.disclosure)
    return MemberResults(run.id, level, upload, disclosed)
