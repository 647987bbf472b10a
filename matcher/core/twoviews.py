"""What each role of a two-server run learns of two members' records, from the roles themselves.

`role_views` puts two members' uploads (client/encoding/sharing.py `SharedUpload`, as
`blindmatch encode --two-server` makes them) into the roles of core/twoserver.py, runs
blocking and the link-bit step in this process (core/tworun.py `InProcess`,
`proposed_links`: the code a two-server project runs) and returns what each role holds of
the pairs between the two members (docs/privacy-design.md, "What each party learns now"):

- **C**: the linking pairs' rows and each one's bucket (the lower end of the highest cut-off
  its Dice reaches: the threshold and core/twoserver.py `default_buckets`), nothing of a
  candidate that does not link, no popcount;
- **S1**: the candidate pairs (S2 returns them to S1, which proposes and evaluates them), no
  value for any pair (its sealed band keys show it no pair of one member's records);
- **S2**: the candidate pairs and each one's count of shared bands, both CLKs' added (it
  opens each matched token once a band: core/twoblocking.py `expanded_pairs`, the opening
  its `expand` de-duplicates); and, of member 0's own records, the pairs it saw paired with
  one token of member 1 (`reused_tokens`: where a key has more rows on one side than copies
  on the other), per CLK.

`privacy-check --mode two-server` (client/tools/privacy/twocheck.py) attacks each view; the
command line, above both, hands it this function (the client does not import the matcher).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.twoblocking import (
    Matched,
    PopShares,
    SealedLike,
    Shares,
    expanded_pairs,
    open_tokens,
)
from blindmatch.matcher.core.tworun import InProcess, proposed_links
from blindmatch.matcher.core.twoserver import BlockingServer, Combiner, ShareServer
from blindmatch.matcher.domain import NO_RULE, Rule

Pairs = npt.NDArray[np.intp]  # (pairs, 2): row of member 0, row of member 1
Values = npt.NDArray[np.float64]
ROLES = ("C", "S1", "S2")


class ToS1(Protocol):
    """What a member sends S1 (client/encoding/sharing.py `ToS1`)."""

    @property
    def bands(self) -> Sequence[SealedLike]: ...
    @property
    def shares(self) -> Sequence[Shares]: ...
    @property
    def popcounts(self) -> Sequence[PopShares]: ...
    @property
    def lacking(self) -> npt.NDArray[np.bool_] | None: ...


class ToS2(Protocol):
    """What a member sends S2 (client/encoding/sharing.py `ToS2`)."""

    @property
    def shares(self) -> Sequence[Shares]: ...
    @property
    def seal_key(self) -> bytes: ...
    @property
    def popcounts(self) -> Sequence[PopShares]: ...


class Upload(Protocol):
    """A member's two-server upload (client/encoding/sharing.py `SharedUpload`)."""

    @property
    def s1(self) -> ToS1: ...
    @property
    def s2(self) -> ToS2: ...


def _rows(codes: npt.NDArray[np.uint64]) -> Pairs:
    return np.stack(
        [(codes >> np.uint64(32)).astype(np.intp), (codes & np.uint64(0xFFFFFFFF)).astype(np.intp)],
        axis=1,
    ).reshape(-1, 2)


def reused_tokens(
    matched: Sequence[Matched], seal_key: bytes, records: int, clk: int
) -> tuple[Pairs, Values]:
    """S2's view of member 0's own records on CLK `clk`: the pairs (i, j), i < j, of its rows
    that S2 saw paired with one and the same token of member 1 (the other side's copies ran
    short: core/twoblocking.py `join`), and how many such tokens link each pair (each a
    band's key the two share). Tokens are told apart by their first 8 bytes (AES output: a
    chance collision among 10^6 tokens is about 10^-7)."""
    first, second = [], []
    for m in matched:
        if m.clk != clk or not len(m):
            continue
        rows = open_tokens(seal_key, clk, m.tokens_a, records, "a")
        theirs = np.ascontiguousarray(m.tokens_b[:, :8]).view("<u8").ravel()
        real = rows >= 0
        _u, group, counts = np.unique(theirs[real], return_inverse=True, return_counts=True)
        shared = counts[group] >= 2
        order = np.argsort(group[shared], kind="stable")
        g, r = group[shared][order], rows[real][shared][order]
        bounds = np.flatnonzero(np.diff(g)) + 1
        for part in np.split(r, bounds):
            part = np.unique(part)
            i, j = np.triu_indices(len(part), k=1)
            first.append(part[i])
            second.append(part[j])
    if not first:
        return np.empty((0, 2), np.intp), np.empty(0)
    codes = (np.concatenate(first).astype(np.uint64) << np.uint64(32)) | np.concatenate(
        second
    ).astype(np.uint64)
    pairs, counts = np.unique(codes, return_counts=True)
    return _rows(pairs), counts.astype(np.float64)


