"""Client side of the two-server design (docs/privacy-design.md, options a and b).

`shared_upload` turns a member's encoded CLKs into what it uploads in that mode: to the
blocking server S1 the keyed band keys and one XOR share of each CLK, to S2 the other share,
to the combiner C the popcounts (matcher/core/twoserver.py runs the three roles; `blindmatch
encode --two-server` writes it as three files, `write_shared`, and `blindmatch two-server
upload` sends each role its part over gRPC, client/remote/twoserver.py). Its primitives:

- `band_positions` and `band_keys` (client/encoding/bandkeys.py): which bit positions each
  blocking band samples, drawn from the project secret, and each record's keyed band keys,
  equal exactly when two records agree on every position of the band;
- `split_shares`: a CLK as two XOR shares, each uniformly random on its own (one for each
  of the two non-colluding servers);
- `seal_bands`: a CLK's band keys as S1 receives them, each band's distinct keys once
  (`SealedBands`), each with the member's rows holding it as tokens only S2 can open (AES-256
  under a key made for this upload, which only S2 receives; padded to a size class of 1, 4,
  16, ... rows, each row in as many copies, at least two). S1 joins the keys across members
  and forwards the matched keys' tokens in pairs, a fresh copy for each pair, all bands
  shuffled together;
  S2 opens them into the candidate pairs (matcher/core/twoserver.py). S1 never learns which
  records hold a key nor which of one member's records share one, and S2 opens each token
  once, so it cannot tell which pairs came from one band's key either
  (docs/privacy-design.md, "Sealed band keys: S1 sees only cross-member equalities").

Bits follow the matcher's convention (core/blocking.py): bit p of a CLK is bit p % 64 of its
64-bit little-endian word p // 64.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.bandkeys import band_keys, band_positions
from blindmatch.client.encoding.schema import MAX_BAND_BITS, LinkageSchema
from blindmatch.client.encoding.sealing import (  # noqa: F401 (re-exported: `sharing.X`)
    CLASS_BASE,
    MAX_CLASS,
    MAX_COPIES,
    MIN_COPIES,
    SEAL_KEY_BYTES,
    TOKEN_BYTES,
    TOKEN_PAD,
    TOKEN_TAG,
    SealedBands,
    check_sealed,
    copies,
    seal_bands,
    seal_tokens,
    sealed_size,
    size_class,
    slots,
)

Clks = npt.NDArray[np.uint8]
PopShares = npt.NDArray[np.uint32]

PART_LABEL = b"blindmatch two-server part "


def split_shares(clks: Clks) -> tuple[Clks, Clks]:
    """(x1, x2) with x1 ^ x2 == clks: x1 uniformly random (from the OS's generator), so each
    share alone says nothing about the CLKs."""
    x = np.ascontiguousarray(clks, dtype=np.uint8)
    x1 = np.frombuffer(secrets.token_bytes(x.size), dtype=np.uint8).reshape(x.shape)
    return x1.copy(), x ^ x1


def popcounts(clks: Clks) -> npt.NDArray[np.int64]:
    """Each CLK's number of set bits."""
    return np.bitwise_count(np.ascontiguousarray(clks)).sum(axis=1).astype(np.int64)


# matcher/core/fallback.py's LACKING_RATIO (tests/test_twoserver.py checks they agree): a
# record lacks the left-out fields when its fallback CLK is nearly as full as its first.
LACKING_RATIO = 0.88


def lacking(first: npt.NDArray[np.int64], second: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Each record lacks the fallback's left-out fields (core/fallback.py's rule, from the
    two CLKs' popcounts): what a member tells S1."""
    out: npt.NDArray[np.bool_] = (first > 0) & (second >= LACKING_RATIO * first)
    return out


def popcount_shares(pops: npt.NDArray[np.int64], width_bits: int) -> tuple[PopShares, PopShares]:
    """(p1, p2) with p1 ^ p2 == pops: p1 uniform on the width's popcount bits
    (width_bits.bit_length(), the link-bit circuit's inputs), from the OS's generator."""
    p = np.asarray(pops, dtype=np.uint32)
    mask = np.uint32((1 << width_bits.bit_length()) - 1)
    r = np.frombuffer(secrets.token_bytes(4 * p.size), dtype="<u4").astype(np.uint32)
    r = r.reshape(p.shape) & mask
    return r, r ^ p


@dataclass(frozen=True)
class BandPlan:
    """Keyed blocking of one CLK: `bands` bands of `bits` positions each (the schema's
    `blindmatch.twoserver`, docs/schema.md)."""

    bits: int
    bands: int

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= MAX_BAND_BITS or self.bands < 1:
            raise ValueError(
                f"keyed blocking: {self.bits} bits x {self.bands} bands (1 to {MAX_BAND_BITS} "
                "bits, at least one band)"
            )


def plan_of(schema: LinkageSchema) -> BandPlan:
    """The schema's keyed blocking (`blindmatch.twoserver`), or the recommended one."""
    if schema.twoserver is None:
        return RECOMMENDED
    return BandPlan(*schema.twoserver)


# docs/privacy-design.md, "Recommendation": recall 0.999 of the pairs at Dice >= 0.8 on
# realistic encodings at 10^5-10^6 records a member, 1.1-1.2% of cross pairs candidates.
RECOMMENDED = BandPlan(bits=20, bands=1600)
PARTS = ("record", "fallback")  # the CLKs of an upload: record-level, then the fallback CLK


def part_secret(secret: bytes, part: str) -> bytes:
    """Each CLK of an upload gets band positions and band keys of its own."""
    return hmac.new(secret, PART_LABEL + part.encode(), hashlib.sha256).digest()


def part_positions(
    secret: bytes, part: str, width_bits: int, plan: BandPlan
) -> npt.NDArray[np.int32]:
    """The bands of one CLK: every position of it is in the pool (members cannot agree on a
    data-dependent pool without sharing data; the informative-bits pool of
    benchmarks/keyedblocking.py leaves 10-20% fewer candidates). Kept for the process's
    next upload under the same secret (a session's queries: drawing them is most of a
    one-record upload's cost); read-only."""
    return _positions(secret, part, width_bits, plan)


@functools.lru_cache(maxsize=4)
def _positions(secret: bytes, part: str, width_bits: int, plan: BandPlan) -> npt.NDArray[np.int32]:
    out = band_positions(part_secret(secret, part), range(width_bits), plan.bits, plan.bands)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class ToS1:
    """What the blocking server S1 receives: per CLK, the sealed band keys (`seal_bands`), the
    first XOR shares, and the first XOR shares of each record's popcount (`popcount_shares`)."""

    bands: tuple[SealedBands, ...]
    shares: tuple[Clks, ...]
    popcounts: tuple[PopShares, ...] = ()
    # With a fallback CLK: each record lacks the fallback's left-out fields (`lacking`), what
    # S1 blocks the two CLKs by; the combiner never learns it.
    lacking: npt.NDArray[np.bool_] | None = None


@dataclass(frozen=True)
class ToS2:
    """What S2 receives: per CLK, the second XOR shares of the CLKs and of their popcounts; and
    the key that opens the upload's sealed rows (fresh for this upload, never S1's)."""

    shares: tuple[Clks, ...]
    seal_key: bytes
    popcounts: tuple[PopShares, ...] = ()


@dataclass(frozen=True)
class ToCombiner:
    """Per CLK, each record's popcount: kept by the member; the combiner receives only how
    many records there are (client/remote/twoserver.py), the in-process Dice oracle of the
    tests reads them."""

    popcounts: tuple[npt.NDArray[np.int64], ...]


@dataclass(frozen=True)
class SharedUpload:
    """A member's upload in the two-server mode, split by recipient; CLK 0 is the record-level
    CLK, CLK 1 (when the schema has `blindmatch.fallback`) the fallback CLK."""

    s1: ToS1
    s2: ToS2
    combiner: ToCombiner

    def __len__(self) -> int:
        return len(self.combiner.popcounts[0])


def clk_parts(clks: Clks, fallback_bits: int) -> list[Clks]:
    """An upload's CLKs ((rows, bytes), the fallback CLK's `fallback_bits` last) as the
    record-level CLK and, with a fallback, the fallback CLK (`PARTS`), each contiguous."""
    x = np.ascontiguousarray(clks, dtype=np.uint8)
    if x.ndim != 2 or not x.shape[1]:
        raise ValueError("shared upload: CLKs must be (rows, bytes)")
    if fallback_bits % 8 or not 0 <= fallback_bits // 8 < x.shape[1]:
        raise ValueError(
            f"shared upload: a fallback CLK of {fallback_bits} bits in {8 * x.shape[1]}"
        )
    cut = x.shape[1] - fallback_bits // 8
    return [np.ascontiguousarray(p) for p in [x[:, :cut]] + ([x[:, cut:]] if fallback_bits else [])]


def shared_upload(
    clks: Clks, secret: bytes, plan: BandPlan = RECOMMENDED, fallback_bits: int = 0
) -> SharedUpload:
    """A member's encoded CLKs (`EncodeResult.clks` as (rows, bytes); with `fallback_bits`, the
    fallback CLK last, as `encode_csv` lays it out) as the two-server upload: per CLK, band keys
    from the member secret under `plan`, each band's distinct keys once with their rows sealed
    (`seal_bands`), to S1, two fresh XOR shares to S1 and S2, the seal key to S2, popcounts
    to C. Every member of a project uses the same secret and plan, so their bands agree."""
    parts = clk_parts(clks, fallback_bits)
    seal_key = secrets.token_bytes(SEAL_KEY_BYTES)
    keys, first, second, pops, pop1, pop2 = [], [], [], [], [], []
    for clk, (name, part) in enumerate(zip(PARTS, parts, strict=False)):
        positions = part_positions(secret, name, 8 * part.shape[1], plan)
        keys.append(
            seal_bands(band_keys(part, positions, part_secret(secret, name)), clk, seal_key)
        )
        x1, x2 = split_shares(part)
        first.append(x1)
        second.append(x2)
        pops.append(popcounts(part))
        p1, p2 = popcount_shares(pops[-1], 8 * part.shape[1])
        pop1.append(p1)
        pop2.append(p2)
    lacks = lacking(pops[0], pops[1]) if fallback_bits else None
    return SharedUpload(
        ToS1(tuple(keys), tuple(first), tuple(pop1), lacks),
        ToS2(tuple(second), seal_key, tuple(pop2)),
        ToCombiner(tuple(pops)),
    )


def record_keys(
    clks: Clks, secret: bytes, plan: BandPlan = RECOMMENDED, fallback_bits: int = 0
) -> tuple[npt.NDArray[np.uint64], ...]:
    """Per CLK, each record's band keys ((rows, bands)): what `seal_bands` seals, and what S1
    held before it did (the tests' and benchmarks' reference for the candidate set)."""
    x = np.ascontiguousarray(clks, dtype=np.uint8)
    cut = x.shape[1] - fallback_bits // 8
    parts = [x[:, :cut]] + ([x[:, cut:]] if fallback_bits else [])
    out = []
    for name, part in zip(PARTS, parts, strict=False):
        part = np.ascontiguousarray(part)
        positions = part_positions(secret, name, 8 * part.shape[1], plan)
        out.append(band_keys(part, positions, part_secret(secret, name)))
    return tuple(out)


# Under this many records a member's S2 view (each candidate pair's count of shared bands)
# re-identified over 1% of a household-like member with 50 known pairs where it was blocked
# against a member of its own size: 1.7-4.7% at 1,000-2,000 records, 0.71-1.25% at 3,000; at
# 4,000 every run stayed under it (0.35-0.73%, five runs), at 5,000 too (0.28-0.42%, three);
# S2's counts read four ways, fresh keys each run (docs/privacy.md, "Two-server mode"). Two
# such members are no longer blocked (S1's cap, below); blocked against a larger member, a
# small one lost less: 0.47-0.89% with 50 known pairs (500-3,000 records against 6,000-20,000,
# `WARNED` below; docs/privacy-design.md "A small member against a larger one").
SMALL_MEMBER = 4_000
# S1 compares a pair of members of at most this many pairs without blocking, so that S2
# counts no shared band (matcher/core/exhaustive.py `DEFAULT_PAIRS`, S1's default; the client
# does not import the matcher: tests/test_twoserver_exhaustive.py checks they agree).
UNBLOCKED_PAIRS = 16_000_000
# And a pair whose smaller member has under SMALL_MEMBER records, up to this many pairs (S1's
# default --small-member-pairs, `SHIPPED_SMALL_PAIRS` there; checked to agree as above).
UNBLOCKED_SMALL_PAIRS = 64_000_000
# The blocked case that remains, measured (docs/privacy-design.md "A small member against a
# larger one"): what the warning quotes.
WARNED = (
    "on household-like members of 500-3,000 records blocked against members of 6,000-20,000 "
    "re-identified 0.47-0.89% of records with 50 known pairs (10 runs)"
)


def small_member_warning(records: int) -> str | None:
    """What `encode --two-server` says of an upload small enough for S2's view to leak where
    it is blocked: with a partner small enough it is not (S1's default cap), with a larger
    one it is (the member cannot know its partners' sizes when it encodes), and what S2's
    view of that blocked case re-identified (`WARNED`)."""
    if records >= SMALL_MEMBER:
        return None
    partner = max(UNBLOCKED_PAIRS, UNBLOCKED_SMALL_PAIRS) // max(records, 1)
    return (
        f"weaker privacy: a two-server upload of {records:,} records (under {SMALL_MEMBER:,}): "
        f"S1 compares it with a member of up to {partner:,} records without blocking (every "
        "pair through the circuit; S2 counts no shared bands: S1's default --small-member-pairs "
        f"{UNBLOCKED_SMALL_PAIRS:,}), but with a larger member it is blocked, and S2 sees each "
        f"candidate pair's count of shared bands, which {WARNED} (under the 1% target, not far "
        "under it; docs/privacy.md). Run `blindmatch privacy-check --mode two-server` on this "
        "export before uploading"
    )


SHARED_FOLDER = "twoserver"  # inside an ENCODED folder: `encode --two-server` writes it
SHARED_FILES = {"s1": "s1.npz", "s2": "s2.npz", "combiner": "combiner.npz"}


def write_shared(folder: str | Path, upload: SharedUpload) -> None:
    """The upload as three files, one a recipient (numpy .npz, no pickles): s1.npz
    (band_counts_K, band_keys_K, classes_K, sealed_K: `SealedBands`; shares_K, for each CLK K),
    s2.npz (shares_K, seal_key), combiner.npz (popcounts_K). (`encode --two-server` writes
    slots_K in place of sealed_K, sealed as `upload` sends them: client/encoding/
    sharedwrite.py; `read_shared` reads either.)"""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # the shares of S1 and S2 together are the CLKs: owner-only, as they
    clks = range(len(upload.combiner.popcounts))
    s1: dict[str, npt.NDArray[np.generic]] = {}
    for k in clks:
        b = upload.s1.bands[k]
        s1 |= {f"band_counts_{k}": b.counts, f"band_keys_{k}": b.keys,
               f"classes_{k}": b.classes, f"sealed_{k}": b.sealed,
               f"shares_{k}": upload.s1.shares[k]}  # fmt: skip
    arrays: dict[str, dict[str, npt.NDArray[np.generic]]] = {
        "s1": {**s1,
               **{f"popshares_{k}": upload.s1.popcounts[k] for k in clks},
               **({} if upload.s1.lacking is None else {"lacking": upload.s1.lacking})},
        "s2": {**{f"shares_{k}": upload.s2.shares[k] for k in clks},
               **{f"popshares_{k}": upload.s2.popcounts[k] for k in clks},
               "seal_key": np.frombuffer(upload.s2.seal_key, dtype=np.uint8)},
        "combiner": {f"popcounts_{k}": upload.combiner.popcounts[k] for k in clks},
    }  # fmt: skip
    for role, name in SHARED_FILES.items():
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays[role])  # type: ignore[arg-type]


def read_shared(folder: str | Path) -> SharedUpload:
    """The three files `write_shared` wrote, checked to hold one upload (an upload of the
    older format, a band key a record, is refused naming the field: encode again), read whole
    into memory (client/encoding/sharedfiles.py `load_shared`; `open_shared` reads them a
    range at a time, as `blindmatch upload` does)."""
    from blindmatch.client.encoding.sharedfiles import load_shared

    return load_shared(folder)
