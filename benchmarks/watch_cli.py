"""`blindmatch watch` from the shell, in a CLK project (docs/realtime.md "Watching from the
command line"):

    .venv/bin/python benchmarks/watch_cli.py [--size 3000] [--seed 3] [--people 10]
        [--rounds 5] [--idle 20] [--keep]

A matcher on a loopback port in this process; the messy fixture (benchmarks/messy.py): south
(south-police, ~35% of `--size` people) keeps a standing index of all its records but its first
`--people`, which north watches (`blindmatch watch PEOPLE.csv --mapping ... --json`, a process
of its own, as a shell runs it). Measured: from starting the command until the matcher holds
the watch (the command's start-up, encoding and connection); the watch process's CPU seconds
while idle for `--idle` seconds (/proc, Linux); `--rounds` times, south adds the watched people
to its index (`index add`'s call) and then removes them: from the add's return until the last
of their `--people` JSON lines is read from the command's standard output (p50 and max); and
from SIGINT (Ctrl-C) until the command has exited 0 and until the matcher no longer holds
the watch.
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.messy import write_exports
from benchmarks.polling import wait_for
from benchmarks.workdir import add_keep, work_dir
from blindmatch.cli.app import main as cli
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.refs import load_ref_key
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.index import add_to_index, remove_from_index
from blindmatch.matcher.server import create_server

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
ADMIN = secrets.token_urlsafe(24)


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU seconds so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=3000, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--people", type=int, default=10, help="south's records north watches")
    ap.add_argument("--rounds", type=int, default=5, help="times south adds them to its index")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds the watch idles, measured")
    add_keep(ap)
    args = ap.parse_args()
    with work_dir("bm-watchcli-", keep=args.keep) as work:
        return _measure(args, work)


def _measure(args: argparse.Namespace, work: Path) -> int:
    """The benchmark, its files under `work`; 0: every event printed and exit 0 at SIGINT."""
    south = write_exports(work / "exports", seed=args.seed, size=args.size)["south-police"]
    secret_file = work / "linkage.secret"
    cli(["secret", "new", str(secret_file)])
    assert cli(["encode", str(south.csv), "--schema", str(SCHEMA), "--secret-file",
                str(secret_file), "--mapping", str(south.mapping), "--out",
                str(work / "south.encoded"), "--quiet"]) == 0  # fmt: skip
    encoded = read_encoded(work / "south.encoded")
    ids = encoded.read_ids()
    watched, rest = ids[: args.people], ids[args.people :]
    with open(south.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    people = work / "people.csv"
    with open(people, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if r[0] in watched)])
    key, _ = load_ref_key(work / "south.refkey", create=True)

    server = create_server("127.0.0.1:0", work / "matcher", ADMIN, workers=2)
    target = f"127.0.0.1:{server.port}"
    watches = server.realtime.watches
    try:
        with MatcherClient(target, ADMIN) as op:
            tokens = op.create_project("watch", ["north", "south"]).tokens
            op.set_query_limits("watch", allow_watch=True)
        (work / "north.token").write_text(tokens["north"] + "\n")
        south_client = MatcherClient(target, tokens["south"])
        add_to_index(south_client, "watch", encoded, key, rest)
        command = [sys.executable, "-m", "blindmatch", "watch", str(people), "--mapping",
                   str(south.mapping), "--project", "watch", "--schema", str(SCHEMA),
                   "--secret-file", str(secret_file), "--purpose", "case 24/118", "--json",
                   "--quiet", "--server", target, "--token-file",
                   str(work / "north.token")]  # fmt: skip
        lines: list[float] = []  # when each event's line was read
        started = time.perf_counter()
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
            out = proc.stdout
            assert out is not None

            def read() -> None:
                for _ in iter(out.readline, ""):
                    lines.append(time.perf_counter())

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            opened = wait_for(lambda: len(watches) == 1) - started
            cpu0 = cpu_seconds(proc.pid)
            time.sleep(args.idle)
            idle = cpu_seconds(proc.pid) - cpu0
            told = []
            for r in range(1, args.rounds + 1):
                add_to_index(south_client, "watch", encoded, key, watched)
                added = time.perf_counter()
                told.append(wait_for(lambda: len(lines) >= r * args.people) - added)  # noqa: B023
                remove_from_index(south_client, "watch", key, watched)
            stopped = time.perf_counter()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(60)
            exited = time.perf_counter() - stopped
            dropped = wait_for(lambda: len(watches) == 0) - stopped
            reader.join(10)
        south_client.close()
    finally:
        server.stop(grace=None)
    ms = np.asarray(told) * 1000
    print(f"watch of {args.people} people, south's index {len(rest):,} records + them")
    print(f"start to watching (start-up, encoding, connection): {opened:.2f} s")
    print(f"idle {args.idle:g} s: {idle:.2f} CPU s ({idle / args.idle * 60:.2f} CPU s a minute)")
    print(f"index add -> last of its {args.people} lines printed, {args.rounds} rounds: "
          f"p50 {np.percentile(ms, 50):.0f} ms, max {ms.max():.0f} ms")  # fmt: skip
    print(f"events printed: {len(lines)} (expected {args.rounds * args.people})")
    print(f"SIGINT -> exited {code}: {exited * 1000:.0f} ms; -> the matcher holds no watch: "
          f"{dropped * 1000:.0f} ms")  # fmt: skip
    return 0 if code == 0 and len(lines) == args.rounds * args.people else 1


if __name__ == "__main__":
    sys.exit(main())
