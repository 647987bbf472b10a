"""A two-server query compared whole against a partner converted once, over gRPC
(rpc/twoserver_standing.py, rpc/twoserver_standdeal.py; docs/protocol.md "A query against a
standing partner over gRPC"): S1 and S2 on loopback, C's RemoteServers. The same links,
buckets and rows as by pairs; the partner converted once over two queries; a new upload of it
converted again, its answer the new upload's; a combiner dealing a wrong Z refused by both
servers naming it, nothing output; a restarted server's conversion gone, C converting again.
The size rule lowered (core/partpath.py STANDING_RECORDS) and the conversion cut small
(core/standing.py CHUNK: several pieces) so that each test takes a few seconds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, partpath, ring64, standing, twoserver
from blindmatch.matcher.core import standingquery as sq
from blindmatch.matcher.core.margincircuit import plan
from blindmatch.matcher.core.twoserver import FALLBACK, RECORD, Proposed
from blindmatch.matcher.domain import WATCH_WAIT_SECONDS, Rule
from blindmatch.matcher.realtime import twopartner
from blindmatch.matcher.rpc import twoserver_conversions
from blindmatch.matcher.rpc import twoserver_holds as holds
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.rpc.twoserver_standcache import MOST_BYTES, Standings
from blindmatch.matcher.rpc.twoserver_standdeal import Conversions
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests import twoserver_world
from tests.portheld import stopped_held
from tests.support import MESSY_SECRET, PERSON_SCHEMA, STRONG_SECRET
from tests.test_standing import _wrong_dabit
from tests.test_twoserver_blocks import KEY, MEMBER_KEY, RULE, THRESHOLD, entries
from tests.test_twoserver_query import held_by, person_csv
from tests.twoserver_world import EXPORTS

pytestmark = pytest.mark.server
Clks = npt.NDArray[np.uint8]
NAMES = ["asker", "south"]  # the query's records (3 of south's own), south's upload
Found = list[tuple[int, int, float]]


@pytest.fixture(scope="module")
def shares(messy_members: tuple[list[Clks], int]) -> dict[str, client.SharedUpload]:
    """The query's 3 records (south's first), south's upload of 90 and a later one of 87
    without them."""
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=20, bands=30)
    made = {"query": datasets[1][:3], "south": datasets[1][:90], "later": datasets[1][3:90]}
    return {k: client.shared_upload(d, MESSY_SECRET, plan, fallback_bits)
            for k, d in made.items()}  # fmt: skip


class Roles:
    """S1 and S2 on loopback, each with a data dir; either restarted on its port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, RunningRole] = {}
        self.start("s2")
        self.start("s1")

    def start(self, role: str, port: int = 0) -> None:
        s2 = {"s2": f"127.0.0.1:{self.running['s2'].port}"} if role == "s1" else {}
        self.running[role] = create_role(role, f"127.0.0.1:{port}", KEY, MEMBER_KEY,
                                         data_dir=self.folder / role, exhaustive=10**9,
                                         **s2)  # type: ignore[arg-type]  # fmt: skip

    def restart(self, role: str) -> None:
        port, running = self.running[role].port, self.running[role]
        with stopped_held(port, lambda: running.stop(grace=None)):
            running.service.close()  # (its port no other's meanwhile: tests/portheld.py)
        self.start(role, port)

    def upload(self, name: str, up: client.SharedUpload) -> None:
        for role, running in self.running.items():
            with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as rc:
                rc.upload(name, up, RULE)

    def conversions(self) -> list[int]:
        return [self.running[r].service.standing.conversions for r in ("s1", "s2")]


@pytest.fixture
def roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Roles]:
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 50)  # south's 90 records: standing
    monkeypatch.setattr(standing, "CHUNK", 32)  # its conversion in 3 pieces
    made = Roles(tmp_path)
    yield made
    for running in made.running.values():
        running.stop(grace=None)


