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

`slot_range` gives a range of bands' keys before they are sealed (each key's slots' rows, 4
bytes a slot), which an upload's file keeps (client/encoding/sharedwrite.py); `SlotTokens`
seals them as `upload` reads them (`seal_slots`): the tokens S1 receives are `seal_bands`'s,
but the file grows with the records, not faster (a key 2-4 records share: 16 tokens, 256
bytes, but 4 slots, 16 bytes).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from blindmatch.client.encoding.npzfile import Rows

Clks = npt.NDArray[np.uint8]
SlotRows = npt.NDArray[np.uint32]

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
    """Each key's slots: CLASS_BASE ** class (a class past MAX_CLASS as MAX_CLASS:
    `check_sealed` refuses it)."""
    out: npt.NDArray[np.int64] = _SLOTS[np.minimum(np.asarray(classes), MAX_CLASS)]
    return out


_SLOTS = np.power(CLASS_BASE, np.arange(MAX_CLASS + 1, dtype=np.int64))  # by class: a look-up


def copies(classes: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """The copies of each of a key's slots: as many as its slots, MIN_COPIES to MAX_COPIES."""
    return np.clip(slots(classes), MIN_COPIES, MAX_COPIES)


def sealed_size(classes: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """The bytes of each key's tokens: slots x copies x TOKEN_BYTES."""
    out: npt.NDArray[np.int64] = _SEALED[np.minimum(np.asarray(classes), MAX_CLASS)]
    return out


_SEALED = TOKEN_BYTES * _SLOTS * np.clip(_SLOTS, MIN_COPIES, MAX_COPIES)  # by class


def size_class(counts: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """The smallest class c with CLASS_BASE ** c >= count, for each count (>= 1)."""
    c = np.zeros(len(counts), dtype=np.uint8)
    cap = np.ones(len(counts), dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    while (short := cap < counts).any():
        c[short] += 1
        cap[short] *= CLASS_BASE
    return c


def random_bytes(size: int) -> bytes:
    """`size` bytes from a cryptographic generator: AES-256 in counter mode under a key drawn
    from the OS's generator for this call (several times faster than the OS's generator for
    the hundreds of MB of a large upload's tokens; as unpredictable)."""
    key = secrets.token_bytes(32)
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(size))


def seal_tokens(rows: npt.NDArray[np.uint32], clk: int, seal_key: bytes) -> bytes:
    """One token a row (TOKEN_PAD for padding): AES-256 (one block each, each with 8 fresh
    random bytes, so no two tokens are alike) under the seal key."""
    # Four little-endian uint32s a block (bytes 0-3 the row, 4 the CLK, 5-7 the tag, 8-15
    # random): column writes, not byte ones (a third of the time; `upload` seals as it sends)
    block = np.empty((len(rows), TOKEN_BYTES // 4), dtype="<u4")
    block[:, 0] = rows
    block[:, 1] = int.from_bytes(bytes([clk]) + TOKEN_TAG, "little")
    block[:, 2:] = np.frombuffer(random_bytes(8 * len(rows)), "<u4").reshape(-1, 2)
    enc = Cipher(algorithms.AES(seal_key), modes.ECB()).encryptor()
    return enc.update(block.data.cast("B")) + enc.finalize()


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
    counts, distinct, classes, slot_rows = slot_range(keys)
    return counts, distinct, classes, seal_slots(slot_rows, classes, clk, seal_key)


def slot_range(
    keys: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64], npt.NDArray[np.uint8], SlotRows]:
    """A range of bands' distinct keys before they are sealed: (counts, keys, classes, and
    each key's slots' rows one key after the other: its rows ascending, then TOKEN_PAD to
    CLASS_BASE ** class). `seal_slots` makes their tokens; an upload's file keeps these
    (client/encoding/sharedwrite.py), 4 bytes a slot, and `upload` seals them as it sends."""
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
    # Each key's slots: its rows, then padding.
    slot_start = np.zeros(len(classes) + 1, dtype=np.int64)
    np.cumsum(slots(classes), out=slot_start[1:])
    slot_rows = np.full(int(slot_start[-1]), TOKEN_PAD, dtype=np.uint32)
    within = np.arange(len(order)) - np.repeat(starts, held)
    slot_rows[np.repeat(slot_start[:-1], held) + within] = rows
    counts = np.bincount(b_sorted[starts], minlength=bands).astype(np.int64)
    return counts, k_sorted[starts].astype(np.uint64), classes, slot_rows


def seal_slots(slot_rows: SlotRows, classes: npt.NDArray[np.uint8], clk: int,
               seal_key: bytes) -> Clks:  # fmt: skip
    """The tokens of keys of `classes` whose slots hold `slot_rows` (`slot_range`): each slot
    repeated (its copies), each copy sealed afresh (`seal_tokens`)."""
    classes = np.asarray(classes)
    tokens = np.repeat(slot_rows, np.repeat(copies(classes), slots(classes)))
    return np.frombuffer(seal_tokens(tokens, clk, seal_key), dtype=np.uint8)


class SealedRows(Protocol):
    """A CLK's sealed band keys as `SealedBands` holds them, or read from an upload's file a
    range at a time (client/encoding/sharedfiles.py): `counts` in memory, the rest `Rows`
    (the tokens, or `SlotTokens` sealing them as they are read)."""

    @property
    def counts(self) -> npt.NDArray[np.int64]: ...
    @property
    def keys(self) -> Rows: ...
    @property
    def classes(self) -> Rows: ...
    @property
    def sealed(self) -> Rows | SlotTokens: ...


CHECK_KEYS = 1 << 20  # keys a step of `token_ends` and `check_sealed` (memory: a few arrays)


def token_ends(bands: SealedRows) -> npt.NDArray[np.int64]:
    """Where each band's tokens start in `sealed`, in bytes, and where the last ends ((bands
    + 1,)): `SealedBands.offsets` at the bands' first keys, without an offset a key (read
    CHECK_KEYS classes at a time)."""
    if isinstance(bands.sealed, SlotTokens):  # computed as it was made
        return bands.sealed.token_ends
    return band_ends(bands.counts, bands.classes, sealed_size)


def band_ends(
    counts: npt.NDArray[np.int64], classes: Rows,
    size: Callable[[npt.NDArray[np.integer]], npt.NDArray[np.int64]],
) -> npt.NDArray[np.int64]:  # fmt: skip
    """Where each band's keys' `size` (by class: `sealed_size`, `slots`) starts, summed over
    the keys before it, and where the last ends ((bands + 1,))."""
    key_ends = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=key_ends[1:])
    out = np.zeros(len(key_ends), dtype=np.int64)
    total, n = 0, len(classes)
    for lo in range(0, n, CHECK_KEYS):
        hi = min(lo + CHECK_KEYS, n)
        cum = total + np.cumsum(size(classes[lo:hi]))
        i0, i1 = np.searchsorted(key_ends, [lo, hi], side="right")
        out[i0:i1] = cum[key_ends[i0:i1] - lo - 1]
        total = int(cum[-1])
    return out


class SlotTokens:
    """A CLK's tokens as an upload's file keeps them (client/encoding/sharedwrite.py): each
    key's slots' rows (`slot_range`, 4 bytes a slot, where its tokens are 16 bytes a copy of
    a slot), sealed under the upload's seal key as they are read (`bands`), afresh each time:
    what S1 receives is as before (`seal_bands`'s). `len`: the tokens' bytes."""

    def __init__(self, counts: npt.NDArray[np.int64], classes: Rows, slot_rows: Rows, clk: int,
                 seal_key: bytes) -> None:  # fmt: skip
        self.classes, self.slot_rows, self.clk, self.seal_key = classes, slot_rows, clk, seal_key
        self.key_ends = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.slot_ends = band_ends(counts, classes, slots)
        self.token_ends = band_ends(counts, classes, sealed_size)

    def __len__(self) -> int:
        return int(self.token_ends[-1])

    def bands(self, lo: int, hi: int) -> Clks:
        """Bands lo..hi's tokens, sealed now."""
        return self.seal(int(self.slot_ends[lo]), int(self.slot_ends[hi]),
                         self.classes[int(self.key_ends[lo]) : int(self.key_ends[hi])])  # fmt: skip

    def seal(self, lo: int, hi: int, classes: npt.NDArray[np.uint8]) -> Clks:
        """The tokens of slots lo..hi, the slots of keys of `classes` (a range of keys: of
        bands, or part of one, `SealedReader`), sealed now."""
        return seal_slots(self.slot_rows[lo:hi], classes, self.clk, self.seal_key)

    def whole(self) -> Clks:
        return self.bands(0, len(self.key_ends) - 1)

    def check(self, records: int, where: str) -> None:
        """The slots fit the keys' classes, each a record's row or padding (ValueError)."""
        if len(self.slot_rows) != int(self.slot_ends[-1]):
            raise ValueError(f"slots ({where}): {len(self.slot_rows)} for keys of "
                             f"{int(self.slot_ends[-1])} slots")  # fmt: skip
        for lo in range(0, len(self.slot_rows), CHECK_KEYS):
            rows = np.asarray(self.slot_rows[lo : lo + CHECK_KEYS])
            if ((rows >= records) & (rows != TOKEN_PAD)).any():
                raise ValueError(f"slots ({where}): a row beyond the {records} records")


class SealedReader:
    """A CLK's sealed band keys read in order a range of keys at a time (`take`), a range
    whole bands or part of one (an upload's part to S1 may cut a band over several:
    client/remote/twoserver_parts.py): where the next range's tokens start (or, kept as
    slots, `SlotTokens`, its slots) kept as it goes, from the classes read with each range,
    so that nothing is read twice and no offset is made a key."""

    def __init__(self, bands: SealedRows) -> None:
        self.bands = bands
        self.key = self.token = self.slot = 0  # the next range's first key, token byte, slot

    def take(self, hi: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8], Clks]:
        """Keys `key`..hi: (keys, classes, tokens), the tokens sealed now where kept as
        slots."""
        b, lo = self.bands, self.key
        classes = np.asarray(b.classes[lo:hi])
        token = self.token + int(sealed_size(classes).sum())
        if isinstance(b.sealed, SlotTokens):
            slot = self.slot + int(slots(classes).sum())
            sealed = b.sealed.seal(self.slot, slot, classes)
            self.slot = slot
        else:
            sealed = np.asarray(b.sealed[self.token : token])
        self.key, self.token = hi, token
        return np.asarray(b.keys[lo:hi]), classes, sealed


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
