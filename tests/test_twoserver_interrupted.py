"""A two-server query's or watch's start-up stopped (Ctrl-C, SIGTERM, a crash) while its
records are being sent to S1 and S2 (docs/realtime.md "Queries in a two-server project"), with
a real matcher that is S1's and S2's combiner (three gRPC servers on loopback). The client
stops at once, waiting for neither upload; the records that reached S1 are forgotten there by
the matcher once their query ticket expires unclaimed (matcher/realtime/twounclaimed.py),
never before, and never those of a query or watch that claimed its ticket.

The interrupt is a real SIGINT sent to the main thread once S1 holds the records, while S2's
upload is held back (a fault point in the test, on `RoleClient.upload`): deterministic, no
sleep decides anything."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote import twoserver
from blindmatch.client.remote.client import MatcherClient
from blindmatch.matcher.core import tickets
from tests.test_twoserver_project import SCHEMA, World, create, world  # noqa: F401
from tests.test_twoserver_watch import (  # noqa: F401
    Watching,
    members,
    rows_of,
    until,
    watched_names,
)

pytestmark = pytest.mark.server

NOTHING = {"s1": [], "s2": []}


class Interrupted:
    """The fault point: S1's upload goes through, then SIGINT reaches the main thread (a
    Ctrl-C) while S2's is held back; `released` lets S2's go on (the test's end), and
    `waited_for` says whether the client waited for it to (a hang guard of 60 s)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.released = threading.Event()
        self.waited_for = threading.Event()
        self.main = threading.main_thread().ident
        real = twoserver.RoleClient.upload

        def upload(client: twoserver.RoleClient, *args: object, **kwargs: object) -> int:
            if client.role == "s2" and not self.released.wait(60):
                self.waited_for.set()
            held = real(client, *args, **kwargs)  # type: ignore[arg-type]
            if client.role == "s1":
                assert self.main is not None
                signal.pthread_kill(self.main, signal.SIGINT)
            return held

        monkeypatch.setattr(twoserver.RoleClient, "upload", upload)


@pytest.fixture
def interrupted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Interrupted]:
    fault = Interrupted(monkeypatch)
    try:
        yield fault
    finally:
        fault.released.set()


def records(folder: Path, rows: list[int]) -> tuple[sharing.SharedUpload, dict[str, object]]:
    """South's `rows` as a query's records, and the facts a query sends with them."""
    encoded = read_encoded(folder)
    secret = read_secret(folder.parent / "linkage.secret")
    upload = sharing.shared_upload(rows_of(encoded, rows), secret,
                                   sharing.plan_of(load_schema(SCHEMA)),
                                   encoded.fallback_bits)  # fmt: skip
    facts = {"clk_bits": encoded.clk_bits, "fingerprint": encoded.fingerprint,
             "purpose": "case 24/118", "schema_digest": encoded.schema_digest,
             "rule": encoded.rule, "allow_band_keys": True}  # fmt: skip
    return upload, facts


def sweep_after_expiry(world: World) -> list[str]:  # noqa: F811
    """The matcher's clock past every query ticket's life, then its sweep (as its thread's)."""
    world.clock.advance(tickets.QUERY_TTL_SECONDS + 1)
    return world.server.realtime.unclaimed.sweep()


