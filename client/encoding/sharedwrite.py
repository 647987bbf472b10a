"""`encode --two-server`'s files (ENCODED/twoserver/, client/encoding/sharing.py
`SHARED_FILES`) written without the upload in memory: `write_upload` writes what
`write_shared(folder, shared_upload(clks, ...))` would, a range of bands at a time appended to
S1's file as it goes (client/encoding/npzfile.py `NpzWriter.spool`), but S1's band keys
before they are sealed: each key's slots' rows (slots_K, 4 bytes a slot:
`sealing.slot_range`), which `upload` seals under the upload's seal key as it sends them
(`sealing.SlotTokens`), in place of every copy of every slot's token (sealed_K, 16 bytes a
copy). S1 is sent what it was (the tokens' randomness drawn at the upload, not the encode).
A key 2-4 records share took 265 bytes of S1's file (4 slots of 4 copies, its key and class)
and now 25, a key one record holds 41 and now 13: S1's file was 137 kB a record at 2,400
records and 223 kB at 50,000, as more records came to share keys; it is now about 13 bytes a
record and band at most 16, whatever the records (docs/performance.md "Two-server share
files and S1's memory at 20,000 records"). The file stays the member's: it says which of
its records share a band key, what S1 must never see (only `upload`'s parts go to S1).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

from blindmatch.client.encoding.bandkeys import band_key_ranges
from blindmatch.client.encoding.npzfile import NpzWriter
from blindmatch.client.encoding.sealing import SEAL_KEY_BYTES, slot_range
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

# Band keys grouped at a time when writing (rows x bands, at least a band): sealing took a
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
            _write_bands(s1, clk, part, secret, name, plan)
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
    s1: NpzWriter, clk: int, part: Clks, secret: bytes, name: str, plan: BandPlan
) -> None:
    """One CLK's band keys into S1's file before they are sealed (band_counts_K, band_keys_K,
    classes_K, slots_K: `sealing.slot_range`; `upload` seals the slots as it sends them,
    `sealing.SlotTokens`), a range of bands at a time."""
    n = len(part)
    step = max(1, WRITE_KEYS // n)
    positions = part_positions(secret, name, 8 * part.shape[1], plan)
    counts = []
    with s1.spool(f"band_keys_{clk}", "<u8") as keys, s1.spool(
        f"classes_{clk}", np.uint8
    ) as classes, s1.spool(f"slots_{clk}", "<u4") as slots:  # fmt: skip
        for got in band_key_ranges(part, positions, part_secret(secret, name), step):
            c, k, cl, rows = slot_range(got)
            counts.append(c)
            keys.add(k)
            classes.add(cl)
            slots.add(rows)
    s1.write(f"band_counts_{clk}", np.concatenate(counts))


__all__ = ["WRITE_KEYS", "write_upload"]
