"""`blindmatch admin end-project`: the operator ends a project now, before its date (an
information-sharing agreement terminated), through the matcher's `EndProject`: its data is
deleted as at its expiry (matcher/rpc/admin_calls.py)."""

from __future__ import annotations

import argparse
import sys

from blindmatch.cli.options import (
    Subcommands,
    admin_token,
    command,
    connect,
    project_name,
    project_option,
)
from blindmatch.client.errors import InputError
from blindmatch.client.remote.model import ProjectInfo
from blindmatch.matcher.domain import counted


def what_goes(info: ProjectInfo) -> str:
    """What ending `info`'s project deletes, said before it is asked."""
    members = ", ".join(m.name for m in info.members)
    where = (" The two-server servers S1 and S2 forget the project's shares too."
             if info.mode == "two-server" else "")  # fmt: skip
    return (
        f"Ending {info.project} deletes now, as at its expiry, every member's ({members}) uploads, "
        "results (runs and their result rows), standing indexes, request references and named "
        f"users; open watches, query streams and runs are ended.{where} The project's name "
        "stays, expired; the audit log keeps the fact, the counts and your reason."
    )


def confirm_end(args: argparse.Namespace, info: ProjectInfo) -> None:
    """Ending cannot be undone: say what goes and ask, unless --yes; refuse when there is
    no one to ask."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise InputError(
            f"end-project deletes {info.project}'s data for good; pass --yes to confirm "
            "(standard input is not a terminal, so blindmatch cannot ask)"
        )
    print(what_goes(info), file=sys.stderr)
    print(f"End {info.project} at {args.server} now? This cannot be undone. [y/N] ",
          end="", file=sys.stderr, flush=True)  # fmt: skip
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise InputError(f"{info.project} not ended: the answer was not yes")


def cmd_end_project(args: argparse.Namespace) -> int:
    name = project_name(args)
    if not args.reason.strip():
        raise InputError("--reason: required (why the project is ended, for the audit log)")
    with connect(args, admin_token()) as client:
        (info,) = client.list_projects(name)
        confirm_end(args, info)
        ended = client.end_project(name, args.reason)
    print(
        f"Ended {ended.project}: {counted(ended.uploads, 'upload')}, {counted(ended.runs, 'run')} "
        f"({counted(ended.links, 'result row')}) and {counted(ended.users, 'named user')} "
        f"deleted, with its indexes and request references (audit entry {ended.audit_seq}, "
        "project.expire)."
    )
    failed = False
    for server, dropped, error in ended.two_server:
        if error:
            failed = True
            print(
                f"warning: {server} did not forget the project's shares: {error}. They remain "
                "there (a server started without --data-dir drops them when it restarts); "
                'docs/operations.md, "Ending a project early", says what else to do.',
                file=sys.stderr,
            )
        else:
            print(f"{server} dropped {counted(dropped, 'upload')} of its shares.")
    return 4 if failed else 0


def register_end(asub: Subcommands, net: argparse.ArgumentParser) -> None:
    ae = command(
        asub,
        "end-project",
        help="end a project now, before its date (an information-sharing agreement "
        "terminated): its data deleted as at its expiry (operator)",
        description="End a project now, before its expiry date: every member's uploads, "
        "results, standing indexes, request references and named users are deleted through "
        "the same retention sweep as its expiry, open watches, query streams and runs are "
        "ended, and in a two-server project S1 and S2 forget its shares. The audit log's "
        "project.expire entry names the operator and --reason. Asks first (it cannot be "
        "undone); --yes answers for scripts. Exit status 4: S1 or S2 did not forget.",
        example="blindmatch admin end-project --project burglary --reason 'ISA terminated by "
        "north, letter of 2026-12-01' --yes",
        handler=cmd_end_project,
        parents=[net],
    )
    project_option(ae)
    ae.add_argument(
        "--reason", required=True, metavar="TEXT",
        help="why the project is ended (kept in the audit log; at most 1000 characters)",
    )  # fmt: skip
    ae.add_argument("--yes", action="store_true", help="do not ask for confirmation")
