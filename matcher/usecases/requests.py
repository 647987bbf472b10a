"""From a hit to a formal request: request references issued and resolved (both audited).

The rules are core/references.py; storage/request_store.py keeps references and appends
each audit entry in the transaction that issues or resolves them. Both steps take a
purpose, required where the project requires one for results.
"""

from __future__ import annotations

import logging
import time

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.disclose import effective_levels
from blindmatch.matcher.core.references import MAX_HITS, MAX_ROWS, RequestRef, check_reference
from blindmatch.matcher.domain import HEX_DIGITS, MAX_RECORDS, counted
from blindmatch.matcher.errors import InvalidArgument
from blindmatch.matcher.storage.store import Store

log = logging.getLogger("blindmatch.matcher")


def _check_positions(rows: list[int], field: str) -> None:
    """Row positions an upload can have (below MAX_RECORDS): a uint64 beyond SQLite's 64-bit
    INTEGER was an INTERNAL error where the rows are looked up."""
    for row in rows:
        if row >= MAX_RECORDS:
            raise InvalidArgument(
                f"{field}: {row} is not a row position (0 to {MAX_RECORDS - 1:,}: an upload "
                f"holds at most {MAX_RECORDS:,} records)"
            )


def _upload_sha256(value: str, missing: str) -> str:
    """The upload a request names, in lower case as the matcher stores it (`Upload` takes its
    sha256 in either case). Before protowalk a malformed one was refused as another upload's
    (FAILED_PRECONDITION), and `ResolveRequestRef` refused an upper-case one so too."""
    if not value:
        raise InvalidArgument(f"upload_sha256: required {missing}")
    sha256 = value.lower()
    if len(sha256) != 64 or set(sha256) - HEX_DIGITS:
        raise InvalidArgument(
            f"upload_sha256: {value[:80]!r} is not a SHA-256 (64 hex digits, as "
            "UploadReply.sha256 and ResultsHeader.upload_sha256 give it)"
        )
    return sha256


def upload_meant(run_id: str, issued: float) -> tuple[str, str]:
    """What a reference's upload was, and which folder that is, in a refusal's words. A
    query's or a watch's (no run) is the partner's upload current when it was issued: the one
    the query searched, or the one whose arrival the watch was told. Before tworefs this said
    "you uploaded before that query" of a watch's too, which sent the partner to the folder
    before the upload that fired the watch, the wrong one."""
    if run_id:
        return f"run {run_id} used", "you uploaded for that run"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(issued))
    return (
        "the query searched or the watch compared",
        f"of your last upload before {when}, when the reference was issued",
    )


def issue(
    store: Store,
    project_name: str,
    member: str,
    rows: list[int],
    partner: str,
    upload_sha256: str,
    purpose: str,
) -> tuple[str, dict[str, str], list[str]]:
    """References to `member`'s record at `rows` for `partner` (or for every partner
    holding it): the run's id, partner -> reference, and (asked of every partner) the
    partners whose data of the run is gone (erased since it: a match there went with it).
    Before srvleft the reply named none of them: the member saw the references of those
    left and no word of the others."""
    project = store.project(project_name)
    purpose = audit.check_purpose(purpose, required=project.require_purpose, project=project.name)
    if not rows:
        raise InvalidArgument("rows: required (the row positions of your record)")
    if len(rows) > MAX_ROWS:
        raise InvalidArgument(f"rows: {len(rows)} rows; at most {MAX_ROWS} for one record")
    _check_positions(rows, "rows")
    upload_sha256 = _upload_sha256(upload_sha256, "(the upload your rows are of)")
    if partner and (partner == member or partner not in store.members(project.name)):
        raise InvalidArgument(f"partner: {partner!r} is not another member of this project")
    levels = effective_levels(project.disclosure, store.consents(project.name), member)
    run_id, refs = store.issue_refs(
        project.name, member, rows, partner, upload_sha256, levels, project.disclosure, purpose
    )
    log.info("%s/%s: %s issued", project.name, member, counted(len(refs), "request reference"))
    erased = [] if partner else store.gone_from_run(run_id, sorted(set(levels) - set(refs)))
    return run_id, refs, erased