def ask(roles: Roles, query: client.SharedUpload, partner: client.SharedUpload,
        conversions: Conversions | None, fresh: bool = True, name: str = NAMES[1],
        settle: bool = True, asking: str = NAMES[0],
        ) -> tuple[Found, linkbit.Transcript]:  # fmt: skip
    """The query's records uploaded afresh (a fresh pair budget) and compared whole against
    partner `name`'s upload (`partner`'s records) at S1 and S2: by the standing path with
    C's `conversions`, else by the query's shape (by pairs); (rows and buckets of the
    links, the calls' transcript). With `settle`, once answered, any conversion it started
    in the background made (so the next query's path is known). `asking`: the query's
    upload's name (uploaded afresh only under NAMES[0])."""
    if fresh:
        roles.upload(NAMES[0], query)
    bits = [8 * int(x.shape[1]) for x in query.s1.shares]
    servers = RemoteServers(f"127.0.0.1:{roles.running['s1'].port}",
                            f"127.0.0.1:{roles.running['s2'].port}", KEY, [asking, name],
                            [len(query.s1.shares[0]), len(partner.s1.shares[0])], bits)  # fmt: skip
    servers.conversions = conversions
    combiner = twoserver.Combiner(None, THRESHOLD, clks=2, rule=Rule(*RULE))
    transcript = linkbit.Transcript()
    try:
        described = servers.propose(combiner.lacking(), combiner.cutoffs, combiner.rule)
        links, pairs = twopartner.proposed_query_links(servers, combiner, described, transcript,
                                                       standing=True)  # fmt: skip
    finally:
        servers.close()
    if settle and conversions is not None:
        assert conversions.idle(600)  # (a bound on a hang, not a timing)
    assert pairs == 3 * len(partner.s1.shares[0])  # every pair: compared whole
    return sorted(zip(links.rec0.tolist(), links.rec1.tolist(), links.sims.tolist(),
                      strict=True)), transcript  # fmt: skip


def older_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    """S1 and S2 answer `Holds` as roles older than its bounds: a request naming no upload
    refused INVALID_ARGUMENT, no bound said (C then learns from its standing replies)."""
    answer = holds.answer

    def older(role: Any, request: pb.HoldsRequest) -> pb.HoldsReply:
        if not request.names:
            raise errors.InvalidArgument("names: 0; 1 to 1000 upload names")
        return pb.HoldsReply(held=answer(role, request).held)

    monkeypatch.setattr(holds, "answer", older)


@contextmanager
def uploaded(tmp_path: Path, caps: tuple[int, ...] = (10**9, 10**9),
             most: dict[str, int] | None = None, ahead: bool = True,
             watch_wait: float = WATCH_WAIT_SECONDS,
             ) -> Iterator[tuple[Any, Any, Any, Path]]:  # fmt: skip
    """A matcher with S1 and S2 (S1's exhaustive, small-member and query-whole `caps`; their
    `--standing-bytes` by role, `most`; its conversions ahead of queries off where not
    `ahead`: `serve --no-two-server-convert-ahead`; `watch_wait`: `serve
    --two-server-watch-wait-seconds`), project "ruled" (two-server) with north's and
    south's uploads of 42 records (the shipped schema, its rule): (the world, the project,
    south's export, the linkage secret's file)."""
    secret = tmp_path / "linkage.secret"
    secret.write_text(STRONG_SECRET + "\n")
    exports = write_exports(tmp_path, seed=5, size=120)
    with twoserver_world.started(tmp_path, *caps, convert_ahead=ahead,
                                 watch_wait=watch_wait) as world:  # fmt: skip
        for role, bound in (most or {}).items():
            world.roles[role].service.standing.most = bound
        project = twoserver_world.create(world, "ruled", "two-server")
        for name in ("north", "south"):
            export, out = exports[EXPORTS[name]], tmp_path / f"{name}.encoded"
            assert main(["encode", str(export.csv), "--schema", str(PERSON_SCHEMA),
                         "--secret-file", str(secret), "--mapping", str(export.mapping),
                         "--out", str(out), "--two-server", "--quiet"]) == 0  # fmt: skip
            assert world.cli("upload", str(out), "--project", "ruled", "--quiet",
                             token=project.tokens[name]) == 0  # fmt: skip
        yield world, project, exports[EXPORTS["south"]], secret


