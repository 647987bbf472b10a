"""The Dice kernel: which pairs of CLKs reach a threshold, exactly as anonlink decides.

Native code (matcher/core/_kernel.c, built by `pip install`) does the work, with an
AVX-512 VPOPCNTQ path chosen at run time and scalar paths for other CPUs. If
the extension is missing (a failed build), a numpy kernel gives the same
answers, slowly; `NATIVE` says which one is in use.

Same answers as anonlink's `dice_coefficient_accelerated` means: a pair is kept
when |pa - pb| <= int(2 pa (1/t - 1)) (its popcount pre-filter, with t > 0) and
(2 c) / (pa + pb) >= t in float64, where pa, pb are the popcounts and c the
popcount of the AND; a CLK with no bits set scores 0.0 against everything and
is kept only when t <= 0. Scores are bit-for-bit the same floats.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

log = logging.getLogger("blindmatch.matcher")

try:
    from blindmatch.matcher.core import _kernel  # type: ignore[attr-defined]

    NATIVE = True
except ImportError:  # the C extension did not build: numpy does the work
    _kernel = None
    NATIVE = False
    log.warning("blindmatch's native Dice kernel is not built; using the slow numpy kernel")

Clks = npt.NDArray[np.uint8]
Found = tuple[npt.NDArray[np.float64], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]


def paths() -> list[str]:
    """Kernel paths this machine can run, best first ("avx512", "popcnt", "generic", "numpy")."""
    return [*(_kernel.paths() if NATIVE else []), "numpy"]


def _words(a: Clks, b: Clks) -> int:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"CLK arrays must be (n, bytes) of one width, got {a.shape}, {b.shape}")
    if a.shape[1] % 8 or a.shape[1] == 0:
        raise ValueError(f"CLKs of {a.shape[1] * 8} bits: the length must be a multiple of 64")
    return a.shape[1] // 8


def _native_input(x: Clks) -> Clks:
    """C-contiguous and 8-byte aligned (np.memmap rows usually are already)."""
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.ctypes.data % 8:
        x = x.copy()
    return x


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold {threshold} is not in [0, 1]")
    return t


def dice_candidates(
    a: Clks, b: Clks, threshold: float, *, workers: int = 1, path: str = "auto"
) -> Found:
    """Every (i, j) with Dice(a[i], b[j]) >= threshold: (sims, rows of a, rows of b).

    Unordered. `a` and `b` are (n, clk_bytes) uint8 arrays; `workers` threads
    split the rows of `a`; `path` forces a kernel path (see `paths()`).
    """
    words = _words(a, b)
    t = _check_threshold(threshold)
    if path == "numpy" or (path == "auto" and not NATIVE):
        return _numpy_candidates(a, b, t)
    if not NATIVE:
        raise RuntimeError("the native Dice kernel is not built; reinstall with `make install`")
    a, b = _native_input(a), _native_input(b)
    workers = max(1, min(workers, max(len(a), len(b)) // 64 or 1))
    if workers == 1:
        return _unpack(_kernel.dense(a, b, words, t, path))
    # Split the larger side: each thread re-sorts and re-lays out the other.
    split_b = len(b) > len(a)
    bounds = np.linspace(0, len(b) if split_b else len(a), workers + 1).astype(int)

    def part(lo_hi: tuple[int, int]) -> Found:
        lo, hi = lo_hi
        if split_b:
            return _unpack(_kernel.dense(a, b[lo:hi], words, t, path), offset_b=lo)
        return _unpack(_kernel.dense(a[lo:hi], b, words, t, path), offset=lo)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(part, itertools.pairwise(bounds)))
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def _unpack(raw: tuple[bytes, bytes, bytes], offset: int = 0, offset_b: int = 0) -> Found:
    sims = np.frombuffer(raw[0], dtype=np.float64)
    ia = np.frombuffer(raw[1], dtype=np.uint32) + np.uint32(offset)
    ib = np.frombuffer(raw[2], dtype=np.uint32) + np.uint32(offset_b)
    return sims, ia, ib


def dice_pairs(
    a: Clks,
    b: Clks,
    ia: npt.NDArray[np.uint32],
    ib: npt.NDArray[np.uint32],
    threshold: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Of the pairs (a[ia[k]], b[ib[k]]), those reaching the threshold: (sims, positions k)."""
    words = _words(a, b)
    t = _check_threshold(threshold)
    ia = np.ascontiguousarray(ia, dtype=np.uint32)
    ib = np.ascontiguousarray(ib, dtype=np.uint32)
    if len(ia) != len(ib):
        raise ValueError("ia and ib must have one length")
    if not NATIVE:
        pa, pb = popcounts(a)[ia], popcounts(b)[ib]
        both = np.bitwise_count(a[ia] & b[ib]).sum(axis=1, dtype=np.int64)
        sims, keep = _decide(both, pa, pb, t, a.shape[1] * 8)
        k = np.flatnonzero(keep)
        return sims[k], k
    sims, pos = _kernel.pairs(_native_input(a), _native_input(b), words, ia, ib, t)
    return np.frombuffer(sims, dtype=np.float64), np.frombuffer(pos, dtype=np.uint32).astype(
        np.intp
    )


