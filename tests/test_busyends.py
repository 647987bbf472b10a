"""A request stream whose handler is busy with what its client sent (not waiting for the next
message) when the member's token is revoked: an `Upload` before it has read the CLKs, a
`ChangeIndex` applying its change (its client's stream ended), a `QueryStream` answering its
second question. The client, slow, holds the upload's and the query stream's open. The
stream ends at once with the matcher's status and
`blindmatch-status` (docs/protocol.md "Who answered"), nothing it carried is stored, the
question being answered is never answered to the client, no error is logged and the handler's
thread is freed. Raw gRPC stubs against a real matcher on loopback; the handler is held busy at
a named point of the matcher (its disk-room check, its index change, its look-up) until the
token is revoked."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from blindmatch.client import ProjectTokens
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import Matcher, auth, db_rows, stub, upload_messages
from tests.test_streamstatus import answered_as

pytestmark = pytest.mark.server
FINGERPRINT = bytes(range(32))


class Busy:
    """`owner.name`, a method of the matcher, held on its call after the first `skip` until
    `release` (`busy` set meanwhile)."""

    def __init__(
        self, owner: object, name: str, monkeypatch: pytest.MonkeyPatch, skip: int = 0
    ) -> None:
        self.real: Callable[..., Any] = getattr(owner, name)
        self.busy, self.release = threading.Event(), threading.Event()
        self.calls = skip
        monkeypatch.setattr(owner, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls -= 1
        if self.calls == -1:
            self.busy.set()
            assert self.release.wait(60)
        return self.real(*args, **kwargs)


@contextmanager
def slow_client(messages: list[Any], held: bool) -> Iterator[Iterator[Any]]:
    """`messages`, then, `held`, a stream held open until the block ends."""
    done = threading.Event()

    def requests() -> Iterator[Any]:
        yield from messages
        if held:
            done.wait(60)

    try:
        yield requests()
    finally:
        done.set()


def query(clks: bytes) -> pb.QueryRequest:
    return pb.QueryRequest(project="trial", purpose="case 7", clk_bits=1024,
                           fingerprint=FINGERPRINT, clks=clks)  # fmt: skip


def indexed(matcher: Matcher, project: ProjectTokens) -> None:
    """South's standing index, for north's questions."""
    with matcher.member(project.tokens["south"]) as south:
        south.change_index("trial", clk_bits=1024, fingerprint=FINGERPRINT,
                           puts=[(f"s{i}", os.urandom(128)) for i in range(20)])  # fmt: skip


def freed(matcher: Matcher) -> None:
    deadline = time.monotonic() + 30
    while matcher.server.streams.open_streams("trial", "north"):
        assert time.monotonic() < deadline, "the ended stream's handler never returned"
        time.sleep(0.05)


@pytest.mark.parametrize("method", ["Upload", "ChangeIndex", "QueryStream"])
def test_a_busy_request_stream_ends_with_the_matchers_status_when_its_token_is_revoked(
    matcher: Matcher,
    project: ProjectTokens,
    method: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = matcher.server
    clks = os.urandom(128 * 10)
    if method == "Upload":
        busy = Busy(server.store, "ensure_room", monkeypatch)
        messages: list[Any] = upload_messages("trial", clks)
    elif method == "ChangeIndex":
        busy = Busy(server.realtime, "change_index", monkeypatch)
        messages = [
            pb.IndexChange(header=pb.IndexHeader(project="trial", clk_bits=1024,
                                                 fingerprint=FINGERPRINT, end_follows=True)),
            pb.IndexChange(put=pb.IndexPut(refs=["r1"], clks=clks[:128])),
            pb.IndexChange(end=pb.IndexEnd(put_refs=1)),
        ]  # fmt: skip
    else:
        indexed(matcher, project)
        with matcher.operator() as op:
            op.set_query_limits("trial", per_minute=1000, per_day=10_000)
        messages = [query(clks[:128]), query(clks[128:256])]
        busy = Busy(server.realtime, "query", monkeypatch, skip=1)  # the second question
    caplog.set_level(logging.WARNING)
    with (
        grpc.insecure_channel(matcher.target) as channel,
        slow_client(
            messages,
            held=method != "ChangeIndex",  # (it reads on after its end, for none)
        ) as requests,
    ):
        call = getattr(stub(channel), method)
        replies: list[Any] = []
        if method == "QueryStream":
            answers = call(requests, metadata=auth(project.tokens["north"]), timeout=60)
            replies.append(next(answers))  # the first question's answer
        else:
            answers = call.future(requests, metadata=auth(project.tokens["north"]), timeout=60)
        assert busy.busy.wait(30), "the handler never got busy"
        with matcher.operator() as op:
            op.revoke_token("trial", "north")
        with pytest.raises(grpc.RpcError) as caught:
            if method == "QueryStream":
                replies.extend(answers)
            else:
                answers.result()
        busy.release.set()
        answered_as(caught.value, grpc.StatusCode.UNAUTHENTICATED, "revoked")
        freed(matcher)
    # Nothing the stream carried is kept; the question being answered is not answered.
    assert [r for r in db_rows(matcher.data_dir, "uploads") if r[2] == "north"] == []
    assert [r for r in db_rows(matcher.data_dir, "index_meta", "index.sqlite")
            if r[1] == "north"] == []  # fmt: skip
    assert len(replies) == (1 if method == "QueryStream" else 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
