"""`blindmatch two-server role|upload|run`: a run on two non-colluding servers and a combiner
(docs/privacy-design.md "Recommendation"; docs/operations.md "Two servers and a combiner").

Three parties each start one role (`role`), each with its own key and the keys (or digests)
of the parties it answers (`--party-key`; without, one key all share); each member sends its
`encode --two-server` upload to all three (`upload`); the combiner's operator starts the run
(`run`) and gets the links. How a party is reached and admitted (key files, `--party-key`,
`--peer-*`): cli/twoparties.py; `serve`'s options for the matcher as a combiner:
cli/twoserveropts.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.errors import ends_at_sigterm, start_error
from blindmatch.cli.options import (
    Subcommands,
    actions,
    checked_listen,
    command,
    listen_tls_options,
    quiet_option,
    refuse_taken_since,
    unit_interval,
)
from blindmatch.cli.twoparties import (
    PROBE_SECONDS,
    ROLES,
    party_keys,
    peer_credentials,
    peer_options,
    read_key,
    warn_peers_unreachable,
)
from blindmatch.cli.twoserver_caps import add_cap_options, cap_warning, caps, query_band_keys
from blindmatch.client.errors import BlindmatchError, InputError
from blindmatch.matcher.core.querylimit import (
    MEMBER_LIMIT,
    PROJECT_LIMIT,
    QueryLimits,
    parse_limit,
)
from blindmatch.matcher.domain import MIN_THRESHOLD, THRESHOLD_RANGE
from blindmatch.matcher.storage import dirlock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from blindmatch.client.remote.twoserver import RoleClient, TwoServerLinks


def _query_limits(args: argparse.Namespace) -> QueryLimits | None:
    """S1's and S2's own query limits (core/querylimit.py); None for the combiner."""
    given = [f for f in ("query_limit", "project_query_limit") if getattr(args, f) is not None]
    if args.role == "combiner":
        if given:
            raise InputError(f"--{given[0].replace('_', '-')}: S1's and S2's, not the combiner's")
        return None
    limits = QueryLimits()
    try:
        if args.query_limit is not None:
            limits = replace(limits, member=parse_limit(args.query_limit))
        if args.project_query_limit is not None:
            limits = replace(limits, project=parse_limit(args.project_query_limit))
    except ValueError as exc:
        raise InputError(f"--query-limit/--project-query-limit: {exc}") from None
    return limits


def cmd_role(args: argparse.Namespace) -> int:
    import logging

    from blindmatch.client.remote import tls
    from blindmatch.matcher.errors import StartupRefused
    from blindmatch.matcher.rpc.twoserver_service import create_role
    from blindmatch.matcher.server import serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    needs = {"s1": ("s2",), "s2": (), "combiner": ("s1", "s2")}[args.role]
    for flag in ("s1", "s2"):
        given = bool(getattr(args, flag))
        if given != (flag in needs):
            raise InputError(
                f"--{flag}: {'required' if not given else 'not taken'} for --role {args.role} "
                "(S1 calls S2; the combiner calls S1 and S2)"
            )
    if args.threshold is not None and args.role != "s1":
        raise InputError(f"--threshold: S1's alone (it fixes a run's cut-offs), not {args.role}'s")
    if args.threshold is not None and not MIN_THRESHOLD <= args.threshold <= 1:
        raise InputError(f"--threshold {args.threshold}: a Dice in {THRESHOLD_RANGE}")
    exhaustive, small_member, query_whole = caps(args)
    band_keys = query_band_keys(args)
    if args.standing_bytes is not None and (args.role == "combiner" or args.standing_bytes < 1):
        raise InputError(
            f"--standing-bytes {args.standing_bytes}: S1's and S2's, a number of bytes >= 1"
        )
    query_limits = _query_limits(args)
    key = read_key(args.key_file)
    member_key = read_key(args.member_key_file, "--member-key-file")
    if key == member_key:
        raise InputError("--key-file and --member-key-file: two different keys (a member must "
                         "not be able to call the parties' RPCs)")  # fmt: skip
    keys = party_keys(args)
    peer = peer_credentials(args)
    # Said before the role's data dir (its audit log, key and what it holds) is made or opened.
    credentials, host, port = checked_listen(args, "a two-server role")
    # one role per data dir while it runs: a second start on it is refused (dirlock)
    what = f"two-server role --role {args.role}"
    made = args.data_dir is not None and not os.path.lexists(args.data_dir)
    held = (nullcontext() if args.data_dir is None
            else dirlock.held(Path(args.data_dir), what, InputError))  # fmt: skip
    with held:
        try:
            running = create_role(args.role, tls.grpc_address(host, port), key, member_key,
                                  s1=args.s1 or "", s2=args.s2 or "", credentials=credentials,
                                  peer_credentials=peer, keys=keys,
                                  data_dir=args.data_dir, threshold=args.threshold,
                                  query_limits=query_limits,
                                  exhaustive=exhaustive, small_member=small_member,
                                  query_whole=query_whole, query_band_keys=band_keys,
                                  standing_bytes=args.standing_bytes)  # fmt: skip
        except (OSError, ValueError, StartupRefused) as exc:
            if made:  # (no half-made role's data dir left: its audit log, key, held store)
                shutil.rmtree(args.data_dir, ignore_errors=True)
            if isinstance(exc, ValueError):
                raise InputError(f"--party-key/--member-key-file: {exc}") from None
            if isinstance(exc, StartupRefused):
                raise InputError(f"--data-dir {args.data_dir}: {exc}") from None
            left = f"--data-dir {args.data_dir}" if made else ""
            refuse_taken_since(exc, args.listen, "a two-server role", left)
            raise start_error(exc, args.listen, data_dir=args.data_dir) from None

        # "blindmatch two-server combiner listening on ...", as "blindmatch matcher listening on".
        name = {"s1": "S1 (blocking)", "s2": "S2 (shares)", "combiner": "combiner"}[args.role]
        lowered = cap_warning(args)

        # its probe of the parties it calls, said in its log; waited for at its stop
        probe = threading.Thread(target=warn_peers_unreachable, daemon=True,
                                 args=(args.role, args.s1, args.s2, key, peer),
                                 name="bm-two-server-probe")  # fmt: skip

        def announce() -> None:
            shown = tls.grpc_address(host, running.port)
            print(f"blindmatch two-server {name} listening on {shown}"
                  + (f"\n{lowered}" if lowered else ""), file=sys.stderr, flush=True)  # fmt: skip
            probe.start()

        serve_forever(running, ready=announce)
        if probe.is_alive():
            probe.join(PROBE_SECONDS)
    return 0


def _client(role: str, args: argparse.Namespace, key: str) -> RoleClient:
    from blindmatch.client.remote.twoserver import RoleClient

    return RoleClient(role, getattr(args, role), key, peer_credentials(args),
                      insecure=args.peer_insecure)  # fmt: skip


def cmd_verify_audit(args: argparse.Namespace) -> int:
    from blindmatch.matcher.storage.twoserver_audit import (
        Unreadable,
        capped_answers,
        log_path,
        verify_log,
    )

    try:
        check = verify_log(args.data_dir, args.role, args.key_file)
    except Unreadable as exc:
        raise InputError(str(exc)) from None
    path = log_path(args.data_dir, args.role)
    if not check.ok:
        for problem in check.problems:
            print(f"  {problem}", file=sys.stderr)
        raise BlindmatchError(
            f"{path}: the audit log fails verification at {check.problems[0]} "
            f"({len(check.problems)} problems)"
        )
    print(f"{path}: intact, {check.entries} entries. Head {check.head_seq}:{check.head_hash}")
    for line in capped_answers(args.data_dir, args.role):  # S1's, for its operator
        print(line)
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.encoded import read_encoded
    from blindmatch.client.encoding.sharedfiles import open_shared
    from blindmatch.client.encoding.sharing import SHARED_FOLDER

    # The schema's rule (the encoding's manifest), which a run applies on the shares.
    rule = read_encoded(args.encoded, verify=False).rule
    key = read_key(args.key_file)
    with open_shared(args.encoded / SHARED_FOLDER) as upload:  # read a part at a time
        for role in ROLES:
            with _client(role, args, key) as client:
                held = client.upload(args.member, upload, rule)
            if not args.quiet:
                print(f"{client.party} ({getattr(args, role)}) holds {held} records of "
                      f"{args.member}")  # fmt: skip
    return 0


@ends_at_sigterm  # --out: the CSV written row by row beside it (`write_links`) deleted
def cmd_run(args: argparse.Namespace) -> int:
    from blindmatch.client.files import check_writable

    if args.out.exists() and not args.force:
        raise InputError(f"--out {args.out}: exists (--force to replace it)")
    # Before the run, which spends each pair's evaluation at S1 and S2 (once an upload).
    check_writable(args.out)
    with _client("combiner", args, read_key(args.key_file)) as client:
        links = client.run(args.threshold, args.member or (), args.bucket or ())
    write_links(args.out, links, replace=args.force)
    if not args.quiet:
        sent = ", ".join(f"{k} {v:,}" for k, v in sorted(links.bytes_sent.items()))
        print(f"{len(links.score)} links in {links.groups} groups ({links.method}; "
              f"{links.comparisons:,} pairs compared; bytes {sent}); wrote {args.out}")  # fmt: skip
    return 0


LINKS_A_CHUNK = 4096  # links turned into Python's values at once (`write_links`)


def write_links(out: Path, links: TwoServerLinks, *, replace: bool) -> None:
    """The links as CSV at `out`, each row written as it is made (client/files.py
    `write_csv`, through `atomic_open`): to an owner-only file of its own beside `out`
    (`.OUT.XXXXXXXXXXXX`), fsynced and renamed into place, so that a failure part-way, Ctrl-C
    or SIGTERM leaves the old `out` as it was and no temporary file. Before (2026-12-07) the
    whole CSV was made in memory first, twice over (its text, then its bytes): 87 MB more at
    a million links."""
    from blindmatch.client.files import write_csv

    header = ["member", "row", "partner", "partner_row", "score"]
    write_csv(out, header, _link_rows(links), replace=replace, lineterminator="\r\n")


def _link_rows(links: TwoServerLinks) -> Iterator[list[object]]:
    """Each link's CSV row, Python's ints made a chunk at a time (`LINKS_A_CHUNK`)."""
    for at in range(0, len(links.score), LINKS_A_CHUNK):
        part = slice(at, at + LINKS_A_CHUNK)
        for d, r, p, pr, s in zip(links.dset[part].tolist(), links.row[part].tolist(),
                                  links.partner[part].tolist(), links.partner_row[part].tolist(),
                                  links.score[part].tolist(), strict=True):  # fmt: skip
            yield [links.members[d], r, links.members[p], pr, f"{s:.6f}"]


KEY_HELP = (
    "this party's key, owner-only: what it presents to the parties it calls; without "
    "--party-key, the one key S1, S2, the combiner and the operator share (never a member's); "
    "make one with `blindmatch secret new FILE`"
)
RUN_KEY_HELP = (
    "the operator's key, owner-only (the combiner's --party-key operator=...; the parties' "
    "key where they share one)"
)
PARTY_KEY_HELP = (
    "ROLE=FILE (ROLE: s1, s2, combiner or operator; repeat it): the key of a party this role "
    "answers, or only its digest (a line `sha256:` and 64 hex digits), owner-only; with it "
    "each RPC admits only its caller's key: S2's Expand, Exchange and BlockExchange S1's; "
    "the combiner's Run the operator's (or the combiner's own where no operator key is "
    "given); every other call but a member's Upload the combiner's (S1's Propose and "
    "Evaluate, S2's Prepare and Collect, and both servers' Holds, Forget, Resume, Acknowledge "
    "and PrepareBlocks)"
)
MEMBER_KEY_HELP = (
    "the members' key, owner-only: it admits uploads and nothing else (make one with "
    "`blindmatch secret new FILE`)"
)


def register(sub: Subcommands) -> None:
    group = command(
        sub,
        "two-server",
        help="run matching on two non-colluding servers and a combiner",
        description="The two-server design (docs/privacy-design.md): S1 holds the members' "
        "sealed band keys, first XOR shares (of the CLKs and their popcounts) and joins the "
        "keys, S2 the second shares and opens the matched keys into the pairs S1 proposes, the "
        "combiner only how many records; the kernel's test of each pair is computed on the "
        "shares, and only the combiner learns its link bit (and, for a pair that links, which "
        "pair it is). Start each role (`role`), send each member's upload to all three "
        "(`upload`), then start the run at the combiner (`run`).",
        example="blindmatch two-server role --role s2 --listen 127.0.0.1:50072 --key-file "
        "parties.key --member-key-file members.key",
    )
    acts = actions(group, "two_server_command")
    p = command(
        acts,
        "role",
        help="serve one role of a two-server run",
        description="Serve one role of a two-server run: s1 (needs --s2), s2, or combiner "
        "(needs --s1 and --s2). Each party's own key (--key-file), and with --party-key the "
        "keys (or digests) of the parties it answers, so that each RPC admits only the party "
        "the protocol has call it; without, the parties share one key. The members' key "
        "(--member-key-file) admits their uploads and nothing else. Plaintext "
        "is refused on a non-loopback address: give --tls-cert and --tls-key (and "
        "--client-ca for mutual TLS), and --peer-ca to reach the other parties over TLS.",
        example=[
            "blindmatch two-server role --role s2 --listen 127.0.0.1:50072 --key-file "
            "parties.key --member-key-file members.key",
            "blindmatch two-server role --role s1 --listen 127.0.0.1:50071 --s2 "
            "127.0.0.1:50072 --key-file parties.key --member-key-file members.key",
            "blindmatch two-server role --role combiner --listen 127.0.0.1:50073 --s1 "
            "127.0.0.1:50071 --s2 127.0.0.1:50072 --key-file parties.key --member-key-file "
            "members.key",
        ],
        handler=cmd_role,
    )
    p.add_argument("--role", required=True, choices=ROLES, help="which party this is")
    p.add_argument("--listen", metavar="HOST:PORT", required=True, help="the address to listen on")
    p.add_argument("--key-file", required=True, type=Path, metavar="FILE", help=KEY_HELP)
    p.add_argument(
        "--member-key-file", required=True, type=Path, metavar="FILE", help=MEMBER_KEY_HELP
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="keep this role's audit log (uploads held, runs, refusals; never data) in "
        "DIR/twoserver-ROLE.sqlite, its key beside it (made at the first start), and what it "
        "holds (the uploads' arrays and the pairs evaluated, owner-only) in "
        "DIR/twoserver-ROLE-held.sqlite and DIR/twoserver-ROLE-held/, held again when it "
        "restarts on DIR (without it: memory only, a restart needs every member to upload "
        "again)",
    )
    p.add_argument(
        "--party-key", action="append", default=[], metavar="ROLE=FILE", help=PARTY_KEY_HELP
    )
    p.add_argument(
        "--threshold",
        type=unit_interval,
        help="S1: the only threshold it proposes runs at (default: the one the combiner "
        "asks for; the circuit's cut-offs follow from it)",
    )
    add_cap_options(p)
    p.add_argument(
        "--query-limit",
        metavar="N/PERIOD",
        help="S1, S2: the most query records of a two-server project this role evaluates for "
        "one member in a sliding PERIOD (minute, hour, day or week), whatever the matcher "
        f"allows (default {MEMBER_LIMIT.text()}; counted in its data dir, across restarts)",
    )
    p.add_argument(
        "--project-query-limit",
        metavar="N/PERIOD",
        help="S1, S2: the same for all of a project's members together (default "
        f"{PROJECT_LIMIT.text()})",
    )
    p.add_argument(
        "--standing-bytes",
        type=int,
        metavar="N",
        help="S1, S2: the most bytes of partners converted once for the queries compared whole "
        "against them that this role keeps in memory (default 4 GiB: 12,320 bytes a record of "
        "two 1,024-bit CLKs, or 4,128 for a partner that fits only so, its mask share "
        "regenerated at each query; nothing kept across a restart). The combiner reads it from "
        "both roles and converts a partner only where it fits beside the partners queried within "
        "the hour; the others' queries go by pairs (the same answers, about twice the CPU)",
    )
    p.add_argument("--s1", metavar="HOST:PORT", help="S1's address (the combiner)")
    p.add_argument("--s2", metavar="HOST:PORT", help="S2's address (S1, the combiner)")
    listen_tls_options(p, "shares")
    peer_options(p, "the other parties")

    v = command(
        acts,
        "verify-audit",
        help="check a role's audit log: every entry's keyed hash and its chain",
        description="Check the audit log a role keeps under its --data-dir (read-only: the "
        "role may be running): each entry's HMAC under the role's audit key and its link to "
        "the entry before. Exits 1 naming the first bad entry (edited, removed, reordered). "
        "The key is read from beside the log unless --key-file says where it is kept; it must "
        "be readable by its owner only.",
        example="blindmatch two-server verify-audit --data-dir /srv/s2 --role s2",
        handler=cmd_verify_audit,
    )
    v.add_argument("--data-dir", required=True, type=Path, metavar="DIR", help="the role's")
    v.add_argument("--role", required=True, choices=ROLES, help="whose log")
    v.add_argument("--key-file", type=Path, metavar="FILE",
                   help="the role's audit key (default DIR/twoserver-ROLE.audit.key)")  # fmt: skip

    u = command(
        acts,
        "upload",
        help="send a member's two-server upload to S1, S2 and the combiner",
        description="Send the upload `encode --two-server` wrote (ENCODED/twoserver/) to the "
        "three roles, each its own part only: S1 the sealed band keys, first shares and who "
        "lacks the fallback's fields, S2 the second shares and the seal key, the combiner how "
        "many records, with the members' key (--key-file). Replaces the member's earlier "
        "upload.",
        example="blindmatch two-server upload north.encoded --member north --s1 127.0.0.1:50071 "
        "--s2 127.0.0.1:50072 --combiner 127.0.0.1:50073 --key-file members.key",
        handler=cmd_upload,
    )
    u.add_argument("encoded", type=Path, help="the ENCODED folder (`encode --two-server`)")
    u.add_argument("--member", required=True, help="this member's name in the run")
    for role in ROLES:
        u.add_argument(f"--{role}", required=True, metavar="HOST:PORT", help=f"{role}'s address")
    u.add_argument("--key-file", required=True, type=Path, metavar="FILE", help=MEMBER_KEY_HELP)
    quiet_option(u)
    peer_options(u, "the three roles")

    r = command(
        acts,
        "run",
        help="run the two-server matching at the combiner and write the links",
        description="Start the run at the combiner over every member's uploads (or those "
        "named), and write its links as CSV: member, row, partner, partner_row, score (rows "
        "in each member's ENCODED order; a score is the lower end of its bucket, not a Dice "
        "value), with the operator's key (--key-file). A party that cannot be reached fails "
        "the run, naming it. The CSV (owner-only) is written a row at a time to a file of its "
        "own beside --out, then renamed into place: a failure, Ctrl-C or SIGTERM (exit 143) "
        "deletes that file and leaves the old --out as it was.",
        example="blindmatch two-server run --combiner 127.0.0.1:50073 --key-file parties.key "
        "--threshold 0.8 --out links.csv",
        handler=cmd_run,
    )
    r.add_argument("--combiner", required=True, metavar="HOST:PORT", help="the combiner")
    r.add_argument("--key-file", required=True, type=Path, metavar="FILE", help=RUN_KEY_HELP)
    r.add_argument("--threshold", required=True, type=unit_interval,
                   help="Dice at or above which a pair links")  # fmt: skip
    r.add_argument("--member", action="append", help="a member in the run (repeat; default all)")
    r.add_argument("--bucket", action="append", type=unit_interval,
                   help="a score cut-off above the threshold (repeat; default three)")  # fmt: skip
    r.add_argument("--out", metavar="FILE", required=True, type=Path, help="the links CSV to write")
    r.add_argument("--force", action="store_true", help="replace --out if it exists")
    quiet_option(r)
    peer_options(r, "the combiner")
