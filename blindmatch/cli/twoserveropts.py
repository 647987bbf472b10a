"""`serve`'s options for projects in two-server mode: the matcher as their combiner, over
S1 and S2 (docs/operations.md "Two servers and a combiner"; `blindmatch two-server`'s roles:
cli/twoserver.py)."""

from __future__ import annotations

import argparse
import logging
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.options import outbound_credentials
from blindmatch.cli.twoparties import read_key
from blindmatch.client.errors import InputError
from blindmatch.matcher.domain import WATCH_WAIT_SECONDS

if TYPE_CHECKING:
    from blindmatch.matcher.usecases.tworuns import TwoServerSetup

log = logging.getLogger("blindmatch.matcher")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """`serve`'s options for projects in two-server mode (the matcher as their combiner)."""
    g = p.add_argument_group("projects in two-server mode (docs/operations.md)")
    g.add_argument("--two-server-s1", metavar="HOST:PORT",
                   help="S1 (`two-server role --role s1`): the matcher is then the combiner "
                   "of its two-server projects, and tells their members where S1 is")  # fmt: skip
    g.add_argument("--two-server-s2", metavar="HOST:PORT", help="S2 (`--role s2`)")
    g.add_argument("--two-server-key-file", type=Path, metavar="FILE",
                   help="the combiner's key, owner-only: what S1 and S2 admit the run's calls "
                   "with (their --party-key combiner=..., or the parties' one key)")  # fmt: skip
    g.add_argument("--two-server-member-key-file", type=Path, metavar="FILE",
                   help="the members' key S1 and S2 were started with (--member-key-file), "
                   "owner-only: the matcher signs each member's upload ticket with it; never "
                   "give it to members")  # fmt: skip
    g.add_argument(
        "--two-server-ca", metavar="FILE", help="S1's and S2's CA certificate (PEM; TLS)"
    )
    g.add_argument(
        "--two-server-cert", metavar="FILE", help="the matcher's client certificate (PEM)"
    )
    g.add_argument("--two-server-key", metavar="FILE", help="its private key (PEM)")
    g.add_argument(
        "--two-server-insecure",
        action="store_true",
        help="allow plaintext to S1 or S2 off loopback (a test network only)",
    )
    g.add_argument("--two-server-convert-ahead", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="convert each completed upload of a two-server project of two or more "
                   "members into a standing partner at S1 and S2 ahead of any query (default: "
                   "on), so its queries go standing; it costs about 0.45 ms of CPU a record "
                   "across S1, S2 and the matcher (7-8 CPU-minutes a million records) an "
                   "upload, queried or not. --no-two-server-convert-ahead: nothing converted "
                   "ahead; the first query against a partner starts its conversion and is "
                   "answered by pairs")  # fmt: skip
    g.add_argument("--two-server-watch-wait-seconds", type=float, default=None,
                   metavar="SECONDS",
                   help="the longest a watch's comparison of a partner's new upload waits for "
                   "that upload's conversion ahead of the queries (then compared standing, "
                   "~2.5x less CPU) before it goes by pairs at once; the conversion goes on for "
                   "the queries. 0: never wait (default: "
                   f"{WATCH_WAIT_SECONDS:g}, a lone conversion of 1,000,000 records with "
                   "room)")  # fmt: skip
    g.add_argument("--default-mode", choices=("clk", "two-server"), default=None,
                   help="a new project's mode when `project create` gives no --mode "
                   "(two-server: needs --two-server-s1/-s2) (default: two-server when "
                   "--two-server-s1/-s2 are given, so that the matcher holds no CLK unless a "
                   "project asks for --mode clk; else clk)")  # fmt: skip


