"""The `blindmatch` command line: parse options, call the library, print results.

Every `BlindmatchError` becomes `Error: <message>` on stderr and its exit code:
2 for bad local input or usage, 3 when the matcher refuses, 4 when it cannot
be reached, 1 for anything else (a failed run, say). Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from client import tls
from client.api import LEVELS, MatcherClient, RunProgress
from client.encode import encode_csv, read_secret
from client.encoded import read_encoded, write_encoded
from client.errors import BlindmatchError, InputError
from client.mapping import load_mapping
from client.results import HEADERS, join_results, write_csv
from client.schema import load_schema

DEFAULT_SERVER = "127.0.0.1:50051"


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _progress_wanted(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _client(args: argparse.Namespace, token: str | None) -> MatcherClient:
    credentials = tls.channel_credentials(
        ca_cert=args.ca_cert, client_cert=args.client_cert, client_key=args.client_key
    )
    return MatcherClient(args.server, token, credentials=credentials)


def _member_token(args: argparse.Namespace) -> str:
    token = args.token or _env("BLINDMATCH_TOKEN")
    if not token:
        raise InputError("no member token: pass --token or set BLINDMATCH_TOKEN")
    return token


def _admin_token() -> str:
    token = _env("BLINDMATCH_ADMIN_TOKEN")
    if not token:
        raise InputError("BLINDMATCH_ADMIN_TOKEN is not set; it holds the operator's token")
    return token


# -- commands -----------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from matcher.server import create_server, serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    credentials = tls.server_credentials(
        cert=args.tls_cert, key=args.tls_key, client_ca=args.client_ca
    )
    tls.check_listen_address(args.listen, secure=credentials is not None, allow=args.insecure)
    admin = _env("BLINDMATCH_ADMIN_TOKEN")
    if admin is None:
        admin = "bm_admin_" + secrets.token_urlsafe(24)
        print(
            "BLINDMATCH_ADMIN_TOKEN is not set; the operator token for this run is:\n"
            f"  {admin}\nSet BLINDMATCH_ADMIN_TOKEN to keep one across restarts.",
            file=sys.stderr,
        )
    running = create_server(
        args.listen, args.data_dir, admin, credentials=credentials, workers=args.workers
    )
    host = args.listen.rsplit(":", 1)[0]
    print(
        f"blindmatch matcher listening on {host}:{running.port} (data: {args.data_dir})",
        file=sys.stderr,
    )
    serve_forever(running)
    return 0


def cmd_project_create(args: argparse.Namespace) -> int:
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    with _client(args, _admin_token()) as client:
        created = client.create_project(
            args.name, members, disclosure=args.disclose, threshold=args.threshold or 0.0
        )
    if args.json:
        print(json.dumps({"project": created.project, "tokens": created.tokens}))
        return 0
    print(
        f"Project {created.project} created (disclosure: {created.disclosure}, "
        f"threshold: {created.threshold})."
    )
    print("Member tokens (shown once; give each member only its own):")
    for member, token in created.tokens.items():
        print(f"  {member}: {token}")
    return 0


def cmd_project_show(args: argparse.Namespace) -> int:
    with _client(args, _member_token(args)) as client:
        info = client.describe(args.name)
    level = {v: k for k, v in LEVELS.items()}[info.disclosure]
    print(
        f"Project {info.project} (you are {info.member}; "
        f"disclosure {level}, threshold {info.threshold})"
    )
    for m in info.members:
        state = f"{m.record_count} records uploaded" if m.uploaded else "not uploaded"
        print(f"  {m.name}: {state}")
    if info.HasField("latest_run"):
        run = RunProgress.from_pb(info.latest_run)
        print(f"  latest run {run.run_id}: {run.state}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    schema = load_schema(args.schema)
    mapping = load_mapping(args.mapping, schema)
    secret = read_secret(args.secret_file)
    result = encode_csv(args.data, schema, mapping, secret, progress=_progress_wanted(args))
    write_encoded(
        args.out,
        clks=result.clks,
        clk_bits=result.clk_bits,
        fingerprint=result.fingerprint,
        ids=result.ids,
        report=result.report.to_dict(),
    )
    if not args.quiet:
        print(result.report.render())
        print(f"Wrote {args.out} (upload {args.out}/clks.bin; local ids stay in {args.out}/local/)")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    encoded = read_encoded(args.encoded)
    with _client(args, _member_token(args)) as client:
        reply = client.upload(args.project, encoded, progress=_progress_wanted(args))
    print(f"Uploaded {reply.record_count} encodings to {args.project} (upload {reply.upload_id}).")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    with _client(args, _member_token(args)) as client:
        started = client.start_run(args.project)
        print(f"Run {started.run_id} {started.state}.", file=sys.stderr)
        bar = tqdm(
            total=0,
            file=sys.stderr,
            unit="pairs",
            unit_scale=True,
            disable=not _progress_wanted(args),
            leave=False,
        )
        final = started
        try:
            for status in client.watch_run(args.project, started.run_id):
                final = status
                if status.stage == "compare" and status.work_total:
                    bar.total = status.work_total
                    bar.n = status.work_done
                    bar.set_description("comparing")
                    bar.refresh()
                elif status.stage:
                    bar.set_description(status.stage)
        finally:
            bar.close()
    if final.state == "failed":
        print(f"Error: run {final.run_id} failed: {final.message}", file=sys.stderr)
        return 1
    if final.state != "done":
        print(f"Error: lost track of run {final.run_id} ({final.state})", file=sys.stderr)
        return 1
    print(f"Run {final.run_id} done: {final.groups} shared subjects found.")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    encoded = read_encoded(args.encoded, verify=False)
    with _client(args, _member_token(args)) as client:
        results = client.results(args.project)
    rows = join_results(results, encoded)
    write_csv(args.out, HEADERS[results.disclosure], rows)
    counts = ", ".join(f"{p}: {n}" for p, n in results.counts.items()) or "none"
    print(
        f"Run {results.run_id} ({results.disclosure}): records shared with partners - {counts}. "
        f"Wrote {len(rows)} row(s) to {args.out}."
    )
    return 0


def cmd_privacy_check(args: argparse.Namespace) -> int:
    from client.harden import NONE, RECOMMENDED
    from client.privacy.check import DEFAULT_SCHEMA, check_csv, check_synthetic, write_outputs
    from client.privacy.frequencies import read_list

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
    if args.data is None:
        report = check_synthetic(
            args.records, args.seed, schema, hardening=hardening, level=args.encoding
        )
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
        )
    json_path, png_path = write_outputs(report, args.out)
    print(report.render())
    print(f"Wrote {json_path} and {png_path}")
    return 1 if args.strict and not report.passed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from client.demo import run_demo

    run_demo(records=args.records, seed=args.seed)
    return 0


# -- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blindmatch",
        description="Find who else holds a record about the same person, without showing records.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    net = argparse.ArgumentParser(add_help=False)
    g = net.add_argument_group("connection")
    g.add_argument(
        "--server",
        default=_env("BLINDMATCH_SERVER") or DEFAULT_SERVER,
        help="matcher HOST:PORT (default: $BLINDMATCH_SERVER or %(default)s)",
    )
    g.add_argument("--ca-cert", default=_env("BLINDMATCH_CA_CERT"), help="CA to trust for TLS")
    g.add_argument(
        "--client-cert", default=_env("BLINDMATCH_CLIENT_CERT"), help="mutual TLS certificate"
    )
    g.add_argument("--client-key", default=_env("BLINDMATCH_CLIENT_KEY"), help="mutual TLS key")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    member = argparse.ArgumentParser(add_help=False)
    member.add_argument("--project", required=True, help="project name")
    member.add_argument("--token", help="member token (default: $BLINDMATCH_TOKEN)")

    p = sub.add_parser("serve", help="run the matcher (gRPC service)")
    p.add_argument("--data-dir", required=True, type=Path, help="where the matcher keeps its state")
    p.add_argument(
        "--listen", default="127.0.0.1:50051", help="HOST:PORT to listen on (default: %(default)s)"
    )
    p.add_argument("--tls-cert", help="server certificate (PEM)")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--client-ca", help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument(
        "--insecure-listen-on-network",
        dest="insecure",
        action="store_true",
        help="allow plaintext on a non-loopback address (tokens and encodings travel unencrypted)",
    )
    p.add_argument("--workers", type=int, help="threads for comparisons (default: all cores)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("project", help="create or inspect projects")
    psub = p.add_subparsers(dest="project_command", required=True, metavar="ACTION")
    pc = psub.add_parser("create", parents=[net], help="create a project (operator)")
    pc.add_argument("name", help="project name")
    pc.add_argument("--members", required=True, help="comma-separated member names, e.g. a,b,c")
    pc.add_argument(
        "--disclose",
        choices=list(LEVELS),
        default="hits",
        help="what members learn (default: hits)",
    )
    pc.add_argument("--threshold", type=float, help="Dice similarity threshold (default: 0.8)")
    pc.add_argument("--json", action="store_true", help="print {project, tokens} as JSON")
    pc.set_defaults(func=cmd_project_create)
    ps = psub.add_parser("show", parents=[net], help="a project's members and latest run (member)")
    ps.add_argument("name", help="project name")
    ps.add_argument("--token", help="member token (default: $BLINDMATCH_TOKEN)")
    ps.set_defaults(func=cmd_project_show)

    p = sub.add_parser("encode", help="encode a CSV export into CLKs, locally")
    p.add_argument("data", type=Path, help="the CSV export")
    p.add_argument("--schema", required=True, type=Path, help="shared clkhash v3 schema (JSON)")
    p.add_argument("--secret-file", required=True, type=Path, help="file holding the shared secret")
    p.add_argument("--mapping", required=True, type=Path, help="this member's mapping (TOML)")
    p.add_argument("--out", required=True, type=Path, help="ENCODED folder to write")
    p.add_argument("-q", "--quiet", action="store_true", help="no report or progress bar")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("upload", parents=[net, member], help="upload encodings to the matcher")
    p.add_argument("encoded", type=Path, help="ENCODED folder from `blindmatch encode`")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser(
        "run", parents=[net, member], help="match all members' uploads, showing progress"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "results", parents=[net, member], help="fetch results and join them to local ids"
    )
    p.add_argument(
        "--encoded", required=True, type=Path, help="the ENCODED folder that was uploaded"
    )
    p.add_argument("--out", required=True, type=Path, help="CSV to write (e.g. hits.csv)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser(
        "privacy-check",
        help="attack encodings as the matcher could, and report what is re-identified",
        description="Encode a data set as `blindmatch encode` would, run the shipped attacks on "
        "the encodings alone (the plaintext only scores them), print the share of records and "
        "values re-identified with a verdict, and write privacy-check.json and .png. Without "
        "DATA, a seeded realistic synthetic export is checked. See docs/privacy.md.",
    )
    p.add_argument("data", nargs="?", type=Path, help="CSV export (default: synthetic data)")
    p.add_argument(
        "--schema", type=Path, help="clkhash v3 schema (default: schemas/person-uk.json)"
    )
    p.add_argument("--mapping", type=Path, help="this export's mapping (TOML); needed with DATA")
    p.add_argument("--secret-file", type=Path, help="the shared secret; needed with DATA")
    p.add_argument(
        "--encoding",
        choices=["record", "field", "both"],
        default="both",
        help="attack record-level CLKs, field-level filters, or both (default: both)",
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
    p.add_argument("--records", type=int, default=10_000, help="synthetic people (default: 10000)")
    p.add_argument("--seed", type=int, default=1, help="synthetic data seed (default: 1)")
    p.add_argument(
        "--out", type=Path, default=Path("privacy-check"), help="folder for the JSON and PNG"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when an attack reaches 1%%")
    p.set_defaults(func=cmd_privacy_check)

    p = sub.add_parser("demo", help="the whole flow on built-in synthetic data, in one process")
    p.add_argument("--records", type=int, default=2000, help="people in the synthetic population")
    p.add_argument("--seed", type=int, default=7, help="random seed")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BlindmatchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
