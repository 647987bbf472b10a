"""`blindmatch admin restore` of a matcher's backup (`admin backup`, storage/backup.py): the
data dir made from it, with the erasures and expiries made after it made again.

A backup is one moment of the matcher. Copied back as it was, it holds again what every
`erase` since deleted (the member's upload files, its results and its partners' about it,
its standing index, its named users), and its audit log has no `erase` entry to say
otherwise: the restored matcher would serve an erased member's records, `admin check`
passing (found by an operator walk, 2026-12-07). So the restore takes the data dir being
replaced (`previous`, moved aside), verifies its audit log with the key and checks that it
continues the backup's chain (its entry at the backup's head is the same: else it is not the
dir this backup was taken of), and replays each `erase` entry after that head through the
same use case the live `Erase` runs (usecases/erasure.py `erase`), and each `project.expire`
through the retention sweep (usecases/retention.py; one the operator ended before its date,
`admin end-project`, ended again with its reason): their entries in the restored log are
the operator's, each naming the one it replays (`replay_of`: its seq, hash and time), and a
`restore` entry sums it up. S1 and S2 are not asked to forget again: they forgot when the
member erased (their own dirs restored: `admin restore --role`, role_restore.py).

The token and consent changes since are made again the same way (restorefix2): restored as
the backup held them, a token revoked after it worked again and a consent lowered after it
was back to the higher level. Each `token.revoke`, `user.revoke` and `consent.set` through
the use case its live RPC runs (usecases/projects.py, users.py), with `replay_of`; a
`token.rotate` as a revocation of the token from before it (its named users kept), the new
token not being in the backup: the operator is told to rotate the member's token (`to_do`).
What cannot be made again safely (a consent level this blindmatch does not know) is said
with the command that does it (`REDO`). The operator's query limits too (restorefix3): each
`query.limits` entry (`admin query-limits`: a limit lowered, watching turned off) set again
through the live setting (realtime/limits.py `set_limits`), else the backup's higher limit
and its watching were back.

Everything is made in a staging folder beside the new data dir (`.NAME.partial`), checked
(storage/integrity.py), and only then renamed into place: a restore that fails or is killed
leaves no data dir (the next one removes the staging folder first).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from blindmatch.matcher.core import audit
from blindmatch.matcher.domain import Level, counted
from blindmatch.matcher.errors import InvalidArgument, NotFound
from blindmatch.matcher.realtime.engine import Realtime
from blindmatch.matcher.storage.audit_log import KEY_BYTES
from blindmatch.matcher.storage.backup import not_new
from blindmatch.matcher.storage.crashpoint import crash_point
from blindmatch.matcher.storage.datadir import DB_NAME, DataDir, copy_private
from blindmatch.matcher.storage.integrity import check_data_dir, newer_store_in
from blindmatch.matcher.storage.role_restore import (
    RestoreError,
    RestoreRefused,
    entries_after,
    log_head,
    reading,
    staged,
)
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases import projects, users
from blindmatch.matcher.usecases.erasure import erase
from blindmatch.matcher.usecases.retention import Sweeper

# What to do where the replaced dir's log cannot be replayed (lost, or not verifying).
LOST = (
    "; if the replaced data dir is lost, restore by hand and list the erasures since the "
    "backup from whatever is left of its audit log, each member listed erasing again "
    "(docs/operations.md, Backup and restore)"
)


# What the replaced dir's log records after the backup that the restore cannot make again
# (the backup lacks what it made): each said, with how to do it again by hand.
REDO = {
    "consent.set": "{m}'s consent is back to what it was: the entry names no level this "
    "blindmatch knows ({level!r}): {m} runs `blindmatch consent set --level LEVEL --project "
    "{p}` again",
}

# A rotation made again: the token from before it revoked, the new one not in the backup.
ROTATE = (
    "{p}/{m}: its token from before the rotation is revoked and the new one is not in the "
    "backup: give {m} a new one, `blindmatch project rotate-token {p} --member {m}`, before "
    "members are told the matcher is back"
)


@dataclass
class RestoreReport:
    dest: Path
    previous: Path
    backup_head: str  # SEQ:HASH of the backup's log ("" for an empty one)
    after: int  # entries of the replaced dir's log after that head
    replayed: list[str] = field(default_factory=list)  # "seq N: erase PROJECT/MEMBER (...)"
    skipped: list[str] = field(default_factory=list)  # nothing of it in the backup
    pending: list[str] = field(default_factory=list)  # left for the matcher's start
    redo: list[str] = field(default_factory=list)  # not replayed: to do again by hand (REDO)
    to_do: list[str] = field(default_factory=list)  # replayed, then for the operator (ROTATE)
    uploads: int = 0  # held by the restored dir
    erasures: int = 0  # replayed
    expiries: int = 0  # made (those replayed, and any past their date since)


def _origin(entry: audit.Entry) -> dict[str, object]:
    """What a replayed entry names of the one it replays."""
    return {"seq": entry.seq, "action": entry.action, "hash": entry.hash, "time": entry.time}


def restore_data_dir(
    backup: str | Path,
    data_dir: str | Path,
    *,
    previous: str | Path,
    key_file: str | Path | None = None,
    clock: Callable[[], float] = time.time,
) -> RestoreReport:
    """Make `data_dir` (new) the matcher's data dir from `backup`, replaying the erasures
    and expiries the audit log of `previous` (the dir being replaced) records after the
    backup's head; its audit key from `key_file` (default: the one in `previous`), copied
    into it where `previous` held its own. `clock`: the time, never taken before the
    replaced dir's last entry (what expired there is past its date here too)."""
    source, dest, prev = DataDir(Path(backup)), Path(data_dir), DataDir(Path(previous))
    if not source.db.is_file():
        raise RestoreRefused(f"--backup {backup}: not a matcher's backup (no {DB_NAME})")
    newer = newer_store_in(source)
    if newer is not None:
        raise RestoreRefused(f"{newer}: restore it with that blindmatch (nothing written)")
    why = not_new(dest)
    if why == "already exists":
        why = "already exists (left as it is); move it aside and give it as --previous"
    if why:
        raise RestoreRefused(f"--data-dir {dest}: {why}; or give a new folder (nothing written)")
    if not prev.db.is_file():
        raise RestoreRefused(
            f"--previous {previous}: no {DB_NAME} there, not a matcher's data dir; give the "
            f"one this backup was taken of{LOST}"
        )
    key_path = Path(key_file) if key_file else prev.audit_key
    if not key_path.is_file():
        raise RestoreRefused(
            f"{key_path}: no audit key there; give the matcher's (--audit-key FILE: `serve "
            "--audit-key`, or the one `admin backup --key-out` wrote)"
        )
    key = key_path.read_bytes()
    if len(key) < KEY_BYTES:
        raise RestoreRefused(
            f"--audit-key {key_path}: holds {len(key)} bytes, not an audit key (at least "
            f"{KEY_BYTES})"
        )
    head = log_head(source.db)
    after = reading(prev.db, lambda db: entries_after(prev.db, key, head, db, LOST))
    staging = DataDir(dest.with_name(f".{dest.name}.partial"))
    report = RestoreReport(dest, prev.root, f"{head[0]}:{head[1]}" if head else "", len(after))

    def make() -> RestoreReport:
        shutil.copytree(source.root, staging.root)  # (owner-only modes kept)
        if prev.audit_key.is_file():  # kept where the replaced dir kept it
            copy_private(key_path, staging.audit_key)
        key_in = staging.audit_key if prev.audit_key.is_file() else key_path
        last = after[-1].time if after else 0.0
        _replay(staging, key_in, after, report, lambda: max(clock(), last))
        crash_point("restore.replayed")
        check = check_data_dir(staging.root, audit_key_file=key_in, in_backup=True)
        if not check.ok:
            raise RestoreError("the restored dir failed its integrity check:\n" + check.render())
        report.pending += check.repairs
        report.uploads = check.uploads_checked
        return report

    return staged(backup, staging.root, dest, make)


