"""`blindmatch audit ...`: export the audit log, and verify its hash chain."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blindmatch.cli.options import (
    Subcommands,
    actions,
    admin_token,
    command,
    connect,
    connection_options,
    given_token,
    token_options,
)
from blindmatch.client.errors import BlindmatchError, InputError


def cmd_export(args: argparse.Namespace) -> int:
    token = given_token(args)
    if token and not args.project:
        raise InputError("a member sees its own project's audit entries: pass --project")
    with connect(args, token or admin_token()) as client:
        lines = [
            json.dumps(e, sort_keys=True, ensure_ascii=False)
            for e in client.audit(args.project or "", after=args.after)
        ]
    text = "".join(line + "\n" for line in lines)
    if args.out:
        from blindmatch.client.files import write_text

        write_text(args.out, text)
        print(f"Wrote {len(lines)} audit entries to {args.out}.", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _anchor(text: str) -> tuple[int, str]:
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1 or len(digest) != 64:
        raise InputError(f"--anchor {text!r}: expected SEQ:HASH, as `audit verify` prints")
    return int(seq), digest.lower()


def cmd_verify(args: argparse.Namespace) -> int:
    anchor = _anchor(args.anchor) if args.anchor else None
    with connect(args, admin_token()) as client:
        check = client.verify_audit(anchor)
    if not check.ok:
        for problem in check.problems:
            print(f"  {problem}", file=sys.stderr)
        raise BlindmatchError(f"the audit log fails verification ({len(check.problems)} problems)")
    print(
        f"Audit log intact: {check.entries} entries. Head {check.head_seq}:{check.head_hash}\n"
        "Record the head elsewhere and pass it as --anchor next time to catch a cut-off tail."
    )
    return 0


def register(sub: Subcommands) -> None:
    net = connection_options()
    group = command(
        sub,
        "audit",
        help="export or verify the audit log",
        example="blindmatch audit verify --anchor 1842:5f0c...",
    )
    audit_sub = actions(group, "audit_command")
    ae = command(
        audit_sub,
        "export",
        help="audit entries as JSON lines (operator: all; member: those that concern it)",
        example=[
            "blindmatch audit export --out audit.jsonl",
            "blindmatch audit export --project burglary --token-file north.token --after 1200",
        ],
        handler=cmd_export,
        parents=[net],
    )
    ae.add_argument("--project", help="one project (required with a member token)")
    token_options(
        ae,
        token_help="member token (visible in `ps`: prefer --token-file or $BLINDMATCH_TOKEN; "
        "without one, $BLINDMATCH_ADMIN_TOKEN)",
    )
    ae.add_argument("--after", type=int, default=0, metavar="SEQ", help="only entries after SEQ")
    ae.add_argument("--out", type=Path, help="file to write (default: standard output)")
    av = command(
        audit_sub,
        "verify",
        help="check the audit log's hash chain (operator)",
        example="blindmatch audit verify --anchor 1842:5f0c...",
        handler=cmd_verify,
        parents=[net],
    )
    av.add_argument(
        "--anchor",
        metavar="SEQ:HASH",
        help="a head printed by an earlier verify: it must still be in the log, unchanged",
    )
