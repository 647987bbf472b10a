"""S1's and S2's views of two members made from their band keys, for a partner too large for
the roles' own run (`privacy-check --mode two-server --partner-records`, over
`twocheck.DENSE_UP_TO`; benchmarks/twoserver_overcap.py).

The roles' own views (matcher/core/twoviews.py `role_views`) need each member's sealed upload
whole: 4.5 GB at peak for a member B of 16,000 records (measured), far more at 64,000. Here
the two views are made from the members' band keys as the client computes them
(`sharing.record_keys` under the project's secret, every CLK), B's a part at a time: S2's,
each pair's count of bands whose keys are equal on either CLK (every matched token S2 opens,
the CLKs' counts added); S1's, the same pairs (the candidates S2's expansion hands S1).
Checked equal to the roles' own, blocked (tests/test_privacy_twoserver_partner.py; the
benchmark checks them on every run). Members S1 compares without blocking (its caps:
matcher/core/exhaustive.py `admits`, which the caller asks) give both views empty, as the
roles' do. Not made here: C's view, and S2's of A's own pairs (its reused tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE, Hardening
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.tools.privacy.graphcheck import upload_views

Codes = npt.NDArray[np.int64]
Keys = tuple[tuple[npt.NDArray[np.uint64], ...], npt.NDArray[np.bool_]]
Views = dict[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]
# (A's rows, B's rows) -> S1's and S2's views: `key_views`' function
KeyViews = Callable[[Sequence[Sequence[str]], Sequence[Sequence[str]]], Views]
PART = 8_000  # records of B whose keys are made at once (25.6 kB a record: 1,600 x 2 x 8 bytes)


def band_keys(
    schema: LinkageSchema, rows: Sequence[Sequence[str]], secret: bytes,
    hardening: Hardening = NONE,
) -> Keys:  # fmt: skip
    """Each record's band keys per CLK (what it seals for S1, `sharing.record_keys`) and
    whether it lacks the fallback's fields (what it tells S1), as twomembers.py `upload`
    uploads the records."""
    views = upload_views(schema, rows, secret, hardening)
    keys = sharing.record_keys(np.hstack(views), secret, sharing.plan_of(schema),
                               8 * views[1].shape[1] if len(views) > 1 else 0)  # fmt: skip
    if len(views) < 2:
        return keys, np.zeros(len(rows), bool)
    pops = [sharing.popcounts(v) for v in views]
    return keys, sharing.lacking(pops[0], pops[1])


def shared_counts(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> tuple[Codes, Codes]:
    """The pairs (row of a << 32 | row of b) sharing a key in at least one band of one CLK's
    band keys ((rows, bands) each), and on how many bands."""
    codes, counts = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    pending = 0
    for band in range(a.shape[1]):
        order_b = np.argsort(b[:, band], kind="stable")
        kb = b[order_b, band]
        lo = np.searchsorted(kb, a[:, band], "left")
        reps = np.searchsorted(kb, a[:, band], "right") - lo
        if not reps.any():
            continue
        left = np.repeat(np.arange(len(a)), reps)
        at = np.repeat(lo - np.cumsum(np.r_[0, reps[:-1]]), reps) + np.arange(reps.sum())
        codes.append((left.astype(np.int64) << 32) | order_b[at].astype(np.int64))
        counts.append(np.ones(len(left), np.int64))
        pending += len(left)
        if pending > 10_000_000:
            merged = _merged(codes, counts)
            codes, counts = [merged[0]], [merged[1]]
            pending = 0
    return _merged(codes, counts)


def _merged(codes: list[Codes], counts: list[Codes]) -> tuple[Codes, Codes]:
    every, summed = np.concatenate(codes), np.concatenate(counts)
    unique, where = np.unique(every, return_inverse=True)
    return unique, np.bincount(where, weights=summed, minlength=len(unique)).astype(np.int64)


def views(a: Keys, b: Keys) -> Views:
    """S1's and S2's views of A and B (each `band_keys`' keys per CLK), blocked: S2's, each
    pair's count of bands with equal keys, the CLKs' added; S1's, the same pairs (the
    candidates S2's expansion hands it, before the fallback's rule splits them by CLK)."""
    found = [shared_counts(ka, kb) for ka, kb in zip(a[0], b[0], strict=True)]
    pairs, counts = _merged([f[0] for f in found], [f[1] for f in found])
    rows = np.stack([pairs >> 32, pairs & 0xFFFFFFFF], axis=1).astype(np.intp)
    return {"S1": (rows, np.zeros(len(rows))), "S2": (rows, counts.astype(np.float64))}


def views_by_parts(
    schema: LinkageSchema, secret: bytes, a: Keys, b_rows: Sequence[Sequence[str]],
    hardening: Hardening = NONE, part: int = PART,
) -> Views:  # fmt: skip
    """`views` of A's keys and B's records' keys, B's made `part` records at a time: its keys
    whole are 25.6 kB a record (1,600 bands of 64 bits, two CLKs), 3.3 GB at 128,000."""
    found = []
    for lo in range(0, len(b_rows), part):
        made = views(a, band_keys(schema, b_rows[lo : lo + part], secret, hardening))
        rows, counts = made["S2"]
        rows[:, 1] += lo
        found.append((rows, counts))
    rows = np.concatenate([f[0] for f in found]) if found else np.empty((0, 2), np.intp)
    counts = np.concatenate([f[1] for f in found]) if found else np.empty(0)
    order = np.lexsort((rows[:, 1], rows[:, 0]))  # by A's row, then B's, as `views` gives
    rows, counts = rows[order], counts[order]
    return {"S1": (rows, np.zeros(len(rows))), "S2": (rows, counts)}


def key_views(
    schema: LinkageSchema, secret: bytes, hardening: Hardening, blocked: bool, unblocked: str
) -> KeyViews:
    """`twocheck.check_members`' `keyed`: S1's and S2's views of members A's and B's rows
    from their band keys (`views_by_parts`) where S1 blocks them, both empty (the entry
    `unblocked` naming the pair) where it does not."""

    def made(a_rows: Sequence[Sequence[str]], b_rows: Sequence[Sequence[str]]) -> Views:
        if not blocked:
            empty = (np.empty((0, 2), np.intp), np.empty(0))
            said = (np.array([[0, 1]], np.intp), np.zeros(1))
            return {"S1": empty, "S2": empty, unblocked: said}
        a = band_keys(schema, a_rows, secret, hardening)
        return views_by_parts(schema, secret, a, b_rows, hardening)

    return made


__all__ = ["PART", "KeyViews", "band_keys", "key_views", "shared_counts", "views", "views_by_parts"]
