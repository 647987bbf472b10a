"""`blindmatch admin query-limits` and `admin query-report`: the operator sets a project's
query rate limits and quotas, and reads its query volume per member, over the wire
(`SetQueryLimits`, `QueryReport`; matcher/realtime/limits.py, matcher/realtime/report.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from blindmatch.cli.options import (
    Subcommands,
    admin_token,
    at_least,
    command,
    connect,
    project_name,
    project_option,
)
from blindmatch.client.errors import InputError
from blindmatch.matcher.domain import counted
from blindmatch.protos.wire import limits_conflict


def cmd_query_limits(args: argparse.Namespace) -> int:
    given = (args.per_minute or 0, args.per_day or 0, args.member or "")
    if problem := limits_conflict(*given, args.allow_watch is not None):  # exit 2, not sent
        raise InputError(problem)  # (in the matcher's words)
    with connect(args, admin_token()) as client:
        limits = client.set_query_limits(
            project_name(args),
            member=given[2],
            per_minute=given[0],
            per_day=given[1],
            allow_watch=args.allow_watch,
        )
    who = limits.member or "every member without its own limits"
    print(
        f"Query limits in {limits.project} for {who}: {limits.per_minute} records per minute, "
        f"{limits.per_day} per 24 hours; watching {'allowed' if limits.allow_watch else 'off'}."
    )
    return 0


def cmd_query_report(args: argparse.Namespace) -> int:
    project = project_name(args)
    with connect(args, admin_token()) as client:
        report = client.query_report(project, hours=args.hours)
    if args.json:
        print(json.dumps([dataclasses.asdict(v) for v in report], indent=2))
        return 0
    print(f"Query volume in {project}, last {counted(args.hours, 'hour')}:")
    print(
        f"  {'member':<16} {'queries':>8} {'records':>8} {'hits':>6} {'peak/min':>8} "
        f"{'limit/day':>9} {'purposes':>8} {'over-limit':>10}"
    )
    for v in report:
        print(
            f"  {v.member:<16} {v.queries:>8} {v.records:>8} {v.records_with_hits:>6} "
            f"{v.peak_per_minute:>8} {v.per_day_limit or '-':>9} {v.distinct_purposes:>8} "
            f"{v.refused:>10}"
        )
        for u in v.users:
            print(
                f"      user {u.user}: {counted(u.queries, 'query', 'queries')}, "
                f"{counted(u.records, 'record')} ({u.records_with_hits} with hits), "
                f"{u.refused} refused for limits, "
                f"{u.bad_requests} refused for a bad token or bad input"
                + (f", {u.unanswered} not answered (UNAVAILABLE)" if u.unanswered else "")
            )
        for flag in v.flags:
            print(f"      UNUSUAL: {flag}")
        if v.unanswered:
            print(
                f"      not answered: {counted(v.unanswered, 'query', 'queries')} refused "
                "UNAVAILABLE (a look-up server down or being loaded; audited, no quota used)"
            )
    return 0


def register_query(asub: Subcommands, net: argparse.ArgumentParser) -> None:
    """`admin query-limits` and `admin query-report` under `admin` (`asub`), with the
    connection options `net`."""
    al = command(
        asub,
        "query-limits",
        help="set query rate limits and quotas (operator)",
        example="blindmatch admin query-limits --project burglary --per-minute 60 "
        "--per-day 2000 --allow-watch",
        handler=cmd_query_limits,
        parents=[net],
    )
    project_option(al)
    al.add_argument("--member", help="only this member (default: the project's default)")
    limit = at_least(1, most=2**64 - 1)  # (0 on the wire keeps the current limit)
    al.add_argument("--per-minute", type=limit, help="records a member may query per minute")
    al.add_argument("--per-day", type=limit, help="records a member may query per 24 hours")
    al.add_argument(
        "--allow-watch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let members watch for later matches, or not (project-wide; unchanged unless "
        "given; off at first)",
    )

    ar = command(
        asub,
        "query-report",
        help="query volume per member, unusual volume flagged",
        example="blindmatch admin query-report --project burglary --hours 24",
        handler=cmd_query_report,
        parents=[net],
    )
    project_option(ar)
    ar.add_argument(
        "--hours",
        type=at_least(1, most=2**32 - 1),
        default=24,
        help="window (default: %(default)s)",
    )
    ar.add_argument("--json", action="store_true", help="print the report as JSON")
