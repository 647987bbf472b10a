"""`blindmatch evaluate` and `privacy-check`: what a member measures locally, before or
after matching (match quality against known truth; what an attacker could re-identify)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import Subcommands, at_least, command, unit_interval
from blindmatch.cli.plotconfig import plots
from blindmatch.client.errors import InputError

if TYPE_CHECKING:
    from blindmatch.client.encoding.harden import Hardening
    from blindmatch.client.encoding.schema import LinkageSchema
    from blindmatch.client.tools.privacy.report import CheckReport


@ends_at_sigterm  # (matplotlib's config folder, where it has none writable: ours, deleted)
@plots
def cmd_evaluate(args: argparse.Namespace) -> int:
    from blindmatch.client.tools.evaluate import evaluate_files

    report = evaluate_files(
        args.results, args.truth, member=args.member, out_dir=args.out_dir,
        thresholds=args.threshold,
    )  # fmt: skip
    print(report.render())
    return 0


@ends_at_sigterm  # its temporary folders (the synthetic exports; matplotlib's config) deleted
@plots
def cmd_privacy_check(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encode import read_secret
    from blindmatch.client.encoding.harden import NONE, RECOMMENDED
    from blindmatch.client.encoding.schema import load_schema
    from blindmatch.client.tools.privacy.check import (
        ATTACKS,
        DEFAULT_SCHEMA,
        check_csv,
        check_synthetic,
        output_paths,
        seeded_secret,
        write_outputs,
    )
    from blindmatch.client.tools.privacy.frequencies import read_list

    _two_server_only(args)
    output_paths(args.out)  # before minutes of attacks, not after
    schema = load_schema(args.schema or DEFAULT_SCHEMA)
    hardening = {"schema": None, "recommended": RECOMMENDED, "none": NONE}[args.hardening]
    overrides = {}
    for item in args.frequencies:
        name, sep, path = item.partition("=")
        if not sep or name not in schema.field_names:
            raise InputError(
                f"--frequencies {item!r}: expected FIELD=CSV with FIELD one of "
                f"{', '.join(schema.field_names)}"
            )
        overrides[name] = read_list(Path(path))
    if args.mode == "two-server":
        report = _two_server_check(args, schema, hardening)
        report.synthetic = args.data is None
        json_path, png_path = write_outputs(report, args.out)
        print(report.render())
        print(f"Wrote {json_path} and {png_path}")
        return 1 if args.strict and not report.passed else 0
    attacks = ATTACKS if args.graph_records > 0 else tuple(a for a in ATTACKS if a != "graph")
    if args.data is None:
        report = check_synthetic(
            args.records, 1 if args.seed is None else args.seed, schema, hardening=hardening,
            level=args.encoding, attacks=attacks, graph_records=args.graph_records,
            secret=None if args.seed is None else seeded_secret(args.seed),
        )  # fmt: skip
    else:
        if args.mapping is None or args.secret_file is None:
            raise InputError("privacy-check DATA.csv needs --mapping and --secret-file")
        report = check_csv(
            args.data,
            schema,
            args.mapping,
            read_secret(args.secret_file),
            hardening=hardening,
            level=args.encoding,
            overrides=overrides,
            attacks=attacks,
            graph_records=args.graph_records,
        )
    json_path, png_path = write_outputs(report, args.out)
    print(report.render())
    print(f"Wrote {json_path} and {png_path}")
    return 1 if args.strict and not report.passed else 0


def _two_server_only(args: argparse.Namespace) -> None:
    """The partner member B's flags are --mode two-server's (twomembers.py checks the size)."""
    given = [f for f, v in (("--partner-records", args.partner_records), ("--near", args.near),
                            ("--dense-up-to", args.dense_up_to)) if v is not None]  # fmt: skip
    if given and args.mode != "two-server":
        raise InputError(f"{given[0]} is a --mode two-server option (the partner member B)")


def _two_server_check(
    args: argparse.Namespace, schema: LinkageSchema, hardening: Hardening | None
) -> CheckReport:
    """`privacy-check --mode two-server`: the roles' views of a simulated three-member project,
    built by the matcher's own roles (matcher/core/twoviews.py), attacked by the client's
    tool (client/tools/privacy/twocheck.py)."""
    import functools
    import secrets
    import tempfile

    from blindmatch.client.encoding.encode import read_secret
    from blindmatch.client.encoding.harden import hardening_from_raw
    from blindmatch.client.tools.privacy import twocheck
    from blindmatch.client.tools.privacy.check import read_export
    from blindmatch.client.tools.privacy.twokeys import key_views
    from blindmatch.matcher.core import exhaustive
    from blindmatch.matcher.core.twoviews import NOT_BLOCKED, role_views
    from blindmatch.matcher.domain import DEFAULT_THRESHOLD

    if schema.field_level:
        raise InputError(
            f"{schema.path}: a field-level schema has no two-server upload (`encode "
            "--two-server` takes a record-level schema); check it without --mode two-server"
        )
    chosen = hardening or hardening_from_raw(schema.raw, str(schema.path))
    # --seed fixes the keys too (the synthetic project's and the attacker's): a run repeats.
    seed = 1 if args.seed is None else args.seed
    partner = args.partner_records
    project, attacker = twocheck.seeded_keys(seed)
    if args.seed is None:
        project, attacker = secrets.token_bytes(32), secrets.token_bytes(32)
    if args.data is None:
        secret = project
        with tempfile.TemporaryDirectory(prefix="blindmatch-privacy-") as tmp:
            members = twocheck.synthetic_members(Path(tmp), seed, args.sample, schema, partner)
        keys = "fresh keys" if args.seed is None else "keys from the seed"
        b = "" if partner is None else f", a partner of {partner}"
        source = f"synthetic data ({args.sample} people{b}, seed {seed}, {keys})"
    else:
        if args.mapping is None or args.secret_file is None:
            raise InputError("privacy-check DATA.csv needs --mapping and --secret-file")
        secret = read_secret(args.secret_file)
        rows = read_export(args.data, schema, args.mapping)
        members = twocheck.export_members(rows, schema, args.sample, partner)
        source = str(args.data)
    # The circuit's outputs in the clear (matcher/core/twoclear.py): the same views, minutes
    # sooner where the members are compared without blocking.
    views = functools.partial(role_views, clear=True)
    n, m = len(members[0][0]), len(members[1][0])
    up_to = twocheck.DENSE_UP_TO if args.dense_up_to is None else args.dense_up_to
    keyed = None
    if m > up_to:  # B's sealed upload does not fit either: S1's and S2's views from its keys
        blocked = not exhaustive.admits(n, m, exhaustive.or_default(None),
                                        exhaustive.small_or_default(None))  # fmt: skip
        keyed = key_views(schema, secret, chosen, blocked, NOT_BLOCKED)
    return twocheck.check_members(
        members, schema, secret, views, source=source, hardening=chosen,
        threshold=DEFAULT_THRESHOLD, attacker_key=attacker,
        near=twocheck.attack_near(m, args.near, up_to), keyed=keyed,
    )  # fmt: skip


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "evaluate",
        help="precision, recall and F1 of results against known truth, with plots",
        description="Score a results CSV against known truth (member,record_id,entity_id for "
        "every record of every member): precision, recall and F1, a threshold sweep for "
        "scores-level results, and PNG plots. See docs/evaluation.md.",
        example="blindmatch evaluate --results north-hits.csv --truth truth.csv",
        handler=cmd_evaluate,
    )
    p.add_argument(
        "--results",
        metavar="FILE",
        required=True,
        type=Path,
        help="a results CSV from `blindmatch results` at the hits, mapping or scores level (a "
        "count-level one names no record: it cannot be scored)",
    )
    p.add_argument(
        "--truth",
        metavar="FILE",
        required=True,
        type=Path,
        help="CSV member,record_id,entity_id for every record of every member",
    )
    p.add_argument(
        "--member", help="whose results these are (default: the member whose ids they use)"
    )
    p.add_argument(
        "--out-dir",
        metavar="DIR",
        type=Path,
        help="where to write sweep.csv and the PNG plots, replacing any there (default: "
        "RESULTS-evaluation/ beside it)",
    )
    p.add_argument(
        "--threshold",
        type=unit_interval,
        nargs="+",
        default=[],
        metavar="T",
        help="scores-level results: also precision, recall and F1, overall and per partner, "
        "of the results scoring T or more (one or more T, none under the results' lowest score)",
    )

    p = command(
        sub,
        "privacy-check",
        help="attack encodings as the matcher could, and report what is re-identified",
        description="Encode a data set as `blindmatch encode` would, run the shipped attacks on "
        "the encodings alone (the plaintext only scores them), print the share of records and "
        "values re-identified with a verdict, and write privacy-check.json and .png. Without "
        "DATA, a seeded realistic synthetic export is checked. With --mode two-server, attack "
        "instead what each role of a project in two-server mode learns (C, S1, S2) on a "
        "simulated three-member project. See docs/privacy.md.",
        example=[
            "blindmatch privacy-check --records 10000",
            "blindmatch privacy-check north.csv --mapping north.toml --secret-file "
            "linkage.secret --strict",
            "blindmatch privacy-check --mode two-server --strict",
        ],
        handler=cmd_privacy_check,
    )
    p.add_argument("data", nargs="?", type=Path, help="CSV export (default: synthetic data)")
    p.add_argument(
        "--schema",
        metavar="FILE",
        type=Path,
        help="clkhash v3 schema (default: schemas/person-uk.json)",
    )
    p.add_argument(
        "--mapping",
        metavar="FILE",
        type=Path,
        help="this export's mapping (TOML); needed with DATA",
    )
    p.add_argument(
        "--secret-file", metavar="FILE", type=Path, help="the shared secret; needed with DATA"
    )
    p.add_argument(
        "--encoding",
        choices=["schema", "record", "field", "both"],
        default="schema",
        help="attack what the schema uploads (default: record-level CLKs and any fallback "
        "CLKs, or one filter per field for a field-level schema), or record-level CLKs, "
        "field-level filters, or both",
    )
    p.add_argument(
        "--hardening",
        choices=["schema", "recommended", "none"],
        default="schema",
        help="the schema's blindmatch.hardening (default), or override it for comparison",
    )
    p.add_argument(
        "--frequencies",
        action="append",
        default=[],
        metavar="FIELD=CSV",
        help="a public value,count list for FIELD (repeatable; default: shipped lists, or the "
        "data's own frequencies for fields without one)",
    )
    p.add_argument(
        "--records", type=at_least(1), default=10_000, help="synthetic people (default: 10000)"
    )
    p.add_argument(
        "--seed",
        type=int,
        help="synthetic data seed (default: 1); given, it also fixes the keys (the synthetic "
        "members' and the attacker's), so a run repeats its figures (default: fresh keys each "
        "run); with DATA, only the attacker's in two-server mode",
    )
    p.add_argument(
        "--graph-records",
        type=at_least(0),
        default=2000,
        metavar="N",
        help="records the graph-matching attack is run on (a sample of larger data; it holds "
        "N x N matrices); 0 skips it (default: 2000)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path("privacy-check"),
        help="folder for privacy-check.json and .png (default: privacy-check/ in the current "
        "folder)",
    )
    p.add_argument(
        "--mode",
        choices=["clk", "two-server"],
        default="clk",
        help="what to attack: the CLKs a matcher holds in a normal project (clk, the default), "
        "or what each role of a project in two-server mode learns (the combiner C, S1, S2: "
        "trilateration on each view, blind and with 10 and 50 known pairs, on a simulated "
        "three-member project; 30-60 s of CPU at the default --sample, about 10 s at 1000)",
    )
    p.add_argument(
        "--sample",
        type=at_least(1),
        default=2000,
        metavar="N",
        help="--mode two-server: records of the checked member (synthetic people, or a sample "
        "of DATA); under 500, no view is attacked and the verdict is NO VERDICT (default: 2000)",
    )
    p.add_argument(
        "--partner-records",
        type=at_least(1),
        metavar="N",
        help="--mode two-server: records of member B, the partner (half of A's people and "
        "others; with DATA, other rows of the export too); at least half of A's records "
        "(default: as many as A). Over --dense-up-to, S1's and S2's views are made from the "
        "members' band keys and attacked sparse, C's not attacked (about 270 s of CPU and 1.3 GB "
        "at --sample 1000 --partner-records 64001)",
    )
    p.add_argument(
        "--near",
        type=at_least(1),
        metavar="K",
        help="--mode two-server: attack B's side of trilateration sparse at any size, each "
        "record of B scored against the K nearest records of its seeded candidates' people "
        "(default: 32 where B is over --dense-up-to, dense up to it)",
    )
    p.add_argument(
        "--dense-up-to",
        type=at_least(0),
        metavar="N",
        help="--mode two-server: the most records of B put through the roles' own run and "
        "attacked dense (B's sealed upload is 3.4 GB at peak at 12,000 records, the dense "
        "attack's B x B scores 3.25 GB at 16,000); a larger B as --partner-records says "
        "(default: 12000)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless the verdict is PASS: when an attack reaches 1%%, or when the sample "
        "is too small for a verdict (NO VERDICT: under 1000 records, 500 in two-server mode)",
    )
