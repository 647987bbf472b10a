"""Request references (core/references.py): issued against the latest finished run (or by a
two-server query's answer at `mapping`, against the upload it searched), kept until resolved
or not, deleted with the project's data or either member's erasure.

Issuing reads the run, the member's upload and its links, stores the references and
appends the audit entry in one transaction; resolving checks the caller is the partner
the reference was issued for and appends its entry in the same transaction it is read.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.references import RequestRef, new_reference, referable
from blindmatch.matcher.domain import Level
from blindmatch.matcher.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
)
from blindmatch.matcher.storage.run_store import RunStore

log = logging.getLogger("blindmatch.matcher")

SCHEMA = """
CREATE TABLE IF NOT EXISTS request_refs (
    reference TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    requester TEXT NOT NULL,
    partner TEXT NOT NULL,
    run_id TEXT NOT NULL,
    partner_rows TEXT NOT NULL,
    partner_sha256 TEXT NOT NULL,
    issued REAL NOT NULL,
    resolved REAL,
    withdrawn REAL
);
CREATE INDEX IF NOT EXISTS request_refs_by_project ON request_refs (project);
"""

_INPUT_SHA = (
    "SELECT u.sha256, u.record_count FROM run_inputs ri JOIN uploads u ON u.id=ri.upload_id "
    "WHERE ri.run_id=? AND ri.member=?"
)


def _check_rows(hits: Sequence[tuple[list[int], str]], count: int, numbered: bool) -> None:
    """Every row a row of the caller's upload the run used (`count` records): one past it
    was refused as a record with no match ("check the record id against your results"),
    a client's off-by-one told as a fact about the partners (protowalk)."""
    for i, (rows, _) in enumerate(hits):
        for row in rows:
            if row >= count:
                field = f"hits[{i}].rows" if numbered else "rows"
                held = f"{count} records: rows 0 to {count - 1}" if count else "no records"
                raise InvalidArgument(
                    f"{field}: {row} is not a row of your upload that the latest run used "
                    f"({held}); rows count from 0, in the order the upload sent its CLKs"
                )


