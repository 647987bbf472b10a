"""`blindmatch request` and `resolve`: from a hit to a formal request (docs/requests.md).

The requester turns one of its own record ids into request references, one per partner
holding the record (or every hit of a results file into one reference each); the partner
resolves a reference to its own record ids on its own machine. Both steps are audited at
the matcher.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import (
    Subcommands,
    command,
    connect,
    connection_options,
    encoded_option,
    member_options,
    member_token,
    when,
)
from blindmatch.client.errors import InputError, MatcherError
from blindmatch.matcher.domain import counted

if TYPE_CHECKING:
    from blindmatch.client.remote.model import ResolvedRef

HOW_TO_QUOTE = (
    "Quote each in your formal request to that partner only; it resolves it to its own "
    "record with `blindmatch resolve REFERENCE --project {project} --encoded ITS.encoded`. "
    "A hit is a lead, not an identification: the partner confirms the match first "
    "(docs/governance/acting-on-a-hit.md)."
)


@ends_at_sigterm  # --hits: the CSV half-written beside --out deleted (without: none)
def cmd_request(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.remote.twoserver import acknowledged_sha256
    from blindmatch.client.requests import rows_of

    if args.withdraw is not None:
        return _withdraw(args)
    if args.encoded is None:  # (optional for --withdraw alone)
        raise InputError(
            "--encoded DIR: required with --record-id and --hits (the ENCODED folder that was "
            "uploaded for the latest run)"
        )
    if args.hits is not None:
        return _request_hits(args)
    if args.out is not None or args.force:
        flag = "--out" if args.out is not None else "--force"
        raise InputError(f"{flag} goes with --hits (one reference per hit, written to a file)")
    encoded = read_encoded(args.encoded, verify=False)
    rows = rows_of(encoded, args.record_id)
    with connect(args, member_token(args)) as client:
        issued = client.issue_request_refs(
            args.project,
            rows,
            acknowledged_sha256(client, args.project, encoded),
            partner=args.partner or "",
            purpose=args.purpose or "",
        )
    if args.json:
        print(
            json.dumps(
                {
                    "project": args.project,
                    "record_id": args.record_id,
                    "run_id": issued.run_id,
                    "references": issued.refs,
                    "erased_partners": issued.erased,
                }
            )
        )
        return 0
    print(f"Request references for your record {args.record_id} (run {issued.run_id}):")
    for partner, reference in issued.refs.items():
        print(f"  {partner}: {reference}")
    if issued.erased:  # before srvleft: not a word of them
        print(f"  {erased_line(issued.erased, issued.run_id)}")
    if not args.quiet:
        print(HOW_TO_QUOTE.format(project=args.project))
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    """`request --withdraw REFERENCE`: a reference this member was issued withdrawn at the
    matcher (audited); its partner's `resolve` is refused from then on (since refcarry)."""
    for flag, given in (
        ("--encoded", args.encoded is not None),
        ("--partner", bool(args.partner)),
        ("--out", args.out is not None),
        ("--force", args.force),
    ):
        if given:
            raise InputError(
                f"{flag} goes with --record-id or --hits; --withdraw needs only the reference "
                "(nothing was withdrawn)"
            )
    with connect(args, member_token(args)) as client:
        gone = client.withdraw_request_ref(args.project, args.withdraw, args.purpose or "")
    if args.json:
        print(
            json.dumps(
                {
                    "project": args.project,
                    "reference": gone.reference,
                    "partner": gone.partner,
                    "run_id": gone.run_id,
                    "issued": when(gone.issued_unix),
                    "withdrawn": when(gone.withdrawn_unix),
                    "resolved": gone.resolved,
                }
            )
        )
        return 0
    source = f"run {gone.run_id}" if gone.run_id else "a query's or a watch's answer"
    print(
        f"Withdrew request reference {gone.reference} (for {gone.partner}; {source}; issued "
        f"{when(gone.issued_unix)}): {gone.partner} can no longer resolve it, and is told you "
        "withdrew it if it tries."
    )
    if gone.resolved:
        print(
            f"{gone.partner} had resolved it already: what it learnt then stays learnt; tell it "
            "that your request is withdrawn."
        )
    return 0


def erased_line(erased: list[str], run_id: str) -> str:
    """The line naming the partners whose data of run `run_id` is gone: no reference for them."""
    who = erased[0] if len(erased) == 1 else f"{', '.join(erased[:-1])} and {erased[-1]}"
    each = "" if len(erased) == 1 else " each"
    return (
        f"none for {who}: {who}{each} erased its data from this project since run {run_id} "
        "(or took no part in it), and a match there went with it"
    )


