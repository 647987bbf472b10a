"""`blindmatch demo`: the whole flow on synthetic data, with a matcher in this process.

The demo lives on the client side (`client.tools.demo`); the command line, which sits
above both client and matcher, hands it a way to start the matcher.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from blindmatch.cli.options import Subcommands, command


def start_matcher(data_dir: Path, admin_token: str) -> tuple[str, Callable[[], None]]:
    """A matcher on a free loopback port: (HOST:PORT, stop)."""
    from blindmatch.matcher.server import create_server

    server = create_server("127.0.0.1:0", data_dir, admin_token)
    return f"127.0.0.1:{server.port}", server.stop


def cmd_demo(args: argparse.Namespace) -> int:
    from blindmatch.client.tools.demo import run_demo

    run_demo(start_matcher, records=args.records, seed=args.seed)
    return 0


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "demo",
        help="the whole flow on built-in synthetic data, in one process",
        description="Run the whole flow on built-in synthetic data in one process: three "
        "organisations' differently written exports are encoded, uploaded to a matcher on "
        "a loopback port, matched, and each member's hits are checked against the truth.",
        example="blindmatch demo --records 5000",
        handler=cmd_demo,
    )
    p.add_argument("--records", type=int, default=2000, help="people in the synthetic population")
    p.add_argument("--seed", type=int, default=7, help="random seed")
