"""`blindmatch admin ...`: the operator's tools, on the data dir and over the wire."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from blindmatch.cli.admin_end import register_end
from blindmatch.cli.admin_query import register_query
from blindmatch.cli.options import (
    Subcommands,
    actions,
    command,
    connection_options,
)
from blindmatch.client.errors import BlindmatchError, InputError
from blindmatch.matcher.domain import counted
from blindmatch.matcher.storage import dirlock

ROLES = ("s1", "s2", "combiner")  # two-server roles' data dirs (`two-server role --data-dir`)


def existing_dir(path: Path, flag: str) -> None:
    """Bad input (exit 2) unless `path` is a folder that is there: nothing is read or
    written on a path given wrongly."""
    if not path.exists():
        raise InputError(f"{flag} {path}: not there (no such folder)")
    if not path.is_dir():
        raise InputError(f"{flag} {path}: a file, not a folder")


def refused_or_failed(exc: Exception) -> BlindmatchError:
    """A backup's or a restore's error as the command line's: refused as given (a path,
    an option: exit 2, nothing written) or failed (exit 1)."""
    from blindmatch.matcher.storage.backup import BackupRefused
    from blindmatch.matcher.storage.role_restore import RestoreRefused

    refused = isinstance(exc, BackupRefused | RestoreRefused)
    return (InputError if refused else BlindmatchError)(str(exc))


def role_of(args: argparse.Namespace) -> str | None:
    """The two-server role whose data dir `--data-dir` is (`--role`, or the one whose files
    are there); None for the matcher's (`serve --data-dir`)."""
    from blindmatch.matcher.storage.datadir import DataDir
    from blindmatch.matcher.storage.role_check import roles_in

    if args.role or DataDir(args.data_dir).db.is_file():
        return str(args.role) if args.role else None
    found = roles_in(args.data_dir)
    if len(found) > 1:
        raise InputError(
            f"--data-dir {args.data_dir}: holds the files of roles {', '.join(found)}; "
            "say which with --role"
        )
    return found[0] if found else None


