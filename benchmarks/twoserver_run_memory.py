"""S1's and S2's memory step by step through a two-server run, beside the uploads' size
(docs/performance.md "S1's memory through a two-server run (2026-12-07)"), this checkout
beside a baseline's, on the same encodings:

    nice -n 10 .venv/bin/python benchmarks/twoserver_run_memory.py [--population 10000]
        [--seed 7] [--baseline main] [--keep]

The households generator's exports (benchmarks/households.py) at `--population`, each member
encoded once with `encode --two-server` (this checkout's code); then for each checkout (the
`--baseline` ref `git archive`d into the work dir with this checkout's built C extensions
copied in, run through PYTHONPATH; then this one) fresh `two-server role` processes (S2, S1)
and a `serve --two-server-s1/-s2` matcher on loopback, a two-server project, each member's
`upload`, and `run`. S1's and S2's resident memory (VmRSS) is read every 0.1 s, each reading
counted in a step: `upload` (each member's), then the run's `propose` (until S1's
`twoserver.run` audit entry: its join, S2's Expand, the proposal), `parts` (its blocks and
batches: from then to the first `twoserver.extras`/`twoserver.reach` entry) and `complete`
(extras and reach batches, to the run's end). Printed: each step's peak RSS for S1 and S2,
and S1's and S2's VmHWM at the end, beside the size of the members' S1 and S2 share files
(the uploads), as ratios, and S1's anonymous RSS (RssAnon: its heap, not the mapped files'
pages); then the baseline's S1 over this checkout's for each, and whether
each member's hits are the same in both (`results`).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, baseline_tree, work_dir

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
STEP_ACTIONS = {"twoserver.run": "parts", "twoserver.extras": "complete",
                "twoserver.reach": "complete"}  # fmt: skip


def _status(pid: int, *keys: str) -> list[float]:
    """Fields of a process's /proc status, MiB (0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return [0.0] * len(keys)
    got = [re.search(rf"{k}:\s+(\d+) kB", status) for k in keys]
    return [int(m.group(1)) / 1024 if m else 0.0 for m in got]


