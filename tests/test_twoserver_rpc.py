"""The two-server run deployed: S1, S2 and the combiner as three gRPC servers on their own
loopback ports (matcher/rpc/twoserver_service.py), members' uploads made by `shared_upload`
from real encodings and sent to each role over gRPC (client/remote/twoserver.py). Its links
are the in-process run's exactly; each role holds only its own part of the uploads; a party
down fails the run naming it; uploads that do not agree are refused naming the field."""

from __future__ import annotations

import csv
import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing as client
from blindmatch.client.errors import RejectedError, UnavailableError
from blindmatch.client.remote.twoserver import RoleClient, upload_parts
from blindmatch.matcher.core import fallback, linkbit, tickets, tworun, twoserver
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.rpc.twoserver_service import (
    MAX_PENDING,
    STALE_SECONDS,
    RunningRole,
    SharesService,
    create_role,
)
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import MESSY_SECRET, PERSON_SCHEMA, Clock, Org, auth

pytestmark = pytest.mark.server

THRESHOLD = 0.8
# 20 bits a band (the recommendation's width) in 30 bands: a few per cent of cross pairs.
PLAN = client.BandPlan(bits=20, bands=30)
NAMES = ("north", "south", "west")
Clks = npt.NDArray[np.uint8]


@pytest.fixture
def key() -> str:
    """The parties' key (the members' is MEMBER_KEY)."""
    return secrets.token_urlsafe(16)


MEMBER_KEY = "the members' key"


@pytest.fixture
def roles(key: str) -> Iterator[dict[str, RunningRole]]:
    """S2, then S1 (which calls S2), then the combiner (which calls both)."""
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    c = create_role("combiner", "127.0.0.1:0", key, MEMBER_KEY, s1=f"127.0.0.1:{s1.port}",
                    s2=f"127.0.0.1:{s2.port}")  # fmt: skip
    running = {"s1": s1, "s2": s2, "combiner": c}
    try:
        yield running
    finally:
        for role in running.values():
            role.stop(grace=None)


@pytest.fixture(scope="module")
def uploads(messy_members: tuple[list[Clks], int]) -> list[client.SharedUpload]:
    datasets, fallback_bits = messy_members
    return [client.shared_upload(d, MESSY_SECRET, PLAN, fallback_bits) for d in datasets]


def send(
    roles: dict[str, RunningRole],
    key: str,
    member: str,
    up: client.SharedUpload,
    rule: tuple[float, float, float] | None = None,
) -> None:
    for role, running in roles.items():
        with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as c:
            assert c.upload(member, up, rule) == len(up)


def combiner(roles: dict[str, RunningRole], key: str) -> RoleClient:
    return RoleClient("combiner", f"127.0.0.1:{roles['combiner'].port}", key)


@pytest.mark.parametrize("rule", [None, (0.25, 0.03, 0.01)])
def test_the_run_over_grpc_gives_the_in_process_runs_links(
    roles: dict[str, RunningRole],
    key: str,
    uploads: list[client.SharedUpload],
    rule: tuple[float, float, float] | None,
) -> None:
    """Without a rule, and under the default schema's (which every member's upload carries
    to each role: S1 and S2 run its circuit on the first CLKs' pairs)."""
    for name, up in zip(NAMES, uploads, strict=True):
        send(roles, key, name, up, rule)
    with combiner(roles, key) as c:
        got = c.run(THRESHOLD, NAMES)
    s1 = twoserver.BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads],
                                  b"", [u.s1.popcounts for u in uploads])  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in uploads], b"",
                               [u.s2.popcounts for u in uploads],
                               [u.s2.seal_key for u in uploads])  # fmt: skip
    pops = [u.combiner.popcounts for u in uploads]
    want = tworun.run(s1, s2, twoserver.Combiner(pops, THRESHOLD, rule=Rule(*rule or (0, 0, 0))))
    held = roles["s1"].service.held["north"]
    assert held.rule == Rule(*rule or (0, 0, 0))
    assert len(want.links) > 300
    assert got.members == list(NAMES)
    for name in ("dset", "row", "partner", "partner_row", "score"):
        assert np.array_equal(getattr(got, name), getattr(want.links, name)), name
    assert (got.groups, got.comparisons, got.method) == (
        want.groups, want.comparisons, "two-server+fallback"
    )  # fmt: skip
    # The rounds between S1 and S2 crossed the network: as many as in process, and the
    # gate inputs' bytes exactly (the setups and outputs carry their framing besides).
    assert got.rounds == want.transcript.rounds
    for pair in (("S1", "S2"), ("S2", "S1")):
        assert got.bytes_sent["->".join(pair)] == want.transcript.sent[pair]


