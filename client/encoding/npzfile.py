"""Uncompressed numpy .npz files (`np.savez`'s) read and written a slice at a time, never an
array whole: what keeps a member's memory flat in the record count for a two-server upload,
whose S1 file was about 137 kB a record, now about 40 (client/encoding/sharedfiles.py reads it,
sharedwrite.py writes it). The files are ordinary .npz files: `np.load` reads them.

- `open_npz`: each array of a file as a `Stored`, which reads rows `[lo:hi]` from the file
  (`os.pread`) when sliced; a member stored compressed, in Fortran order or with a header
  this does not parse is read whole (`np.load`'s way), as before;
- `NpzWriter`: arrays written one after the other (`write`), or an array whose length is
  known only at its end appended to piece by piece (`spool`: the pieces go to a temporary
  file beside the .npz, copied into it when the array ends; its .npy header names the
  length).
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
import numpy.typing as npt

READ_BYTES = 16 * 1024 * 1024  # a read of a check's or a copy's pass over a file
_LOCAL_HEADER = 30  # a zip member's local header, before its name and extra field


class Stored:
    """One array of a .npz file, read by rows: `stored[lo:hi]` reads those rows from the file
    (a fresh, read-only array); `len`, `shape`, `dtype`, `ndim`, `nbytes` as an array's."""

    def __init__(
        self, fd: int, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...], where: str
    ) -> None:
        self.fd, self.offset, self.dtype, self.shape, self.where = fd, offset, dtype, shape, where
        self.row_bytes = dtype.itemsize * math.prod(shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> npt.NDArray[Any]:
        lo, hi, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("a stored array is read by ranges of rows")
        hi = max(lo, hi)
        raw = read_at(self.fd, self.offset + lo * self.row_bytes, (hi - lo) * self.row_bytes,
                      self.where)  # fmt: skip
        return np.frombuffer(raw, dtype=self.dtype).reshape((hi - lo, *self.shape[1:]))

    def whole(self) -> npt.NDArray[Any]:
        return self[:]


# An array of an upload's files: in memory, or read from its file by rows (`Stored`).
Rows = Union[npt.NDArray[Any], Stored]  # noqa: UP007 (a runtime alias)


def read_at(fd: int, offset: int, size: int, where: str) -> bytes:
    """`size` bytes of `fd` from `offset` (a short read is a damaged file: ValueError)."""
    parts, got = [], 0
    while got < size:
        chunk = os.pread(fd, min(size - got, 1 << 30), offset + got)
        if not chunk:
            raise ValueError(f"{where}: the file ends early (damaged or truncated)")
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def open_npz(path: Path, f: IO[bytes]) -> dict[str, Rows]:
    """The arrays of the .npz `f` (opened from `path`, kept open by the caller while they
    are read), by name: `Stored` where the member is stored uncompressed in C order, each
    checked against its CRC-32 in one pass of READ_BYTES reads; else read whole. Raises
    ValueError (or zipfile.BadZipFile) for what is not such a file."""
    out: dict[str, Rows] = {}
    with zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name, where = info.filename[:-4], f"{path} ({info.filename})"
            stored = _stored(f, info, where)
            if stored is None:
                with zf.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
            else:
                out[name] = stored
    return out


def _stored(f: IO[bytes], info: zipfile.ZipInfo, where: str) -> Stored | None:
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
        return None
    f.seek(info.header_offset)
    local = f.read(_LOCAL_HEADER)
    if len(local) != _LOCAL_HEADER or local[:4] != b"PK\x03\x04":
        raise ValueError(f"{where}: not a zip member where the file's directory says")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + _LOCAL_HEADER + name_len + extra_len
    f.seek(start)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        return None
    if dtype.hasobject:
        raise ValueError(f"{where}: holds Python objects (pickles are not read)")
    if not shape or (fortran and len(shape) > 1):
        return None
    data = f.tell()
    if data - start + dtype.itemsize * math.prod(shape) != info.file_size:
        raise ValueError(f"{where}: its size does not fit its array's header")
    crc, fd = 0, f.fileno()
    for lo in range(start, start + info.file_size, READ_BYTES):
        crc = zlib.crc32(read_at(fd, lo, min(READ_BYTES, start + info.file_size - lo), where),
                         crc)  # fmt: skip
    if crc != info.CRC:
        raise ValueError(f"{where}: its CRC-32 does not match (the file was changed or damaged)")
    return Stored(fd, data, dtype, tuple(shape), where)


class NpzWriter:
    """An uncompressed .npz written array by array (`np.load` reads it as `np.savez`'s)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "w+b")
        self._zip = zipfile.ZipFile(self._file, "w", zipfile.ZIP_STORED, allowZip64=True)

    def write(self, name: str, array: npt.NDArray[Any]) -> None:
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)

    @contextmanager
    def spool(self, name: str, dtype: npt.DTypeLike) -> Iterator[Spool]:
        """An array appended to in pieces (`Spool.add`, each of rows of one shape), written
        into the file when the block ends (and dropped if it raises)."""
        spool = Spool(self.path.with_name(f".{self.path.name}.{name}.spool"), np.dtype(dtype))
        try:
            yield spool
            spool.file.flush()
            spool.file.seek(0)
            header = {"descr": np.lib.format.dtype_to_descr(spool.dtype), "fortran_order": False,
                      "shape": (spool.rows, *spool.row_shape)}  # fmt: skip
            with self._zip.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                shutil.copyfileobj(spool.file, member, READ_BYTES)
        finally:
            spool.file.close()
            spool.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Finish the file (its directory) and fsync it."""
        self._zip.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abandon(self) -> None:
        """Stop writing (an error: the caller drops the file)."""
        try:
            with suppress(Exception):  # a full disk may fail the directory too
                self._zip.close()
        finally:
            self._file.close()

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


class Spool:
    """The pieces of one array (`NpzWriter.spool`), in a temporary file until it ends."""

    def __init__(self, path: Path, dtype: np.dtype[Any]) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.path, self.dtype, self.file = path, dtype, os.fdopen(fd, "w+b")
        self.rows = 0
        self.row_shape: tuple[int, ...] = ()

    def add(self, piece: npt.NDArray[Any]) -> None:
        if self.rows and piece.shape[1:] != self.row_shape:
            raise ValueError(f"a piece of rows {piece.shape[1:]}, not {self.row_shape}")
        self.row_shape = piece.shape[1:]
        self.file.write(np.ascontiguousarray(piece, dtype=self.dtype).tobytes())
        self.rows += len(piece)


__all__ = ["NpzWriter", "Rows", "Stored", "open_npz", "read_at"]
