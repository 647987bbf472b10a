"""S1's memory for a run's join and its stream to S2 (docs/performance.md "S1's memory at a
run's start (2026-12-06)"), this checkout beside a baseline's, on the same people.

    nice -n 10 .venv/bin/python benchmarks/twoserver_join_memory.py [--records 3000 3000 1000]
        [--population households] [--seed 1] [--s2] [--baseline main]

Members: the `--population`'s first max(`--records`) people, as its three organisations'
exports (benchmarks/twoserver_people.py), each cut to its `--records`, encoded under the
shipped schema (a record-level and a fallback CLK) and made into `encode --two-server`'s
uploads under one secret (the `--seed`'s). S1 (core/twoserver.py `BlockingServer`) holds
them, every upload's keys sorted first (as S1 sorts them when it takes an upload), then
makes what it streams to S2's Expand for a run blocking every pair of members on both CLKs
(rpc/twoserver_peers.py `matches_parts` over `BlockingServer.join`, as `Propose` does;
each message made and dropped, as gRPC sends it). Printed for each checkout, in a process of
its own (`--baseline REF` `git archive`d into the work dir, run through PYTHONPATH): the
pairs of tokens streamed, their bytes (32 a pair), the peak of bytes traced (tracemalloc) over
the stream above what S1 held before it, and how much its resident file pages grew (RssFile:
each upload's tokens are mapped from an unlinked file in the work dir, as S1 holds an upload
past 64 MiB, rpc/twoserver_uploads.py `Spool`; the stream reads most of their pages, which
then count in S1's RSS and peak RSS, VmHWM, though the kernel can drop them), and the peak
RSS over the stream above the RSS before it (VmHWM, reset first: /proc/self/clear_refs).

`--s2`: then S2's side of the same run (docs/performance.md "S2's Expand opens each message
as it comes (2026-12-06)"): S1's stream made again and written to a file in the work dir,
S1 let go (and its freed heap given back, `malloc_trim`), S2 (rpc/twoserver_shares.py
`SharesService`, each member's upload through its `upload`) answers `Expand` with the
messages read back one at a time, as gRPC hands them over, and its replies taken as they
come: the pairs of rows out, the peak of bytes traced and of RSS (VmHWM) over the call above
before it, its wall time, and a SHA-256 of the replies (checked equal between the two
checkouts: S2's outputs bit for bit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, baseline_tree, work_dir

ROOT = Path(__file__).resolve().parent.parent

# In the checkout's own process: argv[1] a JSON of the arguments; prints a JSON line.
WORKER = """
import argparse, hashlib, json, mmap, re, sys, tempfile, tracemalloc
from pathlib import Path
import numpy as np
from benchmarks import twoserver_people
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.matcher.core.twoblocking import Sealed
from blindmatch.matcher.core.twoserver import BlockingServer
from blindmatch.client.remote.twoserver_parts import upload_parts
from blindmatch.matcher.rpc.twoserver_peers import matches_parts
from blindmatch.protos import blindmatch_pb2 as pb
a = json.loads(sys.argv[1])
schema = load_schema(Path("schemas") / "person-uk.json")
plan = sharing.plan_of(schema)
people = argparse.Namespace(population=a["population"], seed=a["seed"],
                            records=max(a["records"]), pad_to=0, decoys="generator",
                            shared_decoys=False, partner_records=0)
loaded = twoserver_people.load(people, schema)
secret = hashlib.sha256(b"twoserver_join_memory %d" % a["seed"]).digest()
bands, shares, s2_parts = [], [], []
for (rows, _people), n in zip(loaded, a["records"], strict=True):
    views = upload_views(schema, rows[:n], secret, NONE)
    up = sharing.shared_upload(np.hstack(views), secret, plan, 8 * views[1].shape[1])
    mapped = []
    for b in up.s1.bands:  # the tokens mapped from an unlinked file, as S1 holds an upload's
        f = tempfile.TemporaryFile(dir=a["folder"])
        f.write(np.ascontiguousarray(b.sealed).tobytes())
        f.flush()
        tokens = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
        mapped.append(Sealed(b.counts, b.keys, b.classes, tokens))
    bands.append(mapped)
    shares.append(up.s1.shares)
    if a["s2"]:  # S2's parts of the upload (its shares and seal key), for its Expand
        s2_parts.append(list(upload_parts(f"m{len(bands)}", "s2", up)))
    del up
s1 = BlockingServer(bands, shares, b"")
for member in s1._bands:
    for clk in member:
        clk.presort()
