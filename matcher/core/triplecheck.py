"""S1 and S2's check of the Beaver triples C deals (core/linkbit.py; docs/privacy-design.md,
"What a dishonest combiner can still learn"): C deals `rows(gates)` rows, twice the circuit's
AND gates and `OPENED` more, and once S1 and S2 have ordered them by their joint nonce
(`linkbit.row_order`), the first `gates` rows serve the gates, each sacrificed against the
row `gates` after it, and the last `OPENED` are opened outright:

- the sacrifice (the standard one): for a gate's triple (a, b, c) and its spare (x, y, z),
  S1 and S2 open rho = a ^ x and sigma = b ^ y (one-time padded by x and y, which serve
  nothing else), then each holds a share of t = c ^ z ^ (sigma & x) ^ (rho & y) ^ (rho &
  sigma), which is 0 on every bit where both triples are right (c = ab, z = xy) and e ^ e'
  where c and z are off by e and e'; t is 0 everywhere iff the two servers' shares are
  equal, so each sends the other the SHA-256 of its share (`digest`) rather than the share;
- the opened rows: both send their (a, b, c) shares, and c = ab must hold on every bit.

A row C dealt wrong passes only if its partner is wrong alike (the same bits) and no opened
row is wrong: one wrong row is always found; k wrong rows alike pass with probability
(k-1)!! (2G-k-1)!! / (2G-1)!! (k even, none opened wrong; 1 / (2G - 1) at k = 2, G the
gates, and then the flipped gate is one C does not know); every row wrong alike (every AND
gate a NAND, whatever the order) is found by the opened rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors

Words = npt.NDArray[np.uint64]
Index = npt.NDArray[np.intp]
OPENED = 2  # rows opened outright: catch C dealing every row wrong alike
DIGEST_BYTES = 32


class DealRefused(Exception):
    """The combiner's triples fail S1 and S2's check: the dealer is at fault. Raised by
    core/linkbit.py `Party.confirm` only; what leaves a server is `refused`'s."""


def refused(batch: str, exc: DealRefused) -> errors.PermissionDenied:
    """The project's error for a batch whose triples fail S1 and S2's check, naming the
    dealer: PERMISSION_DENIED over gRPC (rpc/status.py), a refusal (exit 3) to a client. Raised
    by the gRPC roles (rpc/twoserver_service.py, twoserver_shares.py) and the in-process path
    (core/twoinprocess.py) alike."""
    return errors.PermissionDenied(
        f"setup: batch {batch!r}: {exc}; the dealer (the combiner) dealt triples that are "
        "not Beaver triples, so S1 and S2 refuse the batch and send no output shares"
    )


def rows(gates: int) -> int:
    """The rows C deals for a circuit of `gates` AND gates."""
    return 2 * gates + OPENED


@dataclass(frozen=True)
class Layout:
    """Which dealt rows serve the gates (in gate order), which are their spares (spare[i]
    sacrificed against gates[i]), which are opened."""

    gates: Index
    spare: Index
    opened: Index


def layout(order: Index, gates: int) -> Layout:
    if len(order) != rows(gates):
        raise ValueError(f"triples: {len(order)} rows dealt for {gates} gates")
    return Layout(order[:gates], order[gates : 2 * gates], order[2 * gates :])


Triple = tuple[Words, Words, Words]


def message(used: Triple, spare: Triple, opened: Triple) -> bytes:
    """This server's check message: its shares of rho = a ^ x and sigma = b ^ y for every
    gate's row against its spare, then its (a, b, c) shares of the opened rows."""
    (a, b, _), (x, y, _) = used, spare
    parts = [a ^ x, b ^ y, *opened]
    return b"".join(np.ascontiguousarray(p).tobytes() for p in parts)


def digest(role: int, mine: bytes, theirs: bytes, used: Triple, spare: Triple) -> bytes:
    """The SHA-256 of this server's share of t (every gate's row against its spare), from
    both servers' check messages."""
    a, _, c = used
    x, y, z = spare
    n = a.size
    if len(theirs) != len(mine) or len(mine) < 16 * n:
        raise ValueError("triples: the other server's check does not fit the batch")
    both = [np.frombuffer(m[: 16 * n], dtype="<u8").reshape(2, *a.shape) for m in (mine, theirs)]
    rho, sigma = both[0][0] ^ both[1][0], both[0][1] ^ both[1][1]
    t = c ^ z ^ (sigma & x) ^ (rho & y)
    if role == 0:
        t ^= rho & sigma
    return hashlib.sha256(np.ascontiguousarray(t).tobytes()).digest()


def opened_wrong(mine: bytes, theirs: bytes, gates: int, words: int) -> int:
    """How many opened rows fail c = ab, from both servers' check messages."""
    at = 16 * gates * words

    def shares(m: bytes) -> Words:
        return np.frombuffer(m[at:], dtype="<u8").reshape(3, OPENED, words)

    (a1, b1, c1), (a2, b2, c2) = shares(mine), shares(theirs)
    bad = ((a1 ^ a2) & (b1 ^ b2)) != (c1 ^ c2)
    return int(bad.any(axis=1).sum())


__all__ = ["DIGEST_BYTES", "OPENED", "DealRefused", "Layout", "layout", "refused", "rows"]