def query(world: Any, project: Any, south: Any, people: Path, secret: Path) -> int:
    """`blindmatch query` of north's about `people` (a CSV of south's people), `--json`."""
    return int(world.cli("query", str(people), "--mapping", str(south.mapping), "--project",
                         "ruled", "--schema", str(PERSON_SCHEMA), "--secret-file", str(secret),
                         "--purpose", "case 1", "--json", "--allow-band-keys",
                         token=project.tokens["north"]))  # fmt: skip


def combiner_conversions(world: Any) -> Conversions:
    """C's conversions (the matcher's set-up's, as its queries' servers carry them)."""
    servers = world.server.realtime.two_server.servers([], [], [])
    servers.close()  # (the set-up's kept channels stay open)
    return servers.conversions


def test_queries_by_the_standing_path_give_the_pairs_links_converting_the_partner_once(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """Two queries against south: its upload converted once (C's count, S1's and S2's, one
    `twoserver.standing` entry each), each query's links, buckets and rows those by pairs;
    then south's new upload (without the query's records): converted again, and the query
    finds none of them."""
    roles.upload("south", shares["south"])
    conversions = Conversions()
    first, _ = ask(roles, shares["query"], shares["south"], conversions)
    second, _ = ask(roles, shares["query"], shares["south"], conversions)
    by_pairs, _ = ask(roles, shares["query"], shares["south"], None)
    assert first == second == by_pairs and {row for row, _, _ in first} == {0, 1, 2}
    assert conversions.converted == 1 and roles.conversions() == [1, 1]
    for role in ("s1", "s2"):
        (made,) = entries(tmp_path, role, "twoserver.standing")
        assert made["records"] == 90 and made["members"] == NAMES
        assert len(entries(tmp_path, role, "twoserver.blocks")) == 0  # no part by blocks
    assert conversions.queried == 1  # the first by pairs (converting), the second standing
    roles.upload("south", shares["later"])  # south's new upload: the old conversion dropped
    later, _ = ask(roles, shares["query"], shares["later"], conversions)
    assert conversions.converted == 2 and roles.conversions() == [2, 2]
    by_pairs_later, _ = ask(roles, shares["query"], shares["later"], None)
    assert later == by_pairs_later
    assert {row for row, _, _ in later} != {0, 1, 2}  # the records that were south's are not


@pytest.mark.parametrize("what", ["Z", "Z'"])
def test_a_combiner_dealing_a_wrong_z_is_refused_by_both_servers_naming_it(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch, what: str,
) -> None:  # fmt: skip
    """A query's Z (or its spare Z') off by one at one pair: S1 and S2 refuse the deal
    PERMISSION_DENIED naming the combiner, each with a `twoserver.deal` entry, and no batch
    of the part runs (no output share of it leaves either)."""
    roles.upload("south", shares["south"])
    conversions = Conversions()
    ask(roles, shares["query"], shares["south"], conversions)  # converted, honestly
    honest = sq.deal

    def dishonest(s: standing.Standing, rows: int, seeds: object = None) -> sq.QueryDeal:
        dealt = honest(s, rows)
        body = np.frombuffer(dealt.to_s2[linkbit.SEED_BYTES :], "<u4").copy()
        body[{"Z": 5, "Z'": rows * s.records + 5}[what]] += np.uint32(1)
        return sq.QueryDeal(dealt.to_s1, dealt.to_s2[: linkbit.SEED_BYTES] + body.tobytes(), rows)

    monkeypatch.setattr(sq, "deal", dishonest)
    roles.upload(NAMES[0], shares["query"])  # a fresh pair budget
    spent = [roles.running[r].service.budget.pairs() for r in ("s1", "s2")]
    with pytest.raises(errors.PermissionDenied, match="the dealer \\(the combiner\\)"):
        ask(roles, shares["query"], shares["south"], conversions, fresh=False)
    for role in ("s1", "s2"):
        (refused,) = entries(tmp_path, role, "twoserver.deal")
        assert "sacrifice" in str(refused["reason"]) and refused["standing"]
    # No batch of the refused part ran (its 267 pairs of 270 not counted, no output share):
    # only the fallback part's, by pairs at the same time.
    for k, r in enumerate(("s1", "s2")):
        assert roles.running[r].service.budget.pairs() - spent[k] < 90


@pytest.mark.parametrize("role", ["s2", "s1", "combiner"])
def test_a_restarted_server_holds_no_conversion_and_the_combiner_converts_again(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch, role: str,
) -> None:  # fmt: skip
    """The restarted server (its uploads read back from its data dir, its conversions not:
    they are kept in memory only) refuses the query's deal for want of the conversion; C
    converts again, and the query's answer is the same. C stopped mid-conversion (the
    matcher's stop: `Conversions.close`; its next piece held back by a query being
    answered) ends it at once, not waiting out the pause, and gives it up at S1 and S2,
    which keep none of it; C restarted converts again, the next query going standing."""
    roles.upload("south", shares["south"])
    conversions = Conversions()
    if role == "combiner":
        first = _stopped_mid_conversion(tmp_path, roles, shares, conversions, monkeypatch)
        conversions = Conversions()  # C restarted: it holds no conversion
        assert ask(roles, shares["query"], shares["south"], conversions)[0] == first
        assert conversions.converted == 1 and roles.conversions() == [1, 1]
    else:
        first, _ = ask(roles, shares["query"], shares["south"], conversions)
        roles.restart(role)
        assert roles.running[role].service.standing.conversions == 0
        again, _ = ask(roles, shares["query"], shares["south"], conversions)
        assert again == first and conversions.converted == 2
        assert roles.conversions() == ([1, 2] if role == "s1" else [2, 1])
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == first
    assert conversions.queried == 1  # standing


def _stopped_mid_conversion(tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
                            conversions: Conversions, monkeypatch: pytest.MonkeyPatch,
                            ) -> Found:  # fmt: skip
    """C's conversion of south started by a query (answered by pairs: its links), its next
    piece held back by another query being answered (PAUSE_SECONDS a bound on a hang), then
    C stopped: the conversion ends, given up at both servers (none of its bytes held there,
    `twoserver.standing_dropped`), and C starts no other."""
    monkeypatch.setattr(twoserver_conversions, "PAUSE_SECONDS", 600.0)
    bits = [8 * int(x.shape[1]) for x in shares["query"].s1.shares]
    answering = RemoteServers(f"127.0.0.1:{roles.running['s1'].port}",
                              f"127.0.0.1:{roles.running['s2'].port}", KEY, NAMES, [3, 90],
                              bits)  # fmt: skip
    conversions.asking(answering)  # (as `prepare_standing` does for a query)
    first, _ = ask(roles, shares["query"], shares["south"], conversions, settle=False)
    for _ in range(6_000):  # until the conversion waits (a bound on a hang, not a timing)
        if conversions.paused:
            break
        time.sleep(0.01)
    assert conversions.close()  # ended, not after the pause (CLOSE_SECONDS a bound)
    assert (conversions.cancelled, conversions.failed, conversions.converted) == (1, 0, 0)
    for r in ("s1", "s2"):
        assert roles.running[r].service.standing.bytes_kept() == 0
        (dropped,) = entries(tmp_path, r, "twoserver.standing_dropped")
        assert dropped["done"] == 1 and dropped["reason"] == "the combiner gave it up"
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == first
    assert conversions.declined == 1 and roles.conversions() == [0, 0]  # stopping: none
    answering.close()
    return first


def test_a_querys_whole_record_part_goes_standing_from_the_partners_size_and_a_watchs_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`partpath.for_query`: the record CLK's unblocked part under the rule, against a
    partner of at least STANDING_RECORDS records; not a blocked part, the fallback CLK's, one
    without the rule, a smaller partner, a watch's, a query of many records (by blocks), nor
    where PATH forces pairs or blocks."""
    rule = Rule(*RULE)
    whole = Proposed(0, 1, RECORD, 16_000, ((1, 1024),) * 16)
    parts = [whole, Proposed(0, 1, FALLBACK, 40, ((1, 40),)), Proposed(0, 1, RECORD, 50)]
    marks = [p.standing for p in partpath.for_query(parts, [1, 16_000], rule)]
    assert marks == [True, False, False]
    assert not partpath.for_query([whole], [1, 15_999], rule)[0].standing
    assert not partpath.for_query([whole], [1, 16_000], Rule())[0].standing
    assert not partpath.for_query([whole], [1, 16_000], rule, standing=False)[0].standing
    many = Proposed(0, 1, RECORD, 100 * 16_000, ((100, 1024),) * 16)  # by blocks: not standing
    assert partpath.for_query([many], [100, 16_000], rule)[0].blocks
    assert not partpath.for_query([many], [100, 16_000], rule)[0].standing
    for path, marked in (("pairs", False), ("blocks", False), ("standing", True)):
        monkeypatch.setattr(partpath, "PATH", path)
        assert partpath.for_query([whole], [1, 10], rule)[0].standing is marked


def test_a_servers_partners_are_dropped_least_recently_used_past_its_bound() -> None:
    """`Standings.bound`: past `most` bytes the least recently used partner goes (one alone
    is kept whatever its size); a query naming it is then refused `standing_needed`."""
    kept, ticks = Standings(most=2_000_000, clock=lambda: next(times)), []
    times = iter(range(100))
    p = plan(64, 64, (THRESHOLD,), Rule(*RULE))

    class Upload:
        records = 1_000

    uploads = {name: Upload() for name in ("a", "b", "c")}
    for name in ("a", "b", "c"):
        m = pb.BlockDeal(member_b=name, standing=name, standing_pieces=1, cutoffs=[THRESHOLD])
        entry = kept.piece(m, uploads[name], p, (64, 64), 0)  # type: ignore[arg-type]
        entry.conv.finish([np.zeros(1_000, np.uint32)] * 2)  # 800 bytes a record of 64 bits
        ticks.append(entry.conv.bytes_kept())
        if name == "b":  # a used again: b is now the least recently used
            kept.partner(pb.BlockDeal(member_b="a", standing="a", cutoffs=[THRESHOLD]),
                         uploads["a"])  # type: ignore[arg-type]  # fmt: skip
        kept.bound()
    assert ticks == [800_000] * 3 and kept.bytes_kept() == 2 * ticks[0]
    with pytest.raises(errors.FailedPrecondition, match="standing_needed: conversion 'b'"):
        kept.partner(pb.BlockDeal(member_b="b", standing="b", cutoffs=[THRESHOLD]),
                     uploads["b"])  # type: ignore[arg-type]  # fmt: skip
    kept.forget({"a", "c"}, "their uploads replaced")
    assert kept.bytes_kept() == 0


def test_blindmatch_query_goes_standing_through_the_matcher_and_converts_the_partner_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matcher as combiner (`combiner_setup`'s conversions, kept across queries): two
    `blindmatch query` runs about south's people under the shipped schema's rule, compared
    whole against south's upload, convert it once at S1 and S2 and find each person at south,
    as by pairs does."""
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)  # south's 42 records: standing
    monkeypatch.setattr(standing, "CHUNK", 16)  # its conversion in 3 pieces
    # Its conversions ahead of queries off: a query starts the conversion (the fallback).
    with uploaded(tmp_path, ahead=False) as (world, project, south, secret):
        answers = []
        for k, path in enumerate(("shape", "shape", "pairs")):
            monkeypatch.setattr(partpath, "PATH", path)
            people = person_csv(south, sorted(south.truth)[k : k + 2], tmp_path / f"q{k}.csv")
            capsys.readouterr()
            assert query(world, project, south, people, secret) == 0
            answers.append(held_by(json.loads(capsys.readouterr().out)))
        assert answers == [[["south"], ["south"]]] * 3
        # The first query's conversion goes on in the background, paused while the second is
        # answered: made by now, or counted here before its last piece (a slow CI host).
        assert combiner_conversions(world).idle(600)  # (a bound on a hang, not a timing)
        assert [world.roles[r].service.standing.conversions for r in ("s1", "s2")] == [1, 1]


