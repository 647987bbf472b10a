"""`blindmatch serve`: run the matcher."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli import daskopts, lookup, twoserveropts
from blindmatch.cli.errors import sigterm_as_ctrl_c, start_error
from blindmatch.cli.options import (
    Subcommands,
    at_least,
    command,
    env,
    listen_tls_options,
    non_negative,
    refuse_taken_port,
    refuse_taken_since,
)
from blindmatch.cli.projectmode import bare_serve_line
from blindmatch.client.errors import InputError
from blindmatch.matcher.domain import (
    AUTH_FAILURES_PER_MINUTE,
    DEFAULT_STREAMS_PER_MEMBER,
    INDEX_CHANGES_HELD,
    MAX_INDEX_CHANGE_BYTES,
    MEMBER_STREAMS,
    MIN_UNARY_THREADS,
    RPC_THREADS,
    STREAM_IDLE_SECONDS,
    STREAMS_IN_ALL,
)
from blindmatch.matcher.storage import dirlock
from blindmatch.matcher.storage.datadir import OPERATOR_TOKEN_NAME, DataDir

if TYPE_CHECKING:
    from blindmatch.matcher.server import RunningServer


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import secrets

    from blindmatch.client.remote import tls
    from blindmatch.matcher.errors import StartupRefused
    from blindmatch.matcher.server import create_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host, port = tls.listen_address(args.listen)
    address = tls.grpc_address(host, port)
    # In this order, each before the data dir is made or opened: the options that need no
    # file or port (a wrong one is told first, whatever else is wrong), the port, the TLS
    # files (here and the outbound ones below), the data dir's lock (dirlock), the start.
    most = RPC_THREADS - MIN_UNARY_THREADS
    if not 1 <= args.max_member_streams <= args.max_streams <= most:
        raise InputError(
            f"--max-member-streams ({args.max_member_streams}) and --max-streams "
            f"({args.max_streams}): need 1 <= --max-member-streams <= --max-streams <= {most} "
            f"(of the {RPC_THREADS} request threads, {MIN_UNARY_THREADS} stay for unary calls)"
        )
    if args.max_index_change_mib <= 0:
        raise InputError(f"--max-index-change-mib {args.max_index_change_mib:g}: must be positive")
    if args.max_auth_failures < 1:
        raise InputError(f"--max-auth-failures {args.max_auth_failures}: must be at least 1")
    if args.stream_idle_seconds <= 0:
        raise InputError(f"--stream-idle-seconds {args.stream_idle_seconds:g}: must be positive")
    # (each was a traceback from deep in the start, or taken and failed at the first run)
    if args.max_streams_per_member < 1:
        raise InputError(
            f"--max-streams-per-member {args.max_streams_per_member}: at least 1 (a member "
            "needs one call in flight)"
        )
    request_cpu = _request_cpu(args.request_cpu)
    lookup_servers, lookup_credentials = lookup.lookup_options(args)
    refuse_taken_port(args.listen, "a matcher", f"--data-dir {args.data_dir}")
    credentials = tls.server_credentials(
        cert=args.tls_cert, key=args.tls_key, client_ca=args.client_ca
    )
    tls.check_listen_address(args.listen, secure=credentials is not None, allow=args.insecure)
    executor = daskopts.executor(args)
    two_server = twoserveropts.serve_setup(args)
    admin = env("BLINDMATCH_ADMIN_TOKEN")
    made_token = admin is None
    if admin is None:
        admin = "bm_admin_" + secrets.token_urlsafe(24)
    # With S1 and S2, new projects keep no CLK at the matcher unless they ask (issue 18);
    # create_server resolves "" the same way.
    mode = args.default_mode or ("two-server" if two_server is not None else "clk")
    made = not os.path.lexists(args.data_dir)  # a data dir made for a failed start goes
    # a second serve (or two-server role) on this data dir is refused while this one runs
    with dirlock.held(Path(args.data_dir), "blindmatch serve", InputError):
        try:
            running = create_server(
                address,
                args.data_dir,
                admin,
                credentials=credentials,
                workers=args.workers,
                lookup_threads=args.lookup_threads,
                request_cpu=request_cpu,
                streams_per_member=args.max_streams_per_member,
                member_streams=args.max_member_streams,
                max_streams=args.max_streams,
                stream_idle=args.stream_idle_seconds,
                max_index_change_bytes=int(args.max_index_change_mib * 1024**2),
                max_auth_failures=args.max_auth_failures,
                min_free_bytes=int(args.min_free_mb * 1024 * 1024),
                audit_key_file=args.audit_key,
                executor=executor,
                lookup_servers=lookup_servers,
                lookup_credentials=lookup_credentials,
                two_server=two_server,
                default_mode=mode,
            )
        except (StartupRefused, OSError) as exc:
            if made:  # (no half-made matcher's data dir left behind: the port taken after
                shutil.rmtree(args.data_dir, ignore_errors=True)  # the probe, say)
            if isinstance(exc, StartupRefused):  # a damaged database, a missing audit key
                raise InputError(str(exc)) from None
            # (the operator.token is written only once it listens: none is left either)
            left = f"--data-dir {args.data_dir}" if made else ""
            refuse_taken_since(exc, args.listen, "a matcher", left)
            raise start_error(exc, args.listen, data_dir=args.data_dir) from None
        return _serve(
            args, running, admin, made_token=made_token, mode=mode, host=host,
            with_parties=two_server is not None,
        )  # fmt: skip


def _serve(
    args: argparse.Namespace,
    running: RunningServer,
    admin: str,
    *,
    made_token: bool,
    mode: str,
    host: str,
    with_parties: bool,
) -> int:
    """Serve until stopped: the operator token's file when one was made (else an earlier
    run's deleted), then the lines saying what is served."""
    import logging

    from blindmatch.client.files import write_text
    from blindmatch.client.remote import tls
    from blindmatch.matcher.server import serve_forever

    if not made_token:
        _drop_stale_token(DataDir(Path(args.data_dir)).operator_token, admin)
    if made_token:
        token_file = DataDir(Path(args.data_dir)).operator_token
        try:  # the file whole or absent, and never its temporary file beside it
            with sigterm_as_ctrl_c():  # (serve_forever's handlers are not in place yet)
                write_text(token_file, admin + "\n")  # owner-only, never readable by others
        except KeyboardInterrupt:  # SIGTERM (`Terminated`) or SIGINT: stopped, as ever after
            logging.getLogger("blindmatch.matcher").info("stopping before it served")
            running.stop(grace=5)
            return 0
        print(
            "BLINDMATCH_ADMIN_TOKEN is not set: this run's operator token is in "
            f"{token_file} (readable by this user only), e.g.\n"
            f"  export BLINDMATCH_ADMIN_TOKEN=$(cat {token_file})\n"
            "Set BLINDMATCH_ADMIN_TOKEN to keep one across restarts.",
            file=sys.stderr,
        )

    if not with_parties:  # what every project it makes exposes, said once (issue 18)
        logging.getLogger("blindmatch.matcher").warning(bare_serve_line())
    unless = (
        " unless `project create --mode` says otherwise"
        if with_parties
        else ", the only one without S1 and S2"
    )

    # how members reach it, said where the operator looks: TLS, and mutual TLS
    secured = "" if args.tls_cert is None else " with TLS"
    if args.client_ca is not None:
        secured += ", client certificates required"

    def announce() -> None:
        shown = tls.grpc_address(host, running.port)
        print(
            f"blindmatch matcher listening on {shown}{secured} (data: {args.data_dir}; new "
            f"projects: {mode} mode{unless})",
            file=sys.stderr,
            flush=True,
        )

    serve_forever(running, ready=announce)
    return 0


