"""`blindmatch user ...`: named users under a member, managed by the member's administrator
(the holder of the member's own token). Each user gets its own token, written to an
owner-only file (never printed); every audit entry made with it names the user."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blindmatch.cli.errors import Terminated, ends_at_sigterm
from blindmatch.cli.options import (
    Subcommands,
    actions,
    command,
    connect,
    connection_options,
    member_options,
    member_token,
    when,
)
from blindmatch.client.errors import InputError


@ends_at_sigterm  # the token file half-written beside --out deleted
def cmd_add(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(f"{args.name}.token")
    if out.exists():
        raise InputError(
            f"{out}: already exists; a user token is written to a new file only (move the old "
            "one away, or pass --out)"
        )
    with connect(args, member_token(args)) as client:
        token = client.add_user(args.project, args.name)
    from blindmatch.client.files import write_text

    try:
        write_text(out, token + "\n")  # owner-only from the first byte (client/files.py)
    except Terminated:  # (the file whole or absent): the token, issued, is nowhere
        print(
            f"User {args.name} was added but {out} was not written: revoke the user "
            f"(`blindmatch user revoke {args.name}`) and add them again.",
            file=sys.stderr,
        )
        raise
    print(
        f"User {args.name} added in {args.project}. Their token is in {out} (readable by you "
        "only; it is not shown again): hand it to them by a secure channel; they pass it as "
        f"--token-file {out} (or in BLINDMATCH_TOKEN)."
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args, member_token(args)) as client:
        users = client.list_users(args.project)
    if args.json:
        print(
            json.dumps(
                [{"name": u.name, "created": u.created, "revoked": u.revoked} for u in users]
            )
        )
        return 0
    if not users:
        print(f"No users in {args.project} yet; add one with `blindmatch user add NAME`.")
    for u in users:
        state = f"revoked {when(u.revoked)}" if u.revoked else "active"
        print(f"  {u.name}: added {when(u.created)}, {state}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with connect(args, member_token(args)) as client:
        client.revoke_user(args.project, args.name)
    if args.quiet:  # nothing, as `upload -q`: exit 0 says it is revoked
        return 0
    print(
        f"Revoked user {args.name}'s token in {args.project}: it stops working now. Their "
        "entries stay in the audit log under their name."
    )
    return 0


def register(sub: Subcommands) -> None:
    parents = [connection_options(), member_options()]
    group = command(
        sub,
        "user",
        help="named users under your organisation (member administrator)",
        description="Named users under a member, so that the audit log names the person who "
        "consulted or disclosed (DPA 2018 s.62), not only the organisation. The member's own "
        "token (its administrator's) adds, lists and revokes them; a project created with "
        "--require-users accepts only users' tokens for results, request references, queries "
        "and watches.",
        example="blindmatch user add pc-4471 --project burglary --token-file north.token "
        "--out pc-4471.token",
    )
    usub = actions(group, "user_command")
    ua = command(
        usub,
        "add",
        help="issue a named user a token, written to an owner-only file",
        description="Issue a named user a token. The token is written to --out (default "
        "NAME.token), readable by you only, and never printed; the matcher keeps only its hash.",
        example="blindmatch user add pc-4471 --project burglary --token-file north.token "
        "--out pc-4471.token",
        handler=cmd_add,
        parents=parents,
    )
    ua.add_argument("name", help="the user's name (lower-case letters, digits, '_', '.', '-')")
    ua.add_argument("--out", type=Path, help="file for the new token (default: NAME.token)")
    ul = command(
        usub,
        "list",
        help="your organisation's users, revoked ones included (no tokens)",
        example="blindmatch user list --project burglary --token-file north.token",
        handler=cmd_list,
        parents=parents,
    )
    ul.add_argument("--json", action="store_true", help="print [{name, created, revoked}]")
    ur = command(
        usub,
        "revoke",
        help="make a user's token stop working at once",
        example="blindmatch user revoke pc-4471 --project burglary --token-file north.token",
        handler=cmd_revoke,
        parents=parents,
    )
    ur.add_argument("name", help="the user whose token to revoke")
