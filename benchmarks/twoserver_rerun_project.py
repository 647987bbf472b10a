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

With `--fail-after N` (a run that fails part-way, docs/protocol.md "A second run over the
same uploads"), the matcher reaches S2 through a gRPC proxy (benchmarks/grpcproxy.py), and
then project `failed`: every member uploads; north runs and S2 is killed (SIGKILL) just
before the first `Prepare` after the matcher kept its N-th pair of members' outcome (the
first batch of the next pair of members; nothing of it evaluated), so the run fails (run 5);
S2 starts again on its port and data dir; north runs again, no member uploading again (run
6: a plain rerun, reusing the N kept pairs of members). Run 6 against run 3 is the resumed
run against the run where everyone uploaded again; its hits.csv must be run 3's.

With `--mid-batch M` as well, S2 is killed at the M-th `Collect` after the matcher kept its
N-th pair of members' outcome instead: S1 and S2 have evaluated that batch (its pairs counted)
and the matcher holds no answer of it, a batch out as a crash leaves one (docs/protocol.md).
S2 starts again on its data dir, which holds the batch's output shares (core/batchkeep.py):
run 6, the plain rerun, resumes the pair of members (docs/protocol.md "A batch cut mid-way,
resumed": the batch asked again by its id, S1 proposing the pairs it has not counted), its
hits.csv run 3's. With `--before`, the smaller member of the cut pair uploads again instead
(timed) and north runs (run 7): what a batch cut mid-way cost before the resume (the upload
drops the pair's journal, so the run proposes all of its pairs again). Each run's bytes are
the matcher's `twoserver.run` audit entry's (C <-> S1, C <-> S2, S1 <-> S2).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import _started, blindmatch, serve
from benchmarks.grpcproxy import proxy
from benchmarks.messy import write_exports
from benchmarks.twoserver_project import SCHEMA, hits, key_file, role_argv
from benchmarks.workdir import add_keep, work_dir

MEMBERS = {"north": "north-police", "south": "south-police", "retail": "retail-bcrp"}


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8_000, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--fail-after",
        type=int,
        default=0,
        metavar="N",
        help="then runs 5-6: a run losing S2 after N pairs of members, resumed",
    )
    ap.add_argument(
        "--mid-batch",
        type=int,
        default=0,
        metavar="M",
        help="with --fail-after: S2 killed at the M-th Collect after that (a batch out)",
    )
    ap.add_argument(
        "--before",
        action="store_true",
        help="with --mid-batch: the cut pair's smaller member uploads again, no resume",
    )
    add_keep(ap)
    args = ap.parse_args()
    with work_dir("bm-tsrerunproj-", keep=args.keep) as work:
        return bench(args, work)


def bench(args: argparse.Namespace, work: Path) -> int:
    """The benchmark in `work` (deleted by `main` afterwards)."""
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
    rows: list[tuple[str, int, int, int, float, float]] = []  # -1: not known (a failed run)
    sent: dict[str, int] = {}  # each run's bytes between the parties (its audit entry)
    s2_argv = [*role_argv(role), "--role", "s2", "--data-dir", str(work / "s2")]
    cut = {"after": args.fail_after, "armed": False, "killed": False, "collects": 0}
    stack = ExitStack()
    s2 = stack.enter_context(_started(s2_argv, "", None))
    s2_at = s2.target

    def before(method: str) -> None:
        """The proxy's hook: kill S2 before the first Prepare after the matcher kept the
        N-th pair of members' outcome of project `failed` (`--mid-batch M`: before the M-th
        Collect after it, S1 and S2 having evaluated that batch)."""
        if method != ("Collect" if args.mid_batch else "Prepare") or not cut["armed"]:
            return
        with sqlite3.connect(f"file:{work / 'matcher' / 'blindmatch.sqlite'}?mode=ro",
                             uri=True) as db:  # fmt: skip
            done = db.execute("SELECT count(*) FROM twoserver_outcomes WHERE project='failed' "
                              "AND pending=0").fetchone()[0]  # fmt: skip
        if done >= cut["after"]:
            cut["collects"] += 1
            if args.mid_batch and cut["collects"] < args.mid_batch:
                return
            cut["armed"], cut["killed"] = False, True
            s2.process.kill()
            s2.process.wait()

    front = proxy(s2_at, before) if args.fail_after else None
    s2_target = front.address if front is not None else s2_at
    with stack, _started(
        [*role_argv(role), "--role", "s1", "--s2", s2_at, "--data-dir", str(work / "s1")],
        "", None,
    ) as s1, serve(work / "matcher", "--two-server-s1", s1.target, "--two-server-s2",
                   s2_target, "--two-server-key-file", str(parties),
                   "--two-server-member-key-file", str(members_key)) as matcher:  # fmt: skip
        admin = {"BLINDMATCH_ADMIN_TOKEN": matcher.admin_token}
        net = ["--server", matcher.target]
        pids = [s.process.pid for s in (s1, s2, matcher)]
        load = os.getloadavg()[0]
        tokens = {}
        for project in ("again", "fresh", "failed")[: 3 if args.fail_after else 2]:
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
            sent[label] = sum(entry["bytes"].values())
            if "resumed" in entry:
                print(f"run {label[:1]} resumed: {entry['resumed']}")
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
            if args.fail_after:
                for name in MEMBERS:
                    upload("failed", name)
                cut["armed"] = True
                alive = [pids[0], pids[2]]  # S1 and the matcher (S2 is killed)
                c0, w0 = sum(cpu_seconds(p) for p in alive), time.perf_counter()
                try:
                    blindmatch("run", "--project", "failed", "--token",
                               tokens["failed"]["north"], "--quiet", *net)  # fmt: skip
                    failure = "(the run did not fail: S2 was not reached after the cut)"
                except RuntimeError as exc:
                    failure = " ".join(str(exc).split())
                wall = time.perf_counter() - w0
                cpu = sum(cpu_seconds(p) for p in alive) - c0
                where = f" at batch {args.mid_batch}" if args.mid_batch else ""
                rows.append((f"5. S2 killed after {args.fail_after} pair(s){where}", -1, -1, -1,
                             wall, cpu))  # fmt: skip
                print(f"run 5's failure: {failure[failure.find('failed:') :]}")
                assert cut["killed"], "S2 was not killed"
                again = [s2_at if a == "127.0.0.1:0" else a for a in s2_argv]  # its port
                s2 = stack.enter_context(_started(again, "", None))
                pids[1] = s2.process.pid
                if front is not None:  # its channel saw S2 go: one that has not
                    front.reconnect()
                if not args.mid_batch or not args.before:
                    sixth = run("6. plain rerun (resumes)", "failed")
                else:
                    sixth = after_upload(failure, run, upload, exports, rows,
                                         lambda: sum(cpu_seconds(p) for p in pids))  # fmt: skip
        except RuntimeError:
            for what, served in (("S1", s1), ("S2", s2), ("matcher", matcher)):
                print(f"--- {what}'s log, the end:", *list(served.log)[-15:], sep="\n")
            raise
        load_after = os.getloadavg()[0]
    sizes = ", ".join(f"{n} {sum(1 for _ in open(exports[o].csv)) - 1:,}"  # noqa: SIM115
                      for n, o in MEMBERS.items())  # fmt: skip
    print(f"records: {sizes} (messy fixture, seed {args.seed}); load average {load:.1f} "
          f"before, {load_after:.1f} after")  # fmt: skip
    print(f"{'run':<34}{'reused':>7}{'pairs':>11}{'links':>8}{'wall s':>8}{'CPU s':>8}"
          f"{'MB':>8}")  # fmt: skip

    def n(x: int) -> str:
        return f"{x:,}" if x >= 0 else "-"

    for label, reused, pairs, links, wall, cpu in rows:
        mb = f"{sent[label] / 1e6:.1f}" if label in sent else "-"
        print(f"{label:<34}{n(reused):>7}{n(pairs):>11}{n(links):>8}{wall:>8.2f}{cpu:>8.2f}"
              f"{mb:>8}")  # fmt: skip
    r2, r3 = rows[1], rows[2]
    print(f"run 2 against run 3: {r2[2] / r3[2]:.2f}x the proposed pairs, {r2[4] / r3[4]:.2f}x "
          f"the wall, {r2[5] / r3[5]:.2f}x the CPU (S1, S2 and the matcher)")  # fmt: skip
    same = second == third
    print(f"run 2's hits.csv are run 3's: {same}")
    if args.fail_after:
        r6 = rows[-1]
        print(f"run {r6[0][0]} against run 3: {r6[2] / r3[2]:.2f}x the proposed pairs, "
              f"{r6[4] / r3[4]:.2f}x the wall, {r6[5] / r3[5]:.2f}x the CPU (S1, S2 and the "
              f"matcher), {sent[r6[0]] / sent[r3[0]]:.2f}x the bytes")  # fmt: skip
        resumed = sixth == third
        print(f"run {r6[0][0]}'s hits.csv are run 3's: {resumed}")
        same = same and resumed
    if front is not None:
        front.stop(grace=None)
    return 0 if same else 1


def after_upload(
    failure: str,
    run: Callable[[str, str], dict[str, list[list[str]]]],
    upload: Callable[[str, str], None],
    exports: dict[str, Any],
    rows: list[tuple[str, int, int, int, float, float]],
    cpu: Callable[[], float],
) -> dict[str, list[list[str]]]:
    """`--before`, after a batch cut mid-way (run 5's `failure` names the pair of members):
    the smaller of the two uploading again (timed, wall; what a cut batch cost before the
    resume), and the run after it (7)."""
    named = re.search(r"(?:journaled every batch|evaluated pairs) of (\w+) and (\w+)", failure)
    if named is None:
        raise RuntimeError(f"run 5's failure names no pair of members: {failure}")
    who = min(named.groups(), key=lambda m: sum(1 for _ in open(exports[MEMBERS[m]].csv)))  # noqa: SIM115
    c0, w0 = cpu(), time.perf_counter()
    upload("failed", who)
    rows.append((f"6. {who} uploads again", -1, -1, -1, time.perf_counter() - w0, cpu() - c0))
    return run(f"7. after {who}'s upload", "failed")


if __name__ == "__main__":
    raise SystemExit(main())