def test_s1_and_s2_take_their_bound_on_partners_kept_and_the_combiner_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`two-server role --standing-bytes N`: S1's and S2's (`create_role`'s `standing_bytes`);
    refused on the combiner and under 1 (exit 2)."""
    s2 = create_role("s2", "127.0.0.1:0", KEY, MEMBER_KEY, standing_bytes=5_000)
    try:
        assert s2.service.standing.most == 5_000
    finally:
        s2.stop(grace=None)
    common = ["--listen", "127.0.0.1:0", "--key-file", str(tmp_path / "k"),
              "--member-key-file", str(tmp_path / "m")]  # fmt: skip
    for role, n in ((["--role", "combiner", "--s1", "a:1", "--s2", "a:2"], "9"),
                    (["--role", "s2"], "0")):  # fmt: skip
        assert main(["two-server", "role", *role, *common, "--standing-bytes", n]) == 2
        assert f"--standing-bytes {n}: S1's and S2's" in capsys.readouterr().err


def test_a_combiner_dealing_a_partner_bits_dabit_wrong_is_refused_and_nothing_is_kept(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The conversion's first piece with a daBit off (its [p]2): both servers refuse it
    naming the combiner (`twoserver.deal`), before D_B is opened; no conversion is kept or
    counted, and the query fails."""
    roles.upload("south", shares["south"])
    widths = sum(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    monkeypatch.setattr(ring64, "deal", _wrong_dabit(32 * widths, 1))  # a piece's 32 records
    conversions = Conversions()
    with pytest.raises(errors.PermissionDenied, match="the dealer \\(the combiner\\)"):
        ask(roles, shares["query"], shares["south"], conversions)
    for role in ("s1", "s2"):
        (refused,) = entries(tmp_path, role, "twoserver.deal")
        assert refused["standing"] and "daBit" in str(refused["reason"])
        assert not entries(tmp_path, role, "twoserver.standing")
        assert roles.running[role].service.standing.bytes_kept() == 0
    assert roles.conversions() == [0, 0] and conversions.converted == 0


def ask_each(roles: Roles, query: client.SharedUpload, partner: client.SharedUpload,
             names: list[str], conversions: Conversions | None) -> list[Found]:  # fmt: skip
    """One query (its records uploaded afresh) compared whole against each of `names` (each
    an upload of `partner`'s records) in turn, as the matcher searches a project's partners."""
    roles.upload(NAMES[0], query)
    return [ask(roles, query, partner, conversions, False, name)[0] for name in names]


def sizes(shares: dict[str, client.SharedUpload]) -> tuple[tuple[int, ...], int, int]:
    """South's CLK widths, and what S1 and S2 keep of a partner of its 90 records with [M_B]
    and without."""
    widths = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    return widths, standdeal.kept_bytes(90, widths), standdeal.kept_bytes(90, widths, 0)


def rounds(roles: Roles, shares: dict[str, client.SharedUpload], partners: list[str],
           most: int, count: int) -> Conversions:  # fmt: skip
    """`partners` (each an upload of south's records) under S1's and S2's bound `most`:
    `count` queries each compared against all of them by C's conversions, each answer that
    by pairs; those conversions."""
    for name in partners:
        roles.upload(name, shares["south"])
    for r in ("s1", "s2"):
        roles.running[r].service.standing.most = most
    conversions = Conversions()
    by_pairs = ask_each(roles, shares["query"], shares["south"], partners, None)
    for _ in range(count):
        assert ask_each(roles, shares["query"], shares["south"], partners, conversions) == by_pairs
    return conversions


def test_partners_that_do_not_all_fit_keep_those_converted_and_the_rest_go_by_pairs(
    roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """Three standing partners where S1's and S2's `--standing-bytes` hold two (and not the
    third beside them even without [M_B]): over three queries each compared against all
    three, two partners are converted once (S1 and S2 keep what C reckons) and the third goes
    by pairs every time (no conversion pushes out one in use), each answer that by pairs.
    (Before: each query converted all three again.)"""
    _, size, small = sizes(shares)
    most = 2 * size + small // 2
    conversions = rounds(roles, shares, ["south", "east", "west"], most, 3)
    assert conversions.converted == 2 and roles.conversions() == [2, 2]
    assert conversions.declined == 3 and conversions.budget == most
    for r in ("s1", "s2"):
        assert roles.running[r].service.standing.bytes_kept() == 2 * size


def test_a_query_waits_for_no_other_conversion_and_converts_inline_only_under_the_knob(
    roles: Roles, shares: dict[str, client.SharedUpload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another partner's conversion is being made a query starts none (by pairs, the
    same answer, not waiting for it); with `INLINE_RECORDS` (a knob, 0 by default) at the
    partner's records the query converts it within itself and goes standing at once."""
    roles.upload("south", shares["south"])
    conversions = Conversions()
    by_pairs, _ = ask(roles, shares["query"], shares["south"], None)
    conversions._busy.acquire()  # another partner's conversion under way
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == by_pairs
    assert conversions.converted == 0 and roles.conversions() == [0, 0]
    assert conversions.declined == 1
    conversions._busy.release()
    monkeypatch.setattr(standdeal, "INLINE_RECORDS", 90)
    assert ask(roles, shares["query"], shares["south"], conversions, settle=False)[0] == by_pairs
    assert conversions.converted == 1 and roles.conversions() == [1, 1]
    assert conversions.queried == 1  # standing within the query that converted


def test_a_query_never_waits_for_a_conversion_which_goes_on_in_the_background(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The first query against a standing partner deals the conversion's piece 0 and is
    answered by pairs while its later pieces are held back (nothing converted yet at C, S1
    or S2: the conversion is not on its path; its RemoteServers closed); once they go on,
    the conversion is made in the background (S1's and S2's audit entries name the query
    that started it) and the next query goes standing, the same answer. (Before: the first
    query made the whole conversion, waiting for it.)"""
    roles.upload("south", shares["south"])
    by_pairs, _ = ask(roles, shares["query"], shares["south"], None)
    gate = held_at_piece_1(monkeypatch)
    conversions = Conversions()
    first, _ = ask(roles, shares["query"], shares["south"], conversions, settle=False)
    assert first == by_pairs
    assert conversions.converted == conversions.queried == 0 and roles.conversions() == [0, 0]
    gate.set()
    assert conversions.idle(600)
    assert conversions.converted == 1 and roles.conversions() == [1, 1]
    for role in ("s1", "s2"):
        (made,) = entries(tmp_path, role, "twoserver.standing")
        assert made["members"] == NAMES and made["records"] == 90
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == by_pairs
    assert conversions.queried == 1 and conversions.converted == 1


def held_at_piece_1(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """C's conversions' piece 1 held back until the event returned is set."""
    gate, dealt = threading.Event(), standdeal._deal

    def deal(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
        if m.standing_piece == 1:
            assert gate.wait(600)  # (a bound on a hang, not a timing)
        return dealt(remote, conversions, m, *rest)

    monkeypatch.setattr(standdeal, "_deal", deal)
    return gate


def _later(m: pb.BlockDeal, piece: int = 1, **fields: Any) -> pb.BlockDeal:
    """Piece `piece` of `m`'s conversion naming the partner alone (C's), with `fields`."""
    out = standdeal.later_piece(m, piece)
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(out, k)[:] = v
        else:
            setattr(out, k, v)
    return out


def test_a_later_piece_naming_an_unknown_conversion_or_another_upload_is_refused(
    roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """A conversion's later piece is taken by its id alone, so S1 and S2 refuse one naming a
    conversion they do not hold, another partner's upload, other cut-offs, or a piece out of
    order (piece 0 of a conversion checked against a query's proposal starts it)."""
    roles.upload("south", shares["south"])
    roles.upload("east", shares["south"])  # another upload of the same records
    conversions = Conversions()
    ask(roles, shares["query"], shares["south"], conversions)  # south converted
    ((held, (ident, _)),) = conversions._held.items()
    s1 = pb_grpc.TwoServerBlockingStub(grpc.insecure_channel(
        f"127.0.0.1:{roles.running['s1'].port}"))  # fmt: skip
    head = pb.BlockDeal(member_b="south", records_b=90, cutoffs=held[3], standing=ident,
                        standing_pieces=3)  # fmt: skip
    if held[4]:
        head.rule.ParseFromString(held[4])
    taken = f"conversion {ident!r} of the upload of"
    wrongs = {
        "standing_needed: conversion 'other'": _later(head, standing="other"),
        f"standing_needed: {taken} 'east' is not held": _later(head, member_b="east"),
        f"standing_needed: {taken} 'south' is not held": _later(head, cutoffs=head.cutoffs[:-1]),
        f"standing_piece: 1 of 3, but conversion {ident!r}": _later(head),  # done: not again
    }
    for match, m in wrongs.items():
        with pytest.raises(grpc.RpcError) as got:
            s1.PrepareBlocks(m, metadata=(("authorization", f"Bearer {KEY}"),))
        assert match in str(got.value.details()), got.value.details()
    assert roles.conversions() == [1, 1]


def test_the_combiner_takes_the_least_room_the_servers_say_and_admits_within_it() -> None:
    """`Conversions`: the least of S1's and S2's `standing_bytes` (unset by an older role:
    4 GiB); a partner admitted alone whatever its size; one that does not fit beside those
    used within RECENT_SECONDS refused, and admitted once they have been idle longer, the
    idle one forgotten (S1 and S2 drop it for the new one)."""
    now = [0.0]
    kept = Conversions(clock=lambda: now[0])
    kept.told(0, 0)
    assert kept.budget == MOST_BYTES
    kept.told(3_000, 0)
    assert kept.budget == 3_000
    key = ("a", 1, (64,), (0.8,), b"")
    assert kept.admit(key, 5_000) == ""  # alone: the servers keep one whatever its size
    kept.put(key, ("id-a", None), 5_000)  # type: ignore[arg-type]
    kept.end()
    other = ("b", 1, (64,), (0.8,), b"")
    assert "1,000 bytes do not fit beside the 5,000" in kept.admit(other, 1_000)
    now[0] += standdeal.RECENT_SECONDS + 1
    assert kept.admit(other, 1_000) == "" and kept.get(key) is None
    assert "another partner's conversion" in kept.admit(key, 1_000)
    kept.end()


def test_the_matchers_first_query_is_answered_by_pairs_and_the_next_goes_standing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`blindmatch query` through the matcher (its channels kept, `combiner_setup`'s
    conversions): the first query is answered (south found) while its conversion's later
    pieces are held back, nothing converted at S1 or S2; they then go on in the background,
    and the next query is dealt standing against the conversion, S1 and S2 converting once.
    The matcher's stop stops its conversions (`Conversions.close`: none started after it)."""
    monkeypatch.setattr(partpath, "STANDING_RECORDS", 10)
    monkeypatch.setattr(standing, "CHUNK", 16)  # south's 42 records in 3 pieces
    gate, dealt, queried = threading.Event(), standdeal._deal, []
    query_deal, finish, finished = standdeal._query, standdeal._finish, threading.Event()

    kept: list[Conversions] = []

    def made_at_c(*args: Any) -> None:  # C's conversion kept (or failed): the next query's
        finish(*args)
        kept.append(args[0])
        finished.set()

    def deal(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
        if m.standing_piece == 1:
            assert gate.wait(600)  # (a bound on a hang, not a timing)
        return dealt(remote, conversions, m, *rest)

    def spy(*args: Any) -> Any:
        queried.append(1)
        return query_deal(*args)

    monkeypatch.setattr(standdeal, "_deal", deal)
    monkeypatch.setattr(standdeal, "_query", spy)
    monkeypatch.setattr(standdeal, "_finish", made_at_c)
    # Its conversions ahead of queries off: a query starts the conversion (the fallback).
    with uploaded(tmp_path, ahead=False) as (world, project, south, secret):
        made = [world.roles[r].service.standing for r in ("s1", "s2")]
        for k in range(2):
            people = person_csv(south, sorted(south.truth)[k : k + 1], tmp_path / f"q{k}.csv")
            assert query(world, project, south, people, secret) == 0
            assert "south" in capsys.readouterr().out
            if k == 0:
                assert [m.conversions for m in made] == [0, 0] and not queried
                gate.set()
                assert finished.wait(600)  # (a bound on a hang, not a timing)
        assert [m.conversions for m in made] == [1, 1] and queried == [1]
    assert kept[0].stopping()  # the matcher stopped: its conversions too
