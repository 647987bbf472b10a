"""A `GetResults` or `ExportAudit` stream whose client stopped reading (its flow-control window
full, the matcher's handler waiting to send) when the member's access ends: its token revoked,
its project ended by the operator (`admin end-project`), its data erased. The stream ends with
the matcher's status and `blindmatch-status` (docs/protocol.md "Who answered"), the client
gets nothing the handler had not handed to gRPC before the end, the handler's thread is
freed and the matcher answers other calls. Raw gRPC stubs against a real matcher on
loopback, real SQLite files; the run's links are stored through the store, as a finished
run's are (a real run of this many records would take minutes)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.solve import Links
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import ADMIN_TOKEN, Matcher, auth, stub, upload_messages
from tests.test_streamstatus import UNREAD, answered_as

pytestmark = [pytest.mark.server, pytest.mark.slow]  # 150,000 links, 20,000 audit entries

ENTRIES = 20_000  # north's own entries in the audit log, about 5 MB
RECORDS = 60_000  # each member's, every one linked: 6 messages of 10,000 hits
REASON = "agreement terminated"


def _stock(data_dir: Path, method: str) -> dict[str, str]:
    """A stopped matcher's data dir whose project `trial` holds what the test's stream sends:
    for `GetResults` a finished run linking each of north's records to south's, for
    `ExportAudit` north's long view of the log; either fills the flow-control windows of a
    client that reads nothing. Its members' tokens. (Each is built only where it is read:
    building both took half of each test.)"""
    records = RECORDS if method == "GetResults" else 10
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=1)
    matcher = Matcher(server, data_dir, ADMIN_TOKEN)
    try:
        with matcher.operator() as op:
            tokens = op.create_project("trial", ["north", "south"]).tokens
        clks = os.urandom(records * 128)
        with grpc.insecure_channel(matcher.target) as channel:
            for member in ("north", "south"):
                header, _ = upload_messages("trial", clks)
                parts = [pb.UploadRequest(clks=clks[i : i + 2**22])
                         for i in range(0, len(clks), 2**22)]  # fmt: skip
                stub(channel).Upload(iter([header, *parts]), metadata=auth(tokens[member]))
        store = server.store
        if method == "ExportAudit":
            # North's view of the log: its own exports, each padded as a long purpose would be.
            store.audit.append_all([
                audit.Event("north", "audit.export", "trial", "north",
                            detail={"after_seq": 0, "note": "x" * 200})
                for _ in range(ENTRIES)
            ])  # fmt: skip
            return tokens
        run, _ = store.create_run("trial")
        rows = np.arange(RECORDS, dtype=np.uint32)
        zeros, ones = np.zeros(RECORDS, np.uint32), np.ones(RECORDS, np.uint32)
        links = Links(
            dset=np.concatenate([zeros, ones]),
            row=np.concatenate([rows, rows]),
            partner=np.concatenate([ones, zeros]),
            partner_row=np.concatenate([rows, rows]),
            score=np.full(2 * RECORDS, 0.95),
        )
        assert store.finish_run(run.id, ["north", "south"], links, RECORDS)
        return tokens
    finally:
        server.stop(grace=None)


@pytest.fixture(scope="module")
def stocked(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], tuple[Path, dict[str, str]]]:
    """`_stock`'s data dir for a method, made once for the module (the uploads, the links or
    the entries: most of a test's time); each test serves a copy of it, which its ending
    changes (`linked`)."""
    made: dict[str, tuple[Path, dict[str, str]]] = {}

    def stocked_for(method: str) -> tuple[Path, dict[str, str]]:
        if method not in made:
            data_dir = tmp_path_factory.mktemp(f"stocked-{method}") / "data"
            made[method] = data_dir, _stock(data_dir, method)
        return made[method]

    return stocked_for


@pytest.fixture
def linked(
    stocked: Callable[[str], tuple[Path, dict[str, str]]],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Matcher, dict[str, str]]]:
    """A matcher serving a copy of `stocked`'s data dir for the test's method (modes and
    all, as `cp -a`)."""
    callspec = getattr(request.node, "callspec", None)
    method = callspec.params["method"] if callspec else "GetResults"
    source, tokens = stocked(method)
    shutil.copytree(source, tmp_path / "data", symlinks=True)
    server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, workers=1)
    try:
        yield Matcher(server, tmp_path / "data", ADMIN_TOKEN), tokens
    finally:
        server.stop(grace=None)


def blocked(matcher: Matcher, method: str, token: str) -> tuple[grpc.Channel, grpc.Call]:
    """North's results or audit view, its first message read: the client then reads nothing."""
    channel = grpc.insecure_channel(matcher.target, options=UNREAD)
    if method == "GetResults":
        request: object = pb.ResultsRequest(project="trial", purpose="case 7")
    else:
        request = pb.ExportAuditRequest(project="trial")
    stream = getattr(stub(channel), method)(request, metadata=auth(token), timeout=120)
    next(stream)
    until_sending(matcher, method)
    return channel, stream


