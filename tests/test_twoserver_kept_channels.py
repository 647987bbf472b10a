"""The matcher's channels to S1 and S2, kept for its life (rpc/twoserver_channel.py
`KeptChannels`): its stop closes them (a `serve` with S1 and S2 hung at exit about one stop in
six while they stayed open), after `serve`'s start-up probe of S1 and S2 has stopped
(cli/twoserveropts.py `warn_unreachable`: closed under it, gRPC's poll of the channel's
state failed on its own thread), and a matcher started again on the same set-up opens
others."""

from __future__ import annotations

import argparse
import logging
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindmatch.matcher import errors
from blindmatch.matcher.rpc import twoserver_peers, twoserver_project
from blindmatch.matcher.rpc.twoserver_channel import KeptChannels
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests import test_twoserver_unreached as unreached
from tests.support import ADMIN_TOKEN, dead_port
from tests.test_twoserver_connected import failed_threads as failed_threads  # the fixture
from tests.test_twoserver_standing_life import until

pytestmark = pytest.mark.server

MEMBER_KEY = "the members' key: the matcher and the roles hold it, never a member"
UPLOAD = "someproject/north/u1"  # an upload's name neither role holds


def key_files(folder: Path) -> list[Path]:
    keys = []
    for name in ("combiner.key", "members.key"):
        keys.append(folder / name)
        keys[-1].write_text(f"{name} {secrets.token_hex(8)}\n")
        keys[-1].chmod(0o600)
    return keys


def serve_args(s1: str, s2: str, keys: list[Path]) -> argparse.Namespace:
    """`serve`'s two-server options (cli/twoserveropts.py `serve_setup`): S1's and S2's
    addresses, and the `key_files`, plaintext on loopback."""
    return argparse.Namespace(
        two_server_s1=s1, two_server_s2=s2, two_server_key_file=keys[0],
        two_server_member_key_file=keys[1], two_server_ca=None, two_server_cert=None,
        two_server_key=None, two_server_insecure=False, default_mode=None,
    )  # fmt: skip


def test_a_stopped_matcher_closes_its_channels_to_s1_and_s2_and_one_started_again_opens_others(
    tmp_path: Path,
) -> None:
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, MEMBER_KEY)
    data_dir = tmp_path / "matcher-data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2, two_server=setup)
    try:
        setup.reachable()
        assert setup.holds("S1", [UPLOAD]) == ([False], "")
        server.stop(grace=None)
        # Closed: a call on them fails at once, said as the answer's why (never raised)
        for who in ("S1", "S2"):
            held, why = setup.holds(who, [UPLOAD])
            assert held is None and "Cannot invoke RPC on closed channel" in why, why
        forgot = setup.forget_one("S2", "someproject", "north")
        assert "Cannot invoke RPC on closed channel" in forgot.error, forgot
        with pytest.raises(twoserver_project.Stopping):
            setup.reachable()
        # The same set-up, a matcher started again on it (tests/test_twoserver_project_resume.py
        # `restart_matcher`): two channels opened again
        server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2,
                               two_server=setup)  # fmt: skip
        setup.reachable()
        assert setup.holds("S1", [UPLOAD]) == ([False], "")
        assert setup.holds("S2", [UPLOAD]) == ([False], "")
        assert setup.forget_one("S1", "someproject", "north").error == ""
    finally:
        server.stop(grace=None)
        s1.stop(grace=None)
        s2.stop(grace=None)


