"""`blindmatch audit ...`: export the audit log (JSON lines, CSV or HTML), report who in an
organisation looked at what and why, and verify the log's hash chain."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blindmatch.cli.errors import ends_at_sigterm
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

FORMATS = ("jsonl", "csv", "html")


def _entries(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The entries the caller may see, and whose they are (for a page's heading). --out is
    checked first: the export is audited (`audit.export`), so none is made for a file that
    could not be written."""
    token = given_token(args)
    if token and not args.project:
        raise InputError("a member sees its own project's audit entries: pass --project")
    if args.out:
        from blindmatch.client.files import check_writable

        check_writable(args.out)
    with connect(args, token or admin_token()) as client:
        entries = list(client.audit(args.project or "", after=args.after))
    scope = "project " + args.project if args.project else "every project"
    return entries, scope + ("" if token else ", the operator's whole log")


def _write(args: argparse.Namespace, text: str, what: str) -> None:
    if args.out:
        from blindmatch.client.files import write_text

        write_text(args.out, text)
        print(f"Wrote {what} to {args.out}.", file=sys.stderr)
    else:
        sys.stdout.write(text)


@ends_at_sigterm  # --out: the file half-written beside it deleted
def cmd_export(args: argparse.Namespace) -> int:
    entries, scope = _entries(args)
    if args.format == "jsonl":
        text = "".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries)
    else:
        from blindmatch.client.tools import auditfiles

        text = (
            auditfiles.entries_csv(entries)
            if args.format == "csv"
            else auditfiles.entries_html(entries, scope)
        )
    _write(args, text, f"{len(entries)} audit entries ({args.format})")
    return 0


@ends_at_sigterm  # --out: the file half-written beside it deleted
def cmd_report(args: argparse.Namespace) -> int:
    from blindmatch.client.tools import auditfiles

    entries, scope = _entries(args)
    rows = auditfiles.who_looked(entries)
    if args.format == "csv":
        text = auditfiles.to_csv(auditfiles.WHO_COLUMNS, rows)
    elif args.format == "html":
        text = auditfiles.who_html(rows, scope)
    else:
        text = auditfiles.who_text(rows)
    _write(args, text, f"{len(rows)} consultations and disclosures")
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
        help="export, report on or verify the audit log",
        example="blindmatch audit verify --anchor 1842:5f0c...",
    )
    audit_sub = actions(group, "audit_command")
    ae = command(
        audit_sub,
        "export",
        help="audit entries as JSON lines, CSV or HTML (operator: all; member: its view)",
        example=[
            "blindmatch audit export --out audit.jsonl",
            "blindmatch audit export --project burglary --format html --out audit.html",
            "blindmatch audit export --project burglary --token-file north.token --after 1200",
        ],
        handler=cmd_export,
        parents=[net],
    )
    _selection(ae)
    ae.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="jsonl (one JSON object a line, the default), csv, or html (one self-contained "
        "page); times in csv and html are ISO-8601 UTC",
    )
    ar = command(
        audit_sub,
        "report",
        help="who in your organisation looked at what, and why",
        description="Every consultation and disclosure in the audit log (results fetched, "
        "queries, watches and their notifications, looks at the project's upload status, "
        "request references issued and resolved): "
        "when (ISO-8601 UTC), which member and named user, what, the purpose given, whose "
        "information and how many records. With a member token, your organisation's; with "
        "the operator's, every member's.",
        example=[
            "blindmatch audit report --project burglary --token-file north.token",
            "blindmatch audit report --project burglary --format html --out who.html",
        ],
        handler=cmd_report,
        parents=[net],
    )
    _selection(ar)
    ar.add_argument(
        "--format",
        choices=("text", "csv", "html"),
        default="text",
        help="text columns (the default), csv, or html (one self-contained page)",
    )
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


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", help="one project (required with a member token)")
    token_options(
        parser,
        token_help="member token (visible in `ps`: prefer --token-file or $BLINDMATCH_TOKEN; "
        "without one, $BLINDMATCH_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="SEQ",
        help="only entries after SEQ (default: 0, every entry)",
    )
    parser.add_argument("--out", type=Path, help="file to write (default: standard output)")
