"""`blindmatch project ...`: create projects, manage members' tokens, show a project.

The `project` commands name their project positionally (`project create NAME`);
every other command takes `--project NAME`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from blindmatch.cli.options import (
    BLOCKINGS,
    LEVELS,
    Subcommands,
    actions,
    admin_token,
    command,
    connect,
    connection_options,
    member_token,
    token_options,
    when,
)
from blindmatch.client.errors import InputError

_DURATION = re.compile(r"(\d+)\s*([hdwy])")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_expiry(text: str, now: float | None = None) -> int:
    """`--expires-in`: a duration (12h, 90d, 8w, 1y) or a UTC date (2026-12-31) -> unix time."""
    import datetime as dt

    now = time.time() if now is None else now
    text = text.strip().lower()
    if m := _DURATION.fullmatch(text):
        amount = int(m.group(1))
        if amount < 1:
            raise InputError(f"--expires-in {text}: must be at least 1{m.group(2)}")
        return int(now + amount * _UNIT_SECONDS[m.group(2)])
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise InputError(
            f"--expires-in {text!r}: give a duration such as 90d, 12h, 8w or 1y, "
            "or a date such as 2026-12-31"
        ) from None
    expires = int(day.timestamp())
    if expires <= now:
        raise InputError(f"--expires-in {text}: that date has passed")
    return expires


def cmd_create(args: argparse.Namespace) -> int:
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    expires = parse_expiry(args.expires_in) if args.expires_in else 0
    with connect(args, admin_token()) as client:
        created = client.create_project(
            args.name,
            members,
            disclosure=args.disclose,
            threshold=args.threshold or 0.0,
            blocking=args.blocking,
            require_purpose=args.require_purpose,
            expires_unix=expires,
        )
    if args.tokens_dir:
        files = write_tokens(args.tokens_dir, created.tokens)
        if args.json:
            print(json.dumps({"project": created.project, "token_files": files}))
            return 0
    elif args.json:
        print(json.dumps({"project": created.project, "tokens": created.tokens}))
        return 0
    purpose = "; results need --purpose" if created.require_purpose else ""
    print(
        f"Project {created.project} created (disclosure: {created.disclosure}, "
        f"threshold: {created.threshold}, blocking: {created.blocking}; "
        f"data deleted at {when(created.expires_unix)}{purpose})."
    )
    if args.tokens_dir:
        print("Member tokens written, each to a file only you can read (give each member only "
              "its own, by a secure channel; members pass it as --token-file):")  # fmt: skip
        for member, path in files.items():
            print(f"  {member}: {path}")
        return 0
    print("Member tokens (shown once; give each member only its own):")
    for member, token in created.tokens.items():
        print(f"  {member}: {token}")
    return 0


def write_tokens(folder: str, tokens: dict[str, str]) -> dict[str, str]:
    """Each member's token to FOLDER/MEMBER.token, owner-only (the folder too, if made here)."""
    from blindmatch.client.files import write_text

    root = Path(folder)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = {}
    for member, token in tokens.items():
        path = root / f"{member}.token"
        write_text(path, token + "\n")  # owner-only from the first byte
        files[member] = str(path)
    return files


def cmd_rotate_token(args: argparse.Namespace) -> int:
    with connect(args, admin_token()) as client:
        token = client.rotate_token(args.name, args.member)
    if args.tokens_dir:
        path = write_tokens(args.tokens_dir, {args.member: token})[args.member]
        if args.json:
            print(json.dumps({"project": args.name, "member": args.member, "token_file": path}))
        else:
            print(f"New token for {args.member} in {args.name} written to {path} (only you can "
                  "read it; the old one no longer works)")  # fmt: skip
        return 0
    if args.json:
        print(json.dumps({"project": args.name, "member": args.member, "token": token}))
        return 0
    print(f"New token for {args.member} in {args.name} (shown once; the old one no longer works):")
    print(f"  {token}")
    return 0


