"""`blindmatch demo --two-server`: the demo's flow in a project in two-server mode
(docs/operations.md "A project in two-server mode"), then the same encodings in a CLK
project on a plain matcher beside it, to compare.

S1, S2 and the matcher as their combiner are started by the caller (the command line) on
loopback ports in this one process, with fresh keys; the members encode with their
two-server upload, upload (shares to S1 and S2, how many records to the matcher), run and
fetch their hits exactly as in the CLK demo (client/tools/demo.py, whose steps this reuses).
Then it prints what each party held and what the combiner learned, the hits' quality against
the synthetic truth, and each step's wall and CPU seconds beside the CLK project's.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import numpy as np

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import ProjectTokens
from blindmatch.client.tools.demo import (
    PROJECT,
    SCHEMA,
    Member,
    Outcome,
    StartServers,
    create_project,
    encode_members,
    local_names,
    project_flow,
    say,
    summarise,
    true_hits,
    workdir,
)
from blindmatch.client.tools.synthetic import DEMO_ORGS

NOTICE = (
    "Two-server mode: S1 (blocking), S2 (shares) and the matcher as their combiner all run in\n"
    "this one process, on loopback ports, for the demo only. A deployment needs three hosts\n"
    "operated independently: the privacy of the design rests on S1, S2 and the combiner not\n"
    'colluding (docs/privacy-design.md, docs/operations.md "A project in two-server mode").\n'
)
STEPS = ("encode", "upload", "run", "results")


def run_two_server_demo(
    start: StartServers,
    start_clk: StartServers,
    records: int = 2000,
    seed: int = 7,
    keep: Path | None = None,
) -> dict[str, float]:
    """Run the two-server demo, then its encodings in a CLK project on a matcher `start_clk`
    starts; returns the precision, recall and F1 of the two-server hits."""
    wall, cpu = time.monotonic(), time.process_time()
    admin = "bm_admin_" + secrets.token_urlsafe(16)
    with workdir(keep) as root:
        say(NOTICE)
        servers = start(root / "matcher-data", admin)
        try:
            say(servers.where)
            project = create_project(servers.target, admin, mode="two-server")
            say(f"Project {PROJECT} created in two-server mode for "
                f"{', '.join(project.tokens)} (disclosure: hits)\n")  # fmt: skip
            encoding = Outcome()
            members = encode_members(root, records, seed, two_server=True, timing=encoding)
            outcome = project_flow(servers.target, project, members)
            say(f"\nRun {outcome.run_id}: {outcome.state} (two-server)\n")
            quality = summarise(outcome, members)
            ask(servers.target, project, members)
            say("\nWhat each party held of the project")
            for line in servers.held(PROJECT) if servers.held else ():
                say(f"  {line}")
            say(f"  {learned(servers.target, admin)}")
        finally:
            servers.stop()
        clk = clk_beside(start_clk, root, members)
        compare(outcome, clk, encoding)
    say(f"Done in {time.monotonic() - wall:.1f}s (CPU {time.process_time() - cpu:.1f}s, every "
        "party and member in this process).")  # fmt: skip
    return quality


def ask(target: str, project: ProjectTokens, members: dict[str, Member]) -> None:
    """A real-time query in the project (docs/realtime.md "Queries in a two-server
    project"): the first organisation asks about two of its records partners hold and one
    no partner holds; their shares go to S1 and S2, never a CLK to the matcher."""
    org = DEMO_ORGS[0].name
    member = members[org]
    ids = member.encoded.read_ids()
    held = {rid for o, rid, _ in true_hits({o: m.truth for o, m in members.items()})
            if o == org}  # fmt: skip
    asked = [r for r in ids if r in held][:2] + [r for r in ids if r not in held][:1]
    clks = np.frombuffer(b"".join(member.encoded.iter_chunks(4096)), np.uint8)
    rows = clks.reshape(-1, member.encoded.clk_bytes)[[ids.index(r) for r in asked]]
    upload = sharing.shared_upload(rows, member.secret, sharing.plan_of(load_schema(SCHEMA)),
                                   member.encoded.fallback_bits)  # fmt: skip
    started = time.monotonic()
    with MatcherClient(target, project.tokens[org]) as client:
        answer = client.query(PROJECT, upload, clk_bits=member.encoded.clk_bits,
                              fingerprint=member.encoded.fingerprint, purpose="demo query",
                              schema_digest=member.encoded.schema_digest,
                              rule=member.encoded.rule)  # fmt: skip
    took = time.monotonic() - started
    names = local_names(member.csv)
    say(f"\nA real-time query in the two-server project: {org} asks about {len(asked)} "
        f"people (their shares to S1 and S2; {took * 1000:.0f} ms):")  # fmt: skip
    for rid, matches in zip(asked, answer.results, strict=True):
        partners = ", ".join(sorted(m.partner for m in matches))  # ("held by no partner"
        # read as known to none: a hit/no-hit answer is no match, never "not known", rtwalk)
        said = f"held by {partners}" if partners else "no partner match disclosed"
        say(f"  {rid}  {names[rid]:<28} -> {said}")


def learned(target: str, admin: str) -> str:
    """What the combiner learned in the run, from the matcher's audit log."""
    with MatcherClient(target, admin) as operator:
        runs = [e for e in operator.audit(PROJECT) if e["action"] == "twoserver.run"]
    detail = runs[-1]["detail"] if runs else None
    if not isinstance(detail, dict):
        return "the combiner (the matcher) learned: (no twoserver.run entry in its audit log)"
    sent = sum(int(n) for n in dict(detail.get("bytes", {})).values())
    return (
        f"the combiner (the matcher) learned: the link bit and score bucket of each of the "
        f"{int(detail['pairs']):,} pairs S1 proposed, and the rows of those that link "
        f"({int(detail['links']):,} links, each counted from both records' sides); no Dice, "
        f"CLK or share ({int(detail['rounds'])} "
        f"circuit rounds, {sent / 1e6:.1f} MB between the parties)"
    )


def clk_beside(start_clk: StartServers, root: Path, members: dict[str, Member]) -> Outcome:
    """The same ENCODED folders in a CLK project on a plain matcher (its own data dir)."""
    admin = "bm_admin_" + secrets.token_urlsafe(16)
    servers = start_clk(root / "clk-matcher-data", admin)
    try:
        return project_flow(servers.target, create_project(servers.target, admin), members)
    finally:
        servers.stop()


def compare(two: Outcome, clk: Outcome, encoding: Outcome) -> None:
    """Each step's wall and CPU seconds in both modes (encode: the CLKs, and in two-server
    mode the two-server upload besides), and whether the hits are the same."""
    clk.wall["encode"], clk.cpu["encode"] = encoding.wall["encode"], encoding.cpu["encode"]
    two.wall["encode"] = encoding.wall["encode"] + encoding.wall["shares"]
    two.cpu["encode"] = encoding.cpu["encode"] + encoding.cpu["shares"]
    for outcome in (clk, two):
        outcome.wall["total"] = sum(outcome.wall[step] for step in STEPS)
        outcome.cpu["total"] = sum(outcome.cpu[step] for step in STEPS)
    say("\nBeside the CLK mode (the same encodings in a CLK project on a plain matcher):")
    say(
        f"  {'step':<8} {'CLK wall':>9} {'CPU':>7} {'two-server wall':>16} {'CPU':>7} {'wall x':>7}"
    )
    for step in (*STEPS, "total"):
        ratio = two.wall[step] / clk.wall[step] if clk.wall[step] else float("inf")
        say(f"  {step:<8} {clk.wall[step]:>8.2f}s {clk.cpu[step]:>6.2f}s "
            f"{two.wall[step]:>15.2f}s {two.cpu[step]:>6.2f}s {ratio:>6.1f}x")  # fmt: skip
    if two.found == clk.found:
        say(f"  hits: the CLK project's, all {len(clk.found)} (record, partner) rows")
    else:
        differ = len(two.found ^ clk.found)
        say(f"  hits: {differ} of {len(clk.found | two.found)} (record, partner) rows differ "
            "from the CLK project's (where a record has two candidates in one score bucket: "
            "docs/operations.md, \"Same hits, up to ties in a bucket\")")  # fmt: skip
    say("  (CPU: this process, so every party's threads; all parties share this machine)")