def _replay(
    staging: DataDir,
    key_file: Path,
    after: list[audit.Entry],
    report: RestoreReport,
    clock: Callable[[], float],
) -> None:
    """The erasures and expiries of `after` made again in `staging`, as the live matcher
    makes them, and the `restore` entry; `report` told what was done."""
    store = Store(staging.root, clock=clock, audit_key_file=key_file)
    try:
        realtime = Realtime(store, staging.root, clock=clock)
        try:
            # Expiry is by date: every project past its date expires (those the replaced
            # dir's log says expired, and any the restored matcher would expire at its start).
            # A project the operator ended before its date (`admin end-project`) is ended
            # again, with its reason: by date it would come back.
            expiries = {e.project: e for e in after if e.action == "project.expire"}
            ended = {p: str(e.detail["reason"]) for p, e in expiries.items()
                     if e.detail.get("ended_by") == audit.OPERATOR}  # fmt: skip
            sweeper = Sweeper(store)
            sweeper.on_expired.append(realtime.erase_project)
            for name in sweeper.sweep({p: _origin(e) for p, e in expiries.items()}, ended):
                seq = f"entry {expiries[name].seq}: " if name in expiries else ""
                report.replayed.append(f"{seq}project.expire {name}")
                report.expiries += 1
            for entry in after:
                if entry.action == "erase":
                    _erase_again(store, realtime, entry, report)
                elif entry.action in AGAIN:
                    _again(store, entry, report)
                elif entry.action == "query.limits":
                    _limits_again(realtime, entry, report)
            rotated = {}  # (project, member) -> its last token change, if a rotation
            for entry in after:
                if entry.action in ("token.rotate", "token.revoke"):
                    rotated[entry.project, entry.member] = entry
            for entry in rotated.values():
                if entry.action == "token.rotate" and _replayed(entry, report):
                    said = ROTATE.format(p=entry.project, m=entry.member)
                    report.to_do.append(f"entry {entry.seq}: token.rotate {said}")
            store.audit.append(audit.Event(audit.OPERATOR, "restore", detail={
                "backup_head": report.backup_head, "after": report.after,
                "replayed": report.replayed, "skipped": report.skipped,
                "not_replayed": report.redo, "to_do": report.to_do,
            }))  # fmt: skip
        finally:
            realtime.close()
    finally:
        store.close()


