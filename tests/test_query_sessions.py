"""Query sessions: many queries over one QueryStream, answered exactly as single queries are."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.encoding.refs import row_refs
from blindmatch.client.errors import AuthError, RejectedError, UnavailableError
from blindmatch.client.remote.channel import CHANNEL_OPTIONS, translate_errors
from blindmatch.client.remote.peers import CHANNEL_OPTIONS as PEER_CHANNEL_OPTIONS
from blindmatch.client.remote.session import AsyncQuerySession
from blindmatch.matcher.domain import QUERY_STREAMS_PER_MEMBER
from blindmatch.matcher.rpc.status import answered
from blindmatch.matcher.rpc.streams import QueryStreams
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from blindmatch.protos.wire import UNASKED_METADATA
from tests.portheld import stopped_held
from tests.support import (
    ADMIN_TOKEN,
    GRACE,
    KEY,
    PETER,
    PURPOSE,
    Matcher,
    db_rows,
    index_all,
    orgs_encoded,
    person,
    port_held,
)

encoded = orgs_encoded  # the fixture: each org encoded with the test secret


@pytest.fixture
def indexed(matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]) -> None:
    """South's records in its standing index."""
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])


@contextmanager
def own_matcher(
    data_dir: Path, encoded: dict[str, Encoded], **options: float
) -> Iterator[tuple[RunningServer, str, ProjectTokens]]:
    """A matcher of the test's own (options as `create_server`'s), south's records indexed."""
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, **options)  # type: ignore[arg-type]
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN_TOKEN) as op:
            project = op.create_project("trial", ["north", "south"])
        with MatcherClient(target, project.tokens["south"]) as south:
            index_all(south, "trial", encoded["south"])
        yield server, target, project
    finally:
        server.stop(grace=None)


def open_streams_become(streams: QueryStreams, n: int) -> bool:
    """Whether north's open query streams come to `n` within 5 s."""
    for _ in range(100):
        if streams.open_streams("trial", "north") == n:
            return True
        time.sleep(0.05)
    return False


def partners(answer: object) -> list[str]:
    return [m.partner for m in answer.results[0]]  # type: ignore[attr-defined]


def query_rows(data_dir: Path) -> list[tuple]:
    return [r for r in db_rows(data_dir, "audit") if r[3] == "query"]


def test_a_session_answers_each_query_as_a_single_query_does(
    matcher: Matcher, project: ProjectTokens, indexed: None, secret_file: Path
) -> None:
    grace, peter = person(secret_file, **GRACE), person(secret_file, **PETER)
    stranger = person(secret_file, given_name="Ottoline", surname="Quist", dob="1951-07-30")
    with (
        matcher.member(project.tokens["north"]) as north,
        north.query_session("trial", clk_bits=grace[1], fingerprint=grace[2]) as session,
    ):
        for who in (grace, peter, stranger, grace):
            single = north.query(
                "trial", who[0], clk_bits=who[1], fingerprint=who[2], purpose=PURPOSE
            )
            assert session.query(who[0], purpose=PURPOSE) == single
        assert partners(session.query(grace[0], purpose=PURPOSE)) == ["south"]
        assert partners(session.query(stranger[0], purpose=PURPOSE)) == []

        with matcher.member(project.tokens["south"]) as south:
            south.change_index(
                "trial", clk_bits=grace[1], fingerprint=grace[2], removes=row_refs(["S-13"], KEY)
            )
        # The same open stream sees the change at once.
        assert partners(session.query(grace[0], purpose=PURPOSE)) == []
    matcher.server.realtime.query_log.flush()
    assert len(query_rows(matcher.data_dir)) == 11  # every query audited, each once
    assert {r[6] for r in query_rows(matcher.data_dir)} == {PURPOSE}


def test_a_count_partner_reveals_no_record_over_a_session(
    matcher: Matcher, project: ProjectTokens, indexed: None, secret_file: Path
) -> None:
    with matcher.member(project.tokens["south"]) as south:
        south.set_consent("trial", "count")
    grace = person(secret_file, **GRACE)
    with (
        matcher.member(project.tokens["north"]) as north,
        north.query_session("trial", clk_bits=grace[1], fingerprint=grace[2]) as session,
    ):
        answer = session.query(grace[0], purpose=PURPOSE)
    assert answer.results == [[]]
    assert answer.counts == {"south": 1}
    assert answer.partner_levels == {"south": "count"}