@dataclass
class Sampler:
    """Every 0.1 s, S1's and S2's RSS counted in the step under way (`step`; during a run
    moved on by S1's audit entries)."""

    pids: dict[str, int]
    audit: Path
    step: str = "start"
    peaks: dict[str, dict[str, float]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: bool = False

    def _audit_step(self) -> str | None:
        try:
            db = sqlite3.connect(f"file:{self.audit}?mode=ro", uri=True, timeout=1)
            with closing(db):
                rows = db.execute("SELECT action FROM audit WHERE action IN (?, ?, ?)",
                                  tuple(STEP_ACTIONS)).fetchall()  # fmt: skip
        except sqlite3.Error:
            return None
        steps = [STEP_ACTIONS[a] for (a,) in rows]
        return "complete" if "complete" in steps else ("parts" if steps else None)

    def _loop(self) -> None:
        n = 0
        while not self._stop.wait(0.1):
            n += 1
            if self._running and n % 5 == 0:
                self.step = self._audit_step() or "propose"
            self._count()

    def _count(self) -> None:
        step = self.step
        if step not in self.peaks:
            self.peaks[step] = {}
            self.order.append(step)
        for who, pid in self.pids.items():
            rss, anon, file = _status(pid, "VmRSS", "RssAnon", "RssFile")
            for k, v in ((who, rss), (f"{who} anon", anon), (f"{who} file", file)):
                self.peaks[step][k] = max(self.peaks[step].get(k, 0.0), v)

    def running(self) -> None:
        self.step, self._running = "propose", True

    def __enter__(self) -> Sampler:
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._count()
        self._stop.set()


class Checkout:
    """A checkout's `blindmatch` (its tree first on PYTHONPATH)."""

    def __init__(self, name: str, tree: Path) -> None:
        self.name, self.tree = name, tree
        path = [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "blindmatch", *args]

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(self.argv(*args), cwd=self.tree, env={**self.env, **(env or {})},
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"blindmatch {' '.join(args[:2])}: {done.stderr[-2000:]}")
        return done.stdout

    @contextmanager
    def started(self, *args: str, admin: str = "") -> Iterator[tuple[str, subprocess.Popen[str]]]:
        env = {**self.env, "BLINDMATCH_ADMIN_TOKEN": admin}
        proc = subprocess.Popen(self.argv(*args), cwd=self.tree, env=env, text=True,
                                stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stderr is not None
        port, deadline = None, time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"blindmatch {args[0]} exited {proc.returncode}")
            if m := re.search(r"listening on [\d.]+:(\d+)", line):
                port = int(m.group(1))
        err = proc.stderr
        threading.Thread(target=lambda: [None for _ in err], daemon=True).start()
        try:
            if port is None:
                raise RuntimeError(f"blindmatch {args[0]} did not start")
            yield f"127.0.0.1:{port}", proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def walk(c: Checkout, work: Path, encoded: dict[str, Path]) -> tuple[Sampler, dict[str, str]]:
    """S2, S1 and the matcher of checkout `c`; the members' uploads and the run, sampled."""
    here = work / c.name
    here.mkdir()
    keys = []
    for name in ("combiner.key", "members.key"):
        keys.append(here / name)
        keys[-1].write_text(secrets.token_urlsafe(24) + "\n")
        keys[-1].chmod(0o600)
    role = ["two-server", "role", "--listen", "127.0.0.1:0", "--key-file", str(keys[0]),
            "--member-key-file", str(keys[1])]  # fmt: skip
    admin = "bm_admin_" + secrets.token_urlsafe(16)
    members = list(encoded)
    with (
        c.started(*role, "--role", "s2", "--data-dir", str(here / "s2")) as (s2, p2),
        c.started(*role, "--role", "s1", "--s2", s2, "--data-dir", str(here / "s1")) as (s1, p1),
        c.started("serve", "--data-dir", str(here / "matcher"), "--listen", "127.0.0.1:0",
                  "--two-server-s1", s1, "--two-server-s2", s2, "--two-server-key-file",
                  str(keys[0]), "--two-server-member-key-file", str(keys[1]),
                  admin=admin) as (matcher, _),
        Sampler({"S1": p1.pid, "S2": p2.pid}, here / "s1" / "twoserver-s1.sqlite") as sampler,
    ):  # fmt: skip
        server = ["--server", matcher]
        tokens = here / "tokens"
        c.run("project", "create", "p", "--members", ",".join(members), "--mode",
              "two-server", "--tokens-dir", str(tokens), *server,
              env={"BLINDMATCH_ADMIN_TOKEN": admin})  # fmt: skip
        for m in members:
            sampler.step = f"upload {m}"
            c.run("upload", str(encoded[m]), "--project", "p", "--token-file",
                  str(tokens / f"{m}.token"), *server)  # fmt: skip
        sampler.step = "uploaded"
        time.sleep(0.5)
        sampler.running()
        c.run("run", "--project", "p", "--token-file", str(tokens / f"{members[0]}.token"), *server)
        sampler._running = False
        sampler.step = "after run"
        time.sleep(0.5)
        hwm = {who: _status(pid, "VmHWM")[0] for who, pid in sampler.pids.items()}
        sampler.peaks["VmHWM"] = hwm
        sampler.order.append("VmHWM")
        hits = {}
        for m in members:
            out = here / f"{m}-hits.csv"
            c.run("results", "--project", "p", "--token-file", str(tokens / f"{m}.token"),
                  "--encoded", str(encoded[m]), "--out", str(out), *server)  # fmt: skip
            with open(out, encoding="utf-8") as fh:
                hits[m] = "".join(sorted(fh.readlines()[1:]))
    return sampler, hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--baseline", default="main", help="a git ref; '' for none")
    add_keep(parser)
    args = parser.parse_args()
    with work_dir("s1runmem-", args.keep) as work:
        data = work / "data"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "households.py"), str(data),
                        "--seed", str(args.seed), "--population", str(args.population)],
                       check=True, capture_output=True)  # fmt: skip
        here = Checkout("this checkout", ROOT)
        secret = work / "secret.key"
        here.run("secret", "new", str(secret))
        encoded: dict[str, Path] = {}
        for csv in sorted(data.glob("*.csv")):
            if csv.stem == "truth":
                continue
            encoded[csv.stem] = work / f"{csv.stem}.encoded"
            here.run("encode", str(csv), "--schema", str(SCHEMA), "--secret-file", str(secret),
                     "--mapping", str(data / f"{csv.stem}.toml"), "--out",
                     str(encoded[csv.stem]), "--two-server")  # fmt: skip
        sizes = {w: sum(f.stat().st_size for e in encoded.values() for f in e.rglob(f"{w}*"))
                 / 2**20 for w in ("s1", "s2")}  # fmt: skip
        checkouts = []
        if args.baseline:
            base = baseline_tree(args.baseline, work, ROOT)
            for so in ROOT.glob("matcher/core/*.so"):  # the C extensions, built here
                shutil.copy(so, base / so.relative_to(ROOT))
            checkouts.append(Checkout(args.baseline, base))
        checkouts.append(here)
        results = []
        for c in checkouts:
            started = time.monotonic()
            sampler, hits = walk(c, work, encoded)
            results.append((c, sampler, hits))
            print(f"{c.name}: {time.monotonic() - started:.0f} s", flush=True)
        records = {m: (data / f"{m}.csv").read_text(encoding="utf-8").count("\n") - 1
                   for m in encoded}  # fmt: skip
        print(f"\nhouseholds, {args.population:,} people, seed {args.seed}: "
              + ", ".join(f"{m} {n:,}" for m, n in records.items())
              + f"; uploads' share files S1 {sizes['s1']:,.0f} MiB, S2 {sizes['s2']:,.0f} MiB; "
              f"load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
        names = [c.name for c, _, _ in results]
        print("| step | " + " | ".join(f"S1 MiB ({n}) | S1 anon MiB | S2 MiB" for n in names)
              + (" | S1 baseline / now |" if len(results) == 2 else " |"))  # fmt: skip
        print("|---" * (1 + 3 * len(results) + (len(results) == 2)) + "|")
        for step in results[-1][1].order:
            if step == "start":
                continue
            cells, s1s = [], []
            for _, s, _ in results:
                p = s.peaks.get(step, {})
                s1s.append(p.get("S1", 0.0))
                cells += [
                    f"{p.get('S1', 0.0):,.0f} ({p.get('S1', 0.0) / sizes['s1']:.2f}x)",
                    f"{p.get('S1 anon', 0.0):,.0f}" if "S1 anon" in p else "-",
                    f"{p.get('S2', 0.0):,.0f}",
                ]
            ratio = f" {s1s[0] / s1s[1]:.2f} |" if len(s1s) == 2 and s1s[1] else ""
            print(f"| {step} | " + " | ".join(cells) + " |" + ratio)
        if len(results) == 2:
            same = [m for m in encoded if results[0][2][m] == results[1][2][m]]
            print(f"\nhits the same in both checkouts: {len(same)} of {len(encoded)} members")


if __name__ == "__main__":
    main()
