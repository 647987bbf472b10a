"""`encode --two-server`'s files (ENCODED/twoserver/, client/encoding/sharing.py
`SHARED_FILES`) written without the upload in memory: `write_upload` is `write_shared(folder,
shared_upload(clks, ...))`, but seals each CLK's band keys a range of bands at a time and
appends them to S1's file as it goes (client/encoding/npzfile.py `NpzWriter.spool`). S1's
part is about 137 kB a record (6.9 GB at 50,000 records), which `shared_upload` held whole
with the band keys it sealed (rows x bands x 8 bytes a CLK) and `np.savez` wrote at the end:
638 MB peak for 2,400 records, about 13 GB extrapolated to 50,000. The files are the same
format, the same arrays (`np.load` and `read_shared` read them), made the same way.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

from blindmatch.client.encoding.bandkeys import band_key_ranges
from blindmatch.client.encoding.npzfile import NpzWriter
from blindmatch.client.encoding.sealing import SEAL_KEY_BYTES, seal_range
from blindmatch.client.encoding.sharing import (
    PARTS,
    RECOMMENDED,
    SHARED_FILES,
    BandPlan,
    Clks,
    clk_parts,
    lacking,
    part_positions,
    part_secret,
    popcount_shares,
    popcounts,
    split_shares,
)

# Band keys sealed at a time when writing (rows x bands, at least a band): sealing takes a
# few hundred bytes a key at its peak (`seal_range`'s sort and tokens), so a range of a million
# keys (64 bands at 16,000 records) cost about 590 MB; of 65,536 about 50 MB, and less time (a
# CLK of 50,000 records x 400 bands: 33 s against 62 s; benchmarks/twoserver_upload_memory.py).
WRITE_KEYS = 1 << 16


def write_upload(
    folder: str | Path,
    clks: Clks,
    secret: bytes,
    plan: BandPlan = RECOMMENDED,
    fallback_bits: int = 0,
) -> int:
    """`clks`' two-server upload (`shared_upload`'s arguments) as the three files of
    `write_shared`, in `folder` (made owner-only), each fsynced; the records."""
    parts = clk_parts(clks, fallback_bits)
    if not len(parts[0]):
        raise ValueError("sealed bands: band keys must be (rows, bands), not empty")
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # the shares of S1 and S2 together are the CLKs: owner-only, as they
    seal_key = secrets.token_bytes(SEAL_KEY_BYTES)
    pops = []
    with NpzWriter(folder / SHARED_FILES["s1"]) as s1, NpzWriter(
        folder / SHARED_FILES["s2"]
    ) as s2:  # fmt: skip
        for clk, (name, part) in enumerate(zip(PARTS, parts, strict=False)):
            _write_bands(s1, clk, part, secret, name, plan, seal_key)
            x1, x2 = split_shares(part)
            s1.write(f"shares_{clk}", x1)
            s2.write(f"shares_{clk}", x2)
            pops.append(popcounts(part))
            p1, p2 = popcount_shares(pops[-1], 8 * part.shape[1])
            s1.write(f"popshares_{clk}", p1)
            s2.write(f"popshares_{clk}", p2)
        if fallback_bits:
            s1.write("lacking", lacking(pops[0], pops[1]))
        s2.write("seal_key", np.frombuffer(seal_key, dtype=np.uint8))
    with NpzWriter(folder / SHARED_FILES["combiner"]) as combiner:
        for clk, p in enumerate(pops):
            combiner.write(f"popcounts_{clk}", p)
    return len(parts[0])


def _write_bands(
    s1: NpzWriter, clk: int, part: Clks, secret: bytes, name: str, plan: BandPlan,
    seal_key: bytes,
) -> None:  # fmt: skip
    """One CLK's sealed band keys into S1's file (band_counts_K, band_keys_K, classes_K,
    sealed_K), a range of bands at a time."""
    n = len(part)
    step = max(1, WRITE_KEYS // n)
    positions = part_positions(secret, name, 8 * part.shape[1], plan)
    counts = []
    with s1.spool(f"band_keys_{clk}", "<u8") as keys, s1.spool(
        f"classes_{clk}", np.uint8
    ) as classes, s1.spool(f"sealed_{clk}", np.uint8) as sealed:  # fmt: skip
        for got in band_key_ranges(part, positions, part_secret(secret, name), step):
            c, k, cl, se = seal_range(got, clk, seal_key)
            counts.append(c)
            keys.add(k)
            classes.add(cl)
            sealed.add(se)
    s1.write(f"band_counts_{clk}", np.concatenate(counts))


__all__ = ["WRITE_KEYS", "write_upload"]
