"""What a real-time query or watch must pass before its search, and the record of one not
answered: its purpose, its CLKs' length and (schema, secret) fingerprint against the
project's indexes, and the member's rate limit and quota (`core.quota.QueryMeter`). Part
of `Realtime` (engine.py), which holds the stores and meter they use."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import audit
from blindmatch.matcher.core.encodings import (
    as_own,
    check_clk_bits,
    check_compatible,
    check_fingerprint,
)
from blindmatch.matcher.core.fallback import checked_rule
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.core.quota import QueryMeter
from blindmatch.matcher.domain import (
    MAX_QUERY_RECORDS,
    QUERY,
    UNANSWERED,
    Encoding,
    Project,
    QueryRecord,
)
from blindmatch.matcher.realtime.indexes import StandingIndexes
from blindmatch.matcher.realtime.limits import LimitCalls
from blindmatch.matcher.realtime.querylog import QueryLog
from blindmatch.protos.wire import fingerprint_id


class Admission(LimitCalls):
    """Mixed into `Realtime`, which provides the attributes below (and `LimitCalls`'s)."""

    indexes: StandingIndexes
    meter: QueryMeter
    query_log: QueryLog
    clock: Callable[[], float]

    def _check_purpose(self, project: Project, purpose: str) -> None:
        # The same rules as a results request's purpose; a query always needs one.
        if not audit.check_purpose(purpose, required=False, project=project.name):
            raise errors.InvalidArgument(
                "purpose: required; say why you are asking (a case reference, say)"
            )

    def _check_query(
        self, project: Project, purpose: str, encoding: Encoding, clks: bytes, member: str = ""
    ) -> np.ndarray:
        self._check_purpose(project, purpose)
        check_clk_bits(encoding.clk_bits, "clk_bits")
        check_fingerprint(encoding.fingerprint, "fingerprint")
        clk_bytes = encoding.clk_bits // 8
        if not clks or len(clks) % clk_bytes:
            raise errors.InvalidArgument(
                f"clks: {len(clks)} bytes is not a whole, non-zero number of "
                f"{encoding.clk_bits}-bit CLKs"
            )
        count = len(clks) // clk_bytes
        if count > MAX_QUERY_RECORDS:
            raise errors.InvalidArgument(
                f"clks: {count} records in one query; at most {MAX_QUERY_RECORDS}"
            )
        fallback, rule = encoding.fallback_bits, encoding.rule
        if fallback and (fallback % 64 or fallback >= encoding.clk_bits):
            raise errors.InvalidArgument(
                "fallback_bits: a multiple of 64 below clk_bits (or 0: not said)"
            )
        checked_rule(rule.gap, rule.offset, rule.reach, fallback, "rule")
        held = as_own(self.indexes.held(project.name), member)
        # Each index is searched by its own rule; a query that says its schema's (with
        # fallback_bits; older clients do not) must find the indexes scored alike.
        ident = fingerprint_id(encoding.fingerprint)
        check_compatible(encoding, held, ident=ident, layout=bool(fallback))
        return as_words(clks, encoding.clk_bits)

    def _take_quota(self, project: str, member: str, kind: str, purpose: str, n: int) -> float:
        """Count `n` records against the member's limits; returns when (for a refund)."""
        now = self.clock()
        try:
            self.meter.take(project, member, n, self.limits_for(project, member), now)
        except errors.ResourceExhausted as exc:
            self.query_log.record(
                QueryRecord(
                    now,
                    project,
                    member,
                    kind,
                    purpose,
                    n,
                    refused=str(exc),
                    user=audit.current_user(),
                )
            )
            raise
        return now

    def _record_unanswered(
        self, project: str, member: str, purpose: str, n: int, exc: errors.Unavailable
    ) -> None:
        """Audit a query refused `UNAVAILABLE` (refused `unavailable: ...`, naming the
        server; nothing disclosed). The member is told `exc` whether or not this entry
        could be written (a full disk: the query log has said so)."""
        with contextlib.suppress(errors.ResourceExhausted):
            self.query_log.record_unanswered(
                QueryRecord(
                    self.clock(),
                    project,
                    member,
                    QUERY,
                    purpose,
                    n,
                    refused=UNANSWERED + str(exc),
                    user=audit.current_user(),
                )
            )