def _erase_again(
    store: Store, realtime: Realtime, entry: audit.Entry, report: RestoreReport
) -> None:
    """`entry` (an `erase` of the replaced dir's log) made again through the live use case."""
    what = f"entry {entry.seq}: erase {entry.project}/{entry.member}"
    try:
        erased = erase(store, realtime, entry.project, entry.member, replay_of=_origin(entry))
    except NotFound as exc:  # a project or member made after the backup, or expired since
        report.skipped.append(f"{what} ({exc}: nothing to erase)")
        return
    report.erasures += 1
    report.replayed.append(
        f"{what} ({counted(erased.uploads, 'upload')}, {counted(erased.links, 'result row')}, "
        f"{counted(erased.index_records, 'standing-index record')} deleted)"
    )
    report.pending += [f"{what}: {p}" for p in erased.pending]


def _again(store: Store, entry: audit.Entry, report: RestoreReport) -> None:
    """`entry` (a token, user or consent change of the replaced dir's log) made again
    through the use case its live RPC runs, its new entry naming it (`replay_of`), or said
    in `report.redo` where the backup lacks what it made."""
    p, m, user = entry.project, entry.member, str(entry.detail.get("user", ""))
    what = f"entry {entry.seq}: {entry.action} {p}/{m}" + (f" user {user}" if user else "")
    origin = _origin(entry)
    level = str(entry.detail.get("level", ""))
    try:
        if entry.action == "token.revoke":
            projects.revoke_token(store, p, m, replay_of=origin)
            done = "its token revoked again"
        elif entry.action == "token.rotate":  # the new token is not in the backup
            projects.revoke_token(store, p, m, replay_of=origin, users=False)
            done = "its token from before the rotation revoked"
        elif entry.action == "user.revoke":
            users.revoke_user(store, p, m, user, replay_of=origin)
            done = "its token revoked again"
        elif entry.action == "consent.set" and level in LEVELS:
            projects.set_consent(store, p, m, LEVELS[level], replay_of=origin)
            done = f"set to {level} again"
        else:
            said = REDO[entry.action].format(p=p, m=m, u=user, level=level)
            report.redo.append(f"entry {entry.seq}: {entry.action}: {said}")
            return
    except (NotFound, InvalidArgument) as exc:  # made after the backup, expired or erased since
        report.skipped.append(f"{what} ({exc}: nothing to make again)")
        return
    report.replayed.append(f"{what} ({done})")


def _limits_again(realtime: Realtime, entry: audit.Entry, report: RestoreReport) -> None:
    """`entry` (a `query.limits` of the replaced dir's log) made again through the setting
    its live RPC makes (`SetQueryLimits`), its new entry naming it (`replay_of`)."""
    p, m, d = entry.project, entry.member, entry.detail
    what = f"entry {entry.seq}: query.limits {p}/{m or '*'}"
    watch = d.get("allow_watch")
    per_minute, per_day = (
        v if isinstance(v, int) else 0 for v in (d.get("per_minute"), d.get("per_day"))
    )
    try:
        quota = realtime.set_limits(
            p, m, per_minute, per_day, watch if isinstance(watch, bool) else None,
            replay_of=_origin(entry),
        )  # fmt: skip
    except (NotFound, InvalidArgument) as exc:  # made after the backup, expired since
        report.skipped.append(f"{what} ({exc}: nothing to set again)")
        return
    watching = "" if not isinstance(watch, bool) else f", watching {'on' if watch else 'off'}"
    report.replayed.append(
        f"{what} (set again: {quota.per_minute:,} records per minute, {quota.per_day:,} per "
        f"day{watching})"
    )


def _replayed(entry: audit.Entry, report: RestoreReport) -> bool:
    """Whether `entry` was made again (not skipped)."""
    return any(line.startswith(f"entry {entry.seq}: ") for line in report.replayed)


# The actions made again by `_again` (or said in REDO where they cannot be).
AGAIN = {"token.revoke", "token.rotate", "user.revoke", "consent.set", *REDO}
LEVELS = {level.label: level for level in Level}

__all__ = ["AGAIN", "LOST", "REDO", "ROTATE", "RestoreReport", "restore_data_dir"]
