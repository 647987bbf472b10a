"""`blindmatch serve`: run the matcher."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blindmatch.cli import daskopts
from blindmatch.cli.options import Subcommands, command, env
from blindmatch.client.errors import InputError
from blindmatch.matcher.domain import DEFAULT_STREAMS_PER_MEMBER
from blindmatch.matcher.storage.datadir import OPERATOR_TOKEN_NAME, DataDir


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import secrets

    from blindmatch.client.files import write_text
    from blindmatch.client.remote import tls
    from blindmatch.matcher.errors import StartupRefused
    from blindmatch.matcher.server import create_server, serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    credentials = tls.server_credentials(
        cert=args.tls_cert, key=args.tls_key, client_ca=args.client_ca
    )
    tls.check_listen_address(args.listen, secure=credentials is not None, allow=args.insecure)
    host, port = tls.listen_address(args.listen)
    address = tls.grpc_address(host, port)
    executor = daskopts.executor(args)
    admin = env("BLINDMATCH_ADMIN_TOKEN")
    made_token = admin is None
    if admin is None:
        admin = "bm_admin_" + secrets.token_urlsafe(24)
    try:
        running = create_server(
            address,
            args.data_dir,
            admin,
            credentials=credentials,
            workers=args.workers,
            lookup_threads=args.lookup_threads,
            streams_per_member=args.max_streams_per_member,
            min_free_bytes=int(args.min_free_mb * 1024 * 1024),
            audit_key_file=args.audit_key,
            executor=executor,
        )
    except StartupRefused as exc:  # a damaged database, a missing audit key: how to recover
        raise InputError(str(exc)) from None
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise InputError(f"--listen {args.listen}: {exc}") from None
    if made_token:
        token_file = DataDir(Path(args.data_dir)).operator_token
        write_text(token_file, admin + "\n")  # owner-only, never readable by others
        print(
            "BLINDMATCH_ADMIN_TOKEN is not set: this run's operator token is in "
            f"{token_file} (readable by this user only), e.g.\n"
            f"  export BLINDMATCH_ADMIN_TOKEN=$(cat {token_file})\n"
            "Set BLINDMATCH_ADMIN_TOKEN to keep one across restarts.",
            file=sys.stderr,
        )

    def announce() -> None:
        shown = tls.grpc_address(host, running.port)
        print(
            f"blindmatch matcher listening on {shown} (data: {args.data_dir})",
            file=sys.stderr,
            flush=True,
        )

    serve_forever(running, ready=announce)
    return 0


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "serve",
        help="run the matcher (gRPC service)",
        description="Run the matcher (gRPC service) until SIGTERM or Ctrl-C. The operator's "
        "token comes from $BLINDMATCH_ADMIN_TOKEN; without it, serve makes one for this run "
        f"and writes it to DATA_DIR/{OPERATOR_TOKEN_NAME}, readable by its user only (never "
        "to the terminal or a log). Plaintext is refused on a non-loopback address: give "
        "--tls-cert and --tls-key (see docs/security.md and docs/operations.md).",
        example=[
            "blindmatch serve --data-dir /var/lib/blindmatch --listen 127.0.0.1:50051",
            "blindmatch serve --data-dir DIR --listen 0.0.0.0:50051 --tls-cert server.pem "
            "--tls-key server.key --client-ca ca.pem",
        ],
        handler=cmd_serve,
    )
    p.add_argument("--data-dir", required=True, type=Path, help="where the matcher keeps its state")
    p.add_argument(
        "--listen",
        default="127.0.0.1:50051",
        help="HOST:PORT to listen on; an IPv6 address as [::1]:PORT or ::1:PORT "
        "(default: %(default)s)",
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
    p.add_argument(
        "--lookup-threads",
        type=int,
        help="real-time look-up threads, run on the cores the request threads leave free; "
        "0: no placement, every thread anywhere (default: one per other core, at most 4)",
    )
    p.add_argument(
        "--audit-key",
        help="file with the audit log's HMAC key, made if missing (default: DATA_DIR/audit.key)",
    )
    p.add_argument(
        "--max-streams-per-member",
        type=int,
        default=DEFAULT_STREAMS_PER_MEMBER,
        help="uploads, result fetches and run watches one member may have in flight; "
        "more are refused as busy and retried by the client (default: %(default)s)",
    )
    p.add_argument(
        "--min-free-mb",
        type=float,
        default=0.0,
        help="refuse an upload that would leave less free disk than this (default: %(default)s)",
    )
    daskopts.add_arguments(p)
