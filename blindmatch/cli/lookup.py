"""`blindmatch lookup-server`, and `serve`'s options for its look-up servers.

A look-up server holds one shard of every standing index (docs/scale.md, *The standing
index at scale*); the matcher stays the front and fans real-time queries out to them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.errors import start_error
from blindmatch.cli.options import (
    Subcommands,
    checked_listen,
    command,
    listen_tls_options,
    outbound_credentials,
    refuse_taken_since,
)
from blindmatch.client.errors import InputError

if TYPE_CHECKING:
    import grpc


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`serve`'s options for look-up servers."""
    g = p.add_argument_group("standing indexes on look-up servers (docs/scale.md)")
    g.add_argument(
        "--lookup-server",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a look-up server (`blindmatch lookup-server`); repeat in shard order: the "
        "i-th given holds --shard i/N of N given. Real-time queries then fan out to them "
        "all (default: the indexes are searched in this process)",
    )
    g.add_argument(
        "--lookup-tls-ca", metavar="FILE", help="the look-up servers' CA certificate (PEM)"
    )
    g.add_argument(
        "--lookup-tls-cert", metavar="FILE", help="the matcher's client certificate for them (PEM)"
    )
    g.add_argument("--lookup-tls-key", metavar="FILE", help="its private key (PEM)")
    g.add_argument(
        "--lookup-insecure",
        action="store_true",
        help="allow plaintext to a look-up server on a non-loopback host (CLKs travel unencrypted)",
    )


def lookup_options(args: argparse.Namespace) -> tuple[list[str], grpc.ChannelCredentials | None]:
    """The look-up servers `serve` was given, and the credentials to reach them."""

    servers: list[str] = args.lookup_server
    if len(set(servers)) != len(servers):
        raise InputError("--lookup-server: each server once (the i-th holds shard i)")
    tls_given = args.lookup_tls_ca or args.lookup_tls_cert or args.lookup_tls_key
    if not servers and tls_given:
        raise InputError("--lookup-tls-*: only with --lookup-server")
    credentials = outbound_credentials(
        [("--lookup-server", server) for server in servers],
        ca=args.lookup_tls_ca,
        cert=args.lookup_tls_cert,
        key=args.lookup_tls_key,
        insecure=args.lookup_insecure,
        flags=("--lookup-tls-ca", "--lookup-tls-cert", "--lookup-tls-key", "--lookup-insecure"),
        whom="a non-loopback look-up server",
        why="it is sent every query's CLKs",
    )
    return servers, credentials


def _shard(text: str) -> tuple[int, int]:
    shard, sep, of = text.partition("/")
    if not sep or not shard.isdigit() or not of.isdigit() or not 0 <= int(shard) < int(of):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected I/N with 0 <= I < N, e.g. 0/2 (shard 0 of 2)"
        )
    return int(shard), int(of)


def cmd_lookup_server(args: argparse.Namespace) -> int:
    import logging

    from blindmatch.client.remote import tls
    from blindmatch.matcher.errors import StartupRefused
    from blindmatch.matcher.rpc.lookup_service import create_lookup_server
    from blindmatch.matcher.server import serve_forever
    from blindmatch.matcher.storage.shard_source import read_lookup_key

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Said before the data dir's lookup.key is made.
    credentials, host, port = checked_listen(args, "a look-up server")
    shard, shards = args.shard
    key = None
    if args.data_dir is None:
        try:
            key = read_lookup_key(args.key_file)
        except StartupRefused as exc:
            raise InputError(f"--key-file {exc}") from None
    elif not (args.data_dir / "index.sqlite").is_file():
        raise InputError(
            f"--data-dir {args.data_dir}: no index.sqlite; give the matcher's data dir (start "
            "`blindmatch serve` on it once first)"
        )
    try:
        running = create_lookup_server(
            tls.grpc_address(host, port),
            args.data_dir,
            shard,
            shards,
            key=key,
            credentials=credentials,
        )
    except StartupRefused as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        left = f"--data-dir {args.data_dir}" if args.data_dir is not None else ""
        refuse_taken_since(exc, args.listen, "a look-up server", left)
        raise start_error(exc, args.listen) from None

    def announce() -> None:
        print(
            f"blindmatch look-up server for shard {shard} of {shards} listening on "
            f"{tls.grpc_address(host, running.port)} "
            + (
                f"(reading {args.data_dir}/index.sqlite)"
                if args.data_dir is not None
                else "(no data dir: waiting for the matcher to load it)"
            ),
            file=sys.stderr,
            flush=True,
        )

    serve_forever(running, ready=announce)
    return 0


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "lookup-server",
        help="hold a shard of the standing indexes for the matcher's real-time queries",
        description="Hold shard I of N of every standing index (records split by a hash of "
        "their ref), read from the matcher's index.sqlite (read-only; on the matcher's "
        "machine) at start, or, with --key-file instead of --data-dir (on another machine), "
        "loaded by the matcher over gRPC from its memory; kept current by the changes the "
        "matcher forwards, and answer the matcher's look-ups over them. Start one per "
        "shard, then `blindmatch serve --lookup-server ADDR` once per server, in shard "
        "order. Only the matcher may call it (the look-up key in its data dir). Plaintext "
        "is refused on a non-loopback address: give --tls-cert and --tls-key, and "
        "--client-ca for mutual TLS.",
        example=[
            "blindmatch lookup-server --data-dir /var/lib/blindmatch --shard 0/2 "
            "--listen 127.0.0.1:50061",
            "blindmatch lookup-server --data-dir /var/lib/blindmatch --shard 1/2 "
            "--listen 127.0.0.1:50062",
            "blindmatch lookup-server --key-file /etc/blindmatch/lookup.key --shard 1/2 "
            "--listen 10.0.0.12:50061 --tls-cert server.pem --tls-key server.key "
            "--client-ca ca.pem",
        ],
        handler=cmd_lookup_server,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="the matcher's data dir (read-only; on its machine)",
    )
    source.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="no data dir (another machine): a copy of the matcher's DIR/lookup.key, "
        "owner-only; the server starts empty and the matcher loads it",
    )
    p.add_argument(
        "--shard",
        required=True,
        type=_shard,
        metavar="I/N",
        help="which shard of every index this server holds: I of N (from 0)",
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:50061",
        help="the address to listen on (default: %(default)s)",
    )
    listen_tls_options(p, "CLKs")