def cmd_revoke_token(args: argparse.Namespace) -> int:
    with connect(args, admin_token()) as client:
        client.revoke_token(args.name, args.member)
    print(
        f"Revoked {args.member}'s token in {args.name}. Its data stays until it expires or is "
        f"erased; `blindmatch project rotate-token {args.name} --member {args.member}` issues "
        "a new token."
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with connect(args, member_token(args)) as client:
        info = client.describe(args.name)
    print(
        f"Project {info.project} (you are {info.member}; "
        f"disclosure {info.disclosure}, threshold {info.threshold})"
    )
    purpose = "; results need --purpose" if info.require_purpose else ""
    print(f"  data deleted at {when(info.expires_unix)}{purpose}")
    for m in info.members:
        state = f"{m.record_count} records uploaded" if m.uploaded else "not uploaded"
        consent = f"; consents to {m.consent}" if m.consent else ""
        print(f"  {m.name}: {state}{consent}")
    if info.latest_run is not None:
        print(f"  latest run {info.latest_run.run_id}: {info.latest_run.state}")
    return 0


def register(sub: Subcommands) -> None:
    net = connection_options()
    group = command(
        sub,
        "project",
        help="create or inspect projects",
        example="blindmatch project create burglary --members north,south --disclose hits",
    )
    psub = actions(group, "project_command")

    pc = command(
        psub,
        "create",
        help="create a project and print its members' tokens (operator)",
        description="Create a project and print each member's token, once (operator: "
        "$BLINDMATCH_ADMIN_TOKEN). The disclosure level decides the most any member learns.",
        example=[
            "blindmatch project create burglary --members north,south,east --disclose hits",
            "blindmatch project create study --members a,b --disclose scores --expires-in 30d "
            "--json",
        ],
        handler=cmd_create,
        parents=[net],
    )
    pc.add_argument("name", help="project name")
    pc.add_argument("--members", required=True, help="comma-separated member names, e.g. a,b,c")
    pc.add_argument(
        "--disclose",
        choices=LEVELS,
        default="hits",
        metavar="LEVEL",
        help="what members learn: %(choices)s (default: %(default)s)",
    )
    pc.add_argument(
        "--threshold",
        type=float,
        help="Dice similarity threshold; with a field-level schema, the match probability "
        "(default: 0.8)",
    )
    pc.add_argument(
        "--blocking",
        choices=BLOCKINGS,
        metavar="METHOD",
        default="auto",
        help="compare every pair (exhaustive), only pairs LSH proposes (lsh), or choose by "
        "size (auto, the default: LSH above 10^10 pairs per pair of members)",
    )
    pc.add_argument(
        "--require-purpose",
        action="store_true",
        help="every results request must give --purpose (a case reference), kept in the audit log",
    )
    pc.add_argument(
        "--expires-in",
        metavar="WHEN",
        help="when the project's encodings and results are deleted: 90d, 12h, 8w, 1y or a "
        "date (YYYY-MM-DD, UTC); default 180d",
    )
    pc.add_argument("--json", action="store_true", help="print {project, tokens} as JSON")
    pc.add_argument(
        "--tokens-dir",
        metavar="DIR",
        help="write each member's token to DIR/MEMBER.token, readable by you only, instead "
        "of printing it (--json then prints {project, token_files})",
    )

    pr = command(
        psub,
        "rotate-token",
        help="issue a member a new token; the old one stops working (operator)",
        example="blindmatch project rotate-token burglary --member north",
        handler=cmd_rotate_token,
        parents=[net],
    )
    pr.add_argument("name", help="project name")
    pr.add_argument("--member", required=True, help="the member whose token to replace")
    pr.add_argument("--json", action="store_true", help="print {project, member, token} as JSON")
    pr.add_argument(
        "--tokens-dir",
        metavar="DIR",
        help="write the new token to DIR/MEMBER.token, readable by you only, instead of "
        "printing it",
    )

    pv = command(
        psub,
        "revoke-token",
        help="make a member's token stop working (operator)",
        example="blindmatch project revoke-token burglary --member north",
        handler=cmd_revoke_token,
        parents=[net],
    )
    pv.add_argument("name", help="project name")
    pv.add_argument("--member", required=True, help="the member whose token to revoke")

    ps = command(
        psub,
        "show",
        help="a project's members and latest run (member)",
        example="blindmatch project show burglary --token-file north.token",
        handler=cmd_show,
        parents=[net],
    )
    ps.add_argument("name", help="project name")
    token_options(ps)
