"""`blindmatch demo`: the whole flow on synthetic data, with a matcher in this process.

The demo lives on the client side (`client.tools.demo`, `client.tools.demo_twoserver`); the
command line, which sits above both client and matcher, hands it a way to start the matcher
(with `--two-server`: S1, S2 and the matcher as their combiner).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import Subcommands, at_least, command

if TYPE_CHECKING:
    from blindmatch.client.tools.demo import Servers
    from blindmatch.matcher.rpc.twoserver_service import RunningRole
    from blindmatch.matcher.server import RunningServer


def start_matcher(data_dir: Path, admin_token: str) -> Servers:
    """A matcher on a free loopback port."""
    from blindmatch.client.tools.demo import Servers
    from blindmatch.matcher.server import create_server

    server = create_server("127.0.0.1:0", data_dir, admin_token)
    target = f"127.0.0.1:{server.port}"
    return Servers(target, f"Matcher listening on {target} (data dir {data_dir})", server.stop)


def start_two_server(data_dir: Path, admin_token: str) -> Servers:
    """S2, S1 and a matcher that is their combiner, on free loopback ports, with fresh keys:
    the combiner's (what S1 and S2 admit the run's calls with) and the members' (what the
    matcher signs upload tickets with)."""
    import secrets

    from blindmatch.client.tools.demo import Servers
    from blindmatch.matcher.rpc.twoserver_project import combiner_setup
    from blindmatch.matcher.rpc.twoserver_service import create_role
    from blindmatch.matcher.server import create_server

    key, member_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    stops: list[Callable[[], None]] = []

    def stop() -> None:
        for one in reversed(stops):
            one()

    try:
        s2 = create_role("s2", "127.0.0.1:0", key, member_key)
        stops.append(s2.stop)
        s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{s2.port}")
        stops.append(s1.stop)
        setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, member_key)
        server = create_server("127.0.0.1:0", data_dir, admin_token, two_server=setup)
        stops.append(server.stop)
    except BaseException:
        stop()
        raise
    target = f"127.0.0.1:{server.port}"
    where = (f"S1 (blocking) listening on {setup.s1}, S2 (shares) on {setup.s2}, the matcher "
             f"(the combiner) on {target} (data dir {data_dir})")  # fmt: skip
    return Servers(target, where, stop, lambda project: held(project, server, [s1, s2]))


def held(project: str, server: RunningServer, roles: list[RunningRole]) -> list[str]:
    """What the matcher, S1 and S2 hold of `project`'s current uploads, a line each."""
    uploads = server.store.current_uploads(project)
    stored = sum(server.store.files.clk_file(u.id).stat().st_size for u in uploads.values())
    counts = ", ".join(f"{m} {u.record_count:,}" for m, u in uploads.items())
    lines = [f"the matcher (combiner): how many records ({counts}); no CLK, share or popcount "
             f"(its upload files: {stored:,} bytes in all)"]  # fmt: skip
    for role in roles:
        parts = {n.split("/")[1]: h for n, h in role.service.held.items()
                 if n.startswith(f"{project}/")}  # fmt: skip
        if not parts:
            continue
        h = next(iter(parts.values()))
        widths = " + ".join(str(8 * s.shape[1]) for s in h.shares)
        size = sum(a.nbytes for p in parts.values() for a in p.arrays()) / 1e6
        if role.role == "s1":
            keys = ", ".join(
                f"{m} {sum(len(b.keys) for b in p.sealed):,}" for m, p in parts.items()
            )
            bands = " + ".join(str(len(b.counts)) for b in h.sealed)
            lines.append(f"S1: sealed band keys (each band's distinct keys, over {bands} bands: "
                         f"{keys}), the first XOR shares of every CLK ({widths} bits) and of "
                         f"its popcount ({size:,.1f} MB in all)")  # fmt: skip
        else:
            lines.append(f"S2: the second XOR shares of every CLK ({widths} bits) and of its "
                         "popcount, and each upload's key that opens S1's sealed rows "
                         f"({size:,.1f} MB in all)")  # fmt: skip
    return lines


@ends_at_sigterm  # its temporary folder (the exports, ENCODED folders, data dirs) deleted
def cmd_demo(args: argparse.Namespace) -> int:
    if args.two_server:
        from blindmatch.client.tools.demo_twoserver import run_two_server_demo

        run_two_server_demo(start_two_server, start_matcher, records=args.records,
                            seed=args.seed, keep=args.keep)  # fmt: skip
        return 0
    from blindmatch.client.tools.demo import run_demo

    run_demo(start_matcher, records=args.records, seed=args.seed, keep=args.keep)
    return 0


def register(sub: Subcommands) -> None:
    p = command(
        sub,
        "demo",
        help="the whole flow on built-in synthetic data, in one process",
        description="Run the whole flow on built-in synthetic data in one process: three "
        "organisations' differently written exports are encoded, uploaded to a matcher on "
        "a loopback port, matched, and each member's hits are checked against the truth. "
        "With --two-server, the project runs in two-server mode: S1, S2 and the matcher as "
        "their combiner start on loopback ports (in this one process for the demo only: a "
        "deployment needs three independently operated hosts), a member asks a real-time "
        "query through S1 and S2, the demo prints what each party held and what the "
        "combiner learned, and runs the same encodings in a CLK "
        "project beside it to compare the hits and each step's time.",
        example=["blindmatch demo --records 5000", "blindmatch demo --two-server"],
        handler=cmd_demo,
    )
    p.add_argument(
        "--records",
        type=at_least(100),  # fewer can leave a member none (was a traceback)
        default=2000,
        help="people in the synthetic population, at least 100 (default: 2000)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=7,
        help="seed of the synthetic people (default: 7; the linkage secret is new each run)",
    )
    p.add_argument(
        "--two-server",
        action="store_true",
        help="run the project in two-server mode (S1, S2 and the matcher as their combiner)",
    )
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="write the exports, ENCODED folders and the matcher's data dir to DIR (new or "
        "empty) and leave them there to look at (default: a temporary folder, removed)",
    )