def test_the_matchers_stop_ends_serves_probe_of_s1_and_s2_unsaid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`serve`'s probe, still waiting on an S1 that does not answer as the matcher stops,
    stops and is waited for (it held a subscription to the channel being closed): its thread
    ended, no warning that S1 is unreachable, and the channels closed."""
    from blindmatch.cli import twoserveropts

    # The probe waits on S1 for as long as the test takes (else it gives up, and warns)
    monkeypatch.setattr(twoserver_project, "REACH_SECONDS", 600.0)
    monkeypatch.setattr(twoserver_project, "FAILING_SECONDS", 600.0)
    keys = key_files(tmp_path)
    with dead_port() as s1, dead_port() as s2:  # nothing there all the while
        args = serve_args(f"127.0.0.1:{s1}", f"127.0.0.1:{s2}", keys)
        caplog.set_level(logging.INFO, logger="blindmatch.matcher")
        before = set(threading.enumerate())
        setup = twoserveropts.serve_setup(args)
        assert setup is not None
        probes = [t for t in set(threading.enumerate()) - before
                  if t.name == "bm-two-server-probe"]  # fmt: skip
        assert len(probes) == 1
        server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, two_server=setup)
        server.stop(grace=None)
        probes[0].join(60)  # a hang guard
        assert not probes[0].is_alive()
    warned = [r.getMessage() for r in caplog.records if "fail until it answers" in r.getMessage()]
    assert not warned  # (the probe's warning)
    held, why = setup.holds("S1", [UPLOAD])
    assert held is None and "Cannot invoke RPC on closed channel" in why, why


def test_serve_stopped_while_its_probe_waits_on_a_silent_s1_exits(tmp_path: Path) -> None:
    """`blindmatch serve --two-server-s1/-s2` (a real process) given SIGTERM while its
    start-up probe still waits on S1 (a port that takes connections and never answers):
    it exits (`serve`'s helper waits 30 s, then reports a hang with every thread's stack)
    with status 0, its log free of gRPC's failed poll of a channel closed under it."""
    from benchmarks.cliflow import serve

    keys = key_files(tmp_path)
    with (
        socket.create_server(("127.0.0.1", 0)) as silent,  # listens, never accepts
        dead_port() as s2,  # nothing there
    ):
        s1 = f"127.0.0.1:{silent.getsockname()[1]}"
        with serve(tmp_path / "data", "--two-server-s1", s1, "--two-server-s2",
                   f"127.0.0.1:{s2}", "--two-server-key-file", str(keys[0]),
                   "--two-server-member-key-file", str(keys[1])) as matcher:  # fmt: skip
            pass
    log = "".join(matcher.log)
    assert matcher.process.returncode == 0, log
    assert "Cannot monitor channel state" not in log, log
    assert "Traceback" not in log, log


KEY = "the combiner's key"


@pytest.fixture
def roles() -> Iterator[tuple[str, str]]:
    """S1 and S2 on loopback holding north's and south's uploads (tests/test_twoserver_unreached.py
    `upload`), with the combiner's key `KEY`: their addresses."""
    s2 = create_role("s2", "127.0.0.1:0", KEY, unreached.MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", KEY, unreached.MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    try:
        for role, name in ((s1, "s1"), (s2, "s2")):
            unreached.upload(role, name)
        yield f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}"
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)


class _Preparing:
    """S2's stub whose `Prepare`, once answered, runs `then` (the matcher's stop, just as
    the batch's `connected` is next)."""

    def __init__(self, stub: Any, then: Callable[[], None]) -> None:
        self._stub, self._then = stub, then

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def Prepare(self, *args: Any, **kwargs: Any) -> Any:
        reply = self._stub.Prepare(*args, **kwargs)
        self._then()
        return reply


def test_a_batch_whose_connection_wait_comes_after_the_matchers_stop_is_not_sent(
    roles: tuple[str, str], failed_threads: list[BaseException]
) -> None:
    """The matcher stops (its kept channels closed) between S2's Prepare of a batch and the
    wait for S1's connection: the wait subscribes to nothing (before, gRPC's poll of the
    closed channel failed on gRPC's thread, and the batch waited CONNECT_SECONDS for a
    connection), and the batch fails `Stopping`, an Unavailable that spent nothing."""
    setup = combiner_setup(*roles, KEY, unreached.MEMBER_KEY)
    run = setup.servers(["north", "south"], [unreached.RECORDS] * 2, [1024])
    run._s2 = _Preparing(run._s2, setup.disconnect)  # type: ignore[attr-defined]
    try:
        failed = unreached.a_batch(run)
    finally:
        run.close()
        setup.disconnect()
    assert isinstance(failed, twoserver_project.Stopping), failed
    assert failed.evaluated is False
    assert str(failed) == f"S1 ({roles[0]}) was not sent the batch: the matcher is stopping"
    assert failed_threads == []