def _request_hits(args: argparse.Namespace) -> int:
    """`request --hits FILE --out FILE`: every hit checked here first, then one request
    for them all at the matcher (all issued or none), then the references written."""
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.files import check_writable, write_csv, write_csv_rows
    from blindmatch.client.remote.twoserver import acknowledged_sha256
    from blindmatch.client.requests import read_hits

    if args.out is None:
        raise InputError("--hits needs --out FILE: where to write the references, one per hit")
    if args.partner:
        raise InputError("--partner goes with --record-id; with --hits, each row names one")
    if args.out.is_dir() or args.out.resolve() == args.hits.resolve():
        raise InputError(f"--out {args.out}: give a new file (not a folder, not the --hits file)")
    if args.out.exists() and not args.force:  # (its references: the only record of which
        # own record each was issued for; the matcher's audit log names the partner alone)
        raise InputError(
            f"--out {args.out}: exists (--force to replace it); it may hold references issued "
            "before, which only it ties to your records: give another file; nothing was issued"
        )
    check_writable(args.out)  # before the matcher issues (and audits) any reference
    encoded = read_encoded(args.encoded, verify=False)
    hits = read_hits(args.hits, encoded)
    try:
        with connect(args, member_token(args)) as client:
            issued = client.issue_hit_refs(
                args.project,
                [(h.rows, h.partner) for h in hits],
                acknowledged_sha256(client, args.project, encoded),
                purpose=args.purpose or "",
            )
    except MatcherError as exc:  # `hits[3]: ...` named as the file's row
        told = re.match(r"hits\[(\d+)\](?:\.\w+)?: (.*)", str(exc), re.DOTALL)
        if told is None or int(told[1]) >= len(hits):
            raise
        hit = hits[int(told[1])]
        where = f"{args.hits}: row {hit.line} ({hit.record_id} at {hit.partner})"
        said = _told_before_code(told[2], "; no reference was issued")
        raise type(exc)(f"{where}: {said}") from None
    rows = [[h.record_id, h.partner, ref] for h, ref in zip(hits, issued.references, strict=True)]
    header = ["record_id", "partner", "reference"]
    try:
        write_csv(args.out, header, rows, replace=args.force)
    except FileExistsError:  # made since the check above: kept, and the references printed
        write_csv_rows(sys.stdout, header, rows, lineterminator="\n")
        raise InputError(
            f"--out {args.out}: made by something else while the references were issued; it "
            f"was left as it is, and the {counted(len(rows), 'reference')} are printed above "
            "instead (save them)"
        ) from None
    if args.json:
        print(
            json.dumps(
                {
                    "project": args.project,
                    "run_id": issued.run_id,
                    "out": str(args.out),
                    "references": [
                        {"record_id": r, "partner": p, "reference": ref} for r, p, ref in rows
                    ],
                }
            )
        )
        return 0
    print(
        f"Request references for {counted(len(rows), 'hit')} of {args.hits} (run {issued.run_id}), "
        f"one per row, written to {args.out} (record_id,partner,reference)."
    )
    if not args.quiet:
        print(HOW_TO_QUOTE.format(project=args.project))
    return 0


def _told_before_code(told: str, more: str) -> str:
    """`more` added to a matcher's refusal before its trailing ` [CODE]` (it read
    `... [FAILED_PRECONDITION]; no reference was issued`: requestswalk)."""
    code = re.search(r" \[[A-Z_]+\]\Z", told)
    at = code.start() if code else len(told)
    return told[:at] + more + told[at:]