def dice_each(
    a: Clks,
    b: Clks,
    ia: npt.NDArray[np.unsignedinteger],
    ib: npt.NDArray[np.unsignedinteger],
    *,
    path: str = "auto",
) -> npt.NDArray[np.float64]:
    """Dice(a[ia[k]], b[ib[k]]) of every pair, no threshold: 2 |a & b| / (|a| + |b|), 0.0
    where both rows are empty, bit for bit as `solve.dice` of the gathered rows (which is
    the path "numpy", and the fallback without the extension). Native: no rows gathered,
    without the GIL; `path` as `dice_candidates`'s."""
    words = _words(a, b)
    ia = np.ascontiguousarray(ia, dtype=np.uint32)
    ib = np.ascontiguousarray(ib, dtype=np.uint32)
    if len(ia) != len(ib):
        raise ValueError("ia and ib must have one length")
    if path == "numpy" or (path == "auto" and not NATIVE):
        from blindmatch.matcher.core.solve import dice  # (solve imports this module)

        return dice(a[ia], b[ib])
    if not NATIVE:
        raise RuntimeError("the native Dice kernel is not built; reinstall with `make install`")
    out = np.empty(len(ia), dtype=np.float64)
    _kernel.dice_each(_native_input(a), _native_input(b), words, ia, ib, out, path)
    return out


def popcounts(clks: Clks) -> npt.NDArray[np.int64]:
    """Bits set in each CLK."""
    return np.bitwise_count(clks).sum(axis=1, dtype=np.int64)


def _decide(
    both: npt.NDArray[np.int64],
    pa: npt.NDArray[np.int64],
    pb: npt.NDArray[np.int64],
    t: float,
    bits: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """anonlink's test, vectorised: (scores, kept) for broadcastable pa, pb, both."""
    if t > 0:
        delta = np.minimum((2 * pa).astype(np.float64) * (1.0 / t - 1.0), bits).astype(np.int64)
    else:
        delta = np.full_like(pa, bits)
    total = pa + pb
    with np.errstate(divide="ignore", invalid="ignore"):
        sims = np.where(pa > 0, (2 * both).astype(np.float64) / total, 0.0)
    kept = np.where(pa > 0, (np.abs(pa - pb) <= delta) & (sims >= t), not t > 0)
    return sims, kept


def _numpy_candidates(a: Clks, b: Clks, t: float, block: int = 256) -> Found:
    """The fallback: blocks of pairs, popcounts of ANDs with numpy."""
    a64 = np.ascontiguousarray(a).view(np.uint64)
    b64 = np.ascontiguousarray(b).view(np.uint64)
    pa, pb = popcounts(a), popcounts(b)
    bits = a.shape[1] * 8
    out: list[Found] = []
    for i0 in range(0, len(a), block):
        for j0 in range(0, len(b), block * 8):
            xa, xb = a64[i0 : i0 + block], b64[j0 : j0 + block * 8]
            both = np.bitwise_count(xa[:, None, :] & xb[None, :, :]).sum(axis=2, dtype=np.int64)
            sims, kept = _decide(
                both, pa[i0 : i0 + block, None], pb[None, j0 : j0 + block * 8], t, bits
            )
            ii, jj = np.nonzero(kept)
            out.append((sims[ii, jj], (ii + i0).astype(np.uint32), (jj + j0).astype(np.uint32)))
    if not out:
        return np.empty(0), np.empty(0, np.uint32), np.empty(0, np.uint32)
    return (
        np.concatenate([o[0] for o in out]),
        np.concatenate([o[1] for o in out]),
        np.concatenate([o[2] for o in out]),
    )