def test_each_role_holds_only_its_own_part_of_the_uploads(
    roles: dict[str, RunningRole], key: str, uploads: list[client.SharedUpload]
) -> None:
    send(roles, key, "north", uploads[0])
    s1, s2, c = (roles[r].service.held["north"] for r in ("s1", "s2", "combiner"))
    assert s1.sealed and s1.shares and s1.popshares and s1.lacking is not None
    assert not s1.seal_key and s2.seal_key == uploads[0].s2.seal_key
    assert s2.shares and s2.popshares and not s2.sealed and s2.lacking is None
    # The combiner: how many records, of CLKs how wide; no popcount, no share, no key.
    assert (c.records, c.bits) == (len(uploads[0]), (1024, 1024))
    assert not (c.popcounts or c.popshares or c.shares or c.sealed or c.seal_key)
    assert c.lacking is None
    for clk in range(2):
        for field in ("counts", "keys", "classes", "sealed"):
            assert np.array_equal(getattr(s1.sealed[clk], field),
                                  getattr(uploads[0].s1.bands[clk], field))  # fmt: skip
        assert np.array_equal(s1.shares[clk], uploads[0].s1.shares[clk])
        assert np.array_equal(s2.shares[clk], uploads[0].s2.shares[clk])
        both = s1.popshares[clk] ^ s2.popshares[clk]
        assert np.array_equal(both, uploads[0].combiner.popcounts[clk])
    assert np.array_equal(s1.lacking, fallback.lacking_from_popcounts(
        *uploads[0].combiner.popcounts))  # fmt: skip
    # A share sent to the combiner is refused, and nothing of it is held.
    shares = upload_parts("spy", "s2", uploads[1])
    target = f"127.0.0.1:{roles['combiner'].port}"
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.TwoServerCombinerStub(channel).Upload(shares, metadata=auth(MEMBER_KEY))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "seal_key (part 0): only S2 receives it" in str(refused.value.details())
    assert "spy" not in roles["combiner"].service.held
    # S1's sealed band keys sent to S2 are refused too.
    target = f"127.0.0.1:{roles['s2'].port}"
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.TwoServerSharesStub(channel).Upload(
            upload_parts("spy", "s1", uploads[1]), metadata=auth(MEMBER_KEY)
        )
    assert "band_keys (part 0): only S1 receives band keys" in str(refused.value.details())
    assert "spy" not in roles["s2"].service.held


@pytest.mark.parametrize("down", ["s1", "s2"])
def test_a_stopped_server_fails_the_run_naming_it(
    roles: dict[str, RunningRole], key: str, uploads: list[client.SharedUpload], down: str
) -> None:
    for name, up in zip(NAMES[:2], uploads[:2], strict=True):
        send(roles, key, name, up)
    roles[down].stop(grace=None)
    with combiner(roles, key) as c, pytest.raises(UnavailableError) as refused:
        c.run(THRESHOLD)
    message = str(refused.value)
    assert f"{down.upper()} (127.0.0.1:{roles[down].port}) is unreachable" in message
    assert message.endswith("[UNAVAILABLE]")
    assert "cannot reach the combiner" not in message  # the combiner answered


def test_uploads_that_differ_between_the_roles_are_refused_naming_the_field(
    roles: dict[str, RunningRole],
    key: str,
    uploads: list[client.SharedUpload],
    messy_members: tuple[list[Clks], int],
) -> None:
    for name, up in zip(NAMES[:2], uploads[:2], strict=True):
        send(roles, key, name, up)
    # south's upload to S1 is made again without its last record: S1 holds one fewer than C.
    datasets = uploads[1]
    clks, fallback_bits = messy_members[0][1], messy_members[1]
    keys = client.record_keys(clks[:-1], MESSY_SECRET, PLAN, fallback_bits)
    fewer = client.SharedUpload(
        client.ToS1(tuple(client.seal_bands(k, c, datasets.s2.seal_key)
                          for c, k in enumerate(keys)),
                    tuple(s[:-1] for s in datasets.s1.shares),
                    tuple(p[:-1] for p in datasets.s1.popcounts),
                    None if datasets.s1.lacking is None else datasets.s1.lacking[:-1]),
        datasets.s2, datasets.combiner,
    )  # fmt: skip
    with RoleClient("s1", f"127.0.0.1:{roles['s1'].port}", MEMBER_KEY) as s1:
        assert s1.upload("south", fewer) == len(datasets) - 1
    with combiner(roles, key) as c, pytest.raises(RejectedError) as refused:
        c.run(THRESHOLD)
    message = str(refused.value)
    assert f"S1 (127.0.0.1:{roles['s1'].port}): records:" in message
    n = len(datasets)
    assert f"{n} of 'south' at the combiner, but S1 holds {n - 1} (the uploads differ)" in message
    assert "[INVALID_ARGUMENT]" in message


# -- the command line: `encode --two-server`, `two-server upload`, `two-server run` ------------