def cmd_resolve(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.remote.twoserver import acknowledged_sha256
    from blindmatch.client.requests import local_ids

    encoded = read_encoded(args.encoded, verify=False)
    found: list[tuple[ResolvedRef, list[str]]] = []
    with connect(args, member_token(args)) as client:
        # The matcher resolves a reference only against the upload it points into, so a
        # wrong folder is refused before the resolution is recorded (docs/requests.md).
        sha256 = acknowledged_sha256(client, args.project, encoded)
        for reference in args.reference:
            try:
                resolved = client.resolve_request_ref(
                    args.project, reference, sha256, args.purpose or ""
                )
            except MatcherError as exc:
                if not found:
                    raise
                # The ones before it are resolved, and the requester's audit view says so
                # already: printed, not lost behind the error (requestswalk).
                _print_resolved(args, found)
                raise type(exc)(
                    _told_before_code(
                        str(exc),
                        f" ({counted(len(found), 'reference')} before {reference} resolved and "
                        "recorded, printed above; give the rest again)",
                    )
                ) from None
            found.append((resolved, local_ids(resolved, encoded, sha256)))
    _print_resolved(args, found)
    return 0


def _print_resolved(args: argparse.Namespace, found: list[tuple[ResolvedRef, list[str]]]) -> None:
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "reference": r.reference,
                        "requester": r.requester,
                        "run_id": r.run_id,
                        "issued": when(r.issued_unix),
                        "record_ids": ids,
                    }
                    for r, ids in found
                ]
            )
        )
        return
    for r, ids in found:
        yours = ("your records " if len(ids) > 1 else "your record ") + ", ".join(ids)
        # Issued with a two-server query's answer or a watch's event (walk2s: it named the
        # query alone, so a watch's reference read as a query's).
        source = (
            f"run {r.run_id}"
            if r.run_id
            else "a query's or a watch's answer, `blindmatch query` or `watch`"
        )
        print(
            f"{r.reference}: {r.requester}'s record matched {yours} "
            f"({source}; reference issued {when(r.issued_unix)})"
        )
    if not args.quiet:
        print(
            "A match is a lead, not an identification: check it on the identifiers with the "
            "requester before deciding what, if anything, to disclose "
            "(docs/governance/acting-on-a-hit.md)."
        )


def register(sub: Subcommands) -> None:
    parents = [connection_options(), member_options()]
    p = command(
        sub,
        "request",
        help="make request references for your hits, to send to the partners",
        description="For one of your own records that the latest run found a partner holds, "
        "get a request reference per partner (or for --partner only) to quote in your formal "
        "request; or, with --hits, one reference per row of a results file, all at once "
        "(all issued or none), written to --out. It is opaque: it tells you nothing about the "
        "partner's record, and only that partner can resolve it (`blindmatch resolve`). "
        "Audited; needs --purpose where the project requires one. --withdraw REFERENCE takes "
        "one back: the partner can resolve it no more. See docs/requests.md.",
        example="blindmatch request --project burglary --token-file pc-4471.token --encoded "
        "north.encoded --record-id "
        "NP-1003 --partner south --purpose 'REQ-2024-117'",
        handler=cmd_request,
        parents=parents,
    )
    encoded_option(p, required=False)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--record-id", help="your own record id (as in hits.csv's record_id)")
    which.add_argument(
        "--withdraw",
        metavar="REFERENCE",
        help="withdraw a reference you were issued (sent by mistake, or the case closed): its "
        "partner can no longer resolve it; audited. Needs no --encoded",
    )
    which.add_argument(
        "--hits",
        metavar="FILE",
        type=Path,
        help="a results file (record_id,partner, as `blindmatch results` writes): one "
        "reference per row; needs --out",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        type=Path,
        help="with --hits: the file to write, record_id,partner,reference (one row per hit); "
        "refused if it exists",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --hits: replace --out if it exists (its references are then lost)",
    )
    p.add_argument("--partner", help="only this partner (default: every partner holding it)")
    p.add_argument(
        "--purpose",
        help="why (the formal request's reference); written to the audit log, and required "
        "by projects created with --require-purpose",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print {project, record_id, run_id, references} (with --hits: {project, run_id, "
        "out, references: [{record_id, partner, reference}]}; with --withdraw: {project, "
        "reference, partner, run_id, issued, withdrawn, resolved})",
    )

    p = command(
        sub,
        "resolve",
        help="turn a request reference a partner sent you into your own record id",
        description="Resolve request references addressed to you (by a partner's formal "
        "request: from its results, or the refs a two-server project's query answers with at "
        "mapping) to your own record ids, read from the ENCODED folder you uploaded, on this "
        "machine. Only the member a reference was issued for can resolve it. Audited: the "
        "requester sees that you resolved it. See docs/requests.md.",
        example="blindmatch resolve bmr-2k4x... --project burglary --token-file south.token "
        "--encoded south.encoded "
        "--purpose 'REQ-2024-117 from north'",
        handler=cmd_resolve,
        parents=parents,
    )
    p.add_argument("reference", nargs="+", help="the reference(s) quoted in the request")
    encoded_option(p)
    p.add_argument(
        "--purpose",
        help="why (the request you are answering); written to the audit log, and required by "
        "projects created with --require-purpose",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a list of {reference, requester, run_id, issued, record_ids} (run_id "
        "empty for a reference a two-server project's query answered with)",
    )
