"""`blindmatch secret ...`: make, seal and open the shared linkage secret, among members only
(never the operator)."""

from __future__ import annotations

import argparse
from pathlib import Path

from blindmatch.cli.errors import ends_at_sigterm
from blindmatch.cli.options import Subcommands, actions, command
from blindmatch.client.errors import InputError


@ends_at_sigterm  # the file half-written beside its target deleted (`write_private`)
def cmd_new(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.sharedsecret import new_secret

    ident = new_secret(args.file)
    print(
        f"Wrote a new 256-bit secret to {args.file} (owner-only). Its id is {ident}: members "
        "compare ids by phone, never the secret. Send it to each other member sealed to their "
        "public key (`blindmatch secret seal`); never to the operator."
    )
    return 0


@ends_at_sigterm  # the file half-written beside its target deleted (`write_private`)
def cmd_keygen(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.sharedsecret import keygen

    files = keygen(args.private, args.public, args.label)
    print(
        f"Wrote {files.private} (private key, owner-only: keep it) and {files.public} (public "
        "key: give it to the member who sends the secret)."
    )
    return 0


@ends_at_sigterm  # the file half-written beside its target deleted (`write_private`)
def cmd_seal(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.sharedsecret import read_checked, read_public, seal, secret_id
    from blindmatch.client.encoding.sharedsecret import write_private as write_new

    secret, _weak = read_checked(args.secret_file)
    key, label = read_public(args.to)
    write_new(args.out, seal(secret, key, label))
    print(
        f"Sealed the secret (id {secret_id(secret)}) to {label} in {args.out}; send the file "
        "by any channel. Only that member's private key opens it."
    )
    return 0


@ends_at_sigterm  # the file half-written beside its target deleted (`write_private`)
def cmd_open(args: argparse.Namespace) -> int:
    from blindmatch.client.encoding.sharedsecret import (
        open_sealed,
        read_private,
        secret_id,
        strength_problem,
        write_private,
    )

    sealed = Path(args.sealed)
    try:
        data = sealed.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{sealed}: sealed file not found") from None
    secret = open_sealed(data, read_private(args.key), str(sealed))
    problem = strength_problem(secret)
    if problem:
        raise InputError(f"{sealed}: the sealed secret is too weak to use: {problem}")
    write_private(args.out, secret + b"\n")
    print(
        f"Wrote the secret to {args.out} (owner-only). Its id is {secret_id(secret)}: check it "
        "with the sender by phone before encoding."
    )
    return 0


def register(sub: Subcommands) -> None:
    group = command(
        sub,
        "secret",
        help="make, seal and open the shared linkage secret (members only, never the operator)",
        description="One member makes the secret (`secret new`), every other member makes a key "
        "pair (`secret keygen`) and sends the public key; the first seals the secret to each "
        "(`secret seal`), who opens it (`secret open`). See docs/security.md.",
        example="blindmatch secret new linkage.secret",
    )
    xsub = actions(group, "secret_command")
    x = command(
        xsub,
        "new",
        help="write a fresh 256-bit secret to a new owner-only file",
        example="blindmatch secret new linkage.secret",
        handler=cmd_new,
    )
    x.add_argument("file", type=Path, help="the secret file to create (refused if it exists)")
    x = command(
        xsub,
        "keygen",
        help="a member's key pair for receiving the secret sealed",
        example="blindmatch secret keygen --private south.key --public south.pub "
        "--label south-police",
        handler=cmd_keygen,
    )
    x.add_argument(
        "--private", metavar="FILE", required=True, type=Path, help="private key file to create"
    )
    x.add_argument(
        "--public", metavar="FILE", required=True, type=Path, help="public key file to create"
    )
    x.add_argument("--label", required=True, help="who the key belongs to, e.g. north-police")
    x = command(
        xsub,
        "seal",
        help="seal the secret to one member's public key",
        example="blindmatch secret seal --secret-file linkage.secret --to south.pub "
        "--out for-south.sealed",
        handler=cmd_seal,
    )
    x.add_argument(
        "--secret-file", metavar="FILE", required=True, type=Path, help="the secret to send"
    )
    x.add_argument(
        "--to", metavar="FILE", required=True, type=Path, help="the member's public key file"
    )
    x.add_argument("--out", metavar="FILE", required=True, type=Path, help="sealed file to create")
    x = command(
        xsub,
        "open",
        help="open a sealed secret with your private key",
        example="blindmatch secret open for-south.sealed --key south.key --out linkage.secret",
        handler=cmd_open,
    )
    x.add_argument("sealed", type=Path, help="the sealed file received")
    x.add_argument("--key", metavar="FILE", required=True, type=Path, help="your private key file")
    x.add_argument(
        "--out", metavar="FILE", required=True, type=Path, help="secret file to create (owner-only)"
    )
