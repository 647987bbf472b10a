"""How a two-server party is reached and admitted (`blindmatch two-server`, cli/twoserver.py;
`serve --two-server-*`, cli/twoserveropts.py): its key files, read owner-only, the keys of
the parties a role answers (`--party-key`), and TLS to the other parties (`--peer-*`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.options import outbound_credentials
from blindmatch.client.errors import InputError
from blindmatch.matcher.storage.keyfile import KeyFileProblem, read_owner_only

if TYPE_CHECKING:
    import grpc

ROLES = ("s1", "s2", "combiner")
# How long a role's stop waits for its start-up probe of the parties it calls: a party's
# wait (rpc/twoserver_project.py REACH_SECONDS, 5 s), then its channel's close (6 s at most)
PROBE_SECONDS = 12.0


def read_key(path: Path, flag: str = "--key-file", risk: str = "") -> str:
    """A key: the file's text, refused unless only its owner can read it (`risk`: what a
    reader could do with it, for the refusal; by default, call the roles)."""
    try:
        return read_owner_only(path)
    except KeyFileProblem as problem:
        raise InputError({
            "missing": f"{flag} {path}: not found",
            "not text": f"{flag} {path}: not a key file (one line of text)",
            "readable": f"{flag} {path}: readable by others than its owner (mode "
            f"{problem.mode:o}); {risk or 'whoever reads it can call the roles'}: "
            f"chmod 600 {path}",
            "empty": f"{flag} {path} is empty (make one: `blindmatch secret new FILE`)",
        }[problem.problem]) from None  # fmt: skip


# --party-key files hold a party's key or only its digest; either is kept owner-only.
PARTY_KEY_RISK = (
    "a party's key, or its sha256: digest, is kept owner-only (whoever reads the key can "
    "call this role as that party; whoever reads the digest can test guesses of the key)"
)


def peer_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """How this role (or a member) reaches the others: TLS with --peer-ca, plaintext to
    loopback only unless --peer-insecure."""
    return outbound_credentials(
        [(f"--{flag}", getattr(args, flag)) for flag in ("s1", "s2", "combiner")
         if getattr(args, flag, None)],
        ca=args.peer_ca,
        cert=args.peer_cert,
        key=args.peer_key,
        insecure=args.peer_insecure,
        flags=("--peer-ca", "--peer-cert", "--peer-key", "--peer-insecure"),
        whom="a party that is not on loopback",
        why="shares and setups travel unencrypted",
    )  # fmt: skip


def party_keys(args: argparse.Namespace) -> dict[str, str] | None:
    """--party-key ROLE=FILE, by role; None without (one key for every party)."""
    if not args.party_key:
        return None
    keys: dict[str, str] = {}
    parties = [p for p in (*ROLES, "operator") if p != args.role]
    for given in args.party_key:
        role, _, path = given.partition("=")
        if role not in parties or not path:
            raise InputError(
                f"--party-key {given}: ROLE=FILE, ROLE one of {', '.join(parties)} (a party "
                f"other than --role {args.role})"
            )
        if role in keys:
            raise InputError(f"--party-key {role}: given twice")
        keys[role] = read_key(Path(path), f"--party-key {role}:", PARTY_KEY_RISK)
    return keys


def peer_options(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group(f"reaching {what}")
    g.add_argument("--peer-ca", metavar="FILE", help="their CA certificate (PEM; TLS)")
    g.add_argument("--peer-cert", metavar="FILE", help="this side's client certificate (PEM; mTLS)")
    g.add_argument("--peer-key", metavar="FILE", help="its private key (PEM)")
    g.add_argument(
        "--peer-insecure",
        action="store_true",
        help="allow plaintext to a party not on loopback (a test network only)",
    )


def warn_peers_unreachable(
    role: str, s1: str, s2: str, key: str, credentials: grpc.ChannelCredentials | None
) -> None:
    """At a role's start, a warning in its log where a party it calls does not answer (S1's
    S2, the combiner's S1 and S2: a wrong --s1/--s2, a role not started yet), or answers but
    refuses this role's `key` (rpc/twoserver_project.py `refused_key`), as `serve`'s probe of
    its S1 and S2 (cli/twoserveropts.py `warn_unreachable`). S1 started with a wrong --s2, or
    a key S2 does not hold for it, said nothing until a run failed, and the run spent the
    pairs of its batch (twowalk, 2026-12-07). The role serves all the same."""
    import logging

    from blindmatch.matcher import errors
    from blindmatch.matcher.rpc.twoserver_project import reachable, refused_key

    log = logging.getLogger("blindmatch.matcher")
    calls = {"s1": [("S2", s2, "--s2")], "combiner": [("S1", s1, "--s1"), ("S2", s2, "--s2")]}
    for who, address, flag in calls.get(role, []):
        try:
            reachable(address, who, credentials)
        except errors.Unavailable as exc:
            log.warning(
                "%s; runs and queries fail until it answers (check %s and that %s is started)",
                str(exc).split("; nothing was started")[0], flag, who,
            )  # fmt: skip
            return
        if why := refused_key(role, address, who, key, credentials):
            log.warning("%s; runs and queries fail until it takes this role's --key-file",
                        why)  # fmt: skip
