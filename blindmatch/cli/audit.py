"""`blindmatch audit ...`: export the audit log (JSON lines, CSV or HTML), report who in an
organisation looked at what and why, and verify the log's hash chain."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import (
    Subcommands,
    actions,
    admin_token,
    at_least,
    command,
    connect,
    connection_options,
    given_token,
    token_options,
)
from blindmatch.client.errors import BlindmatchError, InputError
from blindmatch.matcher.domain import counted

FORMATS = ("jsonl", "csv", "html")


@contextmanager
def _entries(args: argparse.Namespace) -> Iterator[tuple[Counted, str]]:
    """The entries the caller may see, as the matcher streams them (counted as they go:
    none is held here), and whose they are (for a page's heading). --out is checked first:
    the export is audited (`audit.export`), so none is made for a file that could not be
    written."""
    token = given_token(args)
    if token and not args.project:
        raise InputError("a member sees its own project's audit entries: pass --project")
    if args.out:
        from blindmatch.client.files import check_writable

        check_writable(args.out)
    scope = "project " + args.project if args.project else "every project"
    with connect(args, token or admin_token()) as client:
        entries = Counted(
            client.audit(args.project or "", after=args.after,
                         on_none=lambda last: _none_after(args, last))
        )  # fmt: skip
        yield entries, scope + ("" if token else ", the operator's whole log")


def _none_after(args: argparse.Namespace, last: int | None) -> None:
    """No entry follows --after: said on stderr (exit 0, the output as before), with the
    number of the last entry the caller may see, where the matcher says it; -q: nothing."""
    if not args.after or args.quiet:
        return  # no --after: an empty log (or view) is no surprise
    where = (
        "" if last is None  # (a matcher from before 2026-12-07 does not say)
        else f": the last entry you may see is {last}" if last
        else ": you may see none yet"
    )  # fmt: skip
    print(f"No audit entry follows --after {args.after}{where}.", file=sys.stderr)


class Counted:
    """An iterable's items, counted as they are taken."""

    def __init__(self, items: Iterable[dict]) -> None:
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator[dict]:
        for item in self._items:
            self.count += 1
            yield item


def _write(args: argparse.Namespace, chunks: Iterable[str]) -> None:
    """To --out (client/files.py `write_chunks`: atomically, each part as it is made), or
    to standard output."""
    if args.out:
        from blindmatch.client.files import write_chunks

        write_chunks(args.out, chunks)
    else:
        sys.stdout.writelines(chunks)


def _write_csv(args: argparse.Namespace, header: Sequence[str], rows: Iterable[list[str]]) -> int:
    """`_write` for a CSV, a row at a time (client/files.py `write_csv`); how many rows."""
    from blindmatch.client.files import write_csv, write_csv_rows

    if args.out:
        return write_csv(args.out, header, rows)
    return write_csv_rows(sys.stdout, header, rows, lineterminator="\n")


def _said(args: argparse.Namespace, what: str) -> None:
    if args.out and not args.quiet:  # -q: nothing, as `upload -q`
        print(f"Wrote {what} to {args.out}.", file=sys.stderr)


@ends_at_sigterm  # --out: the file half-written beside it deleted
def cmd_export(args: argparse.Namespace) -> int:
    from blindmatch.client.tools import auditfiles

    # Written as the matcher streams the entries (before 2026-12-07 all were held, and then
    # the whole file made in memory twice over); but a page says how many before its table.
    with _entries(args) as (entries, scope):
        if args.format == "jsonl":
            _write(args, auditfiles.jsonl_lines(entries))
        elif args.format == "csv":
            _write_csv(args, auditfiles.COLUMNS, auditfiles.entry_rows(entries))
        else:
            _write(args, auditfiles.entries_html(list(entries), scope))
    _said(args, f"{entries.count} audit entries ({args.format})")
    return 0


@ends_at_sigterm  # --out: the file half-written beside it deleted
def cmd_report(args: argparse.Namespace) -> int:
    from blindmatch.client.tools import auditfiles

    with _entries(args) as (entries, scope):
        rows = auditfiles.who_looked(entries)
        if args.format == "csv":  # a row at a time, as the entries come
            count = _write_csv(args, auditfiles.WHO_COLUMNS, auditfiles.safe_rows(rows))
        else:  # the columns' widths, or the page's opening, need every row
            held = list(rows)
            count = len(held)
            page = args.format == "html"
            _write(args, auditfiles.who_html(held, scope) if page else auditfiles.who_text(held))
    _said(args, f"{count} consultations and disclosures")
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
        raise BlindmatchError(
            f"the audit log fails verification ({counted(len(check.problems), 'problem')})"
        )
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
        type=at_least(0),
        default=0,
        metavar="SEQ",
        help="only entries after SEQ (default: 0, every entry)",
    )
    parser.add_argument(
        "--out", metavar="FILE", type=Path, help="file to write (default: standard output)"
    )
