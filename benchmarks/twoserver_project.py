"""A project in two-server mode against the same project in CLK mode, through the members'
commands and real processes (docs/operations.md "A project in two-server mode"):

    .venv/bin/python benchmarks/twoserver_project.py [--size 14286] [--seed 3]
        [--schema schemas/person-uk-no-rule.json]

Two `two-server role` processes (S2, S1) and one `serve --two-server-s1/-s2` matcher on
loopback; two members of the messy fixture (benchmarks/messy.py: north-police and
south-police, each holding about 35% of `--size` people, so ~5,000 each at the default),
each encoded once with `encode --two-server`. Then, for a project in each mode, every
member's `upload`, one `run`, every member's `results`, each a `blindmatch` process, timed by
wall clock; the hits.csv files are compared row by row. The figures print beside the CLK
project's as ratios (the anchor: the matcher comparing the CLKs itself).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import ROOT, _started, blindmatch, serve
from benchmarks.messy import write_exports
from benchmarks.workdir import add_keep, work_dir

MEMBERS = {"north": "north-police", "south": "south-police"}
# Without blindmatch.rule by default (the figures of docs/performance.md were taken so);
# `--schema schemas/person-uk.json` runs under the default's rule, which both projects apply
# (a two-server run on the shares of both CLKs, matcher/core/gmwrule.py).
SCHEMA = ROOT / "schemas" / "person-uk-no-rule.json"


def key_file(path: Path) -> Path:
    path.write_text(secrets.token_urlsafe(24) + "\n")
    path.chmod(0o600)
    return path


def timed(*args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = blindmatch(*args, env=env)
    return time.perf_counter() - t0, out


def hits(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return sorted(csv.reader(f))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=14_286, help="people (each org holds ~35%%)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--schema", type=Path, default=SCHEMA, help="the members' schema")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="projects in each mode, alternating; each step's best is shown",
    )
    add_keep(ap)
    args = ap.parse_args()
    with work_dir("bm-tsproject-", keep=args.keep) as work:
        return bench(args, work)


def bench(args: argparse.Namespace, work: Path) -> int:
    """The benchmark in `work` (deleted by `main` afterwards)."""
    exports = write_exports(work / "exports", seed=args.seed, size=args.size)
    secret = work / "linkage.secret"
    blindmatch("secret", "new", str(secret))
    encoded, records = {}, {}
    for name, org in MEMBERS.items():
        encoded[name] = work / f"{name}.encoded"
        took, _ = timed("encode", str(exports[org].csv), "--schema", str(args.schema),
                        "--secret-file", str(secret), "--mapping", str(exports[org].mapping),
                        "--out", str(encoded[name]), "--two-server", "--quiet")  # fmt: skip
        with open(exports[org].csv, encoding="utf-8") as f:
            records[name] = sum(1 for _ in f) - 1
        print(f"encode --two-server {name}: {records[name]:,} records in {took:.1f} s")
    parties, members_key = key_file(work / "parties.key"), key_file(work / "members.key")
    role = ["two-server", "role", "--key-file", str(parties), "--member-key-file",
            str(members_key), "--listen", "127.0.0.1:0"]  # fmt: skip
    figures: dict[str, dict[str, float]] = {}
    results: dict[str, dict[str, list[list[str]]]] = {}
    with _started([*role_argv(role), "--role", "s2"], "", None) as s2, _started(
        [*role_argv(role), "--role", "s1", "--s2", s2.target], "", None
    ) as s1, serve(work / "matcher", "--two-server-s1", s1.target, "--two-server-s2",
                   s2.target, "--two-server-key-file", str(parties),
                   "--two-server-member-key-file", str(members_key)) as matcher:  # fmt: skip
        admin = {"BLINDMATCH_ADMIN_TOKEN": matcher.admin_token}
        net = ["--server", matcher.target]
        load = os.getloadavg()[0]
        for mode in [m for _ in range(args.repeat) for m in ("clk", "two-server")]:
            project = f"{mode.replace('-', '')}{len(results.get(mode, {})) // len(MEMBERS)}"
            made = json.loads(blindmatch("project", "create", project, "--members",
                                         ",".join(MEMBERS), "--mode", mode, "--json", *net,
                                         env=admin))  # fmt: skip
            tokens = made["tokens"]
            step: dict[str, float] = {"upload": 0.0, "run": 0.0, "results": 0.0}
            clk = ["--clk"] if mode == "clk" else []  # two-server folders to a CLK project
            for name in MEMBERS:
                took, _ = timed("upload", str(encoded[name]), "--project", project, "--token",
                                tokens[name], "--quiet", *clk, *net)  # fmt: skip
                step["upload"] += took
            step["run"], _ = timed("run", "--project", project, "--token", tokens["north"],
                                   "--quiet", *net)  # fmt: skip
            results.setdefault(mode, {})
            for name in MEMBERS:
                out = work / f"{project}-{name}-hits.csv"
                took, _ = timed("results", "--project", project, "--token", tokens[name],
                                "--encoded", str(encoded[name]), "--out", str(out),
                                *net)  # fmt: skip
                step["results"] += took
                results[mode][f"{project}/{name}"] = hits(out)
            step["total"] = sum(step.values())
            best = figures.setdefault(mode, step)
            for k, v in step.items():
                best[k] = min(best[k], v)
        load_after = os.getloadavg()[0]
    n = " x ".join(f"{records[m]:,}" for m in MEMBERS)
    print(
        f"\n{n} records (messy fixture, seed {args.seed}), wall seconds, each step a process, "
        f"best of {args.repeat}; load average {load:.1f} before, {load_after:.1f} after"
    )
    print(f"{'step':<10}{'CLK project':>14}{'two-server':>14}{'ratio':>9}")
    for what in ("upload", "run", "results", "total"):
        a, b = figures["clk"][what], figures["two-server"][what]
        print(f"{what:<10}{a:>14.2f}{b:>14.2f}{b / a:>8.1f}x")
    # The hits of each mode's first project, row by row: a record with two candidates in one
    # score bucket may be linked to the other in two-server mode (the solver sees buckets).
    differ = {}
    for m in MEMBERS:
        in_clk = {tuple(r) for r in results["clk"][f"clk0/{m}"]}
        in_two = {tuple(r) for r in results["two-server"][f"twoserver0/{m}"]}
        differ[m] = (len(in_clk ^ in_two), len(in_two) - 1)
    repeatable = all(
        len({str(v) for k, v in results[mode].items() if k.endswith(f"/{m}")}) == 1
        for mode in results for m in MEMBERS
    )  # fmt: skip
    print("hits.csv rows in one mode's file only: "
          + ", ".join(f"{m} {d} of {n:,}" for m, (d, n) in differ.items())
          + f"; each mode's files the same in every repeat: {repeatable}")  # fmt: skip
    return 0


def role_argv(role: list[str]) -> list[str]:
    from benchmarks.cliflow import BLINDMATCH

    return [*BLINDMATCH, *role]


if __name__ == "__main__":
    raise SystemExit(main())
