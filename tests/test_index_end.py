"""A `ChangeIndex` stream cut short stores nothing (docs/security.md, "Fuzzing every RPC").

gRPC ends the request iterator of a call it failed (a message over the 16 MiB limit) or its
client cancelled as it ends a finished one; the matcher stored what came before. The
project's client now says an end follows (`IndexHeader.end_follows`) and sends `IndexEnd`
last, and the matcher stores a change only once it has read that end.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import grpc
import pytest

from blindmatch.client import ProjectTokens
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import Matcher, auth, snapshot

OVERSIZED = 17 * 1024 * 1024  # over the matcher's 16 MiB message limit


def header() -> pb.IndexChange:
    return pb.IndexChange(
        header=pb.IndexHeader(
            project="trial", clk_bits=1024, fingerprint=bytes(32), end_follows=True
        )
    )


def put(refs: list[str]) -> pb.IndexChange:
    return pb.IndexChange(put=pb.IndexPut(refs=refs, clks=secrets.token_bytes(128 * len(refs))))


def settled(matcher: Matcher) -> None:
    """Wait for the calls in flight to end (the handler may still run after its client was
    answered): stop serving, with a grace long enough for them."""
    matcher.server.server.stop(60).wait()


def test_a_change_cut_short_by_an_oversized_message_stores_nothing(
    matcher: Matcher, project: ProjectTokens
) -> None:
    """A valid put, then a put of 17 MiB (as the RPC fuzzer sent): gRPC answers
    RESOURCE_EXHAUSTED, and the put before it was stored about one time in four (whether the
    handler saw the stream end or the call fail first is a race inside gRPC); now it never
    is. Twelve such streams: the old code stored at least one in all but ~3% of runs."""
    before = snapshot(matcher)
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    huge = pb.IndexChange(put=pb.IndexPut(refs=["z"], clks=bytes(OVERSIZED)))
    with grpc.insecure_channel(matcher.target, options=options) as channel:
        stub = pb_grpc.MatcherStub(channel)
        for i in range(12):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ChangeIndex(
                    iter([header(), put([f"r{i}"]), huge]), metadata=auth(project.tokens["north"])
                )
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    settled(matcher)
    assert snapshot(matcher) == before


def test_a_cancelled_change_stores_nothing(matcher: Matcher, project: ProjectTokens) -> None:
    """A stream whose client cancels it after its puts stores none of them."""
    before = snapshot(matcher)
    sent, release = threading.Event(), threading.Event()

    def messages() -> Iterator[pb.IndexChange]:
        yield header()
        yield put(["r1", "r2"])
        sent.set()
        release.wait(60)  # (never sends its end)

    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        call = stub.ChangeIndex.future(messages(), metadata=auth(project.tokens["north"]))
        assert sent.wait(60)
        call.cancel()
        release.set()
        with pytest.raises(grpc.FutureCancelledError):
            call.result()
    settled(matcher)
    assert snapshot(matcher) == before


def test_a_change_with_its_end_is_stored(matcher: Matcher, project: ProjectTokens) -> None:
    """The same puts with the end after them are stored, and the end's counts agree."""
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        end = pb.IndexChange(end=pb.IndexEnd(put_refs=3))
        reply = stub.ChangeIndex(
            iter([header(), put(["r1", "r2"]), put(["r3"]), end]),
            metadata=auth(project.tokens["north"]),
        )
    assert (reply.added, reply.record_count) == (3, 3)
    with matcher.member(project.tokens["north"]) as north:
        assert sorted(north.list_index("trial")) == ["r1", "r2", "r3"]


def test_a_change_read_without_its_end_is_refused_whatever_its_header_says() -> None:
    """`convert.index_change` read a change whose header left `end_follows` unset to the
    stream's end and returned it, cut short or not (a branch ChangeIndex no longer reaches:
    it refuses such a header first). A change without its end is refused, whatever its header
    says; with it, it is read."""
    from blindmatch.matcher.errors import InvalidArgument
    from blindmatch.matcher.rpc import convert

    for follows in (True, False):
        bare = pb.IndexHeader(project="trial", clk_bits=1024, fingerprint=bytes(32),
                              end_follows=follows)  # fmt: skip
        with pytest.raises(InvalidArgument, match="stream ended without an end"):
            convert.index_change(bare, iter([put(["r1"])]), lambda n: None)
        whole = [put(["r1"]), pb.IndexChange(end=pb.IndexEnd(put_refs=1))]
        _, puts, removes = convert.index_change(bare, iter(whole), lambda n: None)
        assert len(puts) == 1 and removes == []
