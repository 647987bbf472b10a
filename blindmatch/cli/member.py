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
from blindmatch.matcher.domain import counted


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
    index = (f", your standing index of {counted(erased.index_records, 'record')}"
             if erased.index_records else "")  # fmt: skip
    print(
        f"Erased from {args.project}: {counted(erased.uploads, 'upload')}, "
        f"{counted(erased.links, 'result row')} involving your records{index} and "
        f"{counted(erased.users, 'named user')} (their tokens no longer work), with every "
        "request reference you issued or were sent. The audit log keeps the fact, not the data."
    )
    failed = _two_server(erased.two_server, retried=bool(erased.pending))
    if erased.pending:
        print(
            "warning: the erasure is not complete yet: " + "; ".join(erased.pending) + ". "
            "Your uploads and results are gone already; there is nothing to run again.",
            file=sys.stderr,
        )
    return 4 if failed or erased.pending else 0


def _two_server(forgot: tuple[tuple[str, int, str], ...], retried: bool) -> bool:
    """A two-server project: what S1 and S2 dropped of your shares. One that could not
    (unreachable, or a refusal) keeps them until it is asked again (the matcher asks it
    in the background, `retried`; an older matcher did not: erase again once it is back);
    a warning, and exit 4. Whether one could not."""
    done = [f"{server} dropped {counted(n, 'upload')}" for server, n, error in forgot if not error]
    if done:
        print(f"Your shares at the two-server servers: {', '.join(done)}.")
    failed = [(server, error) for server, _, error in forgot if error]
    for server, error in failed:
        then = ("the matcher asks it again in the background until it does" if retried
                else "run `blindmatch erase` again once it is back")  # fmt: skip
        print(
            f"warning: {server} did not drop your shares: {error}. They remain there (across "
            f"a restart too, where {server} keeps its uploads on disk); {then}.",
            file=sys.stderr,
        )
    return bool(failed)


def register(sub: Subcommands) -> None:
    parents = [connection_options(), member_options()]
    group = command(
        sub,
        "consent",
        help="limit what partners learn about your records (member)",
        example="blindmatch consent set --level count --project burglary --token-file north.token",
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
        "project, now, with its standing index, its named users (their tokens stop "
        "working) and the request references it issued or was sent. Asks first (it "
        "cannot be undone); --yes answers for scripts. The audit "
        "log keeps the fact, not the data, and its earlier entries as they are. In a "
        "two-server project S1 and S2 drop your shares too. Where part of it fails (S1 or S2 "
        "cannot be reached, the matcher's disk is full) the rest is erased, a warning names "
        "what is pending and the exit status is 4: the matcher tries it again in the "
        "background until it is done.",
        example="blindmatch erase --project burglary --token-file north.token --yes",
        handler=cmd_erase,
        parents=parents,
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
