"""Sealed band keys: a CLK's band keys as the two-server run's S1 receives them
(docs/protocol.md "Sealed band keys", docs/privacy-design.md "Sealed band keys: S1 sees only
cross-member equalities"; matcher/core/twoblocking.py joins and opens them).

`seal_bands` gives each band's distinct keys once (`SealedBands`), each with the member's rows
holding it as tokens only S2 can open (AES-256 under a key made for this upload, which only S2
receives; padded to a size class of 1, 4, 16, ... rows, each row in as many copies, at least
two). S1 joins the keys across members and forwards the matched keys' tokens in pairs; S2 opens
them into the candidate pairs. S1 never learns which records hold a key nor which of one
member's records share one, and S2 opens each token once, so it cannot tell which pairs came
from one band's key either.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from blindmatch.client.encoding.npzfile import Rows

Clks = npt.NDArray[np.uint8]

# Sealed band keys (docs/protocol.md "Sealed band keys"; matcher/core/twoserver.py opens them):
# each distinct key of a band with CLASS_BASE ** class slots (its rows, then padding), each slot
# in as many copies (MIN_COPIES to MAX_COPIES), each copy one 16-byte token: AES-256 of (row uint32
# LE || clk || TOKEN_TAG || 8 random bytes) under the upload's seal key (a padding slot's row is
# TOKEN_PAD).
TOKEN_BYTES = 16
TOKEN_TAG = b"bm1"
TOKEN_PAD = 0xFFFFFFFF
SEAL_KEY_BYTES = 32
CLASS_BASE = 4
MAX_CLASS = 16  # 4^16 slots: any count of uint32 rows
MAX_COPIES = 16  # copies of a slot: a key more records share reuses them (cost: slots x copies)
MIN_COPIES = 2  # even a key one record holds: a pair of relatives on the other side then opens
# two tokens, not one twice (households.py: S2's view of one member's records drops from 1.05%
# re-identified with 50 known pairs to 0.00%, at 1,000 records; docs/privacy-design.md)


def slots(classes: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Each key's slots: CLASS_BASE ** class."""
    out: npt.NDArray[np.int64] = np.power(CLASS_BASE, np.asarray(classes, dtype=np.int64))
    return out