class RequestStore(RunStore):
    def issue_refs(
        self,
        project: str,
        member: str,
        rows: list[int],
        partner: str,
        upload_sha256: str,
        levels: Mapping[str, Level],
        project_level: Level,
        purpose: str,
    ) -> tuple[str, dict[str, str]]:
        """References for `member`'s record at `rows` (of its upload `upload_sha256`): the
        latest finished run's id, and partner -> reference."""
        run_id, [refs] = self.issue_hit_refs(
            project, member, [(rows, partner)], upload_sha256, levels, project_level, purpose
        )
        return run_id, refs

    def issue_hit_refs(
        self,
        project: str,
        member: str,
        hits: Sequence[tuple[list[int], str]],
        upload_sha256: str,
        levels: Mapping[str, Level],
        project_level: Level,
        purpose: str,
        *,
        numbered: bool = False,
    ) -> tuple[str, list[dict[str, str]]]:
        """`issue_refs` for each of `hits` (rows, partner or "" for every partner), in one
        transaction: all are issued (each with its audit entry) or none. With `numbered`, a
        refusal names its hit (`hits[3]: ...`) and a hit left with no reference refuses."""
        with self.db.tx() as tx:
            latest = tx.execute(
                "SELECT id FROM runs WHERE project=? AND state='done' ORDER BY seq DESC LIMIT 1",
                (project,),
            ).fetchone()
            if latest is None:
                raise FailedPrecondition(
                    "no finished run in this project yet; start one with `blindmatch run`"
                )
            run_id = latest[0]
            own = tx.execute(_INPUT_SHA, (run_id, member)).fetchone()
            if own is None:
                raise FailedPrecondition(
                    f"the latest run ({run_id}) holds no data of yours (you erased it); "
                    "upload again and start a new run"
                )
            if own[0] != upload_sha256.lower():
                raise FailedPrecondition(
                    f"upload_sha256: the latest run ({run_id}) used a different upload of "
                    "yours than this encoded folder; pass the --encoded folder that was "
                    "uploaded for it, or, where this folder is a newer upload (a person "
                    "erased, say), start a run (`blindmatch run`) and fetch its results first"
                )
            _check_rows(hits, own[1], numbered)
            issued: list[dict[str, str]] = []
            for i, (rows, partner) in enumerate(hits):
                try:
                    refs = self._issue_in(
                        tx, project, member, run_id, rows, partner, levels, project_level
                    )
                    if numbered and not refs:
                        raise FailedPrecondition(f"{partner} erased its data since the run")
                except ServiceError as exc:
                    if not numbered:
                        raise
                    raise type(exc)(f"hits[{i}]: {exc}") from exc
                issued.append(refs)
            self.audit.append_in(
                tx,
                *(
                    audit.Event(
                        member,
                        "request.issue",
                        project,
                        member,
                        purpose=purpose,
                        detail={"run_id": run_id, "references": refs},
                    )
                    for refs in issued
                ),
            )
        return run_id, issued

    def gone_from_run(self, run_id: str, partners: list[str]) -> list[str]:
        """Those of `partners` that hold no data of run `run_id` any more (erased since)."""
        return [p for p in partners if self.db.query(_INPUT_SHA, (run_id, p)) == []]

    def _issue_in(
        self,
        tx: sqlite3.Connection,
        project: str,
        member: str,
        run_id: str,
        rows: list[int],
        partner: str,
        levels: Mapping[str, Level],
        project_level: Level,
    ) -> dict[str, str]:
        """Inside `tx`: the references for one record of `member` in run `run_id`."""
        # Its links went with its data: told as "no match ... check the record id against
        # your results", which sent the requester to check the wrong thing (requestswalk).
        # `project show` says it is not uploaded too.
        if partner in levels and tx.execute(_INPUT_SHA, (run_id, partner)).fetchone() is None:
            raise FailedPrecondition(
                f"{partner} erased its data from this project since run {run_id} (or took "
                "no part in it): it holds no record of the run to refer to"
            )
        marks = ",".join("?" * len(rows))
        links = tx.execute(
            f"SELECT row, partner, partner_row FROM links WHERE run_id=? AND member=? "
            f"AND row IN ({marks})",
            (run_id, member, *rows),
        ).fetchall()
        # Asked of every partner: those that hold no data of the run are named where nothing
        # is found, rather than "check the record id" (tworefs).
        gone = [] if partner else [
            p for p in sorted(levels) if tx.execute(_INPUT_SHA, (run_id, p)).fetchone() is None
        ]  # fmt: skip
        found = referable(links, partner, levels, project_level, gone)
        now = self.clock()
        refs: dict[str, str] = {}
        for p, partner_rows in found.items():
            theirs = tx.execute(_INPUT_SHA, (run_id, p)).fetchone()
            if theirs is None:  # erased since (its links would have gone too)
                continue
            refs[p] = new_reference()
            tx.execute(
                "INSERT INTO request_refs VALUES (?,?,?,?,?,?,?,?,NULL,NULL)",
                (
                    refs[p], project, member, p, run_id,
                    ",".join(map(str, partner_rows)), theirs[0], now,
                ),
            )  # fmt: skip
        return refs

    def issue_query_refs(
        self,
        project: str,
        member: str,
        purpose: str,
        hits: Sequence[tuple[str, int, str]],
    ) -> list[str]:
        """A two-server query's answer at `mapping` (realtime/twoquery.py `referenced`): a
        reference for each of `hits` (partner, the partner's row, the SHA-256 of the upload
        the query searched), with no run (`run_id` ""); one `request.issue` entry for them,
        as `request` writes. The references in the order of `hits`."""
        if not hits:
            return []
        now = self.clock()
        refs = [new_reference() for _ in hits]
        issued: dict[str, list[str]] = {}
        with self.db.tx() as tx:
            for ref, (partner, row, sha256) in zip(refs, hits, strict=True):
                tx.execute(
                    "INSERT INTO request_refs VALUES (?,?,?,?,'',?,?,?,NULL,NULL)",
                    (ref, project, member, partner, str(row), sha256, now),
                )
                issued.setdefault(partner, []).append(ref)
            self.audit.append_in(
                tx,
                audit.Event(
                    member,
                    "request.issue",
                    project,
                    member,
                    purpose=purpose,
                    detail={"run_id": "", "query": True, "references": issued},
                ),
            )
        return refs

    def resolve_ref(
        self,
        project: str,
        member: str,
        reference: str,
        purpose: str,
        check: Callable[[RequestRef], None],
    ) -> RequestRef:
        """The reference, once `member` is found to be the partner it was issued for,
        `check` has passed it (it may refuse: nothing is written) and the resolution is in
        the audit log."""
        with self.db.tx() as tx:
            ref, _, withdrawn = _read_ref(tx, project, reference)
            if ref.partner != member and ref.requester != member:
                # Answered as a reference never issued, so that resolving cannot test whether
                # one exists (as a withdrawal by another member is); the operator's log says
                # what it was (and the refusal is counted on `admin query-report`).
                log.warning(
                    "%s/%s: refused to resolve request reference %s, addressed to %s (issued "
                    "to %s); answered as one never issued",
                    project, member, reference, ref.partner, ref.requester,
                )  # fmt: skip
                raise NotFound(_no_such(reference, project))
            if ref.partner != member:
                raise PermissionDenied(
                    f"reference: {reference} is addressed to another member (you issued it); "
                    "only the member it was issued for can resolve it"
                )
            if withdrawn is not None:  # before refcarry a reference could not be withdrawn
                raise FailedPrecondition(
                    f"reference: {reference} was withdrawn by {ref.requester}, which was issued "
                    f"it, on {utc(withdrawn)}: it resolves no more (ask {ref.requester} whether "
                    "its request still stands). Nothing was recorded"
                )
            check(ref)
            tx.execute(
                "UPDATE request_refs SET resolved=? WHERE reference=?", (self.clock(), reference)
            )
            self.audit.append_in(
                tx,
                audit.Event(
                    member,
                    "request.resolve",
                    project,
                    member,
                    purpose=purpose,
                    disclosed={ref.requester: "request reference"},
                    detail={
                        "reference": reference,
                        "run_id": ref.run_id,
                        "requester": ref.requester,
                        "records": len(ref.partner_rows),
                    },
                ),
            )
        return ref

    def withdraw_ref(
        self, project: str, member: str, reference: str, purpose: str
    ) -> tuple[RequestRef, float, bool]:
        """`member`'s own reference withdrawn (its partner's resolution refused from now on),
        with its `request.withdraw` entry, in one transaction: the reference, when it was
        withdrawn, and whether the partner had resolved it. Another member's reference is
        refused as one that does not exist (a withdrawal tells no one a reference exists)."""
        with self.db.tx() as tx:
            ref, resolved, withdrawn = _read_ref(tx, project, reference)
            if ref.requester != member:
                raise NotFound(_no_such(reference, project))
            if withdrawn is not None:
                raise FailedPrecondition(
                    f"reference: {reference} was already withdrawn, on {utc(withdrawn)}; its "
                    f"partner {ref.partner} cannot resolve it. Nothing was changed"
                )
            now = self.clock()
            tx.execute("UPDATE request_refs SET withdrawn=? WHERE reference=?", (now, reference))
            self.audit.append_in(
                tx,
                audit.Event(
                    member,
                    "request.withdraw",
                    project,
                    member,
                    purpose=purpose,
                    detail={
                        "reference": reference,
                        "partner": ref.partner,
                        "run_id": ref.run_id,
                        "resolved": resolved is not None,
                    },
                ),
            )
        return ref, now, resolved is not None


def utc(when: float) -> str:
    """A time in a message: `2026-12-08 09:14:03 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _no_such(reference: str, project: str) -> str:
    return (
        f"reference: no request reference {reference} in project {project!r} (check it was "
        "copied whole and names this project; references go when the project expires or "
        "either member erases its data)"
    )


def _read_ref(
    tx: sqlite3.Connection, project: str, reference: str
) -> tuple[RequestRef, float | None, float | None]:
    """Inside `tx`: the reference, when it was resolved (last) and withdrawn, or NotFound."""
    row = tx.execute(
        "SELECT requester, partner, run_id, partner_rows, partner_sha256, issued, resolved, "
        "withdrawn FROM request_refs WHERE reference=? AND project=?",
        (reference, project),
    ).fetchone()
    if row is None:
        raise NotFound(_no_such(reference, project))
    requester, partner, run_id, rows, sha256, issued, resolved, withdrawn = row
    rows_at = tuple(int(r) for r in rows.split(","))
    ref = RequestRef(reference, project, requester, partner, run_id, rows_at, sha256, issued)
    return ref, resolved, withdrawn