def test_an_exhausted_quota_is_refused_on_a_session_and_the_session_goes_on(
    matcher: Matcher, project: ProjectTokens, indexed: None, secret_file: Path
) -> None:
    with matcher.operator() as op:
        op.set_query_limits("trial", member="north", per_day=3)
    grace = person(secret_file, **GRACE)
    with (
        matcher.member(project.tokens["north"]) as north,
        north.query_session("trial", clk_bits=grace[1], fingerprint=grace[2]) as session,
    ):
        for _ in range(3):
            assert partners(session.query(grace[0], purpose=PURPOSE)) == ["south"]
        for _ in range(2):  # the refusal ends the stream; the next query opens a new one
            with pytest.raises(RejectedError) as refused:
                session.query(grace[0], purpose=PURPOSE)
            assert "RESOURCE_EXHAUSTED" in str(refused.value)
            assert "north may query 3 records per 24 hours" in str(refused.value)
        with matcher.operator() as op:
            op.set_query_limits("trial", member="north", per_day=10)
        assert partners(session.query(grace[0], purpose=PURPOSE)) == ["south"]


def test_a_revoked_token_stops_an_open_session(
    matcher: Matcher, project: ProjectTokens, indexed: None, secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    with (
        matcher.member(project.tokens["north"]) as north,
        north.query_session("trial", clk_bits=grace[1], fingerprint=grace[2]) as session,
    ):
        assert partners(session.query(grace[0], purpose=PURPOSE)) == ["south"]
        with matcher.operator() as op:
            op.revoke_token("trial", "north")
        with pytest.raises(AuthError, match="UNAUTHENTICATED"):
            session.query(grace[0], purpose=PURPOSE)


def test_a_revoked_token_is_told_so_to_a_session_whose_writes_come_late(
    matcher: Matcher,
    project: ProjectTokens,
    indexed: None,
    secret_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on a busy host: the session's thread, held up before each write, writes its next
    question only once the revoked token's stream has ended, and then the new stream it asks
    on has been refused. gRPC reports each failed write as its own INTERNAL, not the
    matcher's status; the question is still told UNAUTHENTICATED (before: the session's
    internal `_Unsent` reached the caller, seen once in a whole-suite run under load)."""
    grace = person(secret_file, **GRACE)
    late = threading.Event()
    make_stub = pb_grpc.MatcherStub

    def serialize(request: pb.QueryRequest) -> bytes:
        if late.is_set():  # (the event loop's thread held up meanwhile, as a busy host would)
            time.sleep(0.5)
        return request.SerializeToString()  # type: ignore[no-any-return]

    def stub(channel: grpc.aio.Channel) -> pb_grpc.MatcherStub:
        made = make_stub(channel)
        made.QueryStream = channel.stream_stream(  # type: ignore[method-assign]
            "/blindmatch.v1.Matcher/QueryStream",
            request_serializer=serialize,
            response_deserializer=pb.QueryReply.FromString,
        )
        return made

    monkeypatch.setattr(pb_grpc, "MatcherStub", stub)

    async def scenario() -> None:
        async with AsyncQuerySession(
            matcher.target, project.tokens["north"], "trial", clk_bits=grace[1],
            fingerprint=grace[2],
        ) as session:  # fmt: skip
            assert partners(await session.query(grace[0], purpose=PURPOSE)) == ["south"]
            # Revoked with this loop held (a blocking call): the session has not taken its
            # stream's end when it next asks, so it writes on that stream.
            with matcher.operator() as op:
                op.revoke_token("trial", "north")
            late.set()
            with pytest.raises(AuthError, match="UNAUTHENTICATED"):
                await session.query(grace[0], purpose=PURPOSE)

    asyncio.run(scenario())


def test_a_stream_asks_only_in_its_tokens_project(
    matcher: Matcher, project: ProjectTokens, indexed: None, secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    with matcher.operator() as op:
        op.create_project("second", ["north", "south"])

    def request(name: str) -> pb.QueryRequest:
        return pb.QueryRequest(
            project=name, purpose=PURPOSE, clk_bits=grace[1], fingerprint=grace[2], clks=grace[0]
        )

    with grpc.insecure_channel(matcher.target) as channel:
        replies = pb_grpc.MatcherStub(channel).QueryStream(
            iter([request("trial"), request("second")]),
            metadata=[("authorization", f"Bearer {project.tokens['north']}")],
        )
        first = next(replies)
        assert [m.partner for m in first.results[0].matches] == ["south"]
        with pytest.raises(grpc.RpcError) as ended:
            next(replies)
    # As Query refuses it: the token is north's in 'trial', not anyone's in 'second'.
    assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "this token does not belong to project 'second'" in ended.value.details()


def test_streams_past_the_cap_are_refused_and_sessions_ask_by_single_calls(
    matcher: Matcher, project: ProjectTokens, indexed: None, secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    token = project.tokens["north"]

    async def scenario() -> None:
        sessions = [
            AsyncQuerySession(
                matcher.target, token, "trial", clk_bits=grace[1], fingerprint=grace[2]
            )
            for _ in range(QUERY_STREAMS_PER_MEMBER + 1)
        ]
        held, extra = sessions[:-1], sessions[-1]
        answers = await asyncio.gather(*(s.query(grace[0], purpose=PURPOSE) for s in held))
        assert all(partners(a) == ["south"] for a in answers)
        streams = matcher.server.query_streams
        assert streams.open_streams("trial", "north") == QUERY_STREAMS_PER_MEMBER

        # A stream over the cap is refused at once, with a message saying why...
        async with grpc.aio.insecure_channel(matcher.target) as channel:
            call = pb_grpc.MatcherStub(channel).QueryStream(
                metadata=[("authorization", f"Bearer {token}")]
            )
            # Refused as it opens, before it asks anything (writing a question first could
            # race the refusal: gRPC then reports its own INTERNAL error, not the matcher's).
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"at most {QUERY_STREAMS_PER_MEMBER} a member" in (refused.value.details() or "")
        # ...and a session that meets the cap still gets its answer, by a single call.
        assert partners(await extra.query(grace[0], purpose=PURPOSE)) == ["south"]
        assert streams.open_streams("trial", "north") == QUERY_STREAMS_PER_MEMBER
        for s in sessions:
            await s.close()

    asyncio.run(scenario())
    # The refused stream's question was never asked: 24 + the extra session's one call.
    matcher.server.realtime.query_log.flush()
    assert len(query_rows(matcher.data_dir)) == QUERY_STREAMS_PER_MEMBER + 1
    assert open_streams_become(matcher.server.query_streams, 0)  # closed ones are let go


def test_the_matcher_stopping_ends_an_open_stream_at_once_saying_so(
    matcher: Matcher, project: ProjectTokens, indexed: None, secret_file: Path
) -> None:
    """Not after the stop's grace, as a lost connection: UNAVAILABLE, the matcher's own."""
    grace = person(secret_file, **GRACE)
    hush = threading.Event()

    def requests() -> Iterator[pb.QueryRequest]:
        yield pb.QueryRequest(project="trial", purpose=PURPOSE, clk_bits=grace[1],
                              fingerprint=grace[2], clks=grace[0])  # fmt: skip
        hush.wait()  # then nothing until the end

    with grpc.insecure_channel(matcher.target) as channel:
        replies = pb_grpc.MatcherStub(channel).QueryStream(
            requests(), metadata=[("authorization", f"Bearer {project.tokens['north']}")]
        )
        assert [m.partner for m in next(replies).results[0].matches] == ["south"]
        matcher.server.stop(grace=5)  # the stream waits for its next question
        with pytest.raises(grpc.RpcError) as ended:
            next(replies)
        hush.set()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE and answered(ended.value)
    with pytest.raises(UnavailableError) as told, translate_errors(matcher.target):
        raise ended.value
    assert str(told.value).startswith("the matcher is stopping; the query stream is ended")
    assert told.value.trailing.get(UNASKED_METADATA) == "1"  # what it sent next was not read


@pytest.mark.server
def test_a_session_asking_as_the_matcher_stops_asks_again_once_it_is_back(
    tmp_path: Path, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    """A session asking one question after another as the matcher stops and starts again:
    the question sent on the stream the stopping matcher ends (answering the one before, or
    waiting) is not read there, so the session sends it again on a new stream, which the
    restarted matcher answers; no question fails (before: `cannot reach the matcher ...:
    Cancelling all calls` once the stop's grace was over)."""
    grace = person(secret_file, **GRACE)
    answered_: list[list[str]] = []
    failed: list[Exception] = []
    enough = threading.Event()
    with own_matcher(tmp_path / "data", encoded) as (server, target, project):
        with MatcherClient(target, ADMIN_TOKEN) as op:  # (the old code's grace: many asked)
            op.set_query_limits("trial", member="north", per_minute=10**6, per_day=10**7)
        with (
            MatcherClient(target, project.tokens["north"]) as north,
            north.query_session("trial", clk_bits=grace[1], fingerprint=grace[2]) as session,
        ):

            def ask() -> None:
                while not enough.is_set():
                    try:
                        answered_.append(partners(session.query(grace[0], purpose=PURPOSE)))
                    except Exception as exc:  # what the caller would see
                        failed.append(exc)
                        return

            asker = threading.Thread(target=ask, daemon=True)
            asker.start()
            until = time.monotonic() + 60
            while len(answered_) < 5 and not failed and time.monotonic() < until:
                time.sleep(0.01)
            with stopped_held(server.port, lambda: server.stop(grace=5)):
                pass  # (its port no other's until the restart: tests/portheld.py)
            again = create_server(target, tmp_path / "data", ADMIN_TOKEN)
            try:
                before = len(answered_)
                while len(answered_) < before + 5 and not failed and time.monotonic() < until:
                    time.sleep(0.01)
                enough.set()
                asker.join(60)
            finally:
                again.stop(grace=None)
    assert failed == []
    assert len(answered_) >= 10 and all(a == ["south"] for a in answered_)


@pytest.mark.server
def test_an_idle_stream_is_ended_and_the_session_opens_another(
    tmp_path: Path, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    with (
        own_matcher(tmp_path / "data", encoded, query_stream_idle=0.2) as (server, target, project),
        MatcherClient(target, project.tokens["north"]) as north,
        north.query_session("trial", clk_bits=grace[1], fingerprint=grace[2]) as session,
    ):
        assert partners(session.query(grace[0], purpose=PURPOSE)) == ["south"]
        assert server.query_streams.open_streams("trial", "north") == 1
        assert open_streams_become(server.query_streams, 0)  # ended as idle
        assert partners(session.query(grace[0], purpose=PURPOSE)) == ["south"]
        assert server.query_streams.open_streams("trial", "north") == 1

        # A stream that never asks holds a thread too: it counts from the start, and is
        # ended as idle like any other.
        hush = threading.Event()
        with grpc.insecure_channel(target) as channel:
            silent = pb_grpc.MatcherStub(channel).QueryStream(
                iter(hush.wait, True),  # sends nothing until hushed
                metadata=[("authorization", f"Bearer {project.tokens['north']}")],
            )
            with pytest.raises(grpc.RpcError) as ended:
                next(silent)
            hush.set()
        assert ended.value.code() == grpc.StatusCode.CANCELLED
        server.realtime.query_log.flush()
        assert len(query_rows(tmp_path / "data")) == 2  # nothing asked twice, nothing lost


def test_client_channels_try_to_reconnect_at_least_every_few_seconds() -> None:
    """A session waiting for a restarted matcher reconnects when gRPC's reconnect back-off
    says so: gRPC's default grows to 120 s (after 5 s down the next try came up to 4.9 s
    later, which made the restart test below miss its 5 s timeout now and then under load);
    capped at 2 s (+-20%)."""
    for options in (CHANNEL_OPTIONS, PEER_CHANNEL_OPTIONS):  # the matcher's; S1's and S2's
        backoff_ms = dict(options).get("grpc.max_reconnect_backoff_ms")
        assert isinstance(backoff_ms, int) and 0 < backoff_ms <= 2000


@pytest.mark.server
def test_a_session_rides_over_a_matcher_restart(
    tmp_path: Path, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    with (
        own_matcher(tmp_path / "data", encoded) as (server, target, project),
        MatcherClient(target, project.tokens["north"], timeout=5.0) as north,
        north.query_session("trial", clk_bits=grace[1], fingerprint=grace[2]) as session,
    ):
        assert partners(session.query(grace[0], purpose=PURPOSE)) == ["south"]
        server.stop(grace=None)
        with port_held(server.port), pytest.raises(UnavailableError, match="no answer within 5s"):
            session.query(grace[0], purpose=PURPOSE)  # waited for the matcher, in vain
        again = create_server(target, tmp_path / "data", ADMIN_TOKEN)  # the same address
        try:
            # Answered once the connection is back, though gRPC was backing off its retries.
            assert partners(session.query(grace[0], purpose=PURPOSE)) == ["south"]
        finally:
            again.stop(grace=None)
