"""`blindmatch demo`: the whole flow on synthetic exports, with a real matcher in-process.

Three organisations whose exports differ in column names, case, date format,
accents and postcode spacing encode locally, upload over gRPC (loopback), run
matching, and each fetches what the default `hits` disclosure allows.

The client does not import the matcher: the caller (the command line, which sits
above both) passes `start`, which starts the servers on free loopback ports. The
steps here (encode, a project's flow, the summary) serve the CLK demo and the
two-server one (client/tools/demo_twoserver.py) alike.
"""

from __future__ import annotations

import contextlib
import csv
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from blindmatch.client.encoding.encode import encode_csv, save_encoded, save_two_server
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.encoding.sharedfiles import open_shared
from blindmatch.client.encoding.sharing import SHARED_FOLDER
from blindmatch.client.errors import InputError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import ProjectTokens, Results
from blindmatch.client.remote.twoserver import folder_sha256, project_upload
from blindmatch.client.results import join_results
from blindmatch.client.tools import SCHEMAS
from blindmatch.client.tools.synthetic import DEMO_ORGS, write_org_exports

SCHEMA = SCHEMAS / "person-uk.json"
PROJECT = "demo"


@dataclass(frozen=True)
class Servers:
    """What the caller started for the demo: the matcher's HOST:PORT, a line saying where
    everything listens, how to stop it all, and (two-server) what each party holds of a
    project, as lines."""

    target: str
    where: str
    stop: Callable[[], None]
    held: Callable[[str], list[str]] | None = None


# (data dir, operator token) -> the servers, listening
StartServers = Callable[[Path, str], Servers]


@dataclass(frozen=True)
class Member:
    """One organisation's side: its export, the truth behind it, its ENCODED folder."""

    csv: Path
    truth: dict[str, int]
    encoded: Encoded
    secret: bytes = b""  # the members' linkage secret (a query encodes with it too)


@dataclass
class Outcome:
    """A project's flow: the run's id and state, the (org, record id, partner) hits the
    members found, each member's results and rows, wall and CPU seconds by step."""

    run_id: str = ""
    state: str = ""
    found: set[tuple[str, str, str]] = field(default_factory=set)
    views: dict[str, tuple[Results, list[list[str]]]] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        wall, cpu = time.monotonic(), time.process_time()
        yield
        self.wall[step] = self.wall.get(step, 0.0) + time.monotonic() - wall
        self.cpu[step] = self.cpu.get(step, 0.0) + time.process_time() - cpu


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    """Where the demo writes: `keep` (new or empty; left behind to look at), else a
    temporary folder removed afterwards."""
    if keep is None:
        tmp = Path(tempfile.mkdtemp(prefix="blindmatch-demo-"))
        try:
            yield tmp
        finally:
            try:
                shutil.rmtree(tmp, ignore_errors=True)
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (blindmatch/cli/demo.py), cut it short
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise InputError(f"--keep {keep}: not an empty folder")
    keep.mkdir(parents=True, exist_ok=True)
    yield keep


def encode_members(
    root: Path, records: int, seed: int, two_server: bool = False, timing: Outcome | None = None
) -> dict[str, Member]:
    """Each organisation's export of a synthetic population, encoded under a fresh secret
    (with `two_server`, with its two-server upload beside the CLKs); `timing` gets the
    seconds of the steps "encode" and (with `two_server`) "shares"."""
    schema = load_schema(SCHEMA)
    secret = secrets.token_hex(32).encode()
    timing = timing or Outcome()
    members = {}
    exports = write_org_exports(root / "exports", records, seed)
    for org, (csv_path, map_path, truth) in exports.items():
        with open(csv_path, encoding="utf-8") as fh:
            header, first = next(csv.reader(fh)), next(csv.reader(fh), None)
        if first is None:  # (was a StopIteration's traceback)
            raise InputError(
                f"--records {records}: {org}'s synthetic export holds none of so few people, "
                "and the demo needs each of its three organisations to hold some: give "
                "--records 200 or more (default 2000)"
            )
        with timing.timed("encode"):
            result = encode_csv(csv_path, schema, load_mapping(map_path, schema), secret)
            encoded = save_encoded(root / f"{org}.encoded", result, schema, secret)
        if two_server:
            with timing.timed("shares"):
                save_two_server(encoded.path, result, schema, secret)
        members[org] = Member(csv_path, truth, encoded, secret)
        say(f"{org}: {result.report.rows_encoded} records, columns {', '.join(header)}")
        say(f"    e.g. {', '.join(first)}")
    return members


