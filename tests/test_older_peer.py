"""A peer of an older blindmatch than the matcher's, named as such on any call it lacks
(srvcarry; docs/operations.md "Upgrade"). Before, only the matcher's `Holds` to S1 or S2 said
so (tests/test_upgrade.py); any other call an older S1, S2 or look-up server did not know
said only `Method not found!`, as UNAVAILABLE or as the peer's refusal. Now each says the
peer at host:port runs an older blindmatch and to upgrade together, as a FAILED_PRECONDITION.

Real gRPC servers on loopback that register only part of a service (what an older peer knows),
as grpc answers UNIMPLEMENTED for a method a server does not know."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from blindmatch.matcher import errors
from blindmatch.matcher.domain import Encoding
from blindmatch.matcher.realtime.shards import ERASE_MEMBER, ShardChange, Shards
from blindmatch.matcher.rpc.lookup_client import LookupServers
from blindmatch.matcher.rpc.lookup_service import LookupService
from blindmatch.matcher.rpc.twoserver_holds import holds_at
from blindmatch.matcher.rpc.twoserver_peers import call_party
from blindmatch.matcher.rpc.twoserver_project import forget_at
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc


def _holds_only(request: pb.HoldsRequest, context: grpc.ServicerContext) -> pb.HoldsReply:
    return pb.HoldsReply(held=[False] * len(request.names))


@pytest.fixture
def older_s1() -> Iterator[str]:
    """An S1 that knows `Holds` and nothing newer: its address."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(
        _holds_only,
        request_deserializer=pb.HoldsRequest.FromString,
        response_serializer=pb.HoldsReply.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "blindmatch.v1.TwoServerBlocking", {"Holds": handler}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def older(who: str, fleet: str = "the matcher, S1 and S2", rpc: str = "") -> str:
    call = f"the call {rpc}" if rpc else "a call the matcher makes"
    return (
        f"{who} does not know {call} (UNIMPLEMENTED): it runs an older blindmatch than the "
        f"matcher's; upgrade {fleet} together to the matcher's version "
        '(docs/operations.md "Upgrade")'
    )


def test_an_older_s1s_missing_forget_names_it_as_an_older_blindmatch(older_s1: str) -> None:
    with grpc.insecure_channel(older_s1) as kept:
        held, why = holds_at(older_s1, "S1", "a-key", ["u1"], kept)
        assert (held, why) == ([False], "")  # a call it knows: answered
        forgot = forget_at(older_s1, "S1", "a-key", "trial", "north", kept)
    assert forgot.error == older(f"S1 ({older_s1})")


def test_any_call_to_an_older_party_is_the_projects_failed_precondition(older_s1: str) -> None:
    with grpc.insecure_channel(older_s1) as kept:
        stub = pb_grpc.TwoServerBlockingStub(kept)
        with pytest.raises(errors.FailedPrecondition) as refused:
            call_party(f"S1 ({older_s1})", stub.Forget, pb.ForgetRequest(project="trial"),
                       timeout=10)  # fmt: skip
    assert str(refused.value) == older(f"S1 ({older_s1})")


def test_an_older_lookup_servers_missing_search_names_it_as_an_older_blindmatch() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))  # serves none of LookupServer
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    servers = LookupServers([address], "a-key")
    try:
        with pytest.raises(errors.FailedPrecondition) as refused:
            servers.search("trial", ["north"], np.zeros((1, 16), dtype=np.uint64), 0.8)
    finally:
        servers.close()
        server.stop(grace=None)
    assert str(refused.value) == older(
        f"look-up server {address} (shard 0 of 1)", "the matcher and its look-up servers",
        "Search",
    )  # fmt: skip


LOOKUP_KEY = "bm_lookup_" + "k" * 43
LOOKUP_FLEET = "the matcher and its look-up servers"