def test_the_cli_encodes_uploads_and_runs_over_the_roles(
    roles: dict[str, RunningRole],
    key: str,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file, member_key_file = tmp_path / "parties.key", tmp_path / "members.key"
    for path, text in ((key_file, key), (member_key_file, MEMBER_KEY)):
        path.write_text(text + "\n")
        path.chmod(0o600)
    addresses = [f"--{r}=127.0.0.1:{roles[r].port}" for r in ("s1", "s2", "combiner")]
    folders = {}
    for name, org in orgs.items():
        folders[name] = tmp_path / f"{name}.encoded"
        assert main(["encode", str(org.csv), "--schema", str(PERSON_SCHEMA), "--secret-file",
                     str(secret_file), "--mapping", str(org.mapping), "--out",
                     str(folders[name]), "--two-server", "--quiet"]) == 0  # fmt: skip
        assert main(["two-server", "upload", str(folders[name]), "--member", name, *addresses,
                     "--key-file", str(member_key_file)]) == 0  # fmt: skip
        assert f"the combiner (127.0.0.1:{roles['combiner'].port}) holds" in capsys.readouterr().out
    out = tmp_path / "links.csv"
    # --out a folder with --force: refused before the run (before, S1 and S2 evaluated every
    # pair, each once an upload, and then the CSV could not be written: the run below would
    # have found its pairs spent).
    assert main(["two-server", "run", addresses[2], "--key-file", str(key_file), "--threshold",
                 "0.8", "--out", str(tmp_path), "--force", "--quiet"]) == 2  # fmt: skip
    assert f"{tmp_path}: is a folder; give the name" in capsys.readouterr().err
    assert main(["two-server", "run", addresses[2], "--key-file", str(key_file),
                 "--threshold", "0.8", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    with open(out, newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    # The same run in process over the files `encode --two-server` wrote.
    uploads = [client.read_shared(folders[n] / client.SHARED_FOLDER) for n in sorted(orgs)]
    s1 = twoserver.BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads],
                                  b"", [u.s1.popcounts for u in uploads])  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in uploads], b"",
                               [u.s2.popcounts for u in uploads],
                               [u.s2.seal_key for u in uploads])  # fmt: skip
    links = tworun.run(s1, s2, twoserver.Combiner([u.combiner.popcounts for u in uploads],
                                                  0.8)).links  # fmt: skip
    names = sorted(orgs)
    want = [[names[d], str(r), names[p], str(pr), f"{s:.6f}"] for d, r, p, pr, s in
            zip(links.dset, links.row, links.partner, links.partner_row, links.score,
                strict=True)]  # fmt: skip
    assert len(want) >= 4  # the small exports share people
    assert got == [["member", "row", "partner", "partner_row", "score"], *want]


def test_the_cli_refuses_plaintext_off_loopback_one_key_for_both_and_a_readable_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file, member_key_file = tmp_path / "k", tmp_path / "m"
    for path in (key_file, member_key_file):
        path.write_text(f"{path.name}'s key\n")
        path.chmod(0o600)
    role = ["two-server", "role", "--key-file", str(key_file), "--member-key-file",
            str(member_key_file)]  # fmt: skip
    assert main([*role, "--role", "s2", "--listen", "0.0.0.0:0"]) == 2
    assert "refusing plaintext gRPC on a non-loopback address" in capsys.readouterr().err
    assert main([*role, "--role", "s1", "--listen", "127.0.0.1:0", "--s2", "10.1.2.3:50072"]) == 2
    assert "--s2 10.1.2.3:50072: refusing plaintext to a party" in capsys.readouterr().err
    assert main([*role, "--role", "combiner", "--listen", "127.0.0.1:0", "--s2", "h:1"]) == 2
    assert "--s1: required for --role combiner" in capsys.readouterr().err
    member_key_file.write_text("k's key\n")
    assert main([*role, "--role", "s2", "--listen", "127.0.0.1:0"]) == 2
    assert "--member-key-file: two different keys" in capsys.readouterr().err
    member_key_file.chmod(0o644)
    assert main([*role, "--role", "s2", "--listen", "127.0.0.1:0"]) == 2
    assert "--member-key-file" in (err := capsys.readouterr().err)
    assert "readable by others than its owner" in err
    member_key_file.write_text("m's key\n")
    member_key_file.chmod(0o600)
    digest = tmp_path / "c.sha256"
    digest.write_text("sha256:abc\n")
    digest.chmod(0o600)
    s2 = [*role, "--role", "s2", "--listen", "127.0.0.1:0"]
    assert main([*s2, "--party-key", f"s2={key_file}"]) == 2
    assert "--party-key s2=" in (err := capsys.readouterr().err)
    assert "ROLE one of s1, combiner, operator (a party other than --role s2)" in err
    assert main([*s2, "--party-key", f"combiner={digest}"]) == 2
    assert "sha256:...: 64 hex digits after 'sha256:'" in capsys.readouterr().err


