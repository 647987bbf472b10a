"""A member's memory for `encode --two-server` and `upload` in a project in two-server mode,
through real processes on loopback (docs/operations.md "A project in two-server mode"):

    nice -n 10 .venv/bin/python benchmarks/twoserver_upload_memory.py [--records 2400,10000]
        [--baseline /tmp/upmem-old] [--no-servers-above 10000] [--seed 3]

For each size: the first N records of the messy fixture's north-police export
(benchmarks/messy.py), encoded with `encode --two-server`; then fresh `two-server role`
processes (S2, S1) and a `serve --two-server-s1/-s2` matcher, a two-server project, and the
member's `upload`. Each `blindmatch` process's peak RSS (its rusage, `ru_maxrss`) and
S1's and S2's (`VmHWM`, read before they stop, once S1 has logged its sort of the upload's
band keys) are printed, with the share files' size and S1's file's (the upload S1 holds),
and the bytes S1 wrote meanwhile (`wchar`, GB: with `--s1-data-dir` its store's files).
`--baseline DIR` runs the same steps with the code of another checkout (`git worktree add
--detach DIR COMMIT`), each step its own processes, printed side by side. Sizes above
`--no-servers-above` skip the servers (S1 peaked at about 310 kB a record taking an upload,
3.1 GB at 10,000 records, before it joined each field's parts as they came; 2.2 GB after,
with the band keys' sort it keeps; 673 MB since it holds the tokens and band keys mapped from
a file, and the baseline's S1 is what grows then: `--baseline-up-to`):
the member's `encode` and, in place of the upload, a process reading the share files as
`upload` does and making every part it would send S1 and S2, not sent (`--parts-only
ENCODED`, with the checkout's own code: `open_shared`, or `read_shared` before it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, work_dir

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk-no-rule.json"
ORG = "north-police"
SHARE = 0.35  # of the fixture's people north-police holds (benchmarks/messy.py)
ADMIN = "bm_admin_" + secrets.token_urlsafe(16)  # the matcher's operator token


@dataclass
class Ran:
    seconds: float
    peak_mb: float
    out: str


def run(tree: Path, *args: str, env: dict[str, str] | None = None) -> Ran:
    """`python -m blindmatch ARGS` with the code of `tree`; its peak RSS (MB) from rusage."""
    return measured([sys.executable, "-m", "blindmatch", *args], tree, env)


def measured(argv: list[str], tree: Path, env: dict[str, str] | None = None) -> Ran:
    """`argv` run in `tree` to its end: its wall seconds, peak RSS (MB, rusage), output."""
    with open(os.devnull, "rb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=tree, stdin=null, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[1:])} ({tree}) exited {proc.returncode}: {out}")
    return Ran(time.perf_counter() - t0, usage.ru_maxrss / 1024, out)


def parts_only(folder: Path) -> int:
    """Read ENCODED/twoserver/ as `upload` does and make every part it sends S1 and S2 (not
    sent): the member's side of an upload without the servers."""
    from blindmatch.client.encoding import sharing
    from blindmatch.client.remote import twoserver_parts

    with ExitStack() as stack:
        try:  # as `upload` reads them: a part at a time
            from blindmatch.client.encoding.sharedfiles import open_shared

            upload: Any = stack.enter_context(open_shared(folder / sharing.SHARED_FOLDER))
        except ImportError:  # the code before it: whole
            upload = sharing.read_shared(folder / sharing.SHARED_FOLDER)
        sent = 0
        for role in ("s1", "s2"):
            for part in twoserver_parts.upload_parts("m", role, upload, None):
                sent += part.ByteSize()
        print(f"{len(upload)} records, {sent:,} bytes of parts")
    return 0


