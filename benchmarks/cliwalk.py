"""Walk the documented CLI at scale, as an outside checker would: generate the exports, start
`blindmatch serve` on loopback with its own data dir, then `project create`, `secret new`,
`encode`, `upload`, `project show`, `run`, `results`, `evaluate` against the truth, `index
add`, `query` (one person, then a CSV of 50), `report` -- each command a separate process,
timed by `/usr/bin/time -v`. Prints each command's wall time, CPU (user + system) and peak RSS
as it ends, the matcher's CPU during the step and its peak RSS so far (from /proc), and a
table at the end.

    .venv/bin/python benchmarks/cliwalk.py --population 200000
    .venv/bin/python benchmarks/cliwalk.py --population 200000 --big-population 2860000

`--big-population` also walks a second project of two members from an export of that many
people: the generator's largest organisation (north-police holds 35%: ~1,000,000 records at
2,860,000 people) and its smallest (retail-bcrp, 6%: ~171,600): encode, upload, run, results,
evaluate. Needs GNU time at /usr/bin/time (Debian: `apt-get install time`). Scratch files
live in a work dir deleted at the end (`--keep` to inspect it: each project's hits, the truth
`evaluate` read as `PROJECT-truth.csv`, and its members' ENCODED folders, a member of both
projects' walk folder as `walk-MEMBER.encoded`; what `walkinprocess.py` reads).

    .venv/bin/python benchmarks/cliwalk.py --generator households --population 20000 --two-server

`--two-server` walks a project in two-server mode instead (docs/operations.md "A project in
two-server mode"): S2 and S1 (`two-server role`, each with its own `--data-dir`) and the
matcher (`serve --two-server-s1/-s2`, their combiner) as three processes on loopback,
`project create --mode two-server`, `encode --two-server`, then upload, project show, run,
results and evaluate as above; `query` (one person, then the CSV); no `index add` and no
`report`'s index (a two-server project keeps no standing index). Then a second project,
`--mode clk`, on the same matcher with the same ENCODED folders (upload, run, results,
evaluate), and whether each member's hits are the same in both, and the pairs S1 proposed
for the run (its `twoserver.run` audit entry). Each step prints S1's and S2's CPU and peak RSS
beside the matcher's. `--big-population` then walks the two-server
project of its largest and smallest organisation (encode, upload, run, results, evaluate)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import BLINDMATCH, ROOT, Served, _started, serve
from benchmarks.workdir import add_keep, work_dir

TIME = "/usr/bin/time"
SCHEMA = ROOT / "schemas" / "person-uk.json"
GENERATORS = {"messy": "benchmarks/messy.py", "households": "benchmarks/households.py"}
QUERIES = 50  # people in the CSV that `query` asks about


@dataclass
class Step:
    label: str
    wall: float
    cpu: float
    peak_mib: float
    # each server's (CPU seconds during the step, peak RSS MiB so far): the matcher's, and in
    # two-server mode S1's and S2's
    servers: dict[str, tuple[float, float]]
    said: str = ""  # the command's first line of output


def _server_stats(pid: int) -> tuple[float, float]:
    """The matcher's CPU seconds so far (user + system, its threads included) and its peak
    RSS (VmHWM) in MiB."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
    return cpu, int(hwm.group(1)) / 1024 if hwm else 0.0


def _seconds(clock: str) -> float:
    """`h:mm:ss` or `m:ss.ss`, as GNU time prints the elapsed time."""
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


