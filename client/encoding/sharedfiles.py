"""A member's two-server upload read from the files `encode --two-server` wrote
(ENCODED/twoserver/: client/encoding/sharing.py `SHARED_FILES`), a range at a time.

`open_shared` checks the three files hold one upload (as `read_shared` always did, each
refusal naming the file and field) and gives it as `UploadRows`, its arrays read from the
files by ranges of rows (client/encoding/npzfile.py `Stored`) as the parts to S1 and S2 are
made (client/remote/twoserver_parts.py): the member's memory for `upload` stays about flat
in the record count. Before, `read_shared` read every array whole (S1's file alone is about
137 kB a record, 6.9 GB at 50,000 records) and the parts' offsets came on top: 571 MB peak
for 2,400 records, about 12 GB extrapolated to 50,000. `rows_of` gives an upload in memory
(`shared_upload`'s, a query's) the same shape; `load_shared` reads the files whole
(`read_shared`). S1's file holds each CLK's tokens (sealed_K, as `write_shared` writes them
and `encode --two-server` did before 2026-12-06) or its keys' slots' rows (slots_K, as
`encode --two-server` writes them now), sealed as they are read (`sealing.SlotTokens`):
either is read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.npzfile import READ_BYTES, Rows, Stored, open_npz
from blindmatch.client.encoding.sealing import (
    SEAL_KEY_BYTES,
    SealedBands,
    SlotTokens,
    check_sealed,
)
from blindmatch.client.encoding.sharing import (
    SHARED_FILES,
    SharedUpload,
    ToCombiner,
    ToS1,
    ToS2,
)
from blindmatch.client.errors import InputError


@dataclass(frozen=True)
class BandRows:
    """A CLK's sealed band keys (`SealedBands`'s fields), `counts` in memory, the rest
    read by ranges (`sealing.SealedRows`)."""

    counts: npt.NDArray[np.int64]
    keys: Rows
    classes: Rows
    sealed: Rows | SlotTokens


@dataclass(frozen=True)
class UploadRows:
    """A member's two-server upload as its parts are made from it (`upload_parts`): per CLK,
    the sealed band keys, each role's shares and popcount shares (by role, "s1" and "s2"),
    the combiner's popcounts; which records lack the fallback's fields; the seal key."""

    bands: tuple[BandRows | SealedBands, ...]
    shares: dict[str, tuple[Rows, ...]]
    popshares: dict[str, tuple[Rows, ...]]
    popcounts: tuple[Rows, ...]
    lacking: Rows | None
    seal_key: bytes

    def __len__(self) -> int:
        return len(self.popcounts[0])


def rows_of(upload: SharedUpload | UploadRows) -> UploadRows:
    """An upload in memory (`shared_upload`'s) as `UploadRows` (one read from files: as is)."""
    if isinstance(upload, UploadRows):
        return upload
    return UploadRows(
        upload.s1.bands,
        {"s1": upload.s1.shares, "s2": upload.s2.shares},
        {"s1": upload.s1.popcounts, "s2": upload.s2.popcounts},
        upload.combiner.popcounts,
        upload.s1.lacking,
        upload.s2.seal_key,
    )


def row_ranges(array: Rows) -> Iterator[npt.NDArray[Any]]:
    """`array`'s rows, about READ_BYTES at a time (the whole array in memory, a step)."""
    width = max(1, array.nbytes // max(len(array), 1))
    step = max(1, READ_BYTES // width)
    for lo in range(0, len(array), step):
        yield array[lo : lo + step]


@contextmanager
def open_shared(folder: str | Path) -> Iterator[UploadRows]:
    """The upload in `folder` (`encode --two-server`'s ENCODED/twoserver/), checked to be one
    upload, its arrays read from the files by ranges while the block runs: InputError naming
    the file (and field) for one that is missing, damaged, of the older format or of another
    upload."""
    folder = Path(folder)
    with ExitStack() as stack:
        held: dict[str, dict[str, Rows]] = {}
        for role, name in SHARED_FILES.items():
            path = folder / name
            try:
                f = stack.enter_context(open(path, "rb"))
                held[role] = open_npz(path, f)
            except FileNotFoundError:
                raise InputError(
                    f"{path}: not found (`blindmatch encode --two-server` writes it)"
                ) from None
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise InputError(f"{path}: not a two-server upload file ({exc})") from None
        yield _checked(folder, held)


def _as(array: Rows, dtype: npt.DTypeLike) -> Rows:
    """`array` as `dtype`: as it is where it is one (a file's is read whole where not)."""
    want = np.dtype(dtype)
    if isinstance(array, Stored):
        return array if array.dtype == want else array.whole().astype(want)
    return array.astype(want, copy=False)


def _small(array: Rows, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    return np.asarray(array.whole() if isinstance(array, Stored) else array).astype(
        dtype, copy=False
    )


def _checked(folder: Path, held: dict[str, dict[str, Rows]]) -> UploadRows:
    n = len([k for k in held["combiner"] if k.startswith("popcounts_")])
    s1, s2 = held["s1"], held["s2"]
    if "keys_0" in s1 and "band_keys_0" not in s1:
        raise InputError(
            f"{folder / SHARED_FILES['s1']}: keys_0 is the older upload format (a band key a "
            "record, which let S1 see one member's records colliding); this version reads "
            "band_counts_0, band_keys_0, classes_0 and sealed_0: encode again with "
            "`blindmatch encode --two-server`"
        )
    if "seal_key" not in s2:
        raise InputError(
            f"{folder / SHARED_FILES['s2']}: no seal_key (the older upload format): encode "
            "again with `blindmatch encode --two-server`"
        )
    clks = range(n)
    try:
        seal_key = _small(s2["seal_key"], np.uint8).tobytes()
        bands = tuple(_bands(s1, k, seal_key) for k in clks)
        shares = {r: tuple(_as(held[r][f"shares_{k}"], np.uint8) for k in clks)
                  for r in ("s1", "s2")}  # fmt: skip
        popshares = {r: tuple(_as(held[r][f"popshares_{k}"], "<u4") for k in clks)
                     for r in ("s1", "s2")}  # fmt: skip
        pops = tuple(_as(held["combiner"][f"popcounts_{k}"], np.int64) for k in clks)
    except KeyError as exc:
        raise InputError(f"{folder}: the three files do not hold one upload ({exc})") from None
    if len(seal_key) != SEAL_KEY_BYTES:
        raise InputError(f"{folder / SHARED_FILES['s2']}: seal_key of {len(seal_key)} bytes, "
                         f"not {SEAL_KEY_BYTES}")  # fmt: skip
    for k, b in enumerate(bands):
        try:
            check_sealed(b, f"{folder / SHARED_FILES['s1']}, CLK {k}")
            if isinstance(b.sealed, SlotTokens):
                b.sealed.check(len(pops[0]), f"{folder / SHARED_FILES['s1']}, CLK {k}")
        except ValueError as exc:
            raise InputError(str(exc)) from None
    first, second = shares["s1"], shares["s2"]
    every: list[Rows] = [*first, *second, *pops, *popshares["s1"], *popshares["s2"]]
    rows = {len(a) for a in every}
    shapes = [(a.shape, b.shape) for a, b in zip(first, second, strict=True)]
    if not n or len(rows) != 1 or any(a != b for a, b in shapes):
        raise InputError(f"{folder}: the three files do not hold one upload (their sizes differ)")
    lacks = _as(s1["lacking"], bool) if "lacking" in s1 else None
    if (lacks is None) != (n < 2):
        raise InputError(f"{folder}: s1.npz's lacking does not fit its CLKs (encode again)")
    return UploadRows(bands, shares, popshares, pops, lacks, seal_key)


def _bands(s1: dict[str, Rows], k: int, seal_key: bytes) -> BandRows:
    """CLK `k`'s band keys in S1's file: their tokens (sealed_K, as `write_shared` writes
    them), or their slots' rows, sealed as they are read (slots_K, as `encode --two-server`
    writes them since 2026-12-06: `SlotTokens`)."""
    counts = _small(s1[f"band_counts_{k}"], np.int64)
    classes = _as(s1[f"classes_{k}"], np.uint8)
    if f"sealed_{k}" in s1:
        sealed: Rows | SlotTokens = _as(s1[f"sealed_{k}"], np.uint8)
    else:
        sealed = SlotTokens(counts, classes, _as(s1[f"slots_{k}"], "<u4"), k, seal_key)
    return BandRows(counts, _as(s1[f"band_keys_{k}"], "<u8"), classes, sealed)


def load_shared(folder: str | Path) -> SharedUpload:
    """The upload in `folder` read whole into memory (`sharing.read_shared`), checked as
    `open_shared` checks it."""

    def whole(array: Rows | SlotTokens) -> npt.NDArray[Any]:
        return array.whole() if isinstance(array, Stored | SlotTokens) else array

    with open_shared(folder) as up:
        bands = tuple(SealedBands(b.counts, whole(b.keys), whole(b.classes), whole(b.sealed))
                      for b in up.bands)  # fmt: skip
        s1 = ToS1(bands, tuple(map(whole, up.shares["s1"])),
                  tuple(map(whole, up.popshares["s1"])),
                  None if up.lacking is None else whole(up.lacking))  # fmt: skip
        s2 = ToS2(tuple(map(whole, up.shares["s2"])), up.seal_key,
                  tuple(map(whole, up.popshares["s2"])))  # fmt: skip
        return SharedUpload(s1, s2, ToCombiner(tuple(map(whole, up.popcounts))))


__all__ = ["BandRows", "UploadRows", "load_shared", "open_shared", "row_ranges", "rows_of"]
