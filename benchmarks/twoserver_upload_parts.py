"""The sizes of a large member's parts to S1 (client/remote/twoserver_parts.py `_sealed_parts`),
in process, without gRPC and without the rest of the upload:

    nice -n 10 .venv/bin/python benchmarks/twoserver_upload_parts.py [--records 500000]
        [--bands 2] [--key-bits 18] [--seed 1]

One CLK's band keys of `--records` records in `--bands` bands, each drawn from
2^`--key-bits` values (18 at 500,000 records: about 175 bytes a record a band, 87 MB a
band, near the 107 MB one band of the 500,000-record benchmark's upload, whose message the
roles' 64 MiB limit refused before a band could be cut over parts). Sealed two ways: in
memory (`seal_bands`, the tokens read as sent) and as `encode --two-server`'s file keeps
them (`slot_range`, `SlotTokens`: sealed as sent). Each way: S1's parts made, each taken by
S1's `_sealed_part` as an upload's are; printed, the parts, how many continue a band, the
largest message against PART_BYTES and the 64 MiB limit, and the peak RSS; exit 1 where a
message is over PART_BYTES and a little, or S1's joined bands are not the ones sealed
(the same counts and keys, tokens opening to the same rows).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blindmatch.client.encoding.sealing import (
    SealedRows,
    SlotTokens,
    seal_bands,
    seal_slots,
    slot_range,
    token_ends,
)
from blindmatch.client.encoding.sharedfiles import BandRows
from blindmatch.client.remote import twoserver_parts
from blindmatch.matcher.core.twoblocking import open_tokens
from blindmatch.matcher.rpc import twoserver_uploads
from blindmatch.matcher.rpc.twoserver_channel import MAX_MESSAGE_BYTES
from blindmatch.matcher.rpc.twoserver_spool import Spool

SEAL_KEY = bytes(range(32))
HEADER = 256  # a part's fields besides its keys, classes and tokens, at most


def sent(bands: SealedRows) -> tuple[dict[str, Any], int, int, int]:
    """S1's parts of `bands` taken by S1 as an upload's are: what S1 holds of the CLK, the
    parts, those continuing a band, the largest message's bytes."""
    clk: dict[str, Any] = {"next_band": 0, "band_counts": [], "last_key": None,
           **{f: Spool(None, 1 << 40) for f in ("band_keys", "classes", "sealed")}}  # fmt: skip
    parts = continued = largest = 0
    for p in twoserver_parts._sealed_parts("m", 0, 1024, bands):
        parts, continued = parts + 1, continued + p.band_continued
        largest = max(largest, p.ByteSize())
        twoserver_uploads._sealed_part(p, clk, f"part {parts}")
    return clk, parts, continued, largest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--bands", type=int, default=2)
    ap.add_argument("--key-bits", type=int, default=18)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    keys = rng.integers(0, 1 << args.key_bits, (args.records, args.bands)).astype(np.uint64)
    counts, distinct, classes, slot_rows = slot_range(keys)
    tokens = seal_slots(slot_rows, classes, 0, SEAL_KEY)
    want = open_tokens(SEAL_KEY, 0, tokens.reshape(-1, 16), args.records, "want")
    del tokens
    ok = True
    for way in ("in memory", "from slots"):
        if way == "in memory":
            bands: SealedRows = seal_bands(keys, 0, SEAL_KEY)
        else:
            bands = BandRows(counts, distinct, classes,
                             SlotTokens(counts, classes, slot_rows, 0, SEAL_KEY))  # fmt: skip
        t = time.perf_counter()
        clk, parts, continued, largest = sent(bands)
        seconds = time.perf_counter() - t
        band_bytes = twoserver_parts.KEY_BYTES * counts + np.diff(token_ends(bands))
        joined = twoserver_uploads._joined(clk, "sealed", np.uint8).reshape(-1, 16)
        rows = open_tokens(SEAL_KEY, 0, joined, args.records, "got")
        same = (np.array_equal(np.concatenate(clk["band_counts"]), counts)
                and np.array_equal(twoserver_uploads._joined(clk, "band_keys", "<u8"), distinct)
                and np.array_equal(rows, want))  # fmt: skip
        under = largest <= twoserver_parts.PART_BYTES + HEADER
        ok = ok and same and under
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"{way}: {args.records:,} records, bands of {band_bytes.min():,} to "
              f"{band_bytes.max():,} bytes ({band_bytes.mean() / args.records:.0f} B a record "
              f"a band); {parts} parts ({continued} continuing a band) in {seconds:.1f} s; "
              f"largest message {largest:,} bytes (PART_BYTES {twoserver_parts.PART_BYTES:,}, "
              f"limit {MAX_MESSAGE_BYTES:,}); S1 joined the same bands: {same}; "
              f"peak RSS {peak:,} MiB")  # fmt: skip
        del bands, clk, joined, rows
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