def rss_file():
    return int(re.search(r"RssFile:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) << 10
def status(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read())[1]) << 10
file0, rss0 = rss_file(), status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:  # VmHWM from here
    fh.write("5")
tracemalloc.start()
held, _ = tracemalloc.get_traced_memory()
tokens = 0
for msg in matches_parts(pb.ProposeRequest(), s1.join(2)):
    tokens += len(msg.tokens_a) // 16
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
got = {"tokens": tokens, "peak": peak - held, "file": rss_file() - file0,
       "hwm": status("VmHWM") - rss0, "sealed": sum(s.sealed.nbytes for m in s1._bands for s in m)}
if a["s2"]:  # S2's Expand over the same stream, read from a file a message at a time
    import ctypes, gc, struct, time
    from blindmatch.matcher.rpc.twoserver_shares import SharesService
    run = pb.ProposeRequest(members=[f"m{k + 1}" for k in range(3)], records=a["records"],
                            fallback=True)
    with tempfile.TemporaryFile(dir=a["folder"]) as fh:
        for msg in matches_parts(run, s1.join(2)):
            raw = msg.SerializeToString()
            fh.write(struct.pack("<Q", len(raw)) + raw)
        del s1, bands, shares, msg, raw
        gc.collect()
        s2 = SharesService("parties-key", "members-key")
        for parts in s2_parts:
            s2.upload(iter(parts))
        del s2_parts, parts
        gc.collect()
        class Ctx:
            def invocation_metadata(self):
                return (("authorization", "Bearer parties-key"),)
        def messages():
            fh.seek(0)
            while head := fh.read(8):
                yield pb.SealedMatches.FromString(fh.read(struct.unpack("<Q", head)[0]))
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # S1's freed heap back to the system first
        out, pairs, rss0 = hashlib.sha256(), 0, status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        tracemalloc.start()
        held, _ = tracemalloc.get_traced_memory()
        t0 = time.perf_counter()
        for reply in s2.Expand(messages(), Ctx()):
            out.update(reply.SerializeToString())
            pairs += len(reply.rows_a) // 4
        wall = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        got.update(s2_peak=peak - held, s2_hwm=status("VmHWM") - rss0, s2_pairs=pairs,
                   s2_out=out.hexdigest(), s2_wall=wall, s2_stream=fh.tell())
print(json.dumps(got))
"""


def measure(label: str, tree: Path, args: argparse.Namespace, folder: Path) -> dict[str, int]:
    """The worker with `tree`'s code, in a process of its own."""
    spec = json.dumps({"records": args.records, "population": args.population,
                       "seed": args.seed, "folder": str(folder), "s2": args.s2})  # fmt: skip
    out = subprocess.run([sys.executable, "-c", WORKER, spec], cwd=tree, check=True,
                         stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)}).stdout  # fmt: skip
    got: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    pairs = got["tokens"]
    mib = {k: v / 2**20 for k, v in got.items() if isinstance(v, int)}
    print(f"{label:<22} pairs of tokens {pairs:>12,} ({32 * pairs / 2**20:,.0f} MiB); peak "
          f"traced over the stream {mib['peak']:,.0f} MiB; mapped tokens {mib['sealed']:,.0f} "
          f"MiB, RssFile +{mib['file']:,.0f} MiB after it; peak RSS (VmHWM) over it "
          f"+{mib['hwm']:,.0f} MiB", flush=True)  # fmt: skip
    if args.s2:
        print(f"{'':<22} S2's Expand over that stream ({got['s2_stream'] / 2**20:,.0f} MiB of "
              f"messages, read from a file one at a time): {got['s2_pairs']:,} pairs of rows out; "
              f"peak traced {mib['s2_peak']:,.0f} MiB; peak RSS (VmHWM) +{mib['s2_hwm']:,.0f} "
              f"MiB; {got['s2_wall']:.1f} s", flush=True)  # fmt: skip
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs=3, default=[3000, 3000, 1000])
    ap.add_argument("--population", default="households")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--s2",
        action="store_true",
        help="also S2's Expand over the same stream (its peak, its outputs' digest)",
    )
    ap.add_argument("--baseline", default="main", help="git ref to compare with (default main)")
    add_keep(ap)
    args = ap.parse_args()
    print(f"{args.population}, members of {args.records} records, seed {args.seed}")
    with work_dir("bm-joinmem-", keep=args.keep) as work:
        base = baseline_tree(args.baseline, work, ROOT)
        before = measure(f"baseline ({args.baseline})", base, args, work)
        after = measure("this checkout", ROOT, args, work)
        print("the same pairs of tokens" if before["tokens"] == after["tokens"] else "DIFFERENT")
        if args.s2:
            same = before["s2_out"] == after["s2_out"]
            print("S2's outputs the same, bit for bit" if same else "S2's outputs DIFFERENT")


if __name__ == "__main__":
    main()