def until_sending(matcher: Matcher, method: str) -> None:
    """Until the matcher's handler of north's `method` waits for the client to take a
    message (the client reads nothing)."""
    deadline = time.monotonic() + 60
    while True:
        with matcher.server.streams._lock:
            waiting = [s for s in matcher.server.streams._open
                       if s.method == method and s.sending_since is not None]  # fmt: skip
        if waiting and time.monotonic() - waiting[0].sending_since > 0.5:  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, "the handler never waited to send"
        time.sleep(0.05)


def read_out(stream: grpc.Call) -> tuple[list[object], grpc.RpcError]:
    """Every message the stream still carries, and how it ended."""
    got: list[object] = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in stream:
            got.append(message)
    return got, caught.value


def freed(matcher: Matcher, member: str = "north") -> None:
    """Until the matcher counts none of the member's streams (the handler returned, its
    thread back in the pool), and then the matcher answers a call."""
    deadline = time.monotonic() + 30
    while matcher.server.streams.open_streams("trial", member):
        assert time.monotonic() < deadline, "the ended stream's handler never returned"
        time.sleep(0.05)
    with grpc.insecure_channel(matcher.target) as channel:
        assert stub(channel).VerifyAudit(pb.VerifyAuditRequest(), metadata=auth(ADMIN_TOKEN)).ok


Ending = Callable[[Matcher, dict[str, str]], None]


def revoke(matcher: Matcher, tokens: dict[str, str]) -> None:
    with matcher.operator() as op:
        op.revoke_token("trial", "north")


def end_project(matcher: Matcher, tokens: dict[str, str]) -> None:
    with matcher.operator() as op:
        op.end_project("trial", REASON)


def erase(matcher: Matcher, tokens: dict[str, str]) -> None:
    with matcher.member(tokens["north"]) as north:
        north.erase("trial")


ENDINGS = {
    "revoked": (revoke, grpc.StatusCode.UNAUTHENTICATED, "revoked"),
    "project ended": (
        end_project,
        grpc.StatusCode.NOT_FOUND,
        "project 'trial' was ended by the operator",
    ),
    "erased": (erase, grpc.StatusCode.FAILED_PRECONDITION, "erased its data"),
}


@pytest.mark.parametrize("method", ["GetResults", "ExportAudit"])
@pytest.mark.parametrize("how", list(ENDINGS))
def test_a_stream_waiting_to_send_ends_with_the_matchers_status_when_access_ends(
    linked: tuple[Matcher, dict[str, str]], how: str, method: str
) -> None:
    matcher, tokens = linked
    ending, code, words = ENDINGS[how]
    channel, stream = blocked(matcher, method, tokens["north"])
    with channel:
        ending(matcher, tokens)
        got, ended = read_out(stream)
    answered_as(ended, code, words)
    # What reaches the client is what the handler handed to gRPC before the end, in order:
    # the first of north's hits or entries, never all of them.
    if method == "GetResults":
        rows = [h.row for chunk in got for h in chunk.hits.hits]  # type: ignore[attr-defined]
        assert rows == list(range(len(rows))) and len(rows) < RECORDS, len(rows)
    else:
        seqs = [e.seq for e in got]  # type: ignore[attr-defined]
        assert seqs == sorted(seqs) and len(seqs) < ENTRIES, len(seqs)
    freed(matcher)


def test_a_client_that_never_reads_again_does_not_hold_the_ended_streams_thread(
    linked: tuple[Matcher, dict[str, str]],
) -> None:
    """The status waits behind a message the client does not take for five times the idle
    limit; then the call is cancelled (its status and message, without trailing metadata)
    and the handler returns, though the client never reads again."""
    matcher, tokens = linked
    channel, stream = blocked(matcher, "GetResults", tokens["north"])
    with channel:
        revoke(matcher, tokens)
        matcher.server.streams.idle_seconds = 0.2  # read at the sweep's next tick
        freed(matcher)  # the client has read nothing since the end
        got, ended = read_out(stream)
    assert ended.code() is grpc.StatusCode.UNAUTHENTICATED, ended
    assert "revoked" in (ended.details() or "")
    assert len(got) < RECORDS // 10_000
