"""`blindmatch request` and `resolve`: from a hit to a formal request (docs/requests.md).

The requester turns one of its own record ids into request references, one per partner
holding the record; the partner resolves a reference to its own record ids on its own
machine. Both steps are audited at the matcher.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blindmatch.cli.options import (
    Subcommands,
    command,
    connect,
    connection_options,
    member_options,
    member_token,
    when,
)


def cmd_request(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.requests import rows_of

    encoded = read_encoded(args.encoded, verify=False)
    rows = rows_of(encoded, args.record_id)
    with connect(args, member_token(args)) as client:
        issued = client.issue_request_refs(
            args.project,
            rows,
            encoded.sha256,
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
                }
            )
        )
        return 0
    print(f"Request references for your record {args.record_id} (run {issued.run_id}):")
    for partner, reference in issued.refs.items():
        print(f"  {partner}: {reference}")
    if not args.quiet:
        print(
            "Quote each in your formal request to that partner only; it resolves it to its own "
            f"record with `blindmatch resolve REFERENCE --project {args.project} --encoded "
            "ITS.encoded`. A hit is a lead, not an identification: the partner confirms the "
            "match first (docs/governance/acting-on-a-hit.md)."
        )
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.requests import local_ids

    encoded = read_encoded(args.encoded, verify=False)
    found = []
    with connect(args, member_token(args)) as client:
        for reference in args.reference:
            resolved = client.resolve_request_ref(args.project, reference, args.purpose or "")
            found.append((resolved, local_ids(resolved, encoded)))
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
        return 0
    for r, ids in found:
        yours = ("your records " if len(ids) > 1 else "your record ") + ", ".join(ids)
        print(
            f"{r.reference}: {r.requester}'s record matched {yours} "
            f"(run {r.run_id}; reference issued {when(r.issued_unix)})"
        )
    if not args.quiet:
        print(
            "A match is a lead, not an identification: check it on the identifiers with the "
            "requester before deciding what, if anything, to disclose "
            "(docs/governance/acting-on-a-hit.md)."
        )
    return 0


def register(sub: Subcommands) -> None:
    parents = [connection_options(), member_options()]
    p = command(
        sub,
        "request",
        help="make request references for one of your hits, to send to the partner",
        description="For one of your own records that the latest run found a partner holds, "
        "get a request reference per partner (or for --partner only) to quote in your formal "
        "request. It is opaque: it tells you nothing about the partner's record, and only "
        "that partner can resolve it (`blindmatch resolve`). Audited; needs --purpose where "
        "the project requires one. See docs/requests.md.",
        example="blindmatch request --project burglary --token-file pc-4471.token --encoded "
        "north.encoded --record-id "
        "NP-1003 --partner south --purpose 'REQ-2024-117'",
        handler=cmd_request,
        parents=parents,
    )
    p.add_argument(
        "--encoded", required=True, type=Path, help="the ENCODED folder that was uploaded"
    )
    p.add_argument(
        "--record-id", required=True, help="your own record id (as in hits.csv's record_id)"
    )
    p.add_argument("--partner", help="only this partner (default: every partner holding it)")
    p.add_argument(
        "--purpose",
        help="why (the formal request's reference); written to the audit log, and required "
        "by projects created with --require-purpose",
    )
    p.add_argument(
        "--json", action="store_true", help="print {project, record_id, run_id, references}"
    )

    p = command(
        sub,
        "resolve",
        help="turn a request reference a partner sent you into your own record id",
        description="Resolve request references addressed to you (by a partner's formal "
        "request) to your own record ids, read from the ENCODED folder you uploaded, on this "
        "machine. Only the member a reference was issued for can resolve it. Audited: the "
        "requester sees that you resolved it. See docs/requests.md.",
        example="blindmatch resolve bmr-2k4x... --project burglary --token-file south.token "
        "--encoded south.encoded "
        "--purpose 'REQ-2024-117 from north'",
        handler=cmd_resolve,
        parents=parents,
    )
    p.add_argument("reference", nargs="+", help="the reference(s) quoted in the request")
    p.add_argument(
        "--encoded", required=True, type=Path, help="the ENCODED folder that was uploaded"
    )
    p.add_argument(
        "--purpose",
        help="why (the request you are answering); written to the audit log, and required by "
        "projects created with --require-purpose",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a list of {reference, requester, run_id, issued, record_ids}",
    )