def issue_for_hits(
    store: Store,
    project_name: str,
    member: str,
    hits: list[tuple[list[int], str]],
    upload_sha256: str,
    purpose: str,
) -> tuple[str, list[str]]:
    """One reference per hit (`member`'s record at rows, the partner holding it), all or
    none: the run's id and the references in the hits' order."""
    project = store.project(project_name)
    purpose = audit.check_purpose(purpose, required=project.require_purpose, project=project.name)
    if not hits:
        raise InvalidArgument("hits: required (one per record and partner)")
    if len(hits) > MAX_HITS:
        raise InvalidArgument(f"hits: {len(hits)}; at most {MAX_HITS} in one request")
    upload_sha256 = _upload_sha256(upload_sha256, "(the upload your rows are of)")
    members = store.members(project.name)
    for i, (rows, partner) in enumerate(hits):
        if not rows:
            raise InvalidArgument(f"hits[{i}].rows: required (the row positions of your record)")
        if len(rows) > MAX_ROWS:
            raise InvalidArgument(f"hits[{i}].rows: {len(rows)}; at most {MAX_ROWS} for one record")
        _check_positions(rows, f"hits[{i}].rows")
        if not partner:
            raise InvalidArgument(f"hits[{i}].partner: required (the member holding the record)")
        if partner == member or partner not in members:
            raise InvalidArgument(
                f"hits[{i}].partner: {partner!r} is not another member of this project"
            )
    levels = effective_levels(project.disclosure, store.consents(project.name), member)
    run_id, issued = store.issue_hit_refs(
        project.name,
        member,
        hits,
        upload_sha256,
        levels,
        project.disclosure,
        purpose,
        numbered=True,
    )
    log.info("%s/%s: %s issued", project.name, member, counted(len(issued), "request reference"))
    return run_id, [refs[partner] for refs, (_, partner) in zip(issued, hits, strict=True)]


def resolve(
    store: Store,
    project_name: str,
    member: str,
    reference: str,
    purpose: str,
    upload_sha256: str,
) -> RequestRef:
    """The reference addressed to `member`: its own rows the requester's record matched,
    once `upload_sha256` (the caller's ENCODED folder's upload) is shown to be the upload
    they are of; a refusal records nothing (no `request.resolve` for a resolution that the
    caller's folder could not have completed)."""
    project = store.project(project_name)
    purpose = audit.check_purpose(purpose, required=project.require_purpose, project=project.name)
    reference = check_reference(reference)
    upload_sha256 = _upload_sha256(
        upload_sha256,
        "(the SHA-256 the matcher acknowledged your --encoded folder's upload with; a "
        "reference resolves only against the upload it points into). A blindmatch client "
        "older than this matcher sends none: update it",
    )

    def same_upload(ref: RequestRef) -> None:
        if ref.partner_sha256 != upload_sha256:
            used, which = upload_meant(ref.run_id, ref.issued)
            raise InvalidArgument(
                f"reference {ref.reference} is to the upload that {used} (SHA-256 "
                f"{ref.partner_sha256[:16]}...), not to this encoded folder's "
                f"({upload_sha256[:16]}...); pass the --encoded folder {which}. "
                "Nothing was recorded"
            )

    ref = store.resolve_ref(project.name, member, reference, purpose, same_upload)
    log.info("%s/%s: request reference resolved", project.name, member)
    return ref


def withdraw(
    store: Store, project_name: str, member: str, reference: str, purpose: str
) -> tuple[RequestRef, float, bool]:
    """`member` withdraws a reference it was issued: its partner can resolve it no more
    (refused, saying it was withdrawn and when). Audited (`request.withdraw`, the member's
    own view). Only the member it was issued to may; to anyone else it does not exist.
    Before refcarry a reference stayed resolvable until the project's data expired."""
    project = store.project(project_name)
    purpose = audit.check_purpose(purpose, required=project.require_purpose, project=project.name)
    reference = check_reference(reference)
    ref, withdrawn, resolved = store.withdraw_ref(project.name, member, reference, purpose)
    log.info("%s/%s: request reference withdrawn", project.name, member)
    return ref, withdrawn, resolved
