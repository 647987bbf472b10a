"""A member's two-server upload as the parts each role receives (docs/protocol.md "Two
servers and a combiner"): S1 the first shares, which records lack the fallback's fields and
the sealed band keys (or none: a query's records sent without them); S2 the second shares and
the seal key; the combiner how many records. Each CLK in parts of at most about PART_BYTES a
field (client/remote/twoserver.py `RoleClient.upload` sends them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.sealing import SealedReader, SealedRows, sealed_size, token_ends
from blindmatch.client.encoding.sharedfiles import UploadRows, rows_of
from blindmatch.client.encoding.sharing import SharedUpload
from blindmatch.client.remote.convert import score_rule
from blindmatch.protos import blindmatch_pb2 as pb

ROLES = ("s1", "s2", "combiner")
PART_BYTES = 8 * 1024 * 1024  # a part's keys or shares, well below the roles' message limit
KEY_BYTES = 9  # a sealed band key's bytes besides its tokens: the key (8) and its class (1)
MIN_KEY_BYTES = KEY_BYTES + int(sealed_size(np.zeros(1, np.uint8))[0])  # a key of one record


def upload_parts(
    member: str,
    role: str,
    upload: SharedUpload | UploadRows,
    rule: tuple[float, float, float] | None = None,
    keys: bool = True,
) -> Iterator[pb.SharedPart]:
    """`upload` as the parts `role` receives: S1 first shares (of the CLKs and their popcounts),
    which records lack the fallback's fields, then sealed band keys (band ranges, in parts of no
    rows; not `keys`: none, every part `band_keys_withheld`, a query's records only:
    docs/protocol.md "A query without band keys"); S2 second shares (of both) and the seal key
    (every part); the combiner how many records (no popcount); each CLK in parts of at most
    about PART_BYTES a field. Every part carries the schema's `rule` (None: none), which a run
    applies on the shares of both CLKs where every member's upload carries the same one."""
    wired = score_rule(rule)
    for part in _parts(member, role, upload, keys):
        if wired is not None:
            part.rule.CopyFrom(wired)
        yield part


def part_bytes(part: pb.SharedPart) -> int:
    """The bytes of a part's records (`RoleClient.upload`'s progress counts them): its shares,
    popcounts' shares, which records lack the fallback's fields, and band keys, classes and
    their tokens as sealed; not the few bytes of its other fields."""
    fields = (part.shares, part.popcount_shares, part.lacking, part.band_keys, part.classes,
              part.sealed)  # fmt: skip
    return sum(map(len, fields))


def upload_bytes(role: str, upload: SharedUpload | UploadRows, keys: bool = True) -> int:
    """What `part_bytes` comes to over `upload_parts(..., role, upload, keys=keys)`, known
    before a part is made: the sealed band keys' tokens by `token_ends` (to S1, about three
    times its file: they are sealed as they are sent)."""
    if role == "combiner":
        return 0
    up, total = rows_of(upload), 0
    for clk in range(len(up.popcounts)):
        rows, width = up.shares["s1" if role == "s1" else "s2"][clk].shape
        total += rows * (width + 4)  # the shares, and the popcount's (<u4)
        step = max(1, PART_BYTES // width)
        if role == "s1" and clk == 1 and up.lacking is not None:
            total += sum(-(-(min(lo + step, rows) - lo) // 8) for lo in range(0, rows, step))
        if role == "s1" and keys:
            bands = up.bands[clk]
            total += int(token_ends(bands)[-1]) + KEY_BYTES * int(np.sum(bands.counts))
    return total


def _parts(
    member: str, role: str, upload: SharedUpload | UploadRows, keys: bool
) -> Iterator[pb.SharedPart]:
    if role not in ROLES:
        raise ValueError(f"a role is one of {', '.join(ROLES)}, not {role!r}")
    up = rows_of(upload)  # read from its files a part at a time (`open_shared`), or in memory
    for clk, pops in enumerate(up.popcounts):
        shares = up.shares["s1" if role == "s1" else "s2"][clk]
        width = shares.shape[1]
        bands = up.bands[clk]
        step = max(1, PART_BYTES // width)
        rows = len(pops) if role == "combiner" else len(shares)
        for lo in range(0, rows, step):
            hi = min(lo + step, rows)
            part = pb.SharedPart(member=member, clk=clk, clk_bits=8 * width, rows=hi - lo)
            if role == "s1":
                part.bands = len(bands.counts)
                part.band_keys_withheld = not keys
            if role == "s2":
                part.seal_key = up.seal_key
            if role != "combiner":
                part.shares = _wire(shares[lo:hi], np.uint8)
                part.popcount_shares = _wire(up.popshares[role][clk][lo:hi], "<u4")
            if role == "s1" and clk == 1 and up.lacking is not None:
                bits = np.packbits(up.lacking[lo:hi], bitorder="little")
                part.lacking = bits.tobytes()
            yield part
        if role == "s1" and keys:
            yield from _sealed_parts(member, clk, 8 * width, bands)


def _wire(rows: npt.NDArray[Any], dtype: npt.DTypeLike) -> bytes:
    return np.ascontiguousarray(rows, dtype=dtype).tobytes()


def _sealed_parts(
    member: str, clk: int, clk_bits: int, bands: SealedRows
) -> Iterator[pb.SharedPart]:
    """A CLK's sealed band keys as S1's parts of no rows, each about PART_BYTES of keys,
    classes and tokens, read as it is sent (`SealedReader`): whole bands as many as fit, and
    a band over PART_BYTES cut over several parts at its keys (each after the first
    `band_continued`; one band of 500,000 records' keys is about 107 MB, over the roles'
    64 MiB message limit). No offset a key: whole bands by `token_ends`, the band cut by its
    next keys' classes, as many as could fit."""
    ends = np.concatenate([[0], np.cumsum(bands.counts)]).astype(np.int64)  # each band's first key
    cost = token_ends(bands) + KEY_BYTES * ends  # a part's bytes from key 0 to each band's first
    n, total = len(bands.counts), int(ends[-1])
    read = SealedReader(bands)
    while read.key < total:
        k0 = read.key
        band = int(np.searchsorted(ends, k0, side="right")) - 1
        # The last band ending within PART_BYTES of this part's start (whole bands) ...
        fits = int(np.searchsorted(cost, read.token + KEY_BYTES * k0 + PART_BYTES, "right")) - 1
        if fits > band:
            k1 = int(ends[fits])
        else:  # ... or the keys of this one that fit, at least one: the band is cut
            most = min(int(ends[band + 1]), k0 + PART_BYTES // MIN_KEY_BYTES + 1)
            size = np.cumsum(KEY_BYTES + sealed_size(np.asarray(bands.classes[k0:most])))
            k1 = k0 + max(1, int(np.searchsorted(size, PART_BYTES, side="right")))
        last = int(np.searchsorted(ends, k1, side="left"))  # one past the part's last band
        keys, classes, sealed = read.take(k1)
        yield pb.SharedPart(
            member=member, clk=clk, clk_bits=clk_bits, rows=0, bands=n, band_lo=band,
            band_continued=k0 > int(ends[band]),
            band_counts=(np.minimum(ends[band + 1 : last + 1], k1)
                         - np.maximum(ends[band:last], k0)).tolist(),
            band_keys=_wire(keys, "<u8"), classes=_wire(classes, np.uint8),
            sealed=_wire(sealed, np.uint8),
        )  # fmt: skip


__all__ = ["PART_BYTES", "ROLES", "part_bytes", "upload_bytes", "upload_parts"]