def serve_setup(args: argparse.Namespace) -> TwoServerSetup | None:
    """The matcher's two-server set-up from `serve`'s options; None without S1 and S2."""
    from blindmatch.matcher.rpc.twoserver_project import combiner_setup

    given = [f"--two-server-{f}" for f in ("s1", "s2", "key-file", "member-key-file")
             if getattr(args, "two_server_" + f.replace("-", "_"))]  # fmt: skip
    if not given:
        if args.two_server_ca or args.two_server_cert or args.two_server_key:
            raise InputError("--two-server-ca/-cert/-key: only with --two-server-s1 and -s2")
        if args.default_mode == "two-server":
            raise InputError("--default-mode two-server: needs --two-server-s1 and -s2")
        if getattr(args, "two_server_convert_ahead", None) is not None:
            raise InputError("--[no-]two-server-convert-ahead: only with --two-server-s1 and -s2")
        if getattr(args, "two_server_watch_wait_seconds", None) is not None:
            raise InputError("--two-server-watch-wait-seconds: only with --two-server-s1 and -s2")
        return None
    if len(given) < 4:
        raise InputError(
            "--two-server-s1, --two-server-s2, --two-server-key-file and "
            "--two-server-member-key-file go together (given: " + ", ".join(given) + ")"
        )
    credentials = outbound_credentials(
        [("--two-server-s1", args.two_server_s1), ("--two-server-s2", args.two_server_s2)],
        ca=args.two_server_ca,
        cert=args.two_server_cert,
        key=args.two_server_key,
        insecure=args.two_server_insecure,
        flags=("--two-server-ca", "--two-server-cert", "--two-server-key",
               "--two-server-insecure"),
        whom="S1 or S2 off loopback",
        why="the run's setups and the combiner's key travel unencrypted",
    )  # fmt: skip
    ahead = getattr(args, "two_server_convert_ahead", None) is not False
    wait = getattr(args, "two_server_watch_wait_seconds", None)
    wait = WATCH_WAIT_SECONDS if wait is None else wait
    if not 0 <= wait < math.inf:
        raise InputError(f"--two-server-watch-wait-seconds {wait:g}: 0 or more seconds "
                         "(0: a watch's comparison never waits for a conversion)")  # fmt: skip
    key = read_key(args.two_server_key_file, "--two-server-key-file")
    member_key = read_key(args.two_server_member_key_file, "--two-server-member-key-file")
    try:
        setup = combiner_setup(args.two_server_s1, args.two_server_s2, key, member_key,
                               credentials, convert_ahead=ahead, watch_wait=wait)  # fmt: skip
    except ValueError as exc:
        raise InputError(f"--two-server-*: {exc}") from None
    if not ahead:
        log.info(
            "two-server projects: uploads not converted ahead of their queries "
            "(--no-two-server-convert-ahead): a partner's first query starts it"
        )
    threading.Thread(target=warn_unreachable, args=(setup,), name="bm-two-server-probe",
                     daemon=True).start()  # fmt: skip
    return setup


def warn_unreachable(setup: TwoServerSetup) -> None:
    """At `serve`'s start, a warning in its log where S1 or S2 does not answer (a wrong
    --two-server-s1/-s2, a role not started yet): until then nothing said so before a
    member's upload failed. The matcher serves all the same (S1 and S2 may start later). The
    matcher's stop ends it, and waits for it (the set-up's `disconnect`): nothing said."""
    from blindmatch.matcher import errors
    from blindmatch.matcher.rpc.twoserver_project import Stopping

    try:
        setup.reachable()
    except Stopping:
        return
    except errors.Unavailable as exc:
        log.warning("two-server projects: %s; members' uploads, queries and runs fail until "
                    "it answers (check --two-server-s1/-s2 and that the role is started)",
                    str(exc).split("; nothing was started")[0])  # fmt: skip
        return
    warn_refused(setup)


def warn_refused(setup: TwoServerSetup) -> None:
    """A warning where S1 or S2, reached, refuses the matcher's call (its `Holds` naming no
    upload, as C asks before a standing deal): a --two-server-key-file that is not the key
    the role was started with was said first by a member's failed run or query (twowalk,
    2026-12-07; uploads go on, on the members' key). Nothing said where it answers, or where
    the matcher stopped meanwhile."""
    if setup.holds is None:
        return
    for who in ("S1", "S2"):
        _, why = setup.holds(who, [])
        if why and "closed channel" not in why:
            log.warning("two-server projects: %s; members' runs and queries fail until it "
                        "answers the matcher", why)  # fmt: skip