@pytest.fixture
def older_lookup() -> Iterator[str]:
    """A look-up server of an older blindmatch: the real service (rpc/lookup_service.py),
    holding its shard (empty), that knows `Search` and `Describe` but none of the calls the
    matcher forwards changes and loads with (`Apply`, `Reload`, `Load`): its address."""
    held = Shards(None, 0, 1)
    held.replace({}, {}, None)
    service = LookupService(held, LOOKUP_KEY)
    known = {
        "Search": grpc.unary_unary_rpc_method_handler(
            service.Search,
            request_deserializer=pb.ShardSearchRequest.FromString,
            response_serializer=pb.ShardSearchReply.SerializeToString,
        ),
        "Describe": grpc.unary_unary_rpc_method_handler(
            service.Describe,
            request_deserializer=pb.ShardDescribeRequest.FromString,
            response_serializer=pb.ShardState.SerializeToString,
        ),
    }
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("blindmatch.v1.LookupServer", known),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_an_older_lookup_server_missing_a_forwarded_change_is_named_as_an_older_blindmatch(
    older_lookup: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A change forwarded to a look-up server that does not know `Apply`, and the `Reload`
    the next query asks it for, were said as a server down: the log `did not take a change
    ... (it does not know a call the matcher makes ...)`, then queries refused UNAVAILABLE
    with `missed an index change and cannot be asked to read its shards again: ...; start
    it`. Now the log and the refusal name the server and the call, as an older blindmatch,
    FAILED_PRECONDITION (as `Search` does); with the matcher's own copy, queries are answered
    from it meanwhile."""
    servers = LookupServers([older_lookup], LOOKUP_KEY)
    name = f"look-up server {older_lookup} (shard 0 of 1)"
    queries = np.zeros((1, 16), dtype=np.uint64)
    change = ShardChange("trial", "north", Encoding(1024, b"f" * 32), 0.8,
                         [("north-1", b"\xff" * 128)])  # fmt: skip
    mine = [{"north": [("north-1", 1.0)]}]
    try:
        assert servers.search("trial", ["north"], queries, 0.8) == [{"north": []}]  # known
        with caplog.at_level(logging.WARNING, logger="blindmatch.matcher"):
            servers.forward(change)
            assert servers.behind() == [name]
            assert servers.search("trial", ["north"], queries, 0.8, local=lambda: mine) == mine
            with pytest.raises(errors.FailedPrecondition) as refused:
                servers.search("trial", ["north"], queries, 0.8)
    finally:
        servers.close()
    kept = "; until then no query is answered through it (its shards are searched in the " \
        "matcher's own copy)"  # fmt: skip
    assert caplog.messages == [
        older(name, LOOKUP_FLEET, "Apply") + kept,
        older(name, LOOKUP_FLEET, "Reload") + kept,
    ]
    assert str(refused.value) == older(name, LOOKUP_FLEET, "Reload")


def test_an_erasure_names_an_older_lookup_server_that_may_still_hold_the_index_as_one(
    older_lookup: str,
) -> None:
    """An erasure's reply named a look-up server that may still hold the member's standing
    index by its name alone ("... may still hold its standing index in memory (it missed the
    erasure, or is being loaded again; ...)"), where the server could not take the erasure
    because it runs an older blindmatch. Now it says so, as a query it refuses does."""
    from blindmatch.matcher.usecases.erasure import lookups_pending

    servers = LookupServers([older_lookup], LOOKUP_KEY)
    name = f"look-up server {older_lookup} (shard 0 of 1)"
    change = ShardChange("trial", "north", Encoding(1024, b"f" * 32), 0.8,
                         [("north-1", b"\xff" * 128)])  # fmt: skip
    try:
        servers.forward(change)  # (it does not know Apply: behind, as an older blindmatch)
        servers.forward(ShardChange("trial", "north", erase=ERASE_MEMBER))  # (the erasure's)
        said = lookups_pending(servers, "trial", "north")
    finally:
        servers.close()
    assert said == [
        f"{name} may still hold its standing index in memory, since it "
        + older("", LOOKUP_FLEET, "Apply").lstrip()
    ]