def test_a_party_key_digest_file_others_can_read_is_refused_naming_it_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --party-key file holding only a digest is kept owner-only like a key: a group- or
    world-readable one is refused before the role listens, naming the flag, the file, its
    mode, what a reader could do with it, and the chmod that fixes it."""
    key_file, member_key_file = tmp_path / "k", tmp_path / "m"
    for path in (key_file, member_key_file):
        path.write_text(f"{path.name}'s key\n")
        path.chmod(0o600)
    digest = tmp_path / "combiner.sha256"
    digest.write_text("sha256:" + hashlib.sha256(b"the combiner's key").hexdigest() + "\n")
    s2 = ["two-server", "role", "--key-file", str(key_file), "--member-key-file",
          str(member_key_file), "--role", "s2", "--listen", "127.0.0.1:0",
          "--party-key", f"combiner={digest}"]  # fmt: skip
    for mode in (0o640, 0o604):
        digest.chmod(mode)
        assert main(s2) == 2
        err = capsys.readouterr().err
        assert f"--party-key combiner: {digest}: readable by others than its owner" in err
        assert f"(mode {mode:o})" in err and "its sha256: digest, is kept owner-only" in err
        assert f"chmod 600 {digest}" in err
    key_file.chmod(0o644)  # a key file keeps its own advice
    assert main(s2) == 2
    assert "whoever reads it can call the roles: chmod 600" in capsys.readouterr().err


def test_batches_a_failed_run_left_on_s2_are_forgotten_and_never_fill_it(key: str) -> None:
    clock = Clock()
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, clock=clock)
    try:
        n = MAX_PENDING + 2
        up = client.shared_upload(np.zeros((n, 128), np.uint8), b"s", client.BandPlan(4, 4))
        with RoleClient("s2", f"127.0.0.1:{s2.port}", MEMBER_KEY) as c:
            c.upload("north", up)
            c.upload("south", up)
        dealt = linkbit.deal(linkbit.circuit(1024, (THRESHOLD,)), 1)

        def prepare(batch: str, row: int) -> None:
            rows = np.array([row], "<u4").tobytes()  # a pair of its own: S2 prepares a
            # pair once an upload
            request = pb.CircuitBatch(batch=batch, member_a="north", member_b="south",
                                      records_a=n, records_b=n, rows_a=rows, rows_b=rows,
                                      cutoffs=[THRESHOLD], setup=dealt.to_s2)  # fmt: skip
            stub.Prepare(request, metadata=auth(key))

        with grpc.insecure_channel(f"127.0.0.1:{s2.port}") as channel:
            stub = pb_grpc.TwoServerSharesStub(channel)
            for k in range(MAX_PENDING):  # prepared, never exchanged nor collected
                prepare(f"b{k}", k)
            with pytest.raises(grpc.RpcError) as full:
                prepare("next", MAX_PENDING)
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            clock.advance(STALE_SECONDS + 1)
            prepare("next", MAX_PENDING + 1)
        service = s2.service
        assert isinstance(service, SharesService)
        assert list(service.pending) == ["next"]
    finally:
        s2.stop(grace=None)


# -- a dishonest combiner: S1 and S2 evaluate what S1 proposed, at the run's cut-offs, once ----


def test_a_tampering_combiner_is_refused_cut_offs_unproposed_pairs_and_second_evaluations(
    roles: dict[str, RunningRole], key: str
) -> None:
    """A hand-driven combiner after the run's Propose, which tells it each part's size only:
    cut-offs of its own (to place a pair's Dice), a pair S1 did not propose, a proposed pair
    by name (answered 0: C learns a candidate's bits only through the proposal, gated by its
    link bit), a batch that differs between S1 and S2, a part again: each refused with a
    status naming the field, or answered 0."""
    clks = np.random.default_rng(18).integers(0, 256, (6, 128), dtype=np.uint8)
    up = client.shared_upload(clks, b"s", client.BandPlan(4, 4))

    def upload(member: str) -> None:
        for role in ("s1", "s2"):
            with RoleClient(role, f"127.0.0.1:{roles[role].port}", MEMBER_KEY) as c:
                c.upload(member, up)

    for member in ("north", "south"):
        upload(member)
    channels = [grpc.insecure_channel(f"127.0.0.1:{roles[r].port}") for r in ("s1", "s2")]
    s1, s2 = pb_grpc.TwoServerBlockingStub(channels[0]), pb_grpc.TwoServerSharesStub(channels[1])

    def propose() -> list[pb.CandidatePairs]:
        request = pb.ProposeRequest(members=["north", "south"], records=[6, 6], threshold=0.8)
        return list(s1.Propose(request, metadata=auth(key)))

    def evaluate(
        batch: str,
        pair: tuple[int, int] | None,
        cutoffs: list[float],
        s2_pair: tuple[int, int] | None = None,
        skip_s2: bool = False,
        part: int = 0,
        count: int = 1,
    ) -> npt.NDArray[np.bool_]:
        """The hand-driven combiner: a pair by name, or (pair None) `count` pairs of `part`
        of the proposal; the bits it reveals."""
        circuit = linkbit.circuit(1024, tuple(cutoffs))
        n = 1 if pair else count
        dealt = linkbit.deal(circuit, n)

        def request(setup: bytes, rows: tuple[int, int] | None) -> pb.CircuitBatch:
            named = dict(rows_a=np.array(rows[:1], "<u4").tobytes(),
                         rows_b=np.array(rows[1:], "<u4").tobytes()) if rows else dict(
                proposed=True, part=part, offset=0, count=count)  # fmt: skip
            return pb.CircuitBatch(batch=batch, member_a="north", member_b="south",
                                   records_a=6, records_b=6, cutoffs=cutoffs, setup=setup,
                                   **named)  # type: ignore[arg-type]  # fmt: skip

        if not skip_s2:
            s2.Prepare(request(dealt.to_s2, s2_pair or pair), metadata=auth(key))
        o1 = s1.Evaluate(request(dealt.to_s1, pair), metadata=auth(key))
        o2 = s2.Collect(pb.CollectRequest(batch=batch), metadata=auth(key))
        return linkbit.reveal(circuit, o1.shares, o2.shares, n, tagged=pair is None)

    def refused(code: grpc.StatusCode, *args: object, **kwargs: object) -> str:
        with pytest.raises(grpc.RpcError) as got:
            evaluate(*args, **kwargs)  # type: ignore[arg-type]
        assert got.value.code() == code, got.value.details()
        return str(got.value.details())

    # Before a run is proposed S1 evaluates nothing.
    assert "Propose first" in refused(grpc.StatusCode.FAILED_PRECONDITION, "b0", (0, 0), [0.8],
                                      skip_s2=True)  # fmt: skip
    parts = propose()
    # What C receives of the proposal: members, CLK and a count, no pair.
    assert [{f.name for f, _ in p.ListFields()} for p in parts] == [
        {"member_b", "last", "pairs"}]  # member_a 0 and clk 0 are proto3 defaults  # fmt: skip
    service = roles["s1"].service
    assert service.proposal is not None
    held = service.proposal.parts[0]  # S1's own: in an order of its own
    proposed = set(zip(held.rows_a.tolist(), held.rows_b.tolist(), strict=True))
    assert parts[0].pairs == len(proposed) and (0, 0) in proposed  # the same CLKs: (r, r)
    unproposed = next((a, b) for a in range(6) for b in range(6) if (a, b) not in proposed)
    # Cut-offs of C's own: malformed ones refused by both servers, another threshold by S1.
    for s in (False, True):
        details = refused(grpc.StatusCode.INVALID_ARGUMENT, "b1", (0, 0), [0.8, 0.81],
                          skip_s2=s)  # fmt: skip
        assert "buckets: [0.81]; the circuit's cut-offs are fixed" in details
    details = refused(grpc.StatusCode.PERMISSION_DENIED, "b2", (1, 1), [0.5])
    assert "cutoffs: [0.5], but the run's are [0.8] (fixed when S1 proposed)" in details
    # A pair S1 did not propose.
    details = refused(grpc.StatusCode.PERMISSION_DENIED, "b3", unproposed, [0.8])
    assert "1 of the batch's 1 pairs S1 did not propose" in details
    assert "a run of two members has no pair beyond its proposal" in details
    # A proposed pair by name: answered 0 (it links: Dice 1.0), evaluated by neither server.
    assert not evaluate("b4", (0, 0), [0.8]).any()
    # S2 prepared another pair than the one S1 checked: S2 refuses the rounds.
    details = refused(grpc.StatusCode.PERMISSION_DENIED, "b5", (2, 2), [0.8], s2_pair=(3, 3))
    assert "checked: batch 'b5' as S1 checked it is not the batch the combiner prepared" in details
    details = refused(grpc.StatusCode.PERMISSION_DENIED, "b6", None, [0.8], part=5)
    assert "part: 5, but S1 proposed 1 parts" in details
    # The part by reference: the links' rows, gated by their link bits, each pair once.
    bits = evaluate("b7", None, [0.8], count=len(proposed))
    rows_a, rows_b = linkbit.untag(bits)
    links = {(int(a), int(b)) for a, b, k in zip(rows_a, rows_b, bits[0], strict=True) if k}
    assert links == {(r, r) for r in range(6)}  # the same records link, nothing else shows
    assert not bits[1:, ~bits[0]].any()
    details = refused(grpc.StatusCode.FAILED_PRECONDITION, "b8", None, [0.8], skip_s2=True,
                      count=len(proposed))  # fmt: skip
    assert "would be evaluated more than once since 'north' and 'south' uploaded" in details
    assert "S1 evaluates a pair at most once an upload" in details
    # A member uploading again ends the proposed run and gives its pairs their evaluation.
    upload("north")
    assert "Propose first" in refused(grpc.StatusCode.FAILED_PRECONDITION, "b9", (0, 0), [0.8],
                                      skip_s2=True)  # fmt: skip
    propose()
    assert evaluate("b10", None, [0.8], count=len(proposed))[0].sum() == 6
    for channel in channels:
        channel.close()


def test_the_rule_is_the_uploads_and_fixed_for_the_run(
    roles: dict[str, RunningRole], key: str, uploads: list[client.SharedUpload]
) -> None:
    """C names the rule every member's upload carries, or none: another is refused at
    Propose; a batch under another rule than the run's is refused by S1 (naming the field),
    and a rule the uploads do not carry by S2."""
    default = (0.25, 0.03, 0.01)
    send(roles, key, "north", uploads[0], default)
    send(roles, key, "south", uploads[1], default)
    with grpc.insecure_channel(f"127.0.0.1:{roles['s1'].port}") as channel:
        s1 = pb_grpc.TwoServerBlockingStub(channel)

        def propose(rule: tuple[float, float, float] | None) -> list[pb.CandidatePairs]:
            wired = pb.ScoreRule(gap=rule[0], offset=rule[1], reach=rule[2]) if rule else None
            request = pb.ProposeRequest(members=["north", "south"],
                                        records=[len(uploads[0]), len(uploads[1])],
                                        threshold=0.8, fallback=True, rule=wired)  # fmt: skip
            return list(s1.Propose(request, metadata=auth(key)))

        with pytest.raises(grpc.RpcError) as got:
            propose((0.5, 0.03, 0.01))
        assert got.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "rule: 0.5,0.03,0.01, but 'north''s upload says 0.25,0.03,0.01" in str(
            got.value.details())  # fmt: skip
        assert propose(None)  # the run may leave the rule out
        assert roles["s1"].service.proposal is not None
        assert roles["s1"].service.proposal.rule == NO_RULE
        c = linkbit.circuit(1024, (0.8,))
        batch = pb.CircuitBatch(
            batch="r1", member_a="north", member_b="south", records_a=len(uploads[0]),
            records_b=len(uploads[1]),
            cutoffs=[0.8], setup=linkbit.deal(c, 1).to_s1, proposed=True, part=0, offset=0,
            count=1, rule=pb.ScoreRule(gap=0.25, offset=0.03, reach=0.01),
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as got:
            s1.Evaluate(batch, metadata=auth(key))
        assert got.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "rule: 0.25,0.03,0.01, but the run's is none" in str(got.value.details())


# -- a key a party: each RPC admits only the caller the protocol has call it ------------------


def test_with_a_key_a_party_each_rpc_refuses_every_other_caller_naming_it() -> None:
    own = {p: secrets.token_urlsafe(16) for p in ("s1", "s2", "combiner", "operator")}
    # Each role holds its own key and only the digests of the others' (it can check them,
    # not present them).
    digests = {p: "sha256:" + hashlib.sha256(k.encode()).hexdigest() for p, k in own.items()}

    def others(role: str) -> dict[str, str]:
        return {p: d for p, d in digests.items() if p != role}

    s2 = create_role("s2", "127.0.0.1:0", own["s2"], MEMBER_KEY, keys=others("s2"))
    s1 = create_role("s1", "127.0.0.1:0", own["s1"], MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     keys=others("s1"))  # fmt: skip
    c = create_role("combiner", "127.0.0.1:0", own["combiner"], MEMBER_KEY,
                    s1=f"127.0.0.1:{s1.port}", s2=f"127.0.0.1:{s2.port}",
                    keys=others("combiner"))  # fmt: skip
    roles = {"s1": s1, "s2": s2, "combiner": c}
    channels = {r: grpc.insecure_channel(f"127.0.0.1:{roles[r].port}") for r in roles}
    try:
        clks = np.random.default_rng(2).integers(0, 256, (4, 128), dtype=np.uint8)
        up = client.shared_upload(clks, b"s", client.BandPlan(4, 4))
        for member in ("north", "south"):
            for role, running in roles.items():
                with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as rc:
                    rc.upload(member, up)
        # The run works: C calls S1 and S2 with its key, S1 calls S2 with its own.
        with RoleClient("combiner", f"127.0.0.1:{c.port}", own["operator"]) as rc:
            got = rc.run(THRESHOLD)  # the same 4 records: each its partner
        # Each link listed from both ends.
        pairs = sorted(zip(got.row.tolist(), got.partner_row.tolist(), strict=True))
        rounds = linkbit.circuit(1024, (0.8, *twoserver.default_buckets(0.8))).rounds
        assert (got.rounds, pairs) == (rounds, [(r, r) for r in range(4) for _ in range(2)])
        s1_stub = pb_grpc.TwoServerBlockingStub(channels["s1"])
        s2_stub = pb_grpc.TwoServerSharesStub(channels["s2"])
        c_stub = pb_grpc.TwoServerCombinerStub(channels["combiner"])
        batch = pb.CircuitBatch(batch="b", member_a="north", member_b="south", records_a=4,
                                records_b=4, rows_a=bytes(4), rows_b=bytes(4),
                                cutoffs=[0.8])  # fmt: skip
        calls = {
            "Propose": ("S1", "combiner", lambda m: list(s1_stub.Propose(pb.ProposeRequest(),
                                                                         metadata=m))),
            "Evaluate": ("S1", "combiner", lambda m: s1_stub.Evaluate(batch, metadata=m)),
            "Prepare": ("S2", "combiner", lambda m: s2_stub.Prepare(batch, metadata=m)),
            "Collect": ("S2", "combiner", lambda m: s2_stub.Collect(pb.CollectRequest(batch="b"),
                                                                    metadata=m)),
            "Exchange": ("S2", "s1", lambda m: list(s2_stub.Exchange(
                iter([pb.RoundMessage(batch="b")]), metadata=m))),
            "Expand": ("S2", "s1", lambda m: list(s2_stub.Expand(
                iter([pb.SealedMatches(run=pb.ProposeRequest())]), metadata=m))),
            "Forget": ("S1", "combiner", lambda m: s1_stub.Forget(
                pb.ForgetRequest(project="p"), metadata=m)),
            "Run": ("the combiner", "operator", lambda m: c_stub.Run(
                pb.TwoServerRunRequest(threshold=0.8), metadata=m)),
            "Upload": ("the combiner", "member", lambda m: c_stub.Upload(
                iter(upload_parts("east", "combiner", up)), metadata=m)),
        }  # fmt: skip
        whose = {"s1": "S1's", "s2": "S2's", "combiner": "the combiner's",
                 "operator": "the operator's", "member": "the members'"}  # fmt: skip
        keys = {**own, "member": MEMBER_KEY}
        s2_forget = ("S2", "combiner", lambda m: s2_stub.Forget(pb.ForgetRequest(project="p"),
                                                                metadata=m))  # fmt: skip
        # Both servers' other calls from C, and S2's block exchange with S1 (each refused
        # by its key before its request is read: an empty one will do).
        others_of = [
            ("Holds", ("S1", "combiner", lambda m: s1_stub.Holds(pb.HoldsRequest(), metadata=m))),
            ("Holds", ("S2", "combiner", lambda m: s2_stub.Holds(pb.HoldsRequest(), metadata=m))),
            ("Resume", ("S1", "combiner", lambda m: s1_stub.Resume(pb.ResumeRequest(),
                                                                   metadata=m))),
            ("Resume", ("S2", "combiner", lambda m: s2_stub.Resume(pb.ResumeRequest(),
                                                                   metadata=m))),
            ("Acknowledge", ("S1", "combiner", lambda m: s1_stub.Acknowledge(
                pb.AcknowledgeRequest(), metadata=m))),
            ("Acknowledge", ("S2", "combiner", lambda m: s2_stub.Acknowledge(
                pb.AcknowledgeRequest(), metadata=m))),
            ("PrepareBlocks", ("S1", "combiner", lambda m: s1_stub.PrepareBlocks(
                pb.BlockDeal(), metadata=m))),
            ("PrepareBlocks", ("S2", "combiner", lambda m: s2_stub.PrepareBlocks(
                iter([pb.BlockDeal()]), metadata=m))),
            ("BlockExchange", ("S2", "s1", lambda m: list(s2_stub.BlockExchange(
                iter([pb.BlockMessage()]), metadata=m)))),
        ]  # fmt: skip
        for rpc, (name, caller, call) in [*calls.items(), ("Forget", s2_forget), *others_of]:
            for wrong in sorted(set(keys) - {caller}):
                with pytest.raises(grpc.RpcError) as refused:
                    call(auth(keys[wrong]))
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, (rpc, wrong)
                assert refused.value.details() == (
                    f"{name} answers {rpc} only with {whose[caller]} key, not with {whose[wrong]}"
                ), (rpc, wrong)
            with pytest.raises(grpc.RpcError) as refused:
                call(auth("a key nobody holds"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            flags = ("its --member-key-file" if caller == "member" else "its --key-file and "
                     "--party-key; the matcher's is its --two-server-key-file")  # fmt: skip
            assert refused.value.details() == (
                f"{name} answers {rpc} only with {whose[caller]} key: the key presented is none "
                f"that {name} was started with ({flags})"
            )
        assert "east" not in c.service.held
        assert {"north", "south"} <= set(s1.service.held) & set(s2.service.held)  # none forgot
    finally:
        for channel in channels.values():
            channel.close()
        for running in roles.values():
            running.stop(grace=None)


# -- the roles' audit logs -------------------------------------------------------------------


def test_each_role_audits_uploads_runs_and_refusals_in_its_data_dir(
    tmp_path: Path, key: str
) -> None:
    dirs = {r: tmp_path / r for r in ("s1", "s2", "combiner")}
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=dirs["s2"])
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=dirs["s1"])  # fmt: skip
    c = create_role("combiner", "127.0.0.1:0", key, MEMBER_KEY, s1=f"127.0.0.1:{s1.port}",
                    s2=f"127.0.0.1:{s2.port}", data_dir=dirs["combiner"])  # fmt: skip
    roles = {"s1": s1, "s2": s2, "combiner": c}
    clks = np.random.default_rng(3).integers(0, 256, (4, 128), dtype=np.uint8)
    up = client.shared_upload(clks, b"s", client.BandPlan(4, 4))
    try:
        for member in ("north", "south"):
            for role, running in roles.items():
                with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as rc:
                    rc.upload(member, up)
        with RoleClient("combiner", f"127.0.0.1:{c.port}", key) as rc:
            got = rc.run(THRESHOLD)
        # A combiner asking S1 for the run's pairs again: refused, and in S1's log.
        cutoffs = [THRESHOLD, *twoserver.default_buckets(THRESHOLD)]
        with grpc.insecure_channel(f"127.0.0.1:{s1.port}") as channel, pytest.raises(grpc.RpcError):
            pb_grpc.TwoServerBlockingStub(channel).Evaluate(pb.CircuitBatch(
                batch="again", member_a="north", member_b="south", records_a=4, records_b=4,
                proposed=True, part=0, offset=0, count=got.comparisons, cutoffs=cutoffs,
                setup=bytes(32),
            ), metadata=auth(key))  # fmt: skip
    finally:
        for running in roles.values():
            running.stop(grace=None)
    # Read back after the roles stopped (the files outlive them), each chain intact.
    logs = {}
    for role, folder in dirs.items():
        kept = RoleAudit(folder, role)
        try:
            assert kept.log.verify().ok, role
            logs[role] = [(e.actor, e.action, e.member, e.detail) for e in kept.log.entries()]
        finally:
            kept.close()
        assert (folder / f"twoserver-{role}.audit.key").stat().st_mode & 0o077 == 0
    for role, entries in logs.items():
        uploads = [e for e in entries if e[1] == "twoserver.upload"]
        assert [(a, m) for a, _, m, _ in uploads] == [("north", "north"), ("south", "south")]
        for _, _, _, detail in uploads:
            assert detail["role"] == role and detail["records"] == 4 and detail["clks"] == 1
            assert len(str(detail["sha256"])) == 64
    runs = {r: [e for e in logs[r] if e[1] == "twoserver.run"] for r in logs}
    pairs = got.comparisons
    assert [(a, d["members"], d["pairs"]) for a, _, _, d in runs["s1"]] == [
        ("combiner", ["north", "south"], pairs)
    ]
    assert [(a, d["pairs"], d["links"]) for a, _, _, d in runs["combiner"]] == [
        ("operator", pairs, len(got.dset))
    ]
    # S2 records the run S1 opened batches of (S1's run id), each pair of members once.
    run_id = runs["s1"][0][3]["run"]
    assert [(a, d["run"], d["members"], d["cutoffs"]) for a, _, _, d in runs["s2"]] == [
        ("s1", run_id, ["north", "south"], [THRESHOLD, *twoserver.default_buckets(THRESHOLD)])
    ]
    refused = [d for a, action, _, d in logs["s1"] if action == "twoserver.refused"]
    n = got.comparisons
    assert refused == [{"role": "s1", "members": ["north", "south"], "pairs": n, "over": n}]
    expanded = [(a, d["members"], d["pairs"]) for a, action, _, d in logs["s2"]
                if action == "twoserver.expand"]  # fmt: skip
    assert len(expanded) == 1 and expanded[0][:2] == ("s1", ["north", "south"])
    assert expanded[0][2] >= pairs  # before S1's split by the fallback's rule
    # Never the data: no share, key or popcount in any entry.
    text = repr(logs)
    for array in (*up.s1.shares, *up.s2.shares):
        assert array.tobytes().hex()[:16] not in text


def test_s1_and_s2_forget_a_project_members_uploads_every_tag_and_audit_the_names(
    tmp_path: Path, key: str
) -> None:
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=tmp_path / "s2")
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1")  # fmt: skip
    roles = {"s1": s1, "s2": s2}
    up = client.shared_upload(np.zeros((4, 128), np.uint8), b"s", client.BandPlan(4, 4))
    names = ["p/west/0000000a", "p/north/0000000b", "q/west/0000000c"]
    try:
        for role, running in roles.items():
            for name in names:
                ticket = tickets.issue(MEMBER_KEY, name, int(time.time()) + 600)
                with RoleClient(role, f"127.0.0.1:{running.port}", ticket) as rc:
                    rc.upload(name, up)
        with (
            grpc.insecure_channel(f"127.0.0.1:{s1.port}") as c1,
            grpc.insecure_channel(f"127.0.0.1:{s2.port}") as c2,
        ):
            stubs = (pb_grpc.TwoServerBlockingStub(c1), pb_grpc.TwoServerSharesStub(c2))

            def forget(**request: str) -> list[int]:
                return [stub.Forget(pb.ForgetRequest(**request), metadata=auth(key)).dropped
                        for stub in stubs]  # fmt: skip

            assert forget(project="p", member="west") == [1, 1]  # not q's west, not p's north
            assert forget(project="p", member="west") == [0, 0]
            assert [sorted(r.service.held) for r in roles.values()] == [names[1:]] * 2
            assert forget(project="p") == [1, 1]  # the project (it expired)
            assert [sorted(r.service.held) for r in roles.values()] == [names[2:]] * 2
    finally:
        for running in roles.values():
            running.stop(grace=None)
    for role in roles:
        kept = RoleAudit(tmp_path / role, role)
        try:
            assert kept.log.verify().ok
            forgot = [(e.actor, e.member, e.detail) for e in kept.log.entries()
                      if e.action == "twoserver.forget"]  # fmt: skip
        finally:
            kept.close()
        assert forgot == [
            ("combiner", "p/west/", {"role": role, "dropped": 1, "names": ["p/west/0000000a"]}),
            ("combiner", "p/west/", {"role": role, "dropped": 0, "names": []}),
            ("combiner", "p/", {"role": role, "dropped": 1, "names": ["p/north/0000000b"]}),
        ]


def test_verify_audit_names_the_first_edited_entry_and_a_readable_key(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "s2"
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=data)
    try:
        up = client.shared_upload(np.zeros((4, 128), np.uint8), b"s", client.BandPlan(4, 4))
        with RoleClient("s2", f"127.0.0.1:{s2.port}", MEMBER_KEY) as c:
            for member in ("north", "south", "west"):
                c.upload(member, up)
        check = ["two-server", "verify-audit", "--data-dir", str(data), "--role", "s2"]
        # Checked while the role runs (read-only).
        assert main(check) == 0
        assert "twoserver-s2.sqlite: intact, 3 entries. Head 3:" in capsys.readouterr().out
    finally:
        s2.stop(grace=None)
    # An entry edited behind the log's back: named, exit 1.
    with sqlite3.connect(data / "twoserver-s2.sqlite") as conn:
        conn.execute("UPDATE audit SET member = 'east' WHERE seq = 2")
    assert main(check) == 1
    err = capsys.readouterr().err
    assert "the audit log fails verification at entry 2: its hash does not match its content" in err
    # A key others can read is refused (whoever reads it can rewrite the log undetected).
    key_file = data / "twoserver-s2.audit.key"
    key_file.chmod(0o640)
    assert main(check) == 2
    assert "readable by others than its owner (mode 640)" in capsys.readouterr().err
    assert main([*check[:3], str(tmp_path / "none"), "--role", "s2"]) == 2
    assert "no audit log of role s2 here" in capsys.readouterr().err


def test_a_party_key_others_can_read_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {n: tmp_path / n for n in ("k", "m", "op")}
    for name, path in files.items():
        path.write_text(f"{name}'s key\n")
        path.chmod(0o600)
    files["op"].chmod(0o644)
    role = ["two-server", "role", "--role", "combiner", "--listen", "127.0.0.1:0", "--s1",
            "127.0.0.1:1", "--s2", "127.0.0.1:2", "--key-file", str(files["k"]),
            "--member-key-file", str(files["m"]),
            "--party-key", f"operator={files['op']}"]  # fmt: skip
    assert main(role) == 2
    err = capsys.readouterr().err
    assert f"--party-key operator: {files['op']}: readable by others than its owner" in err
    assert f"chmod 600 {files['op']}" in err
    assert main([*role[:-2], "--threshold", "0.8"]) == 2
    assert "--threshold: S1's alone" in capsys.readouterr().err