def cmd_check(args: argparse.Namespace) -> int:
    from blindmatch.matcher.storage.integrity import check_data_dir
    from blindmatch.matcher.storage.role_check import check_role_dir

    existing_dir(args.data_dir, "--data-dir")
    role = role_of(args)
    report = (
        check_role_dir(
            args.data_dir, role, hash_files=not args.no_hash, audit_key_file=args.audit_key
        )
        if role
        else check_data_dir(
            args.data_dir, hash_files=not args.no_hash, audit_key_file=args.audit_key
        )
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.render(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def cmd_backup(args: argparse.Namespace) -> int:
    from blindmatch.matcher.storage.backup import BackupError, backup_data_dir, waiting_message

    existing_dir(args.data_dir, "--data-dir")
    role = role_of(args)
    if role:
        return backup_role(args, role)

    def waiting(waited: float) -> None:
        print(waiting_message(waited), file=sys.stderr, flush=True)

    try:
        done = backup_data_dir(
            args.data_dir, args.out, key_out=args.key_out, audit_key_file=args.audit_key,
            waiting=waiting,
        )  # fmt: skip
    except BackupError as exc:
        raise refused_or_failed(exc) from None
    print(
        f"Backed up {args.data_dir} to {done.dest}: database snapshot and {done.uploads} "
        f"upload files ({done.bytes_copied} bytes), verified"
        + (f" ({done.attempts} snapshots: the matcher replaced an upload meanwhile)."
           if done.attempts > 1 else ".")
    )  # fmt: skip
    _print_audit_key_advice(done.key_out, done.anchor, "`blindmatch audit verify --anchor`")
    return 0


def backup_role(args: argparse.Namespace, role: str) -> int:
    from blindmatch.matcher.storage.backup import BackupError
    from blindmatch.matcher.storage.role_backup import backup_role_dir

    try:
        done = backup_role_dir(
            args.data_dir, args.out, role, key_out=args.key_out, audit_key_file=args.audit_key
        )
    except BackupError as exc:
        raise refused_or_failed(exc) from None
    print(
        f"Backed up role {role}'s {args.data_dir} to {done.dest}: held-store snapshot with "
        f"{done.pairs} pairs evaluated, and {done.uploads} upload files ({done.bytes_copied} "
        "bytes), verified"
        + (f" ({done.attempts} snapshots: the role replaced or forgot an upload meanwhile)."
           if done.attempts > 1 else ".")
    )  # fmt: skip
    print(
        f"Its {done.uploads} uploads are sealed: restored, the role counts every pair of two "
        "of them as evaluated (the pairs it evaluates after this backup are not in it); a "
        "member's new upload starts its pairs afresh."
    )
    _print_audit_key_advice(
        done.key_out, done.anchor, "`blindmatch two-server verify-audit` against it"
    )
    return 0


def _print_audit_key_advice(key_out: Path | None, anchor: str | None, verify: str) -> None:
    """Where a backup's audit key went, and its log's anchor with how to check against it."""
    if key_out is not None:
        print(f"The audit key is in {key_out} (owner-only): keep it apart from the backup.")
    else:
        print(
            "The audit key is not in the backup (whoever held both could re-seal an edited "
            "log): back it up apart, e.g. with --key-out on another volume."
        )
    if anchor:
        print(
            f"Audit anchor {anchor}: record it where this host cannot write, and check "
            f"a restored log with {verify}."
        )


def refuse_served(args: argparse.Namespace) -> None:
    """Bad input (exit 2), before anything is read or written, where a running server
    (`serve`, `two-server role`: dirlock) holds a folder the restore names: `--data-dir` (the
    restore would land beside, or under, a server that goes on writing its own files there),
    `--previous` (its audit log would go on after the replay) or `--backup` (a live data dir,
    not a backup: its files change as they are read)."""
    for flag, path in (("--data-dir", args.data_dir), ("--previous", args.previous),
                       ("--backup", args.backup)):  # fmt: skip
        if path is not None and dirlock.in_use(Path(path)):
            raise InputError(
                f"{flag} {path}: a server still serves it (a `blindmatch serve` or `two-server "
                "role` holds its data dir's lock): stop that server first (SIGTERM), then "
                "restore; nothing was written"
            )


def cmd_restore(args: argparse.Namespace) -> int:
    from blindmatch.matcher.storage.datadir import DataDir
    from blindmatch.matcher.storage.role_check import roles_in
    from blindmatch.matcher.storage.role_restore import RestoreError, restore_role_dir

    refuse_served(args)
    existing_dir(args.backup, "--backup")
    if args.previous is not None:
        existing_dir(args.previous, "--previous")
    if not args.role and DataDir(args.backup).db.is_file():
        return restore_matcher(args)
    found = [args.role] if args.role else roles_in(args.backup)
    if len(found) != 1:
        raise InputError(
            f"--backup {args.backup}: " + (f"holds roles {', '.join(found)}; say which with "
            "--role" if found else "neither a matcher's backup nor a two-server role's "
            "(`admin backup` of a `serve --data-dir` or a `two-server role --data-dir`); "
            "nothing was written")
        )  # fmt: skip
    if (args.previous is None) == (not args.no_previous):
        raise InputError(
            "give --previous DIR (the data dir being replaced, moved aside: what the role did "
            "after the backup is replayed from its audit log) or --no-previous (it is lost: "
            "nothing replayed)"
        )
    try:
        done = restore_role_dir(args.backup, args.data_dir, found[0], key_file=args.audit_key,
                                previous=args.previous, forget=args.forget)  # fmt: skip
    except RestoreError as exc:
        raise refused_or_failed(exc) from None
    taken = (  # the backup's moment is its sealed uploads': one of none has none
        "a backup of no uploads: no moment recorded"
        if done.taken is None
        else time.strftime("taken %Y-%m-%d %H:%M:%S UTC", time.gmtime(done.taken))
    )
    print(
        f"Restored role {done.role}'s data dir {done.dest} from {args.backup} ({taken}): "
        f"{counted(done.uploads, 'upload')} held, {done.sealed} of them sealed (no pair of two "
        "of them is evaluated again), checked."
        + (f" S1's ledger: {counted(done.ledger, 'entry', 'entries')} (its per-upload cap, "
           "core/rowledger.py)."
           if done.role == "s1" else "")
    )  # fmt: skip
    if done.previous is not None:
        print(
            f"Replayed {counted(done.replayed, 'audit entry', 'audit entries')} of "
            f"{done.previous} made after the backup: "
            f"{counted(len(done.dropped), 'restored upload')} dropped (forgotten or uploaded again "
            f"since: {', '.join(done.dropped) or 'none'}), "
            f"{counted(done.queries, 'query', 'queries')} counted again."
        )
    else:
        print(
            "warning: nothing replayed (--no-previous): uploads forgotten after the backup "
            "(erasures, expiries) are held again unless --forget named them, and its queries "
            f"since are uncounted; the matcher's audit log lists the erasures and expiries "
            f"since {taken} (twoserver.forget): see docs/operations.md, Backing up S1 and S2",
            file=sys.stderr,
        )
    if args.forget:
        print(f"--forget {' '.join(args.forget)}: dropped {', '.join(done.dropped) or 'none'}.")
    return 0


def restore_matcher(args: argparse.Namespace) -> int:
    """`admin restore` of a matcher's backup: the erasures and expiries since replayed from
    `--previous`'s audit log (usecases/restore.py); refused without it."""
    from blindmatch.matcher.storage.role_restore import RestoreError
    from blindmatch.matcher.usecases.restore import restore_data_dir

    if args.forget:
        raise InputError("--forget: a two-server role's restore only (a matcher's replays "
                         "the erasures from --previous's log); nothing was written")  # fmt: skip
    if args.previous is None:
        new = Path(args.data_dir)
        raise InputError(
            f"--backup {args.backup} is a matcher's backup: give --previous DIR, the data dir "
            "it replaces (moved aside, its matcher stopped): the erasures and expiries its "
            "audit log records after the backup are made again; restored without them, a "
            "member's erased data would be served again. If DIR is lost, restore by hand, "
            f"stopped: `cp -a {args.backup} {new}`, its audit key copied to "
            f"{new / 'audit.key'}, then `blindmatch admin check --data-dir {new}`, and list "
            "the erasures since the backup from whatever is left of the old audit log "
            "(docs/operations.md, Backup and restore); nothing was written"
        )
    try:
        done = restore_data_dir(args.backup, args.data_dir, previous=args.previous,
                                key_file=args.audit_key)  # fmt: skip
    except RestoreError as exc:
        raise refused_or_failed(exc) from None
    print(
        f"Restored the matcher's data dir {done.dest} from {args.backup} (audit head "
        f"{done.backup_head or 'none'}): {counted(done.uploads, 'upload')} held, checked. "
        f"From {done.previous}'s audit log ({counted(done.after, 'entry', 'entries')} after "
        f"the backup): {counted(done.erasures, 'erasure')} and "
        f"{counted(done.expiries, 'expiry', 'expiries')} made again; the uploads made "
        "since are not in it (their members upload again)."
    )
    for line in done.replayed:
        print(f"  replayed {line}")
    for line in done.skipped:
        print(f"  skipped {line}")
    for line in done.pending:
        print(f"  left for the matcher's start: {line}")
    for line in done.redo:
        print(f"warning: not replayed, do it again: {line}", file=sys.stderr)
    for line in done.to_do:
        print(f"warning: to do now: {line}", file=sys.stderr)
    return 0


def role_option(parser: argparse.ArgumentParser, folder: str = "--data-dir") -> None:
    """--role, which the files in `folder` stand in for where it is not given (leftovers2:
    its help said "default: the matcher's ...", which read as a role of that name)."""
    what = "backup" if folder == "--backup" else "data dir"
    parser.add_argument(
        "--role", choices=ROLES,
        help=f"the two-server role whose {what} {folder} is. Without it, the files in "
        f"{folder} say: the matcher's {what} where the matcher's database (blindmatch.sqlite) "
        "is there, else the one role whose files are there (two roles' files: give --role)",
    )  # fmt: skip


def register(sub: Subcommands) -> None:
    net = connection_options()
    group = command(
        sub,
        "admin",
        help="operator tools: data-dir check, backup and (a two-server role's) restore, query "
        "limits and reports, ending a project early",
        example="blindmatch admin check --data-dir /var/lib/blindmatch",
    )
    asub = actions(group, "admin_command")

    ac = command(
        asub,
        "check",
        help="check a data dir (the matcher's, or a two-server role's): database "
        "integrity, every upload's file and hash, runs, the audit chain",
        example="blindmatch admin check --data-dir /var/lib/blindmatch --json",
        handler=cmd_check,
    )
    ac.add_argument(
        "--data-dir", metavar="DIR", required=True, type=Path,
        help="the matcher's data dir, or a two-server role's (two-server role --data-dir)",
    )  # fmt: skip
    role_option(ac)
    ac.add_argument("--json", action="store_true", help="print the report as JSON")
    ac.add_argument(
        "--no-hash", action="store_true", help="check file sizes only, not sha256 (faster)"
    )
    ac.add_argument(
        "--audit-key",
        metavar="FILE",
        type=Path,
        help="the audit chain's key, if kept outside the data dir (serve --audit-key; a "
        "role's twoserver-ROLE.audit.key)",
    )

    ab = command(
        asub,
        "backup",
        help="copy a data dir (the matcher's, or a two-server role's), even while it serves "
        "(the audit key apart)",
        example="blindmatch admin backup --data-dir /var/lib/blindmatch --out /backup/2026-06-01 "
        "--key-out /keys/audit-2026-06-01.key",
        handler=cmd_backup,
    )
    ab.add_argument(
        "--data-dir", metavar="DIR", required=True, type=Path,
        help="the matcher's data dir, or a two-server role's (its uploads sealed in the "
        "backup: restored, the role evaluates no pair of two of them again)",
    )  # fmt: skip
    role_option(ab)
    ab.add_argument(
        "--out", metavar="DIR", required=True, type=Path, help="new folder for the backup"
    )
    ab.add_argument(
        "--key-out",
        type=Path,
        metavar="FILE",
        help="also copy the audit chain's key to FILE (new, owner-only, not inside --out); "
        "the backup itself never holds it",
    )
    ab.add_argument(
        "--audit-key",
        metavar="FILE",
        type=Path,
        help="the audit chain's key, if kept outside the data dir (serve --audit-key; a "
        "role's twoserver-ROLE.audit.key)",
    )

    rs = command(
        asub,
        "restore",
        help="make a data dir (the matcher's, or a two-server role's) from its `admin "
        "backup`, replaying what was done after it (erasures, expiries; a role's forgets and "
        "queries) from the replaced dir's audit log",
        example="blindmatch admin restore --backup /backup/s1-2026-06-01 --data-dir /srv/s1 "
        "--previous /srv/s1.broken --audit-key /keys/s1-2026-06-01.key",
        handler=cmd_restore,
    )
    rs.add_argument(
        "--backup", metavar="DIR", required=True, type=Path,
        help="the matcher's or the role's backup (admin backup)",
    )  # fmt: skip
    rs.add_argument(
        "--data-dir", metavar="DIR", required=True, type=Path, help="the new data dir (not there)"
    )
    role_option(rs, "--backup")
    rs.add_argument(
        "--audit-key", metavar="FILE", type=Path,
        help="the audit key (admin backup --key-out; default: the one in --previous)",
    )  # fmt: skip
    rs.add_argument(
        "--forget", action="append", default=[], metavar="PROJECT[/MEMBER]",
        help="a role's: also drop the restored uploads of this project (or project member): "
        "an erasure or expiry since the backup, from the matcher's audit log (repeatable)",
    )  # fmt: skip
    prev = rs.add_mutually_exclusive_group()
    prev.add_argument(
        "--previous", type=Path, metavar="DIR",
        help="the data dir being replaced, moved aside (required for a matcher's backup): "
        "if its audit log verifies and continues the backup's, what it records since is "
        "replayed (the matcher's erasures and expiries; a role's log is adopted, its forgets "
        "and queries replayed)",
    )  # fmt: skip
    prev.add_argument(
        "--no-previous", action="store_true",
        help="a role's replaced dir is lost: replay nothing (forgotten uploads come back)",
    )  # fmt: skip

    register_query(asub, net)
    register_end(asub, net)
