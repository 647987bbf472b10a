"""The combiner tells a party it could not reach from a party that answered by the call's
status and who ended it (matcher/rpc/status.py `answered`: the service marks its own
statuses), never by gRPC's wording: S1 or S2 down (nobody listening at its port) is
`Unavailable` naming it, and a batch S1 was never sent spent none of its pairs
(`evaluated` False, core/runjournal.py); S1 up and refusing keeps its refusal's kind, even
an UNAVAILABLE of its own (S2 down behind it), prefixed with S1's name."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import numpy as np
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.twoblocking import PairBatch
from blindmatch.matcher.rpc import twoserver_peers
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from tests.portheld import dead_port

pytestmark = pytest.mark.server

MEMBER_KEY = "the members' key"
THRESHOLD = 0.8
RECORDS = 4


@pytest.fixture
def key() -> str:
    return secrets.token_urlsafe(16)


@pytest.fixture
def s2(key: str) -> Iterator[RunningRole]:
    """S2, holding uploads of north and south."""
    role = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    try:
        upload(role, "s2")
        yield role
    finally:
        role.stop(grace=None)


def upload(role: RunningRole, name: str) -> None:
    clks = np.random.default_rng(3).integers(0, 256, (RECORDS, 128), dtype=np.uint8)
    up = client.shared_upload(clks, b"s", client.BandPlan(4, 4))
    with RoleClient(name, f"127.0.0.1:{role.port}", MEMBER_KEY) as c:
        for member in ("north", "south"):
            c.upload(member, up)


def servers(s1: str, s2: str, key: str) -> RemoteServers:
    return RemoteServers(s1, s2, key, ["north", "south"], [RECORDS, RECORDS], [1024])


def a_batch(servers: RemoteServers) -> errors.ServiceError:
    """The error of one batch of pairs C names (north's row k with south's row k)."""
    circuit = linkbit.circuit(1024, (THRESHOLD,))
    rows = np.arange(RECORDS, dtype=np.uint32)
    pairs = PairBatch(0, 1, 0, rows, rows)
    with pytest.raises(errors.ServiceError) as failed:
        servers.evaluate(pairs, circuit, linkbit.deal(circuit, RECORDS), linkbit.Transcript(), {})
    return failed.value


def test_a_party_nobody_listens_for_is_unavailable_naming_it() -> None:
    with dead_port() as port1, dead_port() as port2:
        s1, s2 = f"127.0.0.1:{port1}", f"127.0.0.1:{port2}"
        down = servers(s1, s2, "k")
        try:
            with pytest.raises(errors.Unavailable) as refused:
                down.propose(None, (THRESHOLD,))
        finally:
            down.close()
    assert str(refused.value).startswith(f"S1 ({s1}) is unreachable (UNAVAILABLE: ")


def test_a_batch_s1_could_not_be_connected_for_spent_nothing(
    s2: RunningRole, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S2 prepares its side of the batch; S1 is down: the batch never went to S1. Nothing
    # listens at S1's address, so the batch waits out the whole connection wait: 1 s here,
    # not CONNECT_SECONDS (5 s); the message quotes the wait it waited.
    monkeypatch.setattr(twoserver_peers, "CONNECT_SECONDS", 1.0)
    with dead_port() as port:
        s1 = f"127.0.0.1:{port}"
        run = servers(s1, f"127.0.0.1:{s2.port}", key)
        try:
            failed = a_batch(run)
        finally:
            run.close()
    assert isinstance(failed, errors.Unavailable)
    assert str(failed) == f"S1 ({s1}) is unreachable (UNAVAILABLE: no connection in 1 s)"
    assert failed.evaluated is False


def test_a_party_that_answers_keeps_its_refusal_and_its_name(s2: RunningRole, key: str) -> None:
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    at = f"127.0.0.1:{s1.port}"
    try:
        upload(s1, "s1")
        # Up, and refusing a caller with another key: its refusal, not "unreachable".
        wrong = servers(at, f"127.0.0.1:{s2.port}", "not the key")
        try:
            with pytest.raises(errors.ServiceError) as refused:
                wrong.propose(None, (THRESHOLD,))
        finally:
            wrong.close()
        assert type(refused.value) in (errors.Unauthenticated, errors.PermissionDenied)
        assert str(refused.value).startswith(f"S1 ({at}): ")
        # Up, and refusing pairs it never proposed: S1's refusal; it may have counted them.
        run = servers(at, f"127.0.0.1:{s2.port}", key)
        try:
            failed = a_batch(run)
            assert not isinstance(failed, errors.Unavailable)
            assert str(failed).startswith(f"S1 ({at}): ")
            assert failed.evaluated is True
            # S2 down behind S1: S1 answers UNAVAILABLE of its own, which names S2; S1 was
            # reached, so it is not "S1 is unreachable".
            s2.stop(grace=None)
            with pytest.raises(errors.Unavailable) as behind:
                run.propose(None, (THRESHOLD,))
        finally:
            run.close()
        message = str(behind.value)
        assert message.startswith(f"S1 ({at}): S2 (127.0.0.1:{s2.port}) is unreachable")
    finally:
        s1.stop(grace=None)
