"""S2's view of two-server queries through the query path itself (a part of
benchmarks/twoserver_queries.py, not a script): each query record sent as a query of its own,
searched against the partner's upload by matcher/realtime/twoquery.py `query_links` over S1
and S2 in this process (core/twoinprocess.py `InProcess`, the run's own S1 and S2), S1's cap
from core/exhaustive.py `run_cap` on the query's name, and what S2 opens recorded: per pair
(query record, partner row) the number of pairs of tokens it opened, its count of shared
bands."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from blindmatch.client.encoding.harden import NONE
from blindmatch.client.tools.privacy import twocheck
from blindmatch.matcher.core import exhaustive, tickets
from blindmatch.matcher.core.twoblocking import Matched, PairBatch, expanded_pairs
from blindmatch.matcher.core.twoinprocess import InProcess
from blindmatch.matcher.core.twoserver import BlockingServer, Combiner, Proposed, ShareServer
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.realtime.twoquery import query_links

PARTNER = "project/south/t1"  # the partner's upload's name at S1 and S2


class RecordingS2(ShareServer):
    """S2, keeping every pair of tokens it opens (the pairs of rows, with repeats)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened: list[np.ndarray] = []

    def expand(self, matched: Iterable[Matched], clks: int = 1) -> list[PairBatch]:
        matched = list(matched)  # S1's join, one at a time (read twice here)
        records = self.records()
        seal = (self._seal[0], self._seal[1])
        self.opened.extend(expanded_pairs(m, seal, (records[0], records[1])) for m in matched)
        return super().expand(matched, clks)


def query_cap(cap: int, records: int, partner: int) -> int:
    """S1's cap (core/exhaustive.py `run_cap`) for a query of `records` records against a
    partner's upload of `partner`, S1's own cap `cap` (and its smaller-member cap, as shipped)."""
    return exhaustive.run_cap([tickets.query_name("project", "north", "q"), PARTNER], cap,
                              [records, partner], exhaustive.DEFAULT_SMALL_PAIRS)  # fmt: skip


def query_sends_keys(cap: int, records: int, partner: int) -> bool:
    """Whether a query of `records` records against a partner's upload of `partner` sends S1
    its band keys (core/exhaustive.py `keys_needed`: S1 refuses it without them, and the
    client sends them, `MatcherClient.query`), S1's own cap `cap` (and its smaller-member cap,
    as shipped)."""
    return exhaustive.keys_needed([tickets.query_name("project", "north", "q"), PARTNER], cap,
                                  [records, partner], exhaustive.DEFAULT_SMALL_PAIRS)  # fmt: skip


class TellingInProcess(InProcess):
    """S1 and S2 in this process, keeping what S1's proposal told C (`Proposed`: each part's
    CLK and number of pairs)."""

    def propose(self, *args: Any, **kwargs: Any) -> list[Proposed]:
        self.told: list[Proposed] = super().propose(*args, **kwargs)
        return self.told


def query_path_counts(
    schema: Any, rows: Sequence[Sequence[str]], partner: Any, secret: bytes, cap: int,
    told: list[dict[int, int]] | None = None,
) -> dict[tuple[int, int], int]:  # fmt: skip
    """Each of `rows` queried on its own against `partner` (a `SharedUpload`) under S1's cap
    `cap`: S2's count of shared bands per (query record, partner row) that it opened any band
    of. `told`: given, each query's pairs S1 proposed, per CLK, as C learns them (its
    `Proposed` parts) are appended to it."""
    out: Counter[tuple[int, int]] = Counter()
    rule = Rule(*schema.rule) if schema.rule else NO_RULE
    for k, row in enumerate(rows):
        query = twocheck._upload(schema, [row], secret, NONE)
        name = tickets.query_name("project", "north", f"q{k}")
        run_cap = exhaustive.run_cap([name, PARTNER], cap, [1, len(partner.s1.shares[0])])
        uploads = (query, partner)
        pair_key = secrets.token_bytes(32)
        given = [u.s1.lacking for u in uploads]
        lacking = None if any(x is None for x in given) else [x for x in given if x is not None]
        s1 = BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads],
                            pair_key, [u.s1.popcounts for u in uploads],
                            lacking,
                            exhaustive=run_cap)  # fmt: skip
        s2 = RecordingS2([u.s2.shares for u in uploads], pair_key,
                         [u.s2.popcounts for u in uploads],
                         [u.s2.seal_key for u in uploads])  # fmt: skip
        clks = len(query.s1.bands)
        servers = TellingInProcess(s1, s2)
        query_links(servers, Combiner(None, 0.8, clks=clks, rule=rule))
        if told is not None:
            per: Counter[int] = Counter()
            for part in servers.told:
                per[part.clk] += part.pairs
            told.append(dict(per))
        codes = np.concatenate(s2.opened or [np.empty(0, np.uint64)])
        for code in codes.tolist():
            out[(k, int(code) & 0xFFFFFFFF)] += 1
    return dict(out)


__all__ = ["RecordingS2", "TellingInProcess", "query_cap", "query_path_counts"]
