"""`blindmatch certs`: throwaway certificates for trying TLS and mutual TLS."""

from __future__ import annotations

import argparse
from pathlib import Path

from blindmatch.cli import daskopts
from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import Subcommands, command


@ends_at_sigterm  # the set written so far deleted (client/tools/certs.py `_all_or_none`)
def cmd_certs(args: argparse.Namespace) -> int:
    from blindmatch.client.tools.certs import make_certs, make_dask_certs

    hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
    if args.dask:
        made = make_dask_certs(args.out, hosts, days=args.days)
        print(daskopts.how_to_use(made, args.days))
        return 0
    files = make_certs(args.out, hosts, days=args.days)
    print(
        f"Wrote a throwaway CA, server and client certificate to {args.out} "
        f"(valid {args.days} days; for trials only). Use them like this:\n"
        f"  blindmatch serve ... --tls-cert {files.server_cert} --tls-key {files.server_key} "
        f"--client-ca {files.ca_cert}\n"
        f"  blindmatch <command> ... --ca-cert {files.ca_cert} "
        f"--client-cert {files.client_cert} --client-key {files.client_key}"
    )
    return 0


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "certs",
        help="make a throwaway CA, server and client certificate (trials)",
        description="Make a throwaway CA, a server certificate and a client certificate for "
        "trying TLS and mutual TLS. For trials only: a deployment uses the organisations' own "
        "PKI (docs/security.md).",
        example=[
            "blindmatch certs --out certs --hosts matcher.example.org,10.0.0.5",
            "blindmatch certs --dask --out dask-certs --hosts 10.0.0.5",
        ],
        handler=cmd_certs,
    )
    p.add_argument("--out", metavar="DIR", required=True, type=Path, help="folder to write them to")
    p.add_argument(
        "--hosts",
        help="extra server names or addresses, comma-separated (localhost, 127.0.0.1 and ::1 "
        "are always included)",
    )
    p.add_argument("--days", type=int, default=30, help="validity in days (default: 30)")
    p.add_argument(
        "--dask",
        action="store_true",
        help="instead: a Dask cluster's own CA and scheduler, worker and matcher certificates",
    )