class Walk:
    def __init__(self, work: Path, served: Served | None) -> None:
        self.work = work
        self.served = served
        self.roles: dict[str, Served] = {}  # S1 and S2, in two-server mode
        self.steps: list[Step] = []

    def _servers(self) -> dict[str, tuple[float, float]]:
        named = {"matcher": self.served, **self.roles} if self.served else {}
        return {name: _server_stats(s.process.pid) for name, s in named.items()}

    def __call__(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> str:
        """Run `argv` under /usr/bin/time -v; record and print its figures; return its
        standard output (raise with its error output if it fails)."""
        timing = self.work / "time.txt"
        before = self._servers()
        shown = ["blindmatch", *argv[len(BLINDMATCH) :]] if argv[:3] == BLINDMATCH else argv
        print(f"$ {' '.join(shown)}", flush=True)
        done = subprocess.run(
            [TIME, "-v", "-o", str(timing), *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            timeout=3600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{label} exited {done.returncode}: {done.stderr[-2000:]}")
        got = timing.read_text()

        def field(name: str) -> str:
            found = re.search(rf"{re.escape(name)}[^:]*: (.+)", got)
            assert found, f"{name!r} not in /usr/bin/time's output: {got}"
            return found.group(1).strip()

        after = self._servers()
        step = Step(
            label,
            _seconds(field("Elapsed (wall clock) time (h:mm:ss or m:ss)")),
            float(field("User time (seconds)")) + float(field("System time (seconds)")),
            int(field("Maximum resident set size (kbytes)")) / 1024,
            {k: (after[k][0] - before[k][0], after[k][1]) for k in after},
        )
        said = self.work / "said"  # each command's whole output, kept with --keep
        said.mkdir(exist_ok=True)
        (said / f"{len(self.steps):02d}.txt").write_text(
            f"$ {' '.join(shown)}\n" + done.stdout + done.stderr
        )
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        step.said = lines[0][:160] if lines else ""
        self.steps.append(step)
        servers = "".join(
            f"; {k} +{c:.1f} s CPU, peak {m:.0f} MiB" for k, (c, m) in step.servers.items()
        )
        print(
            f"  {label}: {step.wall:.1f} s wall, {step.cpu:.1f} s CPU, peak {step.peak_mib:.0f} "
            f"MiB{servers}\n  > {step.said}",
            flush=True,
        )
        return done.stdout

    def table(self) -> str:
        names = ["matcher", *self.roles]
        head = "".join(f" {k} CPU s | {k} peak MiB |" for k in names)
        rows = [
            f"| step | wall s | CPU s | peak RSS MiB |{head}",
            "|---" * (4 + 2 * len(names)) + "|",
        ]
        for s in self.steps:
            got = "".join(
                f" {c:.1f} | {m:.0f} |" if (c, m) != (-1, -1) else " | |"
                for c, m in (s.servers.get(k, (-1, -1)) for k in names)
            )
            rows.append(f"| {s.label} | {s.wall:.1f} | {s.cpu:.1f} | {s.peak_mib:.0f} |{got}")
        return "\n".join(rows)


def _orgs(folder: Path) -> list[str]:
    """The organisations a generator wrote, in truth.csv's order."""
    with open(folder / "truth.csv", newline="", encoding="utf-8") as fh:
        return list(dict.fromkeys(row["member"] for row in csv.DictReader(fh)))


def _truth_of(folder: Path, members: list[str], out: Path) -> Path:
    """truth.csv with only `members`' rows (evaluate counts every member it names)."""
    with (
        open(folder / "truth.csv", newline="", encoding="utf-8") as fh,
        open(out, "w", newline="", encoding="utf-8") as dst,
    ):
        reader = csv.reader(fh)
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow(next(reader))
        writer.writerows(row for row in reader if row[0] in members)
    return out


def _f1(said: str) -> tuple[int, int, int]:
    """(true reported hits, reported hits, true hits) from `evaluate`'s first line."""
    found = re.search(r"\((\d+) of (\d+) reported hits true; (\d+) true hits\)", said)
    assert found, said
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


def link_members(
    walk: Walk,
    served: Served,
    project: str,
    data: Path,
    members: list[str],
    truth: Path,
    secret: Path,
    tokens: Path,
    mode: str = "",
    encode: bool = True,
) -> tuple[int, int, int]:
    """encode, upload, project show, run, results and evaluate for `members` of the exports
    in `data`, as docs/cli.md says; returns the summed evaluate counts. `mode`: the project's
    `--mode` (none: the matcher's default); `encode=False` uploads the ENCODED folders an
    earlier project encoded (with `--two-server` where `mode` is two-server)."""
    server = ["--server", served.target]
    admin = {"BLINDMATCH_ADMIN_TOKEN": served.admin_token}
    modes = ["--mode", mode] if mode else []
    walk(f"project create {' '.join(modes)}".strip(), [*BLINDMATCH, "project", "create", project,
         "--members", ",".join(members), *modes, "--tokens-dir", str(tokens), *server],
         env=admin)  # fmt: skip
    two = ["--two-server"] if mode == "two-server" else []
    clk = ["--clk"] if mode == "clk" and not encode else []  # an earlier project's folders
    for m in members if encode else []:
        walk(f"encode {' '.join([*two, m])}", [*BLINDMATCH, "encode", str(data / f"{m}.csv"),
             "--schema", str(SCHEMA), "--secret-file", str(secret), "--mapping",
             str(data / f"{m}.toml"), "--out", str(walk.work / f"{m}.encoded"), *two])  # fmt: skip
    for m in members:
        walk(f"upload {m}", [*BLINDMATCH, "upload", str(walk.work / f"{m}.encoded"), "--project",
             project, "--token-file", str(tokens / f"{m}.token"), *clk, *server])  # fmt: skip
    token = ["--token-file", str(tokens / f"{members[0]}.token")]
    walk("project show", [*BLINDMATCH, "project", "show", project, *token, *server])
    walk("run", [*BLINDMATCH, "run", "--project", project, *token, *server])
    counts = [0, 0, 0]
    for m in members:
        hits = walk.work / f"{project}-{m}-hits.csv"
        walk(f"results {m}", [*BLINDMATCH, "results", "--project", project, "--token-file",
             str(tokens / f"{m}.token"), "--encoded", str(walk.work / f"{m}.encoded"), "--out",
             str(hits), *server])  # fmt: skip
        said = walk(f"evaluate {m}", [*BLINDMATCH, "evaluate", "--results", str(hits),
                    "--truth", str(truth)])  # fmt: skip
        counts = [a + b for a, b in zip(counts, _f1(said), strict=True)]
    return counts[0], counts[1], counts[2]


def _quality(label: str, counts: tuple[int, int, int]) -> str:
    true, reported, truth = counts
    p, r = true / reported, true / truth
    return (
        f"{label}: precision {p:.4f}, recall {r:.4f}, F1 {2 * p * r / (p + r):.4f} over all "
        f"members' (record, partner) hits ({true} of {reported} reported true; {truth} true)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="messy")
    parser.add_argument("--population", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--big-population", type=int, default=0,
                        help="also link the largest and smallest organisation of an export of "
                        "this many people (0: no)")  # fmt: skip
    parser.add_argument(
        "--two-server",
        action="store_true",
        help="walk a project in two-server mode (S1, S2 and the matcher as three processes), "
        "then a CLK project of the same ENCODED folders",
    )
    add_keep(parser)
    args = parser.parse_args()
    if not Path(TIME).exists():
        sys.exit(f"{TIME} (GNU time) is needed to measure each command")
    script = GENERATORS[args.generator]
    with work_dir("bm-cliwalk-", keep=args.keep) as work:
        data, tokens, secret = work / "data", work / "tokens", work / "secret.key"
        walk = Walk(work, None)
        walk(f"generate ({args.population:,} people)", [sys.executable, script, str(data),
             "--seed", str(args.seed), "--population", str(args.population)])  # fmt: skip
        members = _orgs(data)
        started = time.monotonic()
        if args.two_server:
            _two_server_walk(walk, args, work, script)
            return
        with serve(work / "matcher-data") as served:
            walk.served = served
            walk("secret new", [*BLINDMATCH, "secret", "new", str(secret)])
            counts = link_members(
                walk, served, "walk", data, members, data / "truth.csv", secret, tokens
            )
            server = ["--server", served.target]
            for m in members[1:]:
                walk(f"index add {m}", [*BLINDMATCH, "index", "add", str(work / f"{m}.encoded"),
                     "--project", "walk", "--token-file", str(tokens / f"{m}.token"),
                     "--ref-key", str(work / f"{m}.refkey"), *server])  # fmt: skip
            first, token = members[0], ["--token-file", str(tokens / f"{members[0]}.token")]
            asked = work / "query.csv"
            with open(data / f"{first}.csv", encoding="utf-8") as fh:
                asked.write_text("".join(fh.readline() for _ in range(QUERIES + 1)))
            person = work / "person.txt"
            mapping = data / f"{first}.toml"
            _one_person(asked, mapping, person)
            common = ["--project", "walk", *token, "--schema", str(SCHEMA), "--secret-file",
                      str(secret), *server]  # fmt: skip
            walk("query (one person)", [*BLINDMATCH, "query", *common, "--purpose", "walk-1",
                 "--person-file", str(person)])  # fmt: skip
            walk(f"query ({QUERIES} people)", [*BLINDMATCH, "query", str(asked), "--mapping",
                 str(mapping), *common, "--purpose", "walk-50", "--out",
                 str(work / "query-hits.csv")])  # fmt: skip
            walk("report", [*BLINDMATCH, "report", "--project", "walk", *token, "--encoded",
                 str(work / f"{first}.encoded"), "--out", str(work / "report.html"), "--truth",
                 str(data / "truth.csv"), "--purpose", "walk", *server])  # fmt: skip
            big = None
            if args.big_population:
                big = _big(walk, served, args, work, secret, script)
        print(f"\n{args.generator}, {args.population:,} people, seed {args.seed}; matcher up "
              f"{time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.1f} at "
              "the end\n")  # fmt: skip
        print(walk.table())
        print("\n" + _quality(f"{args.population:,} people", counts))
        if big:
            print(big)
        # The walk's truth stays beside its hits (as big-truth.csv beside big's), for
        # walkinprocess.py --project walk; the exports go.
        shutil.copyfile(data / "truth.csv", work / "walk-truth.csv")
        shutil.rmtree(data, ignore_errors=True)


def _big(
    walk: Walk, served: Served, args: argparse.Namespace, work: Path, secret: Path, script: str
) -> str:
    """The second project: the largest and the smallest organisation of a bigger export."""
    data = work / "big"
    walk(f"generate ({args.big_population:,} people)", [sys.executable, script, str(data),
         "--seed", str(args.seed + 1), "--population", str(args.big_population)])  # fmt: skip
    sizes = {m: (data / f"{m}.csv").stat().st_size for m in _orgs(data)}
    members = [max(sizes, key=sizes.__getitem__), min(sizes, key=sizes.__getitem__)]
    for m in members:  # the walk's encodings: kept as walk-M.encoded with --keep
        if args.keep and not args.two_server and (work / f"{m}.encoded").exists():
            (work / f"{m}.encoded").rename(work / f"walk-{m}.encoded")
        else:
            shutil.rmtree(work / f"{m}.encoded", ignore_errors=True)
    truth = _truth_of(data, members, work / "big-truth.csv")
    mode = "two-server" if args.two_server else ""
    counts = link_members(
        walk, served, "big", data, members, truth, secret, work / "big-tokens", mode
    )
    return _quality(f"{args.big_population:,} people, {' and '.join(members)}", counts)


@contextlib.contextmanager
def _two_servers(walk: Walk, work: Path) -> Iterator[Served]:
    """S2, S1 and the matcher as their combiner, three processes on loopback, started as
    docs/operations.md "A project in two-server mode" shows (keys from `secret new`, each
    server its own `--data-dir`); S1 and S2 go into `walk.roles`."""
    keys = {}
    for name in ("combiner", "members"):
        keys[name] = work / f"{name}.key"
        walk(f"secret new {name}.key", [*BLINDMATCH, "secret", "new", str(keys[name])])
    role = [*BLINDMATCH, "two-server", "role", "--listen", "127.0.0.1:0", "--key-file",
            str(keys["combiner"]), "--member-key-file", str(keys["members"])]  # fmt: skip
    with (
        _started([*role, "--role", "s2", "--data-dir", str(work / "s2-data")], "", None) as s2,
        _started([*role, "--role", "s1", "--s2", s2.target, "--data-dir",
                  str(work / "s1-data")], "", None) as s1,
        serve(work / "matcher-data", "--two-server-s1", s1.target, "--two-server-s2", s2.target,
              "--two-server-key-file", str(keys["combiner"]), "--two-server-member-key-file",
              str(keys["members"])) as matcher,
    ):  # fmt: skip
        walk.served, walk.roles = matcher, {"S1": s1, "S2": s2}
        yield matcher


def _same_hits(work: Path, members: list[str]) -> str:
    """Whether each member's hits.csv is the same (as a set of rows) in both projects."""

    def rows(path: Path) -> set[tuple[str, ...]]:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)  # the header, not a hit: counted as `results` counts its rows
            return {tuple(r) for r in reader}

    said = []
    for m in members:
        two, clk = rows(work / f"two-{m}-hits.csv"), rows(work / f"clk-{m}-hits.csv")
        said.append(f"{m}: {'same' if two == clk else 'DIFFER'} ({len(two)} rows in "
                    f"two-server, {len(clk)} in CLK, {len(two & clk)} in both)")  # fmt: skip
    return "hits, two-server against CLK: " + "; ".join(said)


def _proposed(work: Path, project: str) -> str:
    """What S1's `twoserver.run` audit entry says of the batch run of `project` (queries' runs
    name a member `PROJECT/MEMBER@...`): the pairs it proposed and the pairs of members it left
    unblocked."""
    import json
    import sqlite3

    db = sqlite3.connect(f"file:{work / 's1-data' / 'twoserver-s1.sqlite'}?mode=ro", uri=True)
    with contextlib.closing(db):
        details = [json.loads(d) for (d,) in db.execute(
            "SELECT detail FROM audit WHERE action = 'twoserver.run' ORDER BY seq")]  # fmt: skip
    runs = [d for d in details if all(m.startswith(f"{project}/") and "@" not in m
                                      for m in d["members"])]  # fmt: skip
    if not runs:
        return f"S1's audit log has no twoserver.run entry for {project}"
    pairs = [" x ".join(m.split("/")[1] for m in p) for p in runs[-1].get("unblocked", [])]
    return (f"S1 proposed {runs[-1]['pairs']:,} pairs for the run (its twoserver.run audit "
            f"entry); not blocked: {', '.join(pairs) or 'none'}")  # fmt: skip


def _two_server_walk(walk: Walk, args: argparse.Namespace, work: Path, script: str) -> None:
    """The two-server walk (`--two-server`, the module's docstring)."""
    data, tokens, secret = work / "data", work / "tokens", work / "secret.key"
    members, truth = _orgs(data), data / "truth.csv"
    started = time.monotonic()
    with _two_servers(walk, work) as served:
        walk("secret new", [*BLINDMATCH, "secret", "new", str(secret)])
        counts = link_members(
            walk, served, "two", data, members, truth, secret, tokens, "two-server"
        )
        first, token = members[0], ["--token-file", str(tokens / f"{members[0]}.token")]
        asked, person, mapping = work / "query.csv", work / "person.txt", data / f"{first}.toml"
        with open(data / f"{first}.csv", encoding="utf-8") as fh:
            asked.write_text("".join(fh.readline() for _ in range(QUERIES + 1)))
        _one_person(asked, mapping, person)
        common = ["--project", "two", *token, "--schema", str(SCHEMA), "--secret-file",
                  str(secret), "--server", served.target]  # fmt: skip
        walk("query (one person)", [*BLINDMATCH, "query", *common, "--purpose", "walk-1",
             "--person-file", str(person)])  # fmt: skip
        walk(f"query ({QUERIES} people)", [*BLINDMATCH, "query", str(asked), "--mapping",
             str(mapping), *common, "--purpose", "walk-50", "--out",
             str(work / "query-hits.csv")])  # fmt: skip
        clk = link_members(
            walk, served, "clk", data, members, truth, secret, work / "clk-tokens", "clk", False
        )
        same = _same_hits(work, members)
        big = _big(walk, served, args, work, secret, script) if args.big_population else None
    print(f"\n{args.generator}, {args.population:,} people, seed {args.seed}, two-server; "
          f"servers up {time.monotonic() - started:.0f} s; load average "
          f"{os.getloadavg()[0]:.1f} at the end\n")  # fmt: skip
    print(walk.table())
    print("\n" + _quality(f"two-server, {args.population:,} people", counts))
    print(_quality(f"CLK, {args.population:,} people", clk))
    print(same)
    print(_proposed(work, "two"))
    if big:
        print(big)


def _one_person(asked: Path, mapping: Path, out: Path) -> None:
    """The first person of `asked` as `query --person-file` takes it (NAME=VALUE lines)."""
    import tomllib

    fields = tomllib.loads(mapping.read_text(encoding="utf-8"))["fields"]
    with open(asked, newline="", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    lines = []
    for name, column in fields.items():
        if isinstance(column, str):
            lines.append(f"{name}={row[column]}")
        elif name == "dob" and row[column["column"]]:
            value = time.strptime(row[column["column"]], column.get("date_format", "%Y-%m-%d"))
            lines.append(f"dob={time.strftime('%Y-%m-%d', value)}")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