def role_views(
    uploads: Sequence[Upload],
    threshold: float,
    rule: tuple[float, float, float] | None = None,
    dummies: float = 0.0,
) -> dict[str, tuple[Pairs, Values]]:
    """Per role ("C", "S1", "S2"), its view of the pairs between the two members: (pairs, a
    value each), as the module's docstring says; and "S2 A:k", S2's view of member 0's own
    pairs on CLK k (`reused_tokens`). The roles are the run's own objects; the
    pair key and seal keys are fresh, as a project's are. `dummies`: S1's dummy pairs of
    tokens, a share of the real ones (core/twoserver.py `BlockingServer`): S2's counts and
    the candidates then include them. `rule`: the schema's `blindmatch.rule` (gap, offset,
    reach), which the run applies on the first CLKs' pairs (core/gmwrule.py): C's buckets
    are then of S."""
    if len(uploads) != 2:
        raise ValueError("role views: two members' uploads")
    pair_key = secrets.token_bytes(32)
    clks = len(uploads[0].s1.bands)
    lacking = [u.s1.lacking for u in uploads]
    s1 = BlockingServer(
        [u.s1.bands for u in uploads], [u.s1.shares for u in uploads], pair_key,
        [u.s1.popcounts for u in uploads],
        None if any(x is None for x in lacking) else [x for x in lacking if x is not None],
        dummies,
    )  # fmt: skip
    seal_keys = [u.s2.seal_key for u in uploads]
    s2 = ShareServer([u.s2.shares for u in uploads], pair_key,
                     [u.s2.popcounts for u in uploads], seal_keys)  # fmt: skip
    records = (len(uploads[0].s1.shares[0]), len(uploads[1].s1.shares[0]))
    # S1 joins, S2 opens each matched token once (its count of shared bands per pair) and
    # expands them into the candidate pairs, which S1 receives.
    matched = s1.join(clks)
    opened = np.concatenate(
        [expanded_pairs(m, (seal_keys[0], seal_keys[1]), records) for m in matched]
        or [np.empty(0, np.uint64)]
    )
    codes, counts = np.unique(opened, return_counts=True)
    expanded = s2.expand(matched, clks)
    candidates = np.unique(np.concatenate(
        [(b.rows_a.astype(np.uint64) << np.uint64(32)) | b.rows_b.astype(np.uint64)
         for b in expanded] or [np.empty(0, np.uint64)]
    ))  # fmt: skip
    # C: S1's proposal, evaluated part by part in the link-bit circuit; C learns the linking
    # pairs' rows and buckets (two members: no group of three, so no extras).
    combiner = Combiner(None, threshold, clks=clks,
                        rule=Rule(*rule) if rule and clks == 2 else NO_RULE)  # fmt: skip
    servers = InProcess(s1, s2)
    described = servers.propose(None, combiner.cutoffs, combiner.rule)
    links = merge([
        proposed_links(servers, combiner, index, part, linkbit.Transcript(), {})
        for index, part in enumerate(described)
    ]) if described else Candidates.empty()  # fmt: skip
    link_pairs = np.stack([links.rec0, links.rec1], axis=1).astype(np.intp)
    within = {
        f"S2 A:{clk}": reused_tokens(matched, seal_keys[0], records[0], clk) for clk in range(clks)
    }
    return {
        **within,
        "C": (link_pairs, links.sims.astype(np.float64)),
        "S1": (_rows(candidates), np.zeros(len(candidates))),
        "S2": (_rows(codes), counts.astype(np.float64)),
    }


__all__ = ["ROLES", "Upload", "role_views"]