def test_a_query_interrupted_while_its_records_are_sent_stops_at_once_and_they_are_forgotten(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    interrupted: Interrupted,
) -> None:
    two = create(world, "shares", "two-server")
    upload, facts = records(members["south"][1], [0, 1])
    with (
        MatcherClient(world.target, two.tokens["north"]) as client,
        pytest.raises(KeyboardInterrupt),
    ):
        client.query("shares", upload, **facts)  # type: ignore[arg-type]
    # The client did not wait for S2's upload (still held back) to end, nor will the process
    # at its exit (a daemon thread); let go, it finds its channel closed: S2 gets nothing.
    assert not interrupted.released.is_set() and not interrupted.waited_for.is_set()
    (s2_upload,) = [t for t in threading.enumerate() if t.name == "bm-query-upload-s2"]
    assert s2_upload.daemon
    interrupted.released.set()
    # Its end, not join(): the Ctrl-C may have reached the client inside S2's thread.start(),
    # before that thread said it had started (join() would refuse it); enumerate() lists it
    # from its start() until its end.
    until(lambda: s2_upload not in threading.enumerate(), 30)
    left = watched_names(world)
    assert len(left["s1"]) == 1 and left["s2"] == []  # what S1 got before the Ctrl-C
    unclaimed = world.server.realtime.unclaimed
    assert list(unclaimed.pending) == left["s1"]
    # Not before its ticket expires: a client may still be sending them.
    assert unclaimed.sweep() == []
    assert watched_names(world) == left
    assert sweep_after_expiry(world) == left["s1"]
    assert watched_names(world) == NOTHING
    assert unclaimed.pending == {}


def test_a_watch_interrupted_at_its_start_up_leaves_nothing_once_its_ticket_expired(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    interrupted: Interrupted,
) -> None:
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    upload, facts = records(members["south"][1], [0])
    with MatcherClient(world.target, two.tokens["west"]) as client:
        stream = client.watch("shares", upload, **facts)  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            next(stream)  # the records are sent as the watch starts
    assert not interrupted.waited_for.is_set()
    assert len(watched_names(world)["s1"]) == 1
    assert world.server.realtime.watches.every() == []  # the matcher was never asked
    assert len(sweep_after_expiry(world)) == 1
    assert watched_names(world) == NOTHING


def test_the_records_of_a_watch_or_a_query_that_claimed_its_ticket_are_theirs_to_forget(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> None:
    south_folder = members["south"][1]
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    unclaimed = world.server.realtime.unclaimed
    watch = Watching(world, two.tokens["north"], south_folder, [0, 1])
    assert unclaimed.pending == {}  # claimed by the watch
    held = watched_names(world)
    assert held["s1"] and held["s2"]
    assert sweep_after_expiry(world) == []  # open past its ticket's life: kept
    assert watched_names(world) == held
    watch.close()  # the watch ends: the matcher has S1 and S2 forget them (as before)
    until(lambda: watched_names(world) == NOTHING)
    # A query answered claims its ticket too (and is forgotten at its end, as before). A
    # client's queries reach S1 and S2 over one channel to each, kept until it closes.
    upload, facts = records(south_folder, [2])
    with MatcherClient(world.target, two.tokens["north"]) as client:
        client.query("shares", upload, **facts)  # type: ignore[arg-type]
        kept = dict(client._peers)
        assert unclaimed.pending == {} and watched_names(world) == NOTHING
        client.query("shares", upload, **facts)  # type: ignore[arg-type]
        assert len(kept) == 2 and client._peers == kept
    assert client._peers == {}
    assert unclaimed.pending == {} and watched_names(world) == NOTHING


def test_one_way_to_ask_or_watch_in_either_mode_whose_two_server_options_need_shares() -> None:
    """`MatcherClient.query` and `.watch` are the one public way to ask and watch, CLKs in a
    CLK project, a `SharedUpload` in a two-server one (`project_query`/`project_watch` are
    gone); an option that goes with shares only is refused with CLKs, before anything is
    sent (no matcher listens here)."""
    facts = {"clk_bits": 1024, "fingerprint": b"f" * 32, "purpose": "case 24/118"}
    with MatcherClient("127.0.0.1:1", "bm_nobody") as client:
        with pytest.raises(ValueError, match="SharedUpload, not with CLKs"):
            client.query("trial", bytes(128), s1="127.0.0.1:2", **facts)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="SharedUpload, not with CLKs"):
            next(client.watch("trial", bytes(128), band_keys=True, **facts))  # type: ignore[arg-type]
