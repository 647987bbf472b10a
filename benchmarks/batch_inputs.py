"""What S1 and S2 write before a batch's rounds so that a batch cut during them can be run
again (docs/protocol.md "A batch cut mid-way, resumed"; rpc/twoserver_resume.py
`keep_inputs`): each role's kept inputs (core/batchkeep.py, one file a batch, written and
synced) against the batch's rounds themselves (both servers' `linkbit.Party` in one process,
the anchor), timed in the same run.

    .venv/bin/python benchmarks/batch_inputs.py [--pairs 16384] [--bits 1024] [--batches 5]

Then what S2's keep of inputs holds in memory once it has `MAX_INPUTS` batches (Python's
allocations still held after the puts, tracemalloc), kept in memory as well as on disk
(before) and on disk only (`BatchKeep(memory=False)`, what a role with a data dir makes).

S2's inputs: C's batch to S2 (its setup: a seed and c2, 2 bits an AND gate a pair since the
triples are checked), S1's first message (the rows, the pad's seed, the drop bits, S1's
nonce) and S2's nonce; S1's: C's batch to S1 (a 32-byte seed) and that first message. At
the threshold 0.8 and its three buckets, as a run. Wall-clock time (the write waits on the
disk: fsync) and CPU time, medians over `--batches`; the disk and the machine's load set the
figures, so compare the rows of one run.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, work_dir
from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.batchkeep import MAX_INPUTS, BatchKeep, Kept, pack
from blindmatch.matcher.core.gmwcircuit import circuit
from blindmatch.matcher.core.proposal import run_cutoffs
from blindmatch.matcher.core.twoserver import default_buckets
from blindmatch.protos import blindmatch_pb2 as pb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=16_384, help="pairs a batch")
    ap.add_argument("--bits", type=int, default=1_024, help="CLK bits")
    ap.add_argument("--batches", type=int, default=5, help="batches timed")
    add_keep(ap)
    args = ap.parse_args()
    rng = np.random.default_rng(3)
    cutoffs = run_cutoffs(0.8, default_buckets(0.8))
    c = circuit(args.bits, tuple(cutoffs))
    nbytes = args.bits // 8
    rows = rng.integers(0, 1 << 20, args.pairs, dtype=np.uint32)
    first = pb.RoundMessage(batch="b", rows_a=rows.tobytes(), rows_b=rows.tobytes(),
                            mask=secrets.token_bytes(32), drop=bytes((args.pairs + 7) // 8),
                            run="r", nonce=secrets.token_bytes(32))  # fmt: skip
    times: dict[str, list[tuple[float, float]]] = {"rounds": [], "S1 inputs": [],
                                                   "S2 inputs": []}  # fmt: skip
    sizes: dict[str, int] = {}
    with work_dir("bm-batch-inputs-", args.keep) as folder:
        keeps = {"S1 inputs": BatchKeep(folder / "s1"), "S2 inputs": BatchKeep(folder / "s2")}
        for n in range(args.batches):
            d1 = rng.integers(0, 256, (args.pairs, nbytes), dtype=np.uint8)
            d2 = rng.integers(0, 256, (args.pairs, nbytes), dtype=np.uint8)
            p1 = rng.integers(0, args.bits // 2, args.pairs)
            p2 = rng.integers(0, args.bits // 2, args.pairs)
            dealt = linkbit.deal(c, args.pairs)
            t0, c0 = time.perf_counter(), time.process_time()
            linkbit.compare(d1, d2, (p1, p1), (p2, p2), cutoffs, args.bits, c=c)
            times["rounds"].append((time.perf_counter() - t0, time.process_time() - c0))
            to_s1 = pb.CircuitBatch(batch=f"b{n}", setup=dealt.to_s1, proposed=True)
            to_s2 = pb.CircuitBatch(batch=f"b{n}", setup=dealt.to_s2, proposed=True)
            said = first.SerializeToString()
            made = {
                "S1 inputs": pack(to_s1.SerializeToString(), said),
                "S2 inputs": pack(to_s2.SerializeToString(), said, secrets.token_bytes(32)),
            }
            for name, blob in made.items():
                sizes[name] = len(blob)
                t0, c0 = time.perf_counter(), time.process_time()
                keeps[name].put(Kept(f"b{n}", ("p/a/", "p/b/"), args.pairs, blob))
                times[name].append((time.perf_counter() - t0, time.process_time() - c0))
        held = {memory: _held(folder / f"held-{memory}", memory, to_s2, said, args.pairs)
                for memory in (True, False)}  # fmt: skip
    anchor = statistics.median(t[1] for t in times["rounds"])
    print(f"{args.pairs} pairs a batch, {args.bits} bits, cut-offs {list(cutoffs)}, "
          f"{args.batches} batches")  # fmt: skip
    print("| what | bytes | wall (median) | CPU (median) | CPU against the rounds |")
    print("|---|---|---|---|---|")
    for name, got in times.items():
        wall = statistics.median(t[0] for t in got)
        cpu = statistics.median(t[1] for t in got)
        size = f"{sizes[name]:,}" if name in sizes else "-"
        print(f"| {name} | {size} | {wall * 1e3:.1f} ms | {cpu * 1e3:.1f} ms | "
              f"{cpu / anchor:.3f}x |")  # fmt: skip
    print(f"S2's inputs held in memory after {MAX_INPUTS} batches: "
          f"{held[True] / 1e6:.1f} MB in memory and on disk, "
          f"{held[False] / 1e6:.2f} MB on disk only")  # fmt: skip


def _held(folder: Path, memory: bool, to_s2: pb.CircuitBatch, said: bytes, pairs: int) -> int:
    """Bytes Python still holds after `MAX_INPUTS` batches of S2's inputs are kept (each
    made afresh, as a role receives them, and let go of but for the keep)."""
    keep = BatchKeep(folder, max_batches=MAX_INPUTS, memory=memory)
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for n in range(MAX_INPUTS):
        keep.put(Kept(f"h{n}", ("p/a/", "p/b/"), pairs,
                      pack(to_s2.SerializeToString(), said, secrets.token_bytes(32))))  # fmt: skip
    held = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    assert len(keep.get(f"h{MAX_INPUTS - 1}").shares) > 0  # (read back, on disk only too)
    return held


if __name__ == "__main__":
    main()
