"""S1's caps on the pairs of members it compares without blocking (`two-server role`'s
--exhaustive-pairs and --small-member-pairs, a query's --query-whole-pairs and
--query-band-keys;
matcher/core/exhaustive.py): declared and checked here, beside cli/twoserver.py.

Kept light as every command module is: nothing here imports numpy or gRPC at import."""

from __future__ import annotations

import argparse

from blindmatch.client.errors import InputError

FLAGS = ("exhaustive_pairs", "small_member_pairs", "query_whole_pairs")


def add_cap_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--exhaustive-pairs",
        type=int,
        metavar="N",
        help="S1: compare a pair of members of at most N pairs (records x records) without "
        "blocking, every pair through the circuit, so that S2 counts no shared bands (default "
        "16,000,000: 4,000 x 4,000; 0: block every pair, whatever --small-member-pairs); a "
        "query's or watch's records likewise against an upload of at most N / 1,000 records",
    )
    p.add_argument(
        "--small-member-pairs",
        type=int,
        metavar="N",
        help="S1: and a pair whose smaller member has under 4,000 records, of at most N pairs "
        "(default 64,000,000: 500 records against up to 128,000; 0: --exhaustive-pairs "
        "alone); a query's records likewise against an upload of at most N / 1,000 records",
    )
    p.add_argument(
        "--query-whole-pairs",
        type=int,
        metavar="N",
        help="S1: and a query (or watch) whose records times its partners' are at most N "
        "pairs, against a partner of any size, so that S1 needs no band keys of it (default "
        "1,040,000: one record against up to 1,040,000, the partner the default "
        "--standing-bytes holds converted without its mask; 0: the bounds above alone; "
        "nothing while either cap above is 0); each pair costs about 23-69 us of CPU over the "
        "three roles (against a partner converted once, of which S1 and S2 each keep 4,128-"
        "12,320 bytes a record; by pairs)",
    )
    p.add_argument(
        "--query-band-keys",
        choices=("refuse", "allow"),
        help="S1: a query (or watch) over the bounds above, against a larger partner: refuse "
        "it, asking the member for no band keys (default), or allow: the client sends S1 the "
        "query's band keys and S1 compares it blocked, a view that re-identified 1.79-3.58%% "
        "of a stream of single-record queries with 50 known pairs (docs/privacy-design.md)",
    )


def allow_band_keys_option(p: argparse.ArgumentParser) -> None:
    """A member's `query` or `watch`: --allow-band-keys (the client's own hold on the keys)."""
    p.add_argument(
        "--allow-band-keys",
        action="store_true",
        help="two-server project: where S1 asks for the records' band keys (a query or watch "
        "against a partner over S1's bounds, --query-whole-pairs, and S1 started with "
        "--query-band-keys allow), send them, showing S1 which of the partner's records share "
        "a keyed band with them (docs/privacy-design.md (b), closed by default past what S1 "
        "and S2 hold); without it such a query is refused (exit 3) and nothing is sent with keys",
    )


def query_band_keys(args: argparse.Namespace) -> str | None:
    """`create_role`'s `query_band_keys`, checked: S1's alone (None: its default, refuse)."""
    if args.query_band_keys is not None and args.role != "s1":
        raise InputError(
            f"--query-band-keys {args.query_band_keys}: S1's option alone; this role is "
            f"{args.role}, which asks for no band keys: leave it out"
        )
    value: str | None = args.query_band_keys
    return value


def caps(args: argparse.Namespace) -> tuple[int | None, int | None, int | None]:
    """`create_role`'s `exhaustive`, `small_member` and `query_whole` (None: S1's defaults),
    checked: S1's alone, pairs >= 0."""
    for flag in FLAGS:
        value = getattr(args, flag)
        name = f"--{flag.replace('_', '-')} {value}"
        if value is not None and args.role != "s1":
            raise InputError(
                f"{name}: S1's option alone; this role is {args.role}, which proposes no "
                "pairs: leave it out"
            )
        if value is not None and value < 0:
            raise InputError(f"{name}: S1's cap, a number of pairs: 0 or more")
    return args.exhaustive_pairs, args.small_member_pairs, args.query_whole_pairs


def cap_warning(args: argparse.Namespace) -> str | None:
    """What S1 says at its start of an --exhaustive-pairs or --small-member-pairs under its
    shipped cap, and of a --query-whole-pairs other than its default (None: nothing; a flag
    not given is read at its shipped value)."""
    allowed = args.query_band_keys == "allow" and (
        "Warning: --query-band-keys allow: a query or watch over S1's bounds is sent again "
        "with its band keys and compared blocked; a stream of single-record queries' keys "
        "re-identified 1.79-3.58% with 50 known pairs (docs/privacy-design.md)"
    )
    if all(getattr(args, flag) is None for flag in FLAGS):
        return allowed or None
    from blindmatch.matcher.core import exhaustive

    pairs, small, whole = args.exhaustive_pairs, args.small_member_pairs, args.query_whole_pairs
    pairs = exhaustive.SHIPPED_PAIRS if pairs is None else pairs
    small = exhaustive.SHIPPED_SMALL_PAIRS if small is None else small
    whole = exhaustive.QUERY_WHOLE_PAIRS if whole is None else whole
    said = [exhaustive.lowered_cap_warning(pairs, small, whole),
            exhaustive.query_whole_warning(whole, pairs, small)]  # fmt: skip
    return "\n".join(s for s in [*said, allowed] if s) or None


__all__ = ["add_cap_options", "allow_band_keys_option", "cap_warning", "caps", "query_band_keys"]
