"""S1's memory for a run's join and its stream to S2 (docs/performance.md "S1's memory at a
run's start (2026-12-06)"), this checkout beside a baseline's, on the same people.

    nice -n 10 .venv/bin/python benchmarks/twoserver_join_memory.py [--records 3000 3000 1000]
        [--population households] [--seed 1] [--baseline main]

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
bands, shares = [], []
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
print(json.dumps({"tokens": tokens, "peak": peak - held, "file": rss_file() - file0,
                  "hwm": status("VmHWM") - rss0,
                  "sealed": sum(s.sealed.nbytes for m in s1._bands for s in m)}))
"""


def measure(label: str, tree: Path, args: argparse.Namespace, folder: Path) -> dict[str, int]:
    """The worker with `tree`'s code, in a process of its own."""
    spec = json.dumps({"records": args.records, "population": args.population,
                       "seed": args.seed, "folder": str(folder)})  # fmt: skip
    out = subprocess.run([sys.executable, "-c", WORKER, spec], cwd=tree, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)}).stdout  # fmt: skip
    got: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    pairs = got["tokens"]
    mib = {k: v / 2**20 for k, v in got.items()}
    print(f"{label:<22} pairs of tokens {pairs:>12,} ({32 * pairs / 2**20:,.0f} MiB); peak "
          f"traced over the stream {mib['peak']:,.0f} MiB; mapped tokens {mib['sealed']:,.0f} "
          f"MiB, RssFile +{mib['file']:,.0f} MiB after it; peak RSS (VmHWM) over it "
          f"+{mib['hwm']:,.0f} MiB", flush=True)  # fmt: skip
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs=3, default=[3000, 3000, 1000])
    ap.add_argument("--population", default="households")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--baseline", default="main", help="git ref to compare with (default main)")
    add_keep(ap)
    args = ap.parse_args()
    print(f"{args.population}, members of {args.records} records, seed {args.seed}")
    with work_dir("bm-joinmem-", keep=args.keep) as work:
        base = baseline_tree(args.baseline, work, ROOT)
        before = measure(f"baseline ({args.baseline})", base, args, work)
        after = measure("this checkout", ROOT, args, work)
        print("the same pairs of tokens" if before["tokens"] == after["tokens"] else "DIFFERENT")


if __name__ == "__main__":
    main()