@dataclass
class Server:
    address: str
    proc: subprocess.Popen[str]
    lines: list[str]  # its log (stderr) after the line it listens on, as it comes

    def wait_for(self, text: str, seconds: float = 300) -> bool:
        """Until a line of its log holds `text` (False: not in `seconds`)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(text in line for line in list(self.lines)):
                return True
            time.sleep(0.2)
        return False


@contextmanager
def started(tree: Path, *args: str) -> Iterator[Server]:
    """A `blindmatch` server of `tree` on a free loopback port, stopped afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "blindmatch", *args], cwd=tree,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN})  # fmt: skip
    assert proc.stderr is not None
    try:
        deadline, port = time.monotonic() + 60, None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"blindmatch {args[0]} exited {proc.returncode}")
            if m := re.search(r"listening on [\d.]+:(\d+)", line):
                port = int(m.group(1))
        if port is None:
            raise RuntimeError(f"blindmatch {args[0]} did not start in 60 s")
        drain, lines = proc.stderr, []

        def keep() -> None:
            for line in drain:
                lines.append(line)

        threading.Thread(target=keep, daemon=True).start()
        yield Server(f"127.0.0.1:{port}", proc, lines)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peak_mb(proc: subprocess.Popen[str]) -> float:
    """A running process's peak RSS so far (VmHWM), MB."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wrote_gb(proc: subprocess.Popen[str]) -> float:
    """The bytes a running process has written so far (`wchar` of /proc/PID/io: every
    write call's, to any file, its log and SQLite included), GB."""
    for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1]) / 1e9
    return float("nan")


def key_file(path: Path) -> Path:
    path.write_text(secrets.token_urlsafe(24) + "\n")
    path.chmod(0o600)
    return path


def upload(tree: Path, work: Path, encoded: Path, s1_data_dir: bool = False) -> dict[str, float]:
    """Fresh S2, S1 and matcher of `tree`, a two-server project, the member's upload
    (`s1_data_dir`: S1 keeps what it holds in a data dir, storage/role_store.py)."""
    parties, members = key_file(work / "parties.key"), key_file(work / "members.key")
    role = ["two-server", "role", "--key-file", str(parties), "--member-key-file",
            str(members), "--listen", "127.0.0.1:0"]  # fmt: skip
    with started(tree, *role, "--role", "s2") as s2, started(
        tree, *role, "--role", "s1", "--s2", s2.address,
        *(["--data-dir", str(work / "s1")] if s1_data_dir else []),
    ) as s1, started(tree, "serve", "--data-dir", str(work / "matcher"), "--listen",
                     "127.0.0.1:0", "--two-server-s1", s1.address, "--two-server-s2",
                     s2.address, "--two-server-key-file", str(parties),
                     "--two-server-member-key-file", str(members)) as m:  # fmt: skip
        made = json.loads(run(tree, "project", "create", "p", "--members", "north,south",
                              "--mode", "two-server", "--json", "--server", m.address,
                              env={"BLINDMATCH_ADMIN_TOKEN": ADMIN}).out)  # fmt: skip
        up = run(tree, "upload", str(encoded), "--project", "p", "--token",
                 made["tokens"]["north"], "--server", m.address, "--quiet")  # fmt: skip
        # S1 sorts the upload's band keys after it replies (rpc/twoserver_presort.py): its
        # peak is read once they are sorted, what it holds for the runs with them
        sorted_ = s1.wait_for("band keys (")
        return {"upload": up.peak_mb, "upload_s": up.seconds, "s1": peak_mb(s1.proc),
                "s2": peak_mb(s2.proc), "sorted": float(sorted_),
                "s1_wrote": wrote_gb(s1.proc)}  # fmt: skip


def measure(tree: Path, work: Path, csv_path: Path, mapping: Path, secret: Path,
            servers: bool, s1_data_dir: bool = False) -> dict[str, float]:  # fmt: skip
    encoded = work / "encoded"
    enc = run(tree, "encode", str(csv_path), "--schema", str(SCHEMA), "--secret-file",
              str(secret), "--mapping", str(mapping), "--out", str(encoded), "--two-server",
              "--quiet")  # fmt: skip
    shared = encoded / "twoserver"
    out = {"encode": enc.peak_mb, "encode_s": enc.seconds,
           "files": sum(f.stat().st_size for f in shared.iterdir()) / 1e6,
           "s1_file": (shared / "s1.npz").stat().st_size / 1e6}  # fmt: skip
    if servers:
        out |= upload(tree, work, encoded, s1_data_dir)
    else:
        got = run_parts(tree, encoded)
        out |= {"parts": got.peak_mb, "parts_s": got.seconds}
    return out


