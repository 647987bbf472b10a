"""`blindmatch encode` and `schema check`: the member's local, offline side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import (
    Choices,
    Subcommands,
    actions,
    command,
    progress_wanted,
    quiet_option,
    schema_secret_options,
)
from blindmatch.client.errors import InputError

# privacy-check --mode two-server's least sample (client/tools/privacy/twocheck.py
# MIN_SAMPLE, not imported here: it brings the attacks); a smaller export is refused there
PRIVACY_CHECK_MIN = 500


@ends_at_sigterm  # the ENCODED folder half-written (a hidden folder beside it) deleted
def cmd_encode(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encode import encode_csv, save_encoded
    from blindmatch.client.encoding.frequency import untiered, untiered_warning
    from blindmatch.client.encoding.mapping import load_mapping
    from blindmatch.client.encoding.schema import load_schema
    from blindmatch.client.encoding.sharedsecret import read_checked
    from blindmatch.client.encoding.sharing import SHARED_FOLDER, small_member_warning

    schema = load_schema(args.schema)
    if args.two_server and schema.field_level:  # S1, S2 and the combiner score one Dice a CLK
        raise InputError(
            f"{schema.path}: a field-level schema has no two-server upload (S1 and S2 compare "
            "whole record-level CLKs, not Fellegi-Sunter weights over segments): nothing was "
            "written. Use a record-level schema (schemas/person-uk.json) for a project in "
            "two-server mode, or encode without --two-server for a CLK project"
        )
    mapping = load_mapping(args.mapping, schema)
    secret, weak = read_checked(args.secret_file, args.allow_weak_secret)
    result = encode_csv(
        args.data,
        schema,
        mapping,
        secret,
        progress=progress_wanted(args),
        on_duplicate_id=args.on_duplicate_id,
        allow_empty=args.allow_empty,
    )
    if args.two_server and not result.ids:  # (S1's sealed band keys are of records)
        raise InputError(
            f"{args.data}: no records, and a two-server upload holds at least one: nothing was "
            "written. Encode it without --two-server, or to take your records out of a project "
            "in two-server mode use `blindmatch erase`"
        )
    if weak:
        result.report.warnings.insert(0, weak)
    small = small_member_warning(len(result.ids)) if args.two_server else None
    if small and len(result.ids) >= PRIVACY_CHECK_MIN:  # this export's own command (without
        small = (  # DATA privacy-check attacks synthetic people, not "this export")
            f"{small}: `blindmatch privacy-check {args.data} --mapping {args.mapping} "
            f"--secret-file {args.secret_file} --mode two-server`"
        )
    elif small:  # the bare command attacks synthetic people: said so (twowalk, 2026-12-07)
        small = small.replace(
            " on this export before uploading",
            f" before uploading (without DATA: synthetic people; this export's "
            f"{len(result.ids):,} records are under the {PRIVACY_CHECK_MIN} a check of it needs)",
        )
    if small:
        result.report.warnings.append(small)
    if args.two_server:  # the CLK-mode warnings say what a matcher holding the CLKs learns
        result.report.warnings = [two_server_note(w) for w in result.report.warnings]
    save_encoded(args.out, result, schema, secret, two_server=args.two_server)
    if args.two_server and not args.quiet:
        print(f"Wrote the two-server upload in {args.out}/{SHARED_FOLDER}/ (s1.npz, s2.npz, "
              "combiner.npz: `blindmatch upload` sends them in a project in two-server mode, "
              "`blindmatch two-server upload` to stand-alone roles)")  # fmt: skip
    if not args.quiet:
        print(result.report.render())
        if args.two_server:
            print(f"Wrote {args.out} (a project in two-server mode is sent {args.out}/"
                  f"{SHARED_FOLDER}/ only, never clks.bin; a CLK project {args.out}/clks.bin, "
                  "with `upload --clk`; "
                  f"local ids stay in {args.out}/local/)")  # fmt: skip
        else:
            print(f"Wrote {args.out} (upload {args.out}/clks.bin; local ids stay in "
                  f"{args.out}/local/)")  # fmt: skip
    if result.ids:  # too few values of a tiered field: said on stderr too, even with --quiet
        present = {fr.field: fr.present for fr in result.report.fields}
        for tier, count in untiered(schema.frequency, present):
            print(f"warning: {untiered_warning(tier, count)}", file=sys.stderr)
    return 0


FALLBACK_WARNING = "weaker privacy: the fallback CLK (blindmatch.fallback) uploads"


def two_server_note(warning: str) -> str:
    """An encode warning as `encode --two-server` prints it: the fallback CLK's graph is
    what a matcher holding the CLKs sees, which in a project in two-server mode no party
    does (the folder still holds clks.bin, which a CLK project is sent)."""
    if not warning.startswith(FALLBACK_WARNING):
        return warning
    return (
        f"{warning}. This is for a CLK project, whose matcher holds the CLKs: in a project in "
        "two-server mode no party holds either CLK (S1 and S2 hold XOR shares; what S2 sees "
        "of the candidate pairs is what `blindmatch privacy-check --mode two-server` attacks)"
    )


def cmd_schema_check(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.schemacheck import check_schema

    print(check_schema(args.schema).render())
    return 0


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "encode",
        help="encode a CSV export into CLKs, locally",
        description="Encode a CSV export into CLKs on this machine, with the shared schema and "
        "secret and this member's mapping, and print a data-quality report. Writes an ENCODED "
        "folder: clks.bin and manifest.json (what is uploaded) and local/ (ids, never sent).",
        example="blindmatch encode north.csv --schema schemas/person-uk.json --secret-file "
        "linkage.secret --mapping north.toml --out north.encoded",
        handler=cmd_encode,
    )
    p.add_argument("data", type=Path, help="the CSV export")
    schema_secret_options(p)
    p.add_argument(
        "--mapping", metavar="FILE", required=True, type=Path, help="this member's mapping (TOML)"
    )
    p.add_argument("--out", metavar="DIR", required=True, type=Path, help="ENCODED folder to write")
    quiet_option(p)
    p.add_argument(
        "--allow-weak-secret",
        action="store_true",
        help="encode with a secret that fails the strength rule (tests only; the report says so)",
    )
    p.add_argument(
        "--on-duplicate-id",
        choices=Choices("blindmatch.client.encoding.readcsv", "ON_DUPLICATE"),
        metavar="RULE",
        default="error",
        help="a record id that repeats an earlier row's: stop (error, the default), encode "
        "only its first row (keep-first), or encode every row (keep-all); repeats are "
        "listed in the report either way",
    )
    p.add_argument(
        "--two-server",
        action="store_true",
        help="also write the upload for a two-server run (ENCODED/twoserver/: for S1 the "
        "sealed band keys, a share of each CLK and of its popcount and who lacks the fallback's "
        "fields; for S2 the other shares and the seal key; the popcounts, which stay with the "
        "member: the combiner receives only how many records; docs/privacy-design.md): what "
        "`upload` needs for a project in two-server mode",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="encode an export with no records (header only, or empty) instead of stopping",
    )

    group = command(
        sub,
        "schema",
        help="check a linkage schema",
        example="blindmatch schema check schemas/person-uk.json",
    )
    sc = command(
        actions(group, "schema_command"),
        "check",
        help="validate a clkhash v3 schema and warn about weak designs",
        example="blindmatch schema check schemas/person-uk.json",
        handler=cmd_schema_check,
    )
    sc.add_argument("schema", type=Path, help="the schema (JSON)")
