"""A query's few rows times a standing partner's matrix, transposed, mod 2^32 (issue 18 (b);
core/standing.py, core/standingquery.py): every product of a query against a standing partner.

`rows_times(vecs, mat)` is vecs mat^T mod 2^32 (`vecs` (r, L) uint32, `mat` (N, L) uint16 or
uint32): each server's D_B and [M_B] products, read once for all of a query's rows. It runs in
the native module (matcher/core/_standing.c, `rows_times`: AVX2 where the CPU has it, chosen
at run time) and falls back to numpy's `einsum` (its integer loop; numpy's integer matmul,
which has no BLAS, is ~3x slower) where that is not built, with the same bits: unsigned 32-bit
arithmetic either way (tests/test_standing.py compares them, the wrap-around included).

`stream_times(seeds, piece, rows, widths, vecs)` is the same product against a matrix that is
the sum of AES-CTR streams (`standing.mask_share`'s, one seed a share): C's M_B from both
servers' seeds, or a server's [M_B] from its own, regenerated `SLICE` records at a time into
buffers that stay in cache, summed and multiplied as they are read (never the whole chunk's
matrix in memory). The stream is `mask_share`'s byte for byte, so the product is the stored
matrix's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from blindmatch.matcher.core import kernel

U32 = npt.NDArray[np.uint32]
SLICE = 32  # records of a regenerated stream at a time: 128 KiB a share at 1,024 bits
_NATIVE = kernel._kernel if kernel.NATIVE and hasattr(kernel._kernel, "rows_times") else None


def native() -> bool:
    """Whether the native `rows_times` is built (numpy's einsum otherwise)."""
    return _NATIVE is not None


def numpy_rows_times(vecs: npt.ArrayLike, mat: npt.ArrayLike, mat2: npt.ArrayLike | None = None,
                     ) -> U32:  # fmt: skip
    """vecs (mat + mat2)^T mod 2^32 by numpy (the fallback, and the native path's reference)."""
    m = np.asarray(mat)
    if mat2 is not None:
        m = m.astype(np.uint32) + np.asarray(mat2, np.uint32)
    v = np.asarray(vecs, np.uint32)
    return np.einsum("nj,ij->in", m.astype(np.uint32, copy=False), v)  # exact mod 2^32


def rows_times(vecs: npt.ArrayLike, mat: npt.ArrayLike, mat2: npt.ArrayLike | None = None,
               path: str = "auto") -> U32:  # fmt: skip
    """(r, N) uint32: vecs (mat + mat2)^T mod 2^32; `mat` uint16 or uint32, `mat2` uint32 or
    None; `path` "auto", "avx2", "generic" (native) or "numpy"."""
    v = np.ascontiguousarray(vecs, dtype=np.uint32)
    m = np.ascontiguousarray(mat)
    if m.dtype not in (np.uint16, np.uint32) or v.ndim != 2 or m.ndim != 2:
        raise ValueError("rows_times: (r, L) uint32 rows times an (N, L) uint16 or uint32 matrix")
    if m.shape[1] != v.shape[1] or (mat2 is not None and np.shape(mat2) != m.shape):
        raise ValueError("rows_times: a matrix whose rows are not the vectors'")
    if path == "numpy" or _NATIVE is None or not len(v) or not len(m):
        return numpy_rows_times(v, m, mat2)
    out = np.empty((len(v), len(m)), np.uint32)
    other = None if mat2 is None else np.ascontiguousarray(mat2, dtype=np.uint32)
    if other is not None:
        m = m.astype(np.uint32, copy=False)
    _NATIVE.rows_times(v, len(v), m, m.itemsize, out, other, path)
    return out


def _streams(seeds: Sequence[bytes], piece: int, at: int = 0) -> list[CipherContext]:
    """Each seed's AES-CTR stream on chunk `piece`, as `standing.mask_share` draws it, from
    its byte `at` (a multiple of 16: the counter block started there)."""
    out = []
    for seed in seeds:
        own = hashlib.sha256(seed + piece.to_bytes(8, "little")).digest()
        start = (at // 16).to_bytes(16, "big")
        out.append(Cipher(algorithms.AES(own), modes.CTR(start)).encryptor())
    return out


def stream_times(seeds: Sequence[bytes], piece: int, rows: int, widths: Sequence[int],
                 vecs: Sequence[npt.ArrayLike], before: int = 0) -> list[U32]:  # fmt: skip
    """Per CLK c, vecs[c] M^T mod 2^32 ((r, rows)) where M is the sum of `seeds`' shares of
    chunk `piece` (`rows` records): `standing.mask_share`'s matrices, regenerated `SLICE`
    records at a time; `before`: the bits a record of the CLKs `mask_share` draws ahead of
    `widths` (a view of the later CLKs: their streams started past those, fallstand)."""
    if len(seeds) not in (1, 2):
        raise ValueError("stream_times: a server's seed, or both (C)")
    if before % 4:
        raise ValueError("stream_times: the CLKs before are whole bytes")
    streams = _streams(seeds, piece, 4 * rows * before)
    most = SLICE * max(widths) * 4
    bufs = [bytearray(most + 15) for _ in seeds]  # (update_into wants a block less a byte)
    zeros = memoryview(bytes(most))
    out = []
    for c, w in enumerate(widths):
        v = np.ascontiguousarray(vecs[c], dtype=np.uint32)
        got = np.empty((len(v), rows), np.uint32)
        for at in range(0, rows, SLICE):
            n = min(SLICE, rows - at)
            size = 4 * n * w
            mats = []
            for stream, buf in zip(streams, bufs, strict=True):
                stream.update_into(zeros[:size], buf)
                mats.append(np.frombuffer(buf, "<u4", count=n * w).reshape(n, w))
            got[:, at : at + n] = rows_times(v, mats[0], mats[1] if len(mats) > 1 else None)
        out.append(got)
    return out


__all__ = ["SLICE", "native", "numpy_rows_times", "rows_times", "stream_times"]