def test_the_matchers_stop_ends_a_batchs_wait_for_s1_and_closes_once_it_unsubscribed(
    roles: tuple[str, str], failed_threads: list[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch waiting for a connection to S1 (one that listens and never answers) as the
    matcher stops: the close begins while the wait is subscribed to the kept channel; the
    wait gives up (`Stopping`, nothing spent), the close waits for it, and nothing fails
    on gRPC's thread."""
    monkeypatch.setattr(twoserver_peers, "CONNECT_SECONDS", 600.0)  # only the stop ends it
    with socket.create_server(("127.0.0.1", 0)) as silent:
        setup = combiner_setup(f"127.0.0.1:{silent.getsockname()[1]}", roles[1], KEY,
                               unreached.MEMBER_KEY)  # fmt: skip
        run = setup.servers(["north", "south"], [unreached.RECORDS] * 2, [1024])
        kept, closing = run._kept, list[threading.Thread]()  # type: ignore[attr-defined]
        subscribe = kept.subscribe

        def stop_as_it_waits(which: int, callback: Any, try_to_connect: bool = True) -> Any:
            got = subscribe(which, callback, try_to_connect)
            if try_to_connect:  # (the second look: S1 asked to connect, and waited for)
                closing.append(threading.Thread(target=setup.disconnect))
                closing[0].start()
            return got

        kept.subscribe = stop_as_it_waits
        try:
            failed = unreached.a_batch(run)
        finally:
            run.close()
        closing[0].join(60)  # a hang guard
        assert not closing[0].is_alive()
    assert isinstance(failed, twoserver_project.Stopping) and failed.evaluated is False
    assert failed_threads == []


def test_remote_servers_own_channel_closed_just_after_a_batchs_connection_wait_fails_no_thread(
    roles: tuple[str, str], failed_threads: list[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RemoteServers on channels of its own, S1's found IDLE by the batch's first look and
    READY by its second (another call connected it meanwhile): the second look's ask to
    connect is still pending in gRPC's poll as the wait returns. The batch refused (pairs S1
    never proposed) and the servers closed at once: the close waits for the poll to stop
    (before, gRPC's poll asked the closed channel and failed on its thread)."""
    run = unreached.servers(*roles, KEY)
    s1 = run._channels[0]  # type: ignore[attr-defined]
    first_look = twoserver_peers._ready

    def connected_meanwhile(states: Any, deadline: float, first: bool, **kw: Any) -> bool:
        if first:  # (subscribed, as it is: S1's channel connected by a call meanwhile)
            run._s1.Holds(pb.HoldsRequest(), metadata=run._metadata,  # type: ignore[attr-defined]
                          timeout=30, wait_for_ready=True)  # fmt: skip
            state = s1._connectivity_state
            until(lambda: state.connectivity is grpc.ChannelConnectivity.READY)
        return first_look(states, deadline, first, **kw)

    monkeypatch.setattr(twoserver_peers, "_ready", connected_meanwhile)
    try:
        failed = unreached.a_batch(run)
    finally:
        run.close()
    assert failed.evaluated is True and "S1 (" in str(failed)  # (S1 refused it)
    assert not s1._connectivity_state.polling  # (closed once unwatched: nothing more can fail)
    assert failed_threads == []


def test_a_call_on_a_channel_the_matchers_stop_closed_is_unavailable_and_never_sent() -> None:
    """rpc/twoserver_peers.py `call_party` over the matcher's kept channel to S2, once the
    matcher's stop closed it (`KeptChannels.close`): gRPC refuses the call with a ValueError
    ("Cannot invoke RPC on closed channel!"), said as S2 not reached, the call never sent (a
    batch's counts as unsent: rpc/twoserver_client.py `evaluate_part`); before, the
    ValueError went up as an internal error. Any other ValueError still goes up as it was."""
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    kept = KeptChannels(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", None)
    metadata = (("authorization", f"Bearer {key}"),)
    try:
        # (its methods registered while the channel is open: KeptChannels' note on gRPC 1.85)
        stub = pb_grpc.TwoServerSharesStub(kept.pair()[1])

        def holds() -> pb.HoldsReply:
            return twoserver_peers.call_party("S2", stub.Holds, pb.HoldsRequest(names=[UPLOAD]),
                                              metadata=metadata, timeout=30)  # fmt: skip

        assert list(holds().held) == [False]  # the channel open: S2 answers
        kept.close()  # the matcher's stop
        with pytest.raises(errors.Unavailable) as refused:
            holds()
        assert isinstance(refused.value, twoserver_project.Stopping)
        assert refused.value.sent is False
        assert str(refused.value).startswith("S2 was not sent the call: the matcher is stopping")

        def fault() -> None:
            raise ValueError("a fault of ours")

        with pytest.raises(ValueError, match="a fault of ours"):
            twoserver_peers.call_party("S2", fault)
    finally:
        kept.close()
        s1.stop(grace=None)
        s2.stop(grace=None)
