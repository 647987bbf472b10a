"""A second run of a two-server project through the members' commands and real processes,
reusing what the matcher learned of the unchanged uploads, against the same run where every
member uploaded again (docs/operations.md "One run an upload, and what a second run
reuses"):

    .venv/bin/python benchmarks/twoserver_rerun_project.py [--size 8000] [--seed 3]

S2, S1 (`two-server role --data-dir`) and the matcher (`serve --two-server-s1/-s2`) as
processes on loopback, as benchmarks/twoserver_project.py starts them; three members of the
messy fixture (north-police, south-police, retail-bcrp, each ~35% of `--size` people), each
encoded once with `encode --two-server`. Project `again`: every member uploads and north
runs (run 1); retail uploads again and north runs (run 2: north x south reused). Project
`fresh`: every member uploads and north runs (run 3: what a second run cost before, every
member having uploaded again). Each `run` is a `blindmatch` process timed by wall clock, with
the CPU seconds S1, S2 and the matcher spent meanwhile (/proc); the pairs through the
circuit from the matcher's `twoserver.run` audit entries; the hits.csv of run 2 and run 3
compared row by row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import _started, blindmatch, serve
from benchmarks.messy import write_exports
from benchmarks.twoserver_project import SCHEMA, hits, key_file, role_argv

MEMBERS = {"north": "north-police", "south": "south-police", "retail": "retail-bcrp"}


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8_000, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bm-tsrerunproj-"))
    exports = write_exports(work / "exports", seed=args.seed, size=args.size)
    secret = work / "linkage.secret"
    blindmatch("secret", "new", str(secret))
    encoded = {}
    for name, org in MEMBERS.items():
        encoded[name] = work / f"{name}.encoded"
        blindmatch("encode", str(exports[org].csv), "--schema", str(SCHEMA), "--secret-file",
                   str(secret), "--mapping", str(exports[org].mapping), "--out",
                   str(encoded[name]), "--two-server", "--quiet")  # fmt: skip
    parties, members_key = key_file(work / "parties.key"), key_file(work / "members.key")
    role = ["two-server", "role", "--key-file", str(parties), "--member-key-file",
            str(members_key), "--listen", "127.0.0.1:0"]  # fmt: skip
    rows = []
    with _started([*role_argv(role), "--role", "s2", "--data-dir", str(work / "s2")], "",
                  None) as s2, _started(
        [*role_argv(role), "--role", "s1", "--s2", s2.target, "--data-dir", str(work / "s1")],
        "", None,
    ) as s1, serve(work / "matcher", "--two-server-s1", s1.target, "--two-server-s2",
                   s2.target, "--two-server-key-file", str(parties),
                   "--two-server-member-key-file", str(members_key)) as matcher:  # fmt: skip
        admin = {"BLINDMATCH_ADMIN_TOKEN": matcher.admin_token}
        net = ["--server", matcher.target]
        pids = [s.process.pid for s in (s1, s2, matcher)]
        load = os.getloadavg()[0]
        tokens = {}
        for project in ("again", "fresh"):
            made = json.loads(blindmatch("project", "create", project, "--members",
                                         ",".join(MEMBERS), "--mode", "two-server", "--json",
                                         *net, env=admin))  # fmt: skip
            tokens[project] = made["tokens"]

        def upload(project: str, name: str) -> None:
            blindmatch("upload", str(encoded[name]), "--project", project, "--token",
                       tokens[project][name], "--quiet", *net)  # fmt: skip

        def run(label: str, project: str) -> dict[str, list[list[str]]]:
            c0, w0 = sum(cpu_seconds(p) for p in pids), time.perf_counter()
            blindmatch("run", "--project", project, "--token", tokens[project]["north"],
                       "--quiet", *net)  # fmt: skip
            wall, cpu = time.perf_counter() - w0, sum(cpu_seconds(p) for p in pids) - c0
            lines = blindmatch("audit", "export", "--project", project, *net, env=admin)
            audit = [json.loads(line) for line in lines.splitlines() if line.strip()]
            entry = [e for e in audit if e.get("action") == "twoserver.run"][-1]["detail"]
            rows.append((label, entry["reused"], entry["pairs"], entry["links"], wall, cpu))
            out = {}
            for name in MEMBERS:
                path = work / f"{label[:1]}-{name}.csv"
                blindmatch("results", "--project", project, "--token", tokens[project][name],
                           "--encoded", str(encoded[name]), "--out", str(path), *net)  # fmt: skip
                out[name] = hits(path)
            return out

        try:
            for name in MEMBERS:
                upload("again", name)
            run("1. three members, all new", "again")
            upload("again", "retail")
            second = run("2. retail uploads again (reuse)", "again")
            for name in MEMBERS:
                upload("fresh", name)
            third = run("3. everyone uploaded again", "fresh")
        except RuntimeError:
            for what, served in (("S1", s1), ("S2", s2), ("matcher", matcher)):
                print(f"--- {what}'s log, the end:", *list(served.log)[-15:], sep="\n")
            raise
        load_after = os.getloadavg()[0]
    sizes = ", ".join(f"{n} {sum(1 for _ in open(exports[o].csv)) - 1:,}"  # noqa: SIM115
                      for n, o in MEMBERS.items())  # fmt: skip
    print(f"records: {sizes} (messy fixture, seed {args.seed}); load average {load:.1f} "
          f"before, {load_after:.1f} after")  # fmt: skip
    print(f"{'run':<34}{'reused':>7}{'pairs':>11}{'links':>8}{'wall s':>8}{'CPU s':>8}")
    for label, reused, pairs, links, wall, cpu in rows:
        print(f"{label:<34}{reused:>7}{pairs:>11,}{links:>8,}{wall:>8.2f}{cpu:>8.2f}")
    r2, r3 = rows[1], rows[2]
    print(f"run 2 against run 3: {r2[2] / r3[2]:.2f}x the proposed pairs, {r2[4] / r3[4]:.2f}x "
          f"the wall, {r2[5] / r3[5]:.2f}x the CPU (S1, S2 and the matcher)")  # fmt: skip
    same = second == third
    print(f"run 2's hits.csv are run 3's: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