def run_parts(tree: Path, encoded: Path) -> Ran:
    """`--parts-only` in a process of its own, with `tree`'s code."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--parts-only", str(encoded)]
    return measured(argv, tree, {"PYTHONPATH": str(tree)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default="2400,10000", help="sizes, comma-separated")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another checkout to compare with")
    ap.add_argument(
        "--baseline-up-to",
        type=int,
        default=10_000,
        help="the baseline at sizes up to this only (its memory grows with them)",
    )
    ap.add_argument(
        "--no-servers-above",
        type=int,
        default=10_000,
        help="above this size, the parts made but not sent (no S1, S2, matcher)",
    )
    ap.add_argument(
        "--s1-data-dir",
        action="store_true",
        help="S1 with a --data-dir (it keeps each upload in its store's file), not without",
    )
    ap.add_argument("--parts-only", type=Path, metavar="ENCODED", help=argparse.SUPPRESS)
    add_keep(ap)
    args = ap.parse_args()
    if args.parts_only:  # the code of the checkout it runs in (cwd), not this file's
        sys.path.insert(0, os.getcwd())
        return parts_only(args.parts_only)
    from benchmarks.messy import write_exports  # imports blindmatch: not for --parts-only

    sizes = [int(s) for s in args.records.split(",")]
    trees = {"new": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    load = os.getloadavg()[0]
    rows = []
    with work_dir("bm-upmem-", keep=args.keep) as work:
        secret = work / "linkage.secret"
        run(ROOT, "secret", "new", str(secret))
        for n in sizes:
            exports = write_exports(
                work / f"exports-{n}", seed=args.seed, size=int(n / SHARE) + 500
            )
            data = work / f"north-{n}.csv"
            with open(exports[ORG].csv, newline="", encoding="utf-8") as f, open(
                data, "w", newline="", encoding="utf-8"
            ) as out:  # fmt: skip
                reader, writer = csv.reader(f), csv.writer(out)
                writer.writerow(next(reader))
                got = 0
                for row in reader:
                    if got == n:
                        break
                    writer.writerow(row)
                    got += 1
            if got < n:
                raise RuntimeError(f"the fixture held {got} records, not {n}")
            servers = n <= args.no_servers_above
            for name, tree in trees.items():
                if name == "baseline" and n > args.baseline_up_to:
                    continue
                sub = work / f"{name}-{n}"
                sub.mkdir()
                try:
                    got_ = measure(
                        tree, sub, data, exports[ORG].mapping, secret, servers, args.s1_data_dir
                    )
                finally:
                    subprocess.run(["rm", "-rf", str(sub)], check=False)
                rows.append((n, name, got_))
                print(f"{n:,} {name}: {got_}", file=sys.stderr, flush=True)
    after = os.getloadavg()[0]
    print(
        f"\nmessy fixture's {ORG}, first N records, seed {args.seed}; peak RSS in MB "
        f"(ru_maxrss; S1, S2: VmHWM); S1 wrote: GB (wchar); load average {load:.1f} "
        f"before, {after:.1f} after" + ("; S1 with a data dir" if args.s1_data_dir else "")
    )
    head = (
        "records",
        "code",
        "files MB",
        "S1's MB",
        "encode MB",
        "encode s",
        "upload MB",
        "upload s",
        "kB/record",
        "S1 MB",
        "S2 MB",
        "S1 wrote",
    )
    print("".join(f"{h:>11}" for h in head))
    for n, name, r in rows:
        member = r.get("upload", r.get("parts", float("nan")))
        took = r.get("upload_s", r.get("parts_s", float("nan")))
        cells = [
            f"{n:,}",
            name,
            f"{r['files']:.0f}",
            f"{r['s1_file']:.0f}",
            f"{r['encode']:.0f}",
            f"{r['encode_s']:.1f}",
            f"{member:.0f}" + ("" if "upload" in r else "*"),
            f"{took:.1f}",
            f"{1000 * member / n:.0f}",
            (f"{r['s1']:.0f}" + ("" if r["sorted"] else "?")) if "s1" in r else "-",
            f"{r['s2']:.0f}" if "s2" in r else "-",
            f"{r['s1_wrote']:.2f}" if "s1_wrote" in r else "-",
        ]
        print("".join(f"{c:>11}" for c in cells))
    if any("parts" in r for _, _, r in rows):
        print("* no servers: the share files read and every part to S1 and S2 made, not sent")
    if any(r.get("sorted") == 0 for _, _, r in rows):
        print("? S1 had not logged its sort of the band keys in 300 s: read before it ended")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
