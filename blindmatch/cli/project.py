"""`blindmatch project ...`: create projects, manage members' tokens, list and show them.

The `project` commands name their project positionally (`project create NAME`), and
take `--project NAME` too, as every other command does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.errors import Terminated, ends_at_sigterm
from blindmatch.cli.options import (
    BLOCKINGS,
    LEVELS,
    Subcommands,
    actions,
    admin_token,
    command,
    connect,
    connection_options,
    env,
    given_token,
    token_options,
    unit_interval,
    when,
)
from blindmatch.cli.projectargs import (
    check_new_tokens,
    member_given,
    members_of,
    name_argument,
    new_project_name,
    parse_expiry,
    project_of,
    said_with_hint,
    tokens_folder,
)
from blindmatch.cli.projectencoded import check_encoded, compare_encoded
from blindmatch.cli.projectmode import clk_notice
from blindmatch.cli.projectstate import as_json as upload_json
from blindmatch.cli.projectstate import unasked_line, upload_state
from blindmatch.client.errors import InputError
from blindmatch.client.remote.model import said_blocking

if TYPE_CHECKING:
    from blindmatch.client.remote.model import ProjectInfo


@ends_at_sigterm  # --tokens-dir: a token file half-written deleted (`write_tokens`)
def cmd_create(args: argparse.Namespace) -> int:
    name = new_project_name(args)
    members = members_of(args.members)
    expires = parse_expiry(args.expires_in) if args.expires_in else 0
    with tokens_folder(args):  # the folder made for the tokens removed if it stays empty
        check_new_tokens(args, members)
        return _create(args, name, members, expires)


def _create(args: argparse.Namespace, name: str, members: list[str], expires: int) -> int:
    with connect(args, admin_token()) as client, said_with_hint(client, name):
        created = client.create_project(
            name,
            members,
            disclosure=args.disclose,
            threshold=args.threshold or 0.0,
            blocking=args.blocking,
            require_purpose=args.require_purpose,
            expires_unix=expires,
            require_users=args.require_users,
            mode=args.mode or "",
        )
    # What a CLK project exposes, said as it is made (issue 18); stdout stays the reply's.
    # A note, so -q silences it as every command's notes (README "Commands"; encode's
    # privacy warnings likewise).
    if not args.quiet and (notice := clk_notice(created, args.mode or "")):
        print(notice, file=sys.stderr)
    # In the order --members gave them (the reply's map has none of its own).
    order = {member: i for i, member in enumerate(members)}
    tokens = dict(sorted(created.tokens.items(), key=lambda kv: order.get(kv[0], len(order))))
    if args.tokens_dir:
        files = write_tokens(args.tokens_dir, tokens, created.project)
        if args.json:
            print(json.dumps({"project": created.project, "token_files": files,
                              "mode": created.mode}))  # fmt: skip
            return 0
    elif args.json:
        print(json.dumps({"project": created.project, "tokens": tokens, "mode": created.mode}))
        return 0
    purpose = "; results need --purpose" if created.require_purpose else ""
    if created.require_users:
        purpose += "; results, requests, queries and watches need a user token"
    blocking = said_blocking(created.mode, created.blocking)
    print(
        f"Project {created.project} created (disclosure: {created.disclosure}, "
        f"threshold: {created.threshold}, blocking: {blocking}, mode: {created.mode}; "
        f"data deleted at {when(created.expires_unix)}{purpose})."
    )
    if args.tokens_dir:
        print("Member tokens written, each to a file only you can read (give each member only "
              "its own, by a secure channel; members pass it as --token-file):")  # fmt: skip
        for member, path in files.items():
            print(f"  {member}: {path}")
        return 0
    print("Member tokens (shown once; give each member only its own):")
    for member, token in tokens.items():
        print(f"  {member}: {token}")
    return 0


def write_tokens(folder: str, tokens: dict[str, str], project: str) -> dict[str, str]:
    """Each member's token to FOLDER/MEMBER.token, owner-only (the folder too, if made here).
    A SIGTERM part-way leaves each file whole or absent, and says whose are absent: their
    tokens, issued, are nowhere; `rotate-token` issues new ones."""
    from blindmatch.client.files import write_text

    root = Path(folder)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for member, token in tokens.items():
        path = root / f"{member}.token"
        try:
            write_text(path, token + "\n")  # owner-only from the first byte
        except (Terminated, OSError):  # (an OSError too: a full disk; leftovers2)
            absent = [m for m in tokens if m not in files]
            print(f"Token files not written for {', '.join(absent)}: get each a new token with "
                  f"`blindmatch project rotate-token {project} --member MEMBER "
                  f"--tokens-dir {folder}`.", file=sys.stderr)  # fmt: skip
            raise
        files[member] = str(path)
    return files


@ends_at_sigterm  # --tokens-dir: the token file half-written deleted
def cmd_rotate_token(args: argparse.Namespace) -> int:
    name = project_of(args)
    args.member = member_given(args)
    with tokens_folder(args):  # the folder made for the token removed if it stays empty
        with connect(args, admin_token()) as client, said_with_hint(client, name, args.member):
            token = client.rotate_token(name, args.member)
        path = ""
        if args.tokens_dir:
            path = write_tokens(args.tokens_dir, {args.member: token}, name)[args.member]
    if args.tokens_dir:
        if args.json:
            print(json.dumps({"project": name, "member": args.member, "token_file": path}))
        else:
            print(f"New token for {args.member} in {name} written to {path} (only you can "
                  "read it; the old one no longer works)")  # fmt: skip
        return 0
    if args.json:
        print(json.dumps({"project": name, "member": args.member, "token": token}))
        return 0
    print(f"New token for {args.member} in {name} (shown once; the old one no longer works):")
    print(f"  {token}")
    return 0


def cmd_revoke_token(args: argparse.Namespace) -> int:
    name = project_of(args)
    args.member = member_given(args)
    with connect(args, admin_token()) as client, said_with_hint(client, name, args.member):
        client.revoke_token(name, args.member)
    if args.quiet:  # nothing, as `upload -q`: exit 0 says it is revoked
        return 0
    print(
        f"Revoked {args.member}'s token in {name}. Its data stays until it expires or is "
        f"erased; `blindmatch project rotate-token {name} --member {args.member}` issues "
        "a new token."
    )
    return 0


def _show(info: ProjectInfo) -> None:
    if info.member:
        who = f"you are {info.member}, user {info.user}" if info.user else f"you are {info.member}"
    else:
        who = "operator's view"
    print(
        f"Project {info.project} ({who}; disclosure {info.disclosure}, "
        f"threshold {info.threshold}, blocking {info.blocking_said}, mode {info.mode})"
    )
    purpose = "; results need --purpose" if info.require_purpose else ""
    if info.require_users:
        purpose += "; results, requests, queries and watches need a user token"
    print(f"  data deleted at {when(info.expires_unix)}{purpose}")
    if info.mode == "two-server":
        print(f"  two-server mode: shares to S1 ({info.two_server_s1 or '?'}) and S2 "
              f"({info.two_server_s2 or '?'}), how many records to the matcher (encode with "
              "--two-server)")  # fmt: skip
    if info.fingerprint_id:
        print(
            f"  encodings: fingerprint id {info.fingerprint_id} ("
            + (f"{info.clk_bits}-bit CLKs; " if info.clk_bits else "")
            + f"of {info.fingerprint_from}'s upload, the earliest held)"
        )
    else:
        print("  encodings: none held (the next upload sets the fingerprint id)")
    for m in info.members:
        state = upload_state(m)
        consent = f"; consents to {m.consent}" if m.consent else ""
        print(f"  {m.name}: {state}{consent}")
    if unasked := unasked_line(info):
        print(unasked)
    if info.latest_run is not None:
        run = info.latest_run
        print(f"  latest run {run.run_id}: {run.state} (started {when(run.started_unix)})")
    else:
        print("  no run yet")


def _as_dict(info: ProjectInfo) -> dict[str, object]:
    run = info.latest_run
    return {
        "project": info.project,
        "disclosure": info.disclosure,
        "threshold": info.threshold,
        "blocking": info.blocking_said,
        "mode": info.mode,
        "require_purpose": info.require_purpose,
        "require_users": info.require_users,
        "expires": when(info.expires_unix),
        "fingerprint_id": info.fingerprint_id,
        "fingerprint_from": info.fingerprint_from,
        "members": [
            {"name": m.name, "consent": m.consent, **upload_json(m)}
            for m in info.members
        ],
        "latest_run": None if run is None else {
            "run_id": run.run_id, "state": run.state, "started": when(run.started_unix),
        },
        # Where the shares go, as the text view says (walk2s: --json left them out).
        **({"two_server": {"s1": info.two_server_s1, "s2": info.two_server_s2}}
           if info.mode == "two-server" else {}),
        **({"two_server_unasked": info.two_server_unasked} if info.two_server_unasked else {}),
    }  # fmt: skip


def cmd_show(args: argparse.Namespace) -> int:
    name = project_of(args)
    token = None if args.operator else given_token(args)
    if not token and not args.operator and not env("BLINDMATCH_ADMIN_TOKEN"):
        raise InputError(
            "no token: pass --token-file FILE or --token (or set BLINDMATCH_TOKEN) for a "
            "member's view, or set BLINDMATCH_ADMIN_TOKEN for the operator's"
        )
    with connect(args, token or admin_token()) as client:
        if token:
            info = client.describe(name)
        else:
            with said_with_hint(client, name):
                info = client.list_projects(name)[0]
    if not args.json:
        _show(info)
        return compare_encoded(info, args.encoded) if args.encoded else 0
    shown = _as_dict(info)
    check = check_encoded(info, args.encoded) if args.encoded else None
    if check is not None:  # one JSON object on stdout: the folder's verdict is a key of it
        shown["encoded"] = check.as_dict()
    print(json.dumps(shown))
    return check.status if check is not None else 0


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args, admin_token()) as client:
        infos = client.list_projects()
    if args.json:
        print(json.dumps([_as_dict(i) for i in infos]))
        return 0
    if not infos:
        print("No live projects.")
        return 0
    head = ("project", "mode", "level", "members", "uploaded", "expires", "latest run",
            "fingerprint id")  # fmt: skip
    rows = [head]
    for i in infos:
        run = i.latest_run
        rows.append((
            i.project,
            i.mode,
            i.disclosure,
            str(len(i.members)),
            str(sum(m.whole for m in i.members)),
            when(i.expires_unix),
            f"{run.state} {when(run.started_unix)}" if run else "none",
            i.fingerprint_id or "-",
        ))  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def register(sub: Subcommands) -> None:
    net = connection_options()
    group = command(
        sub,
        "project",
        help="create or inspect projects",
        example="blindmatch project create burglary --members north,south --tokens-dir .",
    )
    psub = actions(group, "project_command")

    pc = command(
        psub,
        "create",
        help="create a project and print its members' tokens (operator)",
        description="Create a project and print each member's token, once (operator: "
        "$BLINDMATCH_ADMIN_TOKEN). The disclosure level decides the most any member learns.",
        example=[
            "blindmatch project create burglary --members north,south,east --disclose hits "
            "--tokens-dir .",
            "blindmatch project create study --members a,b --disclose scores --mode clk "
            "--expires-in 30d --json",
        ],
        handler=cmd_create,
        parents=[net],
    )
    name_argument(pc)
    pc.add_argument(
        "--members",
        required=True,
        help="comma-separated member names, e.g. north,south,east: at least two, each once "
        "(lower-case letters, digits, '_', '.', '-'; spaces around a name dropped)",
    )
    pc.add_argument(
        "--disclose",
        choices=LEVELS,
        default="hits",
        metavar="LEVEL",
        help="what members learn: %(choices)s (default: %(default)s)",
    )
    pc.add_argument(
        "--threshold",
        type=unit_interval,
        help="Dice similarity threshold; with a field-level schema, the match probability "
        "(default: 0.8)",
    )
    pc.add_argument(
        "--blocking",
        choices=BLOCKINGS,
        metavar="METHOD",
        default="auto",
        help="compare every pair (exhaustive), only pairs LSH proposes (lsh), or choose by "
        "size (auto, the default: LSH above 10^10 pairs per pair of members); a CLK "
        "project's: in a two-server project S1 proposes the pairs by its own caps, and "
        "another method is refused",
    )
    pc.add_argument(
        "--mode",
        choices=("clk", "two-server"),
        help="clk: the matcher holds the members' CLKs and compares them; two-server: the "
        "members' XOR shares go to two non-colluding servers S1 and S2 and the matcher holds "
        "only how many records (it must be started with --two-server-s1/--two-server-s2; no scores "
        "disclosure; docs/operations.md) (default: the matcher's, `serve --default-mode`: "
        "two-server on a matcher started with S1 and S2, else clk; a CLK project's exposure "
        "is said on stderr as it is made)",
    )
    pc.add_argument(
        "--require-purpose",
        action="store_true",
        help="every results request (results, report) and request reference (request, "
        "resolve) must give --purpose (a case reference), kept in the audit log",
    )
    pc.add_argument(
        "--require-users",
        action="store_true",
        help="results, request references, queries and watches need a named user's token "
        "(`blindmatch user add`), so that the audit log names the person; members' own tokens "
        "are refused for them",
    )
    pc.add_argument(
        "--expires-in",
        metavar="WHEN",
        help="when the project's encodings and results are deleted: 90d, 12h, 8w, 1y or a "
        "date (YYYY-MM-DD, UTC); default 180d",
    )
    pc.add_argument("--json", action="store_true",
                    help="print {project, tokens, mode} as JSON")  # fmt: skip
    pc.add_argument(
        "--tokens-dir",
        metavar="DIR",
        help="write each member's token to DIR/MEMBER.token, readable by you only, instead "
        "of printing it (--json then prints {project, token_files, mode}); a MEMBER.token "
        "already there (another project's) is not replaced: refused before the project is made",
    )

    pr = command(
        psub,
        "rotate-token",
        help="issue a member a new token; the old one stops working (operator)",
        example="blindmatch project rotate-token burglary --member north --tokens-dir .",
        handler=cmd_rotate_token,
        parents=[net],
    )
    name_argument(pr)
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
    name_argument(pv)
    pv.add_argument("--member", required=True, help="the member whose token to revoke")

    pl = command(
        psub,
        "list",
        help="every live project: mode, level, members, expiry, latest run (operator)",
        description="List every live project with its mode (clk or two-server), disclosure "
        "level, members and how many have uploaded, expiry, latest run and encoding "
        "fingerprint id (operator: $BLINDMATCH_ADMIN_TOKEN). Never a token.",
        example="blindmatch project list",
        handler=cmd_list,
        parents=[net],
    )
    pl.add_argument("--json", action="store_true", help="print a JSON list of projects")

    ps = command(
        psub,
        "show",
        help="a project's settings, members, fingerprint id and latest run (member or operator)",
        description="Show a project: its settings, each member's upload status and consent, "
        "the encoding fingerprint id every upload must share (the uploads held share it: "
        "shown from the earliest held, which an erasure or a new upload of that member "
        "changes; with none held, the next upload sets it), and "
        "the latest run. With a member token (--token-file, --token or $BLINDMATCH_TOKEN) as "
        "that member sees it (audited); otherwise, or with --operator, the operator's view "
        "($BLINDMATCH_ADMIN_TOKEN). --encoded checks an ENCODED folder's fingerprint id "
        "against the project's before you upload it (exit 1 when it differs), and how it was "
        "encoded against the project's mode, as `upload` does (exit 1 for a folder without "
        "--two-server in a two-server project; a --two-server folder goes to a CLK project "
        "only with `upload --clk`).",
        example=[
            "blindmatch project show burglary --token-file north.token --encoded north.encoded",
            "blindmatch project show burglary --operator",
        ],
        handler=cmd_show,
        parents=[net],
    )
    name_argument(ps)
    token_options(ps)
    ps.add_argument(
        "--operator",
        action="store_true",
        help="the operator's view, with $BLINDMATCH_ADMIN_TOKEN, even if $BLINDMATCH_TOKEN is set",
    )
    ps.add_argument(
        "--encoded",
        metavar="DIR",
        type=Path,
        help="an ENCODED folder to check against the project's fingerprint id and mode "
        "before uploading",
    )
    ps.add_argument(
        "--json",
        action="store_true",
        help="print the project as one JSON object (with --encoded, the folder's verdict "
        'under "encoded")',
    )
