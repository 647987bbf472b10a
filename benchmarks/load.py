"""Load: many members uploading at once, then a run, then everyone fetching results.

    python benchmarks/load.py                                  # 30 members x 100,000 CLKs
    python benchmarks/load.py --members 30 --records 5000      # the whole flow, quicker
    python benchmarks/load.py --records 100000 --no-run        # uploads only, full size

A real `blindmatch serve` process; every member uploads from its own thread and
connection at the same moment, one member starts a run, then all fetch results
at once. Synthetic CLKs with a known truth (benchmarks/knownclks.py) make the
results checkable exactly. Reports throughput of each phase and the server's
resident memory: sampled every 0.1 s (peak per phase) and the kernel's
high-water mark (VmHWM) at the end.

The run compares every pair of members: 30 x 100,000 CLKs is 435 pairs of 10^10,
4.35e12 comparisons - hours on a laptop's cores, minutes on a large machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.faults import Server  # noqa: E402
from benchmarks.knownclks import CLK_BYTES, expected_hits, hits_of, population, write  # noqa: E402
from benchmarks.workdir import add_keep, work_dir  # noqa: E402
from blindmatch.client import MatcherClient  # noqa: E402
from blindmatch.client.encoding.encoded import Encoded  # noqa: E402
from blindmatch.client.remote.retry import RetryPolicy  # noqa: E402

PROJECT = "load"
PATIENT = RetryPolicy(attempts=20, initial_delay=0.2, max_delay=5.0)


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class MemorySampler:
    """The peak resident memory of process `pid` in each phase of the load.

    Sampled every 0.1 s, and once more as a phase begins and as its peak is read: a phase
    shorter than 0.1 s (uploads of 500 CLKs a member) has a peak all the same, where before
    it had none and `peak` raised KeyError.
    """

    pid: int
    phase: str = "start"
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.sample()
            except OSError:
                return

    def sample(self) -> None:
        """Counts the process's memory now towards the current phase's peak."""
        kib = rss_kib(self.pid)
        with self._lock:
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), kib)

    def begin(self, phase: str) -> None:
        """Starts `phase`, its peak at least the memory as it begins."""
        with self._lock:
            self.phase = phase
        self.sample()

    def peak(self, phase: str) -> int:
        """`phase`'s peak in KiB (the current phase sampled once more first)."""
        if phase == self.phase:
            with contextlib.suppress(OSError):
                self.sample()
        with self._lock:
            return self.peaks[phase]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=30)
    parser.add_argument("--records", type=int, default=100_000, help="CLKs per member")
    parser.add_argument("--overlap", type=float, default=0.1, help="share of rows also elsewhere")
    parser.add_argument("--workers", type=int, help="server threads for comparisons")
    parser.add_argument("--no-run", action="store_true", help="stop after the uploads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    add_keep(parser)
    args = parser.parse_args()
    # A --workdir given is the user's (kept); a temporary one is deleted at the end.
    given = contextlib.nullcontext(args.workdir) if args.workdir else None
    with given or work_dir("blindmatch-load-", keep=args.keep) as workdir:
        return bench(args, workdir)


def bench(args: argparse.Namespace, workdir: Path) -> int:
    """The benchmark with its files in `workdir`."""
    names = [f"member{i:02d}" for i in range(args.members)]
    total = args.members * args.records
    print(f"load: {args.members} members x {args.records} CLKs = {total} CLKs, in {workdir}")

    t = time.monotonic()
    datasets = dict(
        zip(names, population(args.members, args.records, args.overlap, args.seed), strict=True)
    )
    encoded: dict[str, Encoded] = {
        n: write(d, workdir / f"{n}.encoded") for n, d in datasets.items()
    }
    print(f"  made the members' encodings in {time.monotonic() - t:.1f}s")

    server = Server(workdir / "data", 0, "bm_admin_load")
    if args.workers:
        server.workers = args.workers
    else:
        import os

        server.workers = os.cpu_count() or 1
    server.start()
    assert server.process is not None
    pid = server.process.pid
    memory = MemorySampler(pid)
    ok = True
    try:
        with MatcherClient(server.target, server.admin_token) as op:
            tokens = op.create_project(PROJECT, names).tokens

        memory.begin("upload")
        barrier = threading.Barrier(len(names))

        def upload(name: str) -> tuple[str, float]:
            with MatcherClient(server.target, tokens[name], retry=PATIENT) as c:
                barrier.wait()
                t0 = time.monotonic()
                reply = c.upload(PROJECT, encoded[name])
                assert reply.sha256 == encoded[name].sha256
                return reply.upload_id, time.monotonic() - t0

        t = time.monotonic()
        with ThreadPoolExecutor(len(names)) as pool:
            acks = list(pool.map(upload, names))
        up_s = time.monotonic() - t
        slowest = max(s for _, s in acks)
        print(
            f"  upload: {len(acks)} concurrent uploads acknowledged in {up_s:.1f}s "
            f"({total / up_s:,.0f} CLKs/s, {total * CLK_BYTES / up_s / 2**20:.0f} MiB/s; "
            f"slowest member {slowest:.1f}s); server peak RSS {mib(memory.peak('upload'))}"
        )
        with MatcherClient(server.target, tokens[names[0]]) as c:
            shown = {m.name: m.record_count for m in c.describe(PROJECT).members}
        lost = [n for n in names if shown[n] != len(datasets[n].subjects)]
        print(f"  acknowledged uploads: {len(acks)}, lost: {len(lost)}")
        ok &= not lost
        if args.no_run:
            return 0 if ok else 1

        memory.begin("run")
        t = time.monotonic()
        with MatcherClient(server.target, tokens[names[0]]) as c:
            run = c.start_run(PROJECT)
            final = list(c.watch_run(PROJECT, run.run_id))[-1]
        run_s = time.monotonic() - t
        sizes = [len(d.subjects) for d in datasets.values()]
        pairs = sum(a * b for i, a in enumerate(sizes) for b in sizes[i + 1 :])
        print(
            f"  run: {final.state} in {run_s:.1f}s, {pairs:,} comparisons "
            f"({pairs / run_s / 1e6:,.0f} M/s), {final.groups} shared subjects; "
            f"server peak RSS {mib(memory.peak('run'))}"
        )
        ok &= final.state == "done"

        memory.begin("results")

        def fetch(name: str) -> tuple[str, set[tuple[int, str]]]:
            with MatcherClient(server.target, tokens[name], retry=PATIENT) as c:
                return name, hits_of(c.results(PROJECT).hits)

        t = time.monotonic()
        with ThreadPoolExecutor(len(names)) as pool:
            got = dict(pool.map(fetch, names))
        res_s = time.monotonic() - t
        truth = expected_hits(datasets)
        wrong = [n for n in names if got[n] != truth[n]]
        hits = sum(len(h) for h in got.values())
        print(
            f"  results: {len(names)} concurrent fetches, {hits:,} hits in {res_s:.1f}s; "
            f"{len(names) - len(wrong)} members' results match the truth, {len(wrong)} do not; "
            f"server peak RSS {mib(memory.peak('results'))}"
        )
        ok &= not wrong
    finally:
        memory.stop()
        hwm = rss_kib(pid, "VmHWM")
        server.stop()
        print(f"  server peak RSS over the whole load (VmHWM): {mib(hwm)}")
        print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