def create_project(
    target: str, admin: str, mode: str = "clk", name: str = PROJECT
) -> ProjectTokens:
    """The demo's project, for the three organisations, in `mode` (disclosure: hits)."""
    with MatcherClient(target, admin) as operator:
        return operator.create_project(name, [o.name for o in DEMO_ORGS], mode=mode)


def project_flow(target: str, project: ProjectTokens, members: dict[str, Member]) -> Outcome:
    """Every member uploads (in a two-server project: shares to S1 and S2, how many records
    to the matcher), the first runs the project, and each fetches its hits."""
    outcome = Outcome()
    name, mode = project.project, project.mode
    with outcome.timed("upload"):
        for org, member in members.items():
            with MatcherClient(target, project.tokens[org]) as client:
                if mode == "two-server":  # its files read a part at a time, as `upload` does
                    with open_shared(member.encoded.path / SHARED_FOLDER) as shared:
                        project_upload(client, name, member.encoded, shared)
                else:
                    client.upload(name, member.encoded)
    with outcome.timed("run"), MatcherClient(target, project.tokens[DEMO_ORGS[0].name]) as first:
        run = first.start_run(name)
        outcome.run_id, outcome.state = run.run_id, run.state
        for status in first.watch_run(name, run.run_id):
            outcome.run_id, outcome.state = status.run_id, status.state
    # Fetched whole (`results`, not `results_to` as `results` and `report` stream them): the
    # demo scores every hit against the truth, so it holds them all anyway, and its people
    # are generated in memory beside them (its encode result holds more than its hits).
    with outcome.timed("results"):
        for org, member in members.items():
            with MatcherClient(target, project.tokens[org]) as client:
                results = client.results(name)
            also = folder_sha256(member.encoded) if mode == "two-server" else ""
            rows = join_results(results, member.encoded, also)
            outcome.views[org] = (results, rows)
            outcome.found.update((org, rid, partner) for rid, partner in rows)
    return outcome


def summarise(outcome: Outcome, members: dict[str, Member]) -> dict[str, float]:
    """Print what each member learns, a few hits, and the hits' quality against the truth;
    returns the precision, recall and F1."""
    say("Shared subjects (what each member learns: counts per partner)")
    for org, (results, _rows) in outcome.views.items():
        counts = ", ".join(f"{p} {n}" for p, n in results.counts.items()) or "none"
        say(f"  {org:<14} holds {results.record_count:>5}; also held by: {counts}")

    first_org = DEMO_ORGS[0].name
    _results, rows = outcome.views[first_org]
    names = local_names(members[first_org].csv)
    say(f"\nA few hits from {first_org}'s point of view (its own ids and names, never sent):")
    for rid, partner in rows[:6]:
        say(f"  {rid}  {names[rid]:<28} -> also held by {partner}")

    true_pairs = true_hits({org: m.truth for org, m in members.items()})
    tp = len(outcome.found & true_pairs)
    precision = tp / len(outcome.found) if outcome.found else 1.0
    recall = tp / len(true_pairs) if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    say(
        f"\nAgainst the synthetic truth: precision {precision:.3f}, recall {recall:.3f}, "
        f"F1 {f1:.3f} over {len(true_pairs)} true (record, partner) hits."
    )
    return {"precision": precision, "recall": recall, "f1": f1}


def run_demo(
    start: StartServers, records: int = 2000, seed: int = 7, keep: Path | None = None
) -> dict[str, float]:
    """Run the demo; returns the measured precision, recall and F1 of the hits."""
    started = time.monotonic()
    admin = "bm_admin_" + secrets.token_urlsafe(16)
    with workdir(keep) as root:
        servers = start(root / "matcher-data", admin)
        try:
            say(servers.where)
            project = create_project(servers.target, admin)
            say(f"Project {PROJECT} created for {', '.join(project.tokens)} (disclosure: hits)\n")
            members = encode_members(root, records, seed)
            outcome = project_flow(servers.target, project, members)
            say(f"\nRun {outcome.run_id}: {outcome.state}\n")
            quality = summarise(outcome, members)
            say(f"Done in {time.monotonic() - started:.1f}s.")
            return quality
        finally:
            servers.stop()


def true_hits(truth: dict[str, dict[str, int]]) -> set[tuple[str, str, str]]:
    by_entity: dict[int, list[tuple[str, str]]] = {}
    for org, ids in truth.items():
        for rid, entity in ids.items():
            by_entity.setdefault(entity, []).append((org, rid))
    pairs: set[tuple[str, str, str]] = set()
    for holders in by_entity.values():
        for org, rid in holders:
            pairs.update((org, rid, other) for other, _ in holders if other != org)
    return pairs


def local_names(csv_path: Path) -> dict[str, str]:
    with open(csv_path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return {r[0]: f"{r[1]} {r[2]}, {r[3]}" for r in rows[1:]}