def copies(classes: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """The copies of each of a key's slots: as many as its slots, MIN_COPIES to MAX_COPIES."""
    return np.clip(slots(classes), MIN_COPIES, MAX_COPIES)


def sealed_size(classes: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """The bytes of each key's tokens: slots x copies x TOKEN_BYTES."""
    out: npt.NDArray[np.int64] = TOKEN_BYTES * slots(classes) * copies(classes)
    return out


def size_class(counts: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """The smallest class c with CLASS_BASE ** c >= count, for each count (>= 1)."""
    c = np.zeros(len(counts), dtype=np.uint8)
    cap = np.ones(len(counts), dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    while (short := cap < counts).any():
        c[short] += 1
        cap[short] *= CLASS_BASE
    return c


def seal_tokens(rows: npt.NDArray[np.uint32], clk: int, seal_key: bytes) -> bytes:
    """One token a row (TOKEN_PAD for padding): AES-256 (one block each, each with 8 fresh
    random bytes, so no two tokens are alike) under the seal key."""
    block = np.zeros((len(rows), TOKEN_BYTES), dtype=np.uint8)
    block[:, :4] = np.asarray(rows, dtype="<u4").view(np.uint8).reshape(-1, 4)
    block[:, 4] = clk
    block[:, 5:8] = np.frombuffer(TOKEN_TAG, dtype=np.uint8)
    block[:, 8:] = np.frombuffer(secrets.token_bytes(8 * len(rows)), np.uint8).reshape(-1, 8)
    enc = Cipher(algorithms.AES(seal_key), modes.ECB()).encryptor()
    return enc.update(block.tobytes()) + enc.finalize()


@dataclass(frozen=True)
class SealedBands:
    """One CLK's band keys as S1 receives them: `counts[band]` distinct keys in each band,
    `keys` those keys (band by band, each band's in ascending order: their order says nothing
    of the records, the keys being a keyed PRF's), `classes` each key's size class, and
    `sealed` each key's tokens one after the other: its slots (the rows holding it, then
    padding to CLASS_BASE ** class), each in as many copies (slot-major), each copy a token
    only S2 can open. S1 pairs slot s of one member's key with slot t of another's through
    copy t of the one and copy s of the other (modulo their copies), so S2 opens no token
    twice where both keys' classes agree and at most MAX_COPIES records share a key."""

    counts: npt.NDArray[np.int64]
    keys: npt.NDArray[np.uint64]
    classes: npt.NDArray[np.uint8]
    sealed: npt.NDArray[np.uint8]

    @property
    def bands(self) -> int:
        return len(self.counts)

    def offsets(self) -> npt.NDArray[np.int64]:
        """Where each key's tokens start in `sealed`, in bytes (one past the end last)."""
        out = np.zeros(len(self.keys) + 1, dtype=np.int64)
        np.cumsum(sealed_size(self.classes), out=out[1:])
        return out


SEAL_BANDS = 64  # bands sealed at a time (memory: rows x this many keys, a few arrays)
# ... or more for a few rows (a query's), up to this many keys at a time: the ranges' numpy
# calls cost more than their keys there (a one-record query's two CLKs: 50 ranges -> 2).
SEAL_KEYS = 1 << 16


def seal_bands(keys: npt.NDArray[np.uint64], clk: int, seal_key: bytes) -> SealedBands:
    """A CLK's band keys ((rows, bands), `band_keys`) as S1 receives them: each band's distinct
    keys once, each with its rows as tokens under `seal_key` (`SealedBands`)."""
    if keys.ndim != 2 or not keys.shape[0] or not keys.shape[1]:
        raise ValueError("sealed bands: band keys must be (rows, bands), not empty")
    if len(seal_key) != SEAL_KEY_BYTES:
        raise ValueError(f"sealed bands: a seal key of {SEAL_KEY_BYTES} bytes")
    step = max(SEAL_BANDS, SEAL_KEYS // keys.shape[0])
    parts = [seal_range(keys[:, lo : lo + step], clk, seal_key)
             for lo in range(0, keys.shape[1], step)]  # fmt: skip
    return SealedBands(*(np.concatenate(f) for f in zip(*parts, strict=True)))


def seal_range(
    keys: npt.NDArray[np.uint64], clk: int, seal_key: bytes
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64], npt.NDArray[np.uint8], Clks]:
    """`seal_bands` on a range of bands: (counts, keys, classes, sealed)."""
    n, bands = keys.shape
    by_band = np.ascontiguousarray(keys.T).ravel()  # band-major: band b's keys at b*n...
    band = np.repeat(np.arange(bands, dtype=np.int64), n)
    order = np.lexsort((by_band, band))  # by band, then key; rows ascending within a key
    k_sorted, b_sorted = by_band[order], band[order]
    rows = (order % n).astype(np.uint32)
    first = np.ones(len(order), dtype=bool)
    first[1:] = (k_sorted[1:] != k_sorted[:-1]) | (b_sorted[1:] != b_sorted[:-1])
    starts = np.flatnonzero(first)
    held = np.diff(np.append(starts, len(order)))
    classes = size_class(held)
    cap, copy = slots(classes), copies(classes)
    # Each key's slots: its rows, then padding; each slot repeated (its copies).
    slot_start = np.zeros(len(cap) + 1, dtype=np.int64)
    np.cumsum(cap, out=slot_start[1:])
    slot_rows = np.full(int(slot_start[-1]), TOKEN_PAD, dtype=np.uint32)
    within = np.arange(len(order)) - np.repeat(starts, held)
    slot_rows[np.repeat(slot_start[:-1], held) + within] = rows
    tokens = np.repeat(slot_rows, np.repeat(copy, cap))
    sealed = np.frombuffer(seal_tokens(tokens, clk, seal_key), dtype=np.uint8)
    counts = np.bincount(b_sorted[starts], minlength=bands).astype(np.int64)
    return counts, k_sorted[starts].astype(np.uint64), classes, sealed


class SealedRows(Protocol):
    """A CLK's sealed band keys as `SealedBands` holds them, or read from an upload's file a
    range at a time (client/encoding/sharedfiles.py): `counts` in memory, the rest `Rows`."""

    @property
    def counts(self) -> npt.NDArray[np.int64]: ...
    @property
    def keys(self) -> Rows: ...
    @property
    def classes(self) -> Rows: ...
    @property
    def sealed(self) -> Rows: ...


CHECK_KEYS = 1 << 20  # keys a step of `token_ends` and `check_sealed` (memory: a few arrays)


def token_ends(bands: SealedRows) -> npt.NDArray[np.int64]:
    """Where each band's tokens start in `sealed`, in bytes, and where the last ends ((bands
    + 1,)): `SealedBands.offsets` at the bands' first keys, without an offset a key (read
    CHECK_KEYS classes at a time)."""
    key_ends = np.zeros(len(bands.counts) + 1, dtype=np.int64)
    np.cumsum(bands.counts, out=key_ends[1:])
    out = np.zeros(len(key_ends), dtype=np.int64)
    total, n = 0, len(bands.classes)
    for lo in range(0, n, CHECK_KEYS):
        hi = min(lo + CHECK_KEYS, n)
        cum = total + np.cumsum(sealed_size(bands.classes[lo:hi]))
        i0, i1 = np.searchsorted(key_ends, [lo, hi], side="right")
        out[i0:i1] = cum[key_ends[i0:i1] - lo - 1]
        total = int(cum[-1])
    return out


def check_sealed(bands: SealedRows, where: str) -> None:
    """A CLK's sealed band keys, checked to be one upload's: ValueError naming the field (read
    CHECK_KEYS keys at a time: `bands` may be an upload's file)."""
    counts = np.asarray(bands.counts)
    if counts.ndim != 1 or not len(counts) or (counts < 0).any():
        raise ValueError(f"band_counts ({where}): a count of distinct keys a band")
    n = len(bands.keys)
    if int(counts.sum()) != n or len(bands.classes) != n:
        raise ValueError(
            f"band_keys/classes ({where}): {n} keys and {len(bands.classes)} "
            f"classes for {int(counts.sum())} counted"
        )
    top = max((int(bands.classes[lo : lo + CHECK_KEYS].max()) for lo in range(0, n, CHECK_KEYS)),
              default=0)  # fmt: skip
    if top > MAX_CLASS:
        raise ValueError(f"classes ({where}): {top}; 0 to {MAX_CLASS}")
    if int(token_ends(bands)[-1]) != len(bands.sealed):
        raise ValueError(
            f"sealed ({where}): {len(bands.sealed)} bytes for {n} keys of their classes"
        )
    firsts = np.cumsum(counts)[:-1]  # each band's first key but the first band's
    before = None  # the key before this step's first
    for lo in range(0, n, CHECK_KEYS):
        keys = bands.keys[lo : lo + CHECK_KEYS]
        rising = np.ones(len(keys), dtype=bool)
        rising[1:] = keys[1:] > keys[:-1]
        if before is not None:
            rising[0] = keys[0] > before
        starts = firsts[(firsts >= lo) & (firsts < lo + len(keys))] - lo
        rising[starts] = True
        if lo == 0 and len(keys):
            rising[0] = True
        if not rising.all():
            raise ValueError(f"band_keys ({where}): a band's keys repeat or are out of order")
        before = keys[-1]