def _drop_stale_token(token_file: Path, admin: str) -> None:
    """With BLINDMATCH_ADMIN_TOKEN set, an operator.token an earlier run made holds a token
    this run refuses: deleted, said in the log, so that nobody exports it from there."""
    import logging

    try:
        stale = token_file.read_text(encoding="utf-8").strip() != admin
    except (OSError, UnicodeDecodeError):
        return  # none there (the usual case)
    if stale:
        token_file.unlink(missing_ok=True)
        logging.getLogger("blindmatch.matcher").info(
            "deleted %s: an earlier run's operator token, which this run (its token from "
            "BLINDMATCH_ADMIN_TOKEN) refuses",
            token_file,
        )


def _request_cpu(flag: int | None) -> int | None:
    """`--request-cpu`, else BLINDMATCH_REQUEST_CPU: checked against the CPUs this process
    may use before anything is opened."""
    from blindmatch.matcher.placement import (
        REQUEST_CPU_ENV,
        allowed_cpus,
        check_request_cpu,
        request_cpu_from_env,
    )

    cpu: int | None = flag
    if flag is not None:
        name = f"--request-cpu {flag}"
    else:
        try:
            cpu = request_cpu_from_env()
        except ValueError as exc:
            raise InputError(str(exc)) from None
        name = f"{REQUEST_CPU_ENV}={cpu}"
    if cpu is not None:
        try:
            check_request_cpu(cpu, allowed_cpus(), name)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    return cpu


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "serve",
        help="run the matcher (gRPC service)",
        description="Run the matcher (gRPC service) until SIGTERM or Ctrl-C. The operator's "
        "token comes from $BLINDMATCH_ADMIN_TOKEN; without it, serve makes one for this run "
        f"and writes it to {OPERATOR_TOKEN_NAME} in --data-dir, readable by its user only (never "
        "to the terminal or a log). Plaintext is refused on a non-loopback address: give "
        "--tls-cert and --tls-key (see docs/security.md and docs/operations.md).",
        example=[
            "blindmatch serve --data-dir /var/lib/blindmatch --listen 127.0.0.1:50051",
            "blindmatch serve --data-dir DIR --listen 0.0.0.0:50051 --tls-cert server.pem "
            "--tls-key server.key --client-ca ca.pem",
            "blindmatch serve --data-dir DIR --listen 127.0.0.1:50051 --two-server-s1 "
            "127.0.0.1:50071 --two-server-s2 127.0.0.1:50072 --two-server-key-file combiner.key "
            "--two-server-member-key-file members.key",
        ],
        handler=cmd_serve,
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        required=True,
        type=Path,
        help="where the matcher keeps its state",
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:50051",
        help="the address to listen on; an IPv6 address as [::1]:PORT or ::1:PORT "
        "(default: %(default)s)",
    )
    listen_tls_options(p, "tokens and encodings")
    p.add_argument(
        "--workers", type=at_least(1), help="threads for comparisons (default: all cores)"
    )
    p.add_argument(
        "--lookup-threads",
        type=at_least(0),
        help="real-time look-up threads, run on the cores the request threads leave free; "
        "0: no placement, every thread anywhere (default: one per other core, at most 4)",
    )
    p.add_argument(
        "--request-cpu",
        type=int,
        help="the CPU the request threads keep, the look-ups taking the others: give each "
        "matcher on a host its own (default: BLINDMATCH_REQUEST_CPU, else the lowest CPU "
        "this process may use)",
    )
    p.add_argument(
        "--audit-key",
        metavar="FILE",
        help="file with the audit log's HMAC key, made if missing (default: audit.key in "
        "--data-dir)",
    )
    p.add_argument(
        "--max-streams-per-member",
        type=int,
        default=DEFAULT_STREAMS_PER_MEMBER,
        help="uploads, result fetches and run watches one member may have in flight; "
        "more are refused as busy and retried by the client (default: %(default)s)",
    )
    p.add_argument(
        "--max-member-streams",
        type=int,
        default=MEMBER_STREAMS,
        help="streams of any kind (uploads, index changes, watches, query sessions...) one "
        "member may have open at once; more are refused as busy (default: %(default)s)",
    )
    p.add_argument(
        "--max-streams",
        type=int,
        default=STREAMS_IN_ALL,
        help="streams of all members open at once, at most "
        f"{RPC_THREADS - MIN_UNARY_THREADS}: the other request threads always answer "
        "unary calls (default: %(default)s)",
    )
    p.add_argument(
        "--stream-idle-seconds",
        type=float,
        default=STREAM_IDLE_SECONDS,
        help="end a stream whose client sends no message for this long (or takes none sent "
        "for 5 times this long); query sessions have their own limit (default: %(default)s)",
    )
    p.add_argument(
        "--max-index-change-mib",
        type=float,
        default=MAX_INDEX_CHANGE_BYTES / 1024**2,
        help="references and CLKs one index change may carry; a larger one is refused whole, "
        f"and changes being received hold at most {INDEX_CHANGES_HELD} times this together "
        "(default: %(default)g)",
    )
    p.add_argument(
        "--max-auth-failures",
        type=int,
        default=AUTH_FAILURES_PER_MINUTE,
        help="calls refused for their token from one address in a minute, past which that "
        "address's calls are refused unread unless their token authenticated recently "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--min-free-mb",
        type=non_negative,
        default=0.0,
        help="refuse an upload or index change that would leave less free disk than this, "
        "counting what the uploads in progress have still to write (default: %(default)s)",
    )
    daskopts.add_arguments(p)
    lookup.add_arguments(p)
    twoserveropts.add_serve_arguments(p)
