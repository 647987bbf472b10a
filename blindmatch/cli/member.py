"""`blindmatch consent` and `erase`: a member's control over its own data at the matcher."""

from __future__ import annotations

import argparse
import sys

from blindmatch.cli.options import (
    LEVELS,
    Subcommands,
    actions,
    command,
    connect,
    connection_options,
    member_options,
    member_token,
)
from blindmatch.client.errors import InputError


def cmd_consent_set(args: argparse.Namespace) -> int:
    with connect(args, member_token(args)) as client:
        level = client.set_consent(args.project, args.level)
    print(f"Partners in {args.project} now learn at most {level!r} about your records.")
    return 0


def confirm_erase(args: argparse.Namespace) -> None:
    """Erasing cannot be undone: ask, unless --yes; refuse when there is no one to ask."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise InputError(
            f"erase deletes your uploads and results in {args.project} for good; pass --yes "
            "to confirm (standard input is not a terminal, so blindmatch cannot ask)"
        )
    print(
        f"Erase your uploads, every result involving them and your named users from "
        f"{args.project} at {args.server}? This cannot be undone. [y/N] ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise InputError("not erased: the answer was not yes")


def cmd_erase(args: argparse.Namespace) -> int:
    confirm_erase(args)
    with connect(args, member_token(args)) as client:
        erased = client.erase(args.project)
    print(
        f"Erased from {args.project}: {erased.uploads} upload(s), {erased.links} result "
        f"row(s) involving your records and {erased.users} named user(s) (their tokens no "
        "longer work). The audit log keeps the fact, not the data."
    )
    return 0


def register(sub: Subcommands) -> None:
    parents = [connection_options(), member_options()]
    group = command(
        sub,
        "consent",
        help="limit what partners learn about your records (member)",
        example="blindmatch consent set --level count --project burglary",
    )
    cs = command(
        actions(group, "consent_command"),
        "set",
        help="set the most partners may learn about your records",
        description="Set the most partners may learn about your records: they learn the "
        "lesser of this and the project's own level, from the next results or query on.",
        example="blindmatch consent set --level count --project burglary --token-file north.token",
        handler=cmd_consent_set,
        parents=parents,
    )
    cs.add_argument(
        "--level",
        required=True,
        choices=LEVELS,
        metavar="LEVEL",
        help="count, hits or mapping (scores: no limit beyond the project's own level)",
    )

    p = command(
        sub,
        "erase",
        help="delete your uploads and results from the matcher",
        description="Delete this member's uploads and every result involving them from the "
        "project, now, with its standing index and its named users (their tokens stop "
        "working). Asks first (it cannot be undone); --yes answers for scripts. The audit "
        "log keeps the fact, not the data, and its earlier entries as they are.",
        example="blindmatch erase --project burglary --token-file north.token --yes",
        handler=cmd_erase,
        parents=parents,
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
