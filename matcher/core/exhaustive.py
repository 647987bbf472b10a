"""Small pairs of members compared without blocking (docs/privacy-design.md "Small pairs of
members: no blocking, no band counts").

Keyed blocking has S2 open one pair of tokens per band two records share
(core/twoblocking.py `expanded_pairs`), so S2 counts each candidate's shared bands: an
estimate of its Dice. Between two small members that count re-identifies more than 1% of
household-like records with 50 known pairs (docs/privacy.md "Two-server mode"). For a pair of
members whose cross product is at most S1's cap (`exhaustive` pairs, `DEFAULT_PAIRS` unless
S1 is told otherwise), S1 does not join their band keys and S2 expands nothing: S1 proposes
every pair of rows, all of A x B, to the link-bit circuit, split between the CLKs by the
fallback's rule (core/twoblocking.py `fallback_split`) as a blocked pair's are. S2 then sees
the cross product, in S1's order, and no count (what the two members' sizes already say), S1
no join, and C decides every pair the exhaustive CLK run compares: none missed by blocking
(with C's Dice oracle the links are that run's exactly; with link bits C solves by bucket).
Above the cap the pair is blocked as before. A query's (or watch's) records are compared whole
against a partner's upload of at most cap / `QUERY_STREAM` records (16,000 under the shipped
cap) and blocked against a larger one (`run_cap`; with the smaller-member cap, a query of few
records also up to S1's per-query cap, `QUERY_WHOLE_PAIRS` as shipped, / its records).

The cap, 16 million pairs by default (4,000 x 4,000), is where the measured leak and the cost
meet (docs/performance.md "Small pairs of members without blocking", docs/privacy.md "Two-
server mode"): S2's counts re-identified over 1% of household-like members at 1,000-3,000
records and stayed under it in every run from 4,000, so every pair of two members under
4,000 records (the size `encode --two-server` warns under) is compared whole; a pair costs
about 23 us of CPU over the three roles and 4.8 kB of traffic under the shipped schema's rule
(about 6 minutes of CPU and 77 GB at the cap, most between S1 and S2), where blocking two
members of 4,000 proposes about 0.2 million pairs.

Over the cap, a pair whose smaller member has under `SMALL_MEMBER` records is compared whole
up to S1's smaller-member cap (`admits`; `DEFAULT_SMALL_PAIRS`, 64 million pairs: 500
records against up to 128,000), where cap is not 0: blocked, S2's counts re-identified 0.5-4%
of a small member's records against larger ones (docs/privacy-design.md "Small against large,
measured further"). S1 makes such a pair's pairs in slices (core/crosspart.py), so its
memory does not grow with the product."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import tickets
from blindmatch.matcher.core.crosspart import Cross, cross_parts
from blindmatch.matcher.core.twoblocking import FALLBACK, RECORD, PairBatch
from blindmatch.matcher.domain import MAX_QUERY_RECORDS, S1_REFUSES_KEYS, counted

SHIPPED_PAIRS = 16_000_000  # a pair of members of at most this many pairs: no blocking
DEFAULT_PAIRS = SHIPPED_PAIRS  # S1's (the test suite sets it to 0: tests/conftest.py)
# A query's or watch's records are compared whole against a partner's upload of at most
# cap / QUERY_STREAM records (`run_cap`; 16,000 under the shipped cap): wherever a query of
# the most records there are (MAX_QUERY_RECORDS) against it is within S1's cap. Blocked
# streams of queries leaked against uploads of 1,000-4,000 records and, short ones, 10,000
# (docs/privacy-design.md "A stream of two-server queries, attacked").
QUERY_STREAM = MAX_QUERY_RECORDS
# The smaller-member cap (S1's `--small-member-pairs`): a pair of members whose smaller one
# has under SMALL_MEMBER records is compared without blocking up to this many pairs, over the
# cap (a query's records likewise against an upload of up to this / QUERY_STREAM records).
# Blocked, S2's counts re-identified 0.5-4% of a small member's records against a large one
# (docs/privacy-design.md "Small against large"). Only where the cap is not 0 (0 blocks
# every pair whatever this is).
SMALL_MEMBER = 4_000
SHIPPED_SMALL_PAIRS = 64_000_000
DEFAULT_SMALL_PAIRS = SHIPPED_SMALL_PAIRS  # S1's (the test suite sets it to 0: conftest.py)
# Besides, where the smaller-member cap is not 0, a query's or watch's run whose OWN records
# times the partner's are at most this many pairs is compared whole whatever the partner's
# size (`run_cap`): blocked, a stream of single-record queries against a partner over 64,000
# records showed S1 their band keys, which re-identified 1.8-3.6% with 50 known pairs
# (docs/privacy-design.md "The views issue 18 still listed as unmeasured, measured", (b)).
# Sized (bigq, 2026-12-06) by what S1 and S2 can hold standing: a one-record query sends S1
# no band keys against any partner their default `--standing-bytes` (4 GiB,
# rpc/twoserver_standcache.py `MOST_BYTES`) keeps converted without its [M_B], 4,128 bytes a
# record at two 1,024-bit CLKs: up to 1,040,447 records, so 1,040,000. The matcher compares a
# query's part whole against such a partner by its bits converted once (core/partpath.py
# `for_query`, rpc/twoserver_standing.py); over gRPC a one-record query took 11.7 s of CPU
# over the three roles that way against 500,000 records (23.4 us a pair, 11.9 s wall; 34.5 s
# by pairs, 69.0 us, in the same run) and 21.5 s against 1,000,000 (21.5 us, 23.5 s wall), so
# about 22 s of CPU and 24 s wall at the bound on a 2-core host (docs/performance.md
# "One-record queries against 500,000 and 1,000,000 records over gRPC"). The first query
# against an upload goes by pairs while the partner is converted in the background (91.9 s
# wall, then 1,420 s of CPU, at 1,000,000 records). Was 320,000 (standwire; sized by CPU,
# ~5 s a query, before S1 and S2 could keep a partner without [M_B]), 80,000 before that.
QUERY_WHOLE_PAIRS = 1_040_000
DEFAULT_QUERY_WHOLE = QUERY_WHOLE_PAIRS  # S1's
# CPU a pair of a query compared whole, over the three roles (microseconds; the 500,000-record
# run above): against a partner converted once (kept without [M_B]), by pairs; what S1's
# warning of a raised `--query-whole-pairs` prices a query at.
QUERY_PAIR_US = (23, 69)
# What S1 and S2 each keep a record of a partner converted without its [M_B] (two 1,024-bit
# CLKs; rpc/twoserver_standcache.py `kept_bytes`): a raised bound's partner's memory.
STANDING_RECORD_BYTES = 4_128

Ends = tuple[int, int]
Part = PairBatch | Cross  # a blocked part's explicit rows, or an unblocked one's slices


def or_default(pairs: int | None) -> int:
    """`pairs` checked (`check_cap`), or None: `DEFAULT_PAIRS` (read when called: the test
    suite blocks every pair unless a test asks otherwise, tests/conftest.py)."""
    return DEFAULT_PAIRS if pairs is None else check_cap(pairs)


def small_or_default(pairs: int | None) -> int:
    """The smaller-member cap `pairs` checked, or None: `DEFAULT_SMALL_PAIRS` (read when
    called)."""
    return DEFAULT_SMALL_PAIRS if pairs is None else check_cap(pairs, "small member pairs")


def query_whole_or_default(pairs: int | None) -> int:
    """The per-query cap `pairs` checked, or None: `DEFAULT_QUERY_WHOLE` (read when called)."""
    return DEFAULT_QUERY_WHOLE if pairs is None else check_cap(pairs, "query whole pairs")


def admits(a: int, b: int, cap: int, small: int = 0) -> bool:
    """Whether S1 compares members of `a` and `b` records without blocking: their product
    at most `cap`, or, where `cap` is not 0, at most the smaller-member cap `small` with the
    smaller under `SMALL_MEMBER` records."""
    return a * b <= cap or (cap > 0 and min(a, b) < SMALL_MEMBER and a * b <= small)


def check_cap(pairs: int, what: str = "exhaustive pairs") -> int:
    """The cap, a number of pairs >= 0 (0: every pair of members blocked)."""
    if pairs < 0:
        raise ValueError(f"{what}: {pairs}, a number of pairs >= 0 (0: always block)")
    return int(pairs)


def lowered_cap_warning(
    pairs: int, small: int = SHIPPED_SMALL_PAIRS, whole: int = QUERY_WHOLE_PAIRS
) -> str | None:
    """What S1 says at its start when `--exhaustive-pairs` (`pairs`) or
    `--small-member-pairs` (`small`) is under its shipped cap: the pairs of members and the
    queries it then blocks, and what S2's counts gave where they were blocked
    (docs/privacy-design.md). None at the shipped caps or above."""
    if pairs >= SHIPPED_PAIRS and small >= SHIPPED_SMALL_PAIRS:
        return None
    wider = max(pairs, small)  # a member under SMALL_MEMBER records, and a query (`admits`)
    few = f" (or {whole:,} / the query's records, if more)" if small and whole else ""
    if not pairs:
        which = "every pair of members and every query is blocked"
    else:
        which = (f"pairs of members over {pairs:,} pairs (with a member of under "
                 f"{SMALL_MEMBER:,} records: over {wider:,}), and queries against uploads "
                 f"over {wider // QUERY_STREAM:,} records{few}, are blocked")  # fmt: skip
    lowered = " and ".join(
        f"--{flag} {value:,} is under the default {shipped:,}"
        for flag, value, shipped in (("exhaustive-pairs", pairs, SHIPPED_PAIRS),
                                     ("small-member-pairs", small, SHIPPED_SMALL_PAIRS))
        if value < shipped
    )  # fmt: skip
    return (
        f"Warning: {lowered}: {which}, so S2 counts their shared bands; "
        "blocked, those counts re-identified 1.7-4.7% of small members' records (4.0% of 500 "
        "records against 4,000) and up to 8.7% of a stream of queried records with 50 known "
        "pairs (docs/privacy-design.md)"
    )


def query_whole_warning(
    whole: int, pairs: int = SHIPPED_PAIRS, small: int = SHIPPED_SMALL_PAIRS
) -> str | None:
    """What S1 says at its start of a `--query-whole-pairs` (`whole`) other than the shipped
    `QUERY_WHOLE_PAIRS`, under its caps `pairs` and `small` (`run_cap`): lowered, which
    queries it then blocks (S1 receives their band keys) and what those keys gave; raised,
    the CPU a query may then cost (`QUERY_PAIR_US` a pair); where either cap is 0, that the
    flag does nothing. None at the shipped value."""
    if whole == QUERY_WHOLE_PAIRS:
        return None
    flag = f"--query-whole-pairs {whole:,}"
    if not pairs or not small:
        zero = "exhaustive-pairs" if not pairs else "small-member-pairs"
        return (
            f"Warning: {flag} does nothing while --{zero} is 0 (no query is compared whole "
            "past the caps' bound then)"
        )
    if whole < QUERY_WHOLE_PAIRS:
        return (
            f"Warning: {flag} is under the default {QUERY_WHOLE_PAIRS:,}: a query whose "
            f"records times its partners' are over {whole:,} pairs, against an upload over "
            f"{max(pairs, small) // QUERY_STREAM:,} records, is blocked, so the client sends S1 "
            "its band keys; a stream of single-record queries' keys re-identified 1.8-3.6% "
            "with 50 known pairs (docs/privacy-design.md)"
        )
    low, high = (whole * us / 1e6 for us in QUERY_PAIR_US)
    return (
        f"Note: {flag} is over the default {QUERY_WHOLE_PAIRS:,}: a query is compared whole "
        f"up to {whole:,} pairs, its records times its partners', at about "
        f"{QUERY_PAIR_US[0]}-{QUERY_PAIR_US[1]} us of CPU a pair over the three roles (against "
        "a partner's bits converted once, by pairs): up to "
        f"{low:,.1f}-{high:,.1f} s of CPU a query, and S1 and S2 each keep "
        f"{STANDING_RECORD_BYTES:,} bytes a record of a partner so queried (without its "
        f"[M_B]): {whole * STANDING_RECORD_BYTES / 1e9:,.1f} GB for a one-record query's "
        "partner, which their --standing-bytes must hold (default 4 GiB: 1,040,000 records); "
        'docs/performance.md "One-record queries against 500,000 and 1,000,000 records over '
        'gRPC"'
    )


# S1's `--query-band-keys`: under "refuse" (the default) a query or watch its caps block is
# refused, its band keys never asked for (`keys_refused`); under "allow" the client sends them
# and S1 compares the query blocked (docs/privacy-design.md "(b), closed up to what S1 and S2
# hold": the one view left over issue 18's bar, 1.79-3.58% of a stream of single-record
# queries re-identified with 50 known pairs).
QUERY_BAND_KEYS = ("refuse", "allow")
DEFAULT_QUERY_BAND_KEYS = "refuse"  # S1's (the suite, which blocks every pair, allows)
PRIVACY_SECTION = 'docs/privacy-design.md "(b), closed up to what S1 and S2 hold"'


def band_keys_or_default(mode: str | None) -> str:
    """S1's `--query-band-keys` `mode` checked, or None: `DEFAULT_QUERY_BAND_KEYS` (read when
    called)."""
    mode = DEFAULT_QUERY_BAND_KEYS if mode is None else mode
    if mode not in QUERY_BAND_KEYS:
        raise ValueError(f"query band keys: one of {', '.join(QUERY_BAND_KEYS)}, not {mode!r}")
    return mode


def keys_refused(own: int, partner: int, whole: int, cap: int, small: int) -> str:
    """Why S1 under `--query-band-keys refuse` refuses a query of `own` records blocked
    against an upload of `partner` records under its caps `cap`, `small` and `whole`
    (`run_cap`'s): the matcher names the partner in its place (realtime/twopartner.py, after
    " is over S1's ")."""
    if cap and small:
        bound, raise_ = f"--query-whole-pairs {whole:,}", "--standing-bytes and --query-whole-pairs"
    elif not cap:  # `run_cap`: no query is compared whole, whatever `small` and `whole`
        bound = "unblocked bound (--exhaustive-pairs 0: every query blocked)"
        raise_ = "--exhaustive-pairs"
    else:
        bound = (
            f"unblocked bound (--exhaustive-pairs {cap:,}, --small-member-pairs "
            f"{small:,}: a query against up to {max(cap, small) // QUERY_STREAM:,} records)"
        )
        raise_ = "--exhaustive-pairs and --small-member-pairs"  # fmt: skip
    return (
        f"this query of {counted(own, 'record')} against an upload of "
        f"{counted(partner, 'record')} is over S1's {bound}: compared whole it would cost "
        "more than S1 allows, and compared by band keys it would show S1 the query's band keys "
        f"({PRIVACY_SECTION}), which S1 refuses ({S1_REFUSES_KEYS}). Ask S1's operator "
        f"to raise {raise_}, or to start S1 with --query-band-keys allow"
    )


def run_cap(
    members: Sequence[str],
    cap: int,
    records: Sequence[int] | None = None,
    small: int = 0,
    whole: int = QUERY_WHOLE_PAIRS,
) -> int:
    """S1's cap for a run of `members` (names at S1) of `records` each: `cap` for a run of
    members. A query's or a watch's run (a member is a query's records, core/tickets.py
    `is_query`) is compared without blocking where every other member is small, its records
    times `QUERY_STREAM` at most `cap` (16,000 records under the shipped cap: a query of the
    most records against it within the cap), and blocked otherwise (0; so too without
    `records`): the queries a partner's upload answers add up, at S2, to the view of a run
    between that upload and a member of as many records, which leaks where the upload is
    small (docs/privacy-design.md "A stream of two-server queries, attacked"); a query
    against a larger upload costs its candidates, not its cross product. The cap returned
    admits every pair of the run's members (`small_pairs`). With the smaller-member cap
    `small` (a query is under `SMALL_MEMBER` records), against an upload of at most
    max(cap, small) / QUERY_STREAM records (64,000 under the shipped `small`; 0: `cap`'s);
    and, where `small` is not 0, against an upload of any size where the query's own records
    times the partners' are at most `whole` (S1's `--query-whole-pairs`, `QUERY_WHOLE_PAIRS`
    as shipped: a one-record query against up to that many records; blocked, its band keys
    showed S1 a stream of such queries; 0: the bounds before alone). So for a
    given query, the larger the partner, the likelier blocked (realtime/twopartner.py
    `first_proposed`)."""
    if not any(tickets.is_query(m) for m in members):
        return cap
    if records is None or len(records) != len(members):
        return 0
    partners = [r for m, r in zip(members, records, strict=True) if not tickets.is_query(m)]
    own = sum(r for m, r in zip(members, records, strict=True) if tickets.is_query(m))
    if not partners or not cap:
        return 0
    if max(partners) * QUERY_STREAM > max(cap, small) and not (
        small and own * sum(partners) <= whole
    ):
        return 0
    return max(records) ** 2


def whole_records(cap: int, small: int = 0, whole: int = QUERY_WHOLE_PAIRS) -> int:
    """The most records of a partner that a one-record query is compared whole against under
    S1's `cap`, `small` and `whole` (`run_cap` > 0 exactly up to it): what S1 tells C
    (`HoldsReply.query_whole_records`, capsfirst), which converts no larger partner ahead of
    its queries (S1 would refuse it: rpc/twoserver_standstart.py)."""
    if not cap:
        return 0
    return max(max(cap, small) // QUERY_STREAM, whole if small else 0)


def keys_needed(
    members: Sequence[str],
    cap: int,
    records: Sequence[int] | None = None,
    small: int = 0,
    whole: int = QUERY_WHOLE_PAIRS,
) -> bool:
    """Whether S1 joins band keys in a run of `members` of `records` under its `cap`,
    smaller-member cap `small` and per-query cap `whole` (the inputs `run_cap` takes, and its
    answer): where some pair
    of the members is over the run's caps. A query's records sent without band keys
    (SharedPart.band_keys_withheld) are compared where this is False and refused where it is
    True (`band_keys_needed`): the one place S1 decides whether a query needs its keys
    (docs/privacy-design.md "S1's own view of a stream of single-record queries")."""
    if records is None or len(records) != len(members):
        return True
    n = len(members)
    run = run_cap(members, cap, records, small, whole)
    return len(small_pairs(records, run, small=small)) < n * (n - 1) // 2


def every_pair(
    member_a: int,
    member_b: int,
    records: tuple[int, int],
    lacking: Sequence[npt.NDArray[np.bool_]] | None,
) -> list[Cross]:
    """All of A x B, in row order: on the record-level CLK, or with `lacking` (each member's
    records lacking the fallback's fields) split as `fallback_split` splits blocked pairs
    (fallback pairs where either record lacks them). Made in slices (core/crosspart.py): S1
    holds each side's rows and makes a batch's pairs when C asks for them, not 16 bytes a
    pair."""
    return cross_parts(member_a, member_b, records, lacking, RECORD, FALLBACK)


def explicit(parts: Sequence[Part]) -> list[PairBatch]:
    """`parts` with every pair's rows held (an unblocked part's made whole: 16 bytes a pair;
    for a benchmark's or a test's look at them)."""
    return [p.whole() if isinstance(p, Cross) else p for p in parts]


def small_pairs(
    records: Sequence[int], cap: int, pairs: Collection[Ends] | None = None, small: int = 0
) -> set[Ends]:
    """The pairs of members (of `pairs`, the first lower; None: every one) whose cross product
    is at most `cap` pairs, or at most `small` with one of them under `SMALL_MEMBER` records
    (`admits`): compared without blocking."""
    n = len(records)
    every = {(a, b) for a in range(n) for b in range(a + 1, n)} if pairs is None else set(pairs)
    return {(a, b) for a, b in every if admits(records[a], records[b], cap, small)}


def propose(
    records: Sequence[int],
    cap: int,
    pairs: Collection[Ends] | None,
    lacking: Sequence[npt.NDArray[np.bool_]] | None,
    block: Callable[[set[Ends] | None], list[PairBatch]],
    small: int = 0,
) -> list[Part]:
    """S1's pairs to compare for `pairs` of members (None: every one): every pair of rows of
    those `small_pairs` admits (`every_pair`), and `block`'s (S1's join, S2's expansion, the
    fallback's split; None: every pair of members) for the rest: as without a cap where no
    pair is small, else only if there is a rest (S2 then expands nothing of a run of small
    pairs alone). A blocked pair of members' parts come first, as `block` gives them."""
    whole = small_pairs(records, cap, pairs, small)
    if not whole:  # every pair blocked: as without a cap (an empty `pairs` included)
        return list(block(None if pairs is None else set(pairs)))
    n = len(records)
    wanted = {(a, b) for a in range(n) for b in range(a + 1, n)} if pairs is None else set(pairs)
    rest = wanted - whole
    out: list[Part] = []
    if rest:
        out = [p for p in block(rest) if (p.member_a, p.member_b) not in whole]
    for a, b in sorted(whole):
        out.extend(every_pair(a, b, (records[a], records[b]), lacking))
    return out


__all__ = [
    "DEFAULT_PAIRS",
    "DEFAULT_QUERY_BAND_KEYS",
    "DEFAULT_QUERY_WHOLE",
    "DEFAULT_SMALL_PAIRS",
    "PRIVACY_SECTION",
    "QUERY_BAND_KEYS",
    "QUERY_PAIR_US",
    "QUERY_STREAM",
    "QUERY_WHOLE_PAIRS",
    "SHIPPED_PAIRS",
    "SHIPPED_SMALL_PAIRS",
    "SMALL_MEMBER",
    "STANDING_RECORD_BYTES",
    "Part",
    "admits",
    "band_keys_or_default",
    "check_cap",
    "every_pair",
    "explicit",
    "keys_needed",
    "keys_refused",
    "lowered_cap_warning",
    "or_default",
    "propose",
    "query_whole_or_default",
    "query_whole_warning",
    "run_cap",
    "small_or_default",
    "small_pairs",
    "whole_records",
]
