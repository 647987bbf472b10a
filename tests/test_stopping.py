"""The matcher stopping (`RunningServer.stop`) ends the streams that wait for nothing its grace
would bring at once, each client told so by the matcher itself (UNAVAILABLE with its
`blindmatch-status`, not a lost connection after the grace): a run watch (WatchRun) here, and
the streams accepted just as the stop begins; an open watch in tests/test_watch_cli.py and
tests/test_twoserver_watch_keys.py, a query stream in tests/test_query_sessions.py
(docs/operations.md "Stopping the matcher")."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import grpc
import numpy as np
import pytest

from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import UnavailableError
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.matcher.domain import Run
from blindmatch.matcher.errors import Unavailable
from blindmatch.matcher.realtime.watches import Watch, Watches
from blindmatch.matcher.rpc.status import answered, rpc_errors
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.portheld import stopped_held
from tests.support import ADMIN_TOKEN, Matcher, Org, encode

STOPPING_RUN = "the matcher is stopping; the run watch is ended (a run not finished by then "


@pytest.fixture
def queued(matcher: Matcher, project: ProjectTokens, orgs: dict[str, Org], tmp_path: Path) -> Run:
    """Both members' uploads and a run over them, queued and never handed to the runs (so it
    is watched until the matcher stops)."""
    encoded: dict[str, Encoded] = {n: encode(o, tmp_path / f"{n}.encoded") for n, o in orgs.items()}
    for name, enc in encoded.items():
        with matcher.member(project.tokens[name]) as member:
            member.upload("trial", enc)
    run, _ = matcher.server.store.create_run("trial")
    return run


def until(done: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def run_watches(matcher: Matcher) -> int:
    return matcher.server.streams.open_streams("trial", "north", "WatchRun")


def test_a_run_watch_open_when_the_matcher_stops_is_told_so(
    matcher: Matcher, project: ProjectTokens, queued: Run
) -> None:
    with MatcherClient(matcher.target, project.tokens["north"], retry=NO_RETRY) as north:
        statuses = north.watch_run("trial", queued.id)
        assert next(statuses).state == "queued"
        matcher.server.stop(grace=5)  # it ends the run watch at once, not after 5 s
        with pytest.raises(UnavailableError) as told:
            next(statuses)
    assert str(told.value).startswith(STOPPING_RUN)  # the matcher's own, not "cannot reach"
    assert str(told.value).endswith("watch the run again then [UNAVAILABLE]")


def test_blindmatch_run_says_the_matcher_is_stopping_and_goes_on_once_it_is_back(
    matcher: Matcher, project: ProjectTokens, queued: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    """`blindmatch run` reconnects to a matcher that stopped (as to one it lost), saying why,
    and follows the run to its end once the matcher is back (restarted: the run resumed)."""
    code: list[int] = []
    args = ["run", "--project", "trial", "--token", project.tokens["north"], "--server",
            matcher.target]  # fmt: skip
    running = threading.Thread(target=lambda: code.append(main(args)), daemon=True)
    running.start()
    until(lambda: run_watches(matcher) == 1)
    with stopped_held(matcher.server.port, lambda: matcher.server.stop(grace=5)):
        pass  # (its port no other's until the restart: tests/portheld.py)
    again = create_server(matcher.target, matcher.data_dir, ADMIN_TOKEN, workers=2)
    try:
        running.join(60)
    finally:
        again.stop(grace=None)
    assert code == [0]
    captured = capsys.readouterr()
    assert f"Warning: watching the run: {STOPPING_RUN}" in captured.err
    assert f"Run {queued.id} done" in captured.out
    assert "Traceback" not in captured.err


def test_blindmatch_run_interrupted_says_the_run_goes_on_at_the_matcher(
    matcher: Matcher,
    project: ProjectTokens,
    queued: Run,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C in `blindmatch run` ends the watching only: it said just `Interrupted.`, so a
    user could take the run for cancelled (freshwalk). The Ctrl-C comes after the matcher's
    first status, as the user's would."""
    watch_run = MatcherClient.watch_run

    def interrupted(self: MatcherClient, *args: str) -> Iterator[object]:
        yield next(watch_run(self, *args))
        raise KeyboardInterrupt

    monkeypatch.setattr(MatcherClient, "watch_run", interrupted)
    args = ["run", "--project", "trial", "--token", project.tokens["north"], "--server",
            matcher.target]  # fmt: skip
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"Run {queued.id} goes on at the matcher: `blindmatch run --project trial`" in err
    assert err.rstrip().endswith("Interrupted.") and "Traceback" not in err
    assert matcher.server.store.run(queued.id).state == "queued"  # not cancelled


def test_streams_opened_just_as_the_matcher_stops_are_ended_at_once(
    matcher: Matcher, project: ProjectTokens, queued: Run
) -> None:
    """A stream accepted as the stop begins, registered after the open ones were ended, is
    ended at once too (`end_streams`, which stop calls once new calls are refused)."""
    matcher.server.end_streams()
    with MatcherClient(matcher.target, project.tokens["north"], retry=NO_RETRY) as north:
        statuses = north.watch_run("trial", queued.id)
        with pytest.raises(UnavailableError, match=STOPPING_RUN.replace("(", r"\(")):
            list(statuses)
    with grpc.insecure_channel(matcher.target) as channel:
        stream = pb_grpc.MatcherStub(channel).QueryStream(
            iter(()), metadata=[("authorization", f"Bearer {project.tokens['north']}")]
        )
        with pytest.raises(grpc.RpcError) as refused:
            next(stream)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and answered(refused.value)
    assert (refused.value.details() or "").startswith(
        "the matcher is stopping; the query stream is ended"
    )
    # A watch registered after `end_all` is ended as it is added, told the same.
    watches = Watches()
    why = Unavailable("the matcher is stopping")
    assert watches.end_all(why) == 0
    watch = Watch("trial", "north", "case 1", np.zeros((1, 128), np.uint8))
    watches.add(watch)
    assert watch.ended and watch.ended_as(watch.ended) is why
    assert watch.events.get_nowait() is None  # its stream, waiting for an event, wakes


class _EndedCall:
    """A handler's context after its call ended (cancelled by the client or the matcher)."""

    def is_active(self) -> bool:
        return False

    def set_trailing_metadata(self, trailing_metadata: tuple[tuple[str, str], ...]) -> None:
        raise AssertionError("an ended call is given no status")

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise AssertionError("an ended call is given no status")


def test_a_stream_read_after_its_call_ended_is_not_logged_as_a_matcher_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # gRPC's request iterator raises a bare RpcError once the call is cancelled (a revoked
    # token's stream ended by the matcher, a client gone): no ERROR with a traceback for it.
    @rpc_errors
    def QueryStream(self: object, request: object, context: object) -> Iterator[int]:
        raise grpc.RpcError()
        yield 0

    with caplog.at_level(logging.INFO, "blindmatch.matcher"), pytest.raises(grpc.RpcError):
        list(QueryStream(object(), None, _EndedCall()))
    # This call's lines only: another test's daemon thread (a role's sweep, a conversion) may
    # log to a blindmatch.matcher logger meanwhile in the same worker.
    said = [r for r in caplog.records if r.getMessage().startswith("QueryStream")]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (logging.INFO, "QueryStream: the call ended while its handler ran")
    ]
