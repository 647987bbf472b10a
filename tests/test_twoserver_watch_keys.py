"""A two-server watch is keyless by default (`MatcherClient.watch`, as
client/remote/twoserver_realtime.py `_watch` makes it): its records go to S1 without their band
keys, and a later upload S1 compares it whole against is told without S1 ever holding one. Where
S1 blocks the watch against a later upload (so needs the keys it lacks), the matcher ends the
watch `band_keys_needed` naming the partner (matcher/realtime/twowatch.py), and the client opens
it again with the keys and catches up on that upload with one query of the same records, its
matches told as `caught_up` events; a catch-up that cannot be made is said, naming the partner.
A real matcher, S1 and S2 on loopback; S1's caps set on its service."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.client.errors import InputError, RejectedError, UnavailableError
from blindmatch.client.remote import twoserver_realtime
from blindmatch.client.remote.model import QueryAnswer
from blindmatch.client.remote.twoserver_realtime import blocked_partner
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.realtime import twowatch
from blindmatch.protos import blindmatch_pb2 as pb
from tests.test_twoserver_project import World, create, world  # noqa: F401
from tests.test_twoserver_watch import Watching, members, until  # noqa: F401

pytestmark = pytest.mark.server


def band_key_bytes(world: World, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:  # noqa: F811
    """Band-key bytes S1 receives from now on, by the name each query or watch upload is
    under (`member@tag`...)."""
    s1 = world.roles["s1"].service
    received: dict[str, int] = {}
    upload = s1.upload

    def seen(parts: Iterator[pb.SharedPart], vouched: str = "") -> pb.SharedReceipt:
        got = list(parts)
        keys = sum(len(p.band_counts) + len(p.band_keys) + len(p.sealed) for p in got)
        if "@" in got[0].member:
            received[got[0].member] = received.get(got[0].member, 0) + keys
        return upload(iter(got), vouched)

    monkeypatch.setattr(s1, "upload", seen)
    return received


class Opened:
    """North's watch of two of south's records in a two-server project `shares` (watching
    allowed, a day of `per_day` records a member, 0: the default), north's upload in it, S1's
    caps `pairs` (and no smaller-member cap); what S1 receives from then on (`received`), the
    watch's notices, south's token."""

    def __init__(
        self,
        world: World,  # noqa: F811
        members: dict[str, tuple[Export, Path]],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch,
        pairs: int,
        per_day: int = 0,
        keys: bool = True,  # MatcherClient.watch's allow_band_keys
    ) -> None:
        two = create(world, "shares", "two-server")
        with world.operator() as op:
            op.set_query_limits("shares", allow_watch=True, per_day=per_day)
        self.south, self.folder = two.tokens["south"], members["south"][1]
        upload(world, members["north"][1], two.tokens["north"])
        self.received = band_key_bytes(world, monkeypatch)
        self.s1 = world.roles["s1"].service
        monkeypatch.setattr(self.s1, "exhaustive", pairs)
        monkeypatch.setattr(self.s1, "small_member", 0)
        self.notices: list[str] = []
        self.watch = Watching(world, two.tokens["north"], self.folder, [0, 1],
                              on_notice=self.notices.append, allow_band_keys=keys)  # fmt: skip


@pytest.fixture
def opening(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Opened]]:
    """`Opened` with this test's world (S1's caps, then the member's day); each closed after."""
    made: list[Opened] = []

    def make(pairs: int, per_day: int = 0, keys: bool = True) -> Opened:
        made.append(Opened(world, members, monkeypatch, pairs, per_day, keys))
        return made[-1]

    yield make
    for opened in made:
        opened.watch.close()


def upload(world: World, folder: Path, token: str) -> None:  # noqa: F811
    assert world.cli("upload", str(folder), "--project", "shares", token=token) == 0


def test_a_watch_sends_s1_no_band_key_and_is_told_of_an_upload_within_s1s_bound(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
) -> None:
    opened = opening(exhaustive.SHIPPED_PAIRS)  # south's 300: whole
    watch = opened.watch
    assert not opened.s1.held[watch.watch.name].sealed  # no band key at S1
    upload(world, opened.folder, opened.south)
    until(lambda: len(watch.events) == 2 or watch.error is not None)
    assert watch.error is None and {e.partner for e in watch.events} == {"south"}
    assert not any(e.caught_up for e in watch.events) and not opened.notices
    assert list(opened.received.values()) == [0]  # one upload to S1, without a band key


def test_an_upload_s1_blocks_the_watch_against_reopens_it_with_keys_and_is_caught_up(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The watch's end names the partner in its trailing metadata, read there: a message
    # worded otherwise (the partner named last, say) still names south to the client.
    reworded = ("{needed}: S1 holds the watched records without band keys and blocks the "
                "watch ({blocks}) against the new upload of {partner}")  # fmt: skip
    monkeypatch.setattr(twowatch, "KEYS_NEEDED", reworded)
    opened = opening(0)  # S1 blocks every pair: keys needed
    s1, notices, watch = opened.s1, opened.notices, opened.watch
    realtime = world.server.realtime
    first = watch.watch
    assert not s1.held[first.name].sealed
    upload(world, opened.folder, opened.south)  # blocked: the watch ends, re-opened
    until(lambda: len(watch.events) == 2 or watch.error is not None)
    assert watch.error is None
    assert [(e.partner, e.index, e.caught_up) for e in watch.events] == [
        ("south", 0, True), ("south", 1, True)
    ]  # fmt: skip
    assert "south's new upload is over S1's unblocked bound" in notices[0]
    assert "Caught up on south's upload: 2 events" in notices[-1]
    again = [w for w in realtime.watches.every() if w.member == "north"]
    assert len(again) == 1 and again[0] is not first and s1.held[again[0].name].sealed
    # Three uploads to S1: the watch without keys, the watch again and the query with.
    sizes = list(opened.received.values())
    assert len(sizes) == 3 and sizes[0] == 0 and sizes[1] > 0 and sizes[2] > 0
    upload(world, opened.folder, opened.south)  # later uploads still watched
    until(lambda: len(watch.events) == 4 or watch.error is not None)
    assert watch.error is None and not any(e.caught_up for e in watch.events[2:])
    watch.close()  # the re-opened watch closes with the client too
    until(lambda: not realtime.watches.every())


def test_without_allow_band_keys_a_watch_s1_blocks_ends_and_sends_s1_no_band_key(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
) -> None:
    """Issue 18: the member's client holds a watch's band keys back unless the caller allows
    them (`allow_band_keys`, `watch --allow-band-keys`): where S1 (started with
    `--query-band-keys allow`, as the suite's is) asks for them, the watch ends with why and
    S1 holds none; opening one with them at once is refused before anything is sent."""
    opened = opening(0, keys=False)  # S1 blocks every pair: keys needed
    watch = opened.watch
    assert not opened.s1.held[watch.watch.name].sealed
    upload(world, opened.folder, opened.south)
    until(lambda: watch.error is not None)
    said = str(watch.error)
    assert isinstance(watch.error, RejectedError), said
    assert said.startswith("this watch of 2 records against south is over S1's bound: S1 "
                           "asks for the watch's band keys")  # fmt: skip
    assert "Nothing was sent with keys. Rerun with --allow-band-keys" in said
    assert list(opened.received.values()) == [0] and not opened.notices  # never with keys
    assert not any(h.sealed for name, h in opened.s1.held.items() if "@" in name)
    with pytest.raises(InputError, match="allow_band_keys"):
        Watching(world, watch.client.token, opened.folder, [0], band_keys=True,
                 allow_band_keys=False)  # fmt: skip
    assert list(opened.received.values()) == [0]


def test_a_catch_up_tells_no_match_the_watch_told_before(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """South's first upload is within S1's bound: told. Its second S1 blocks the watch
    against: re-opened with keys, and the catch-up query finds the same two (record,
    partner) matches, already told by this watch: not told again (said in the notice)."""
    opened = opening(exhaustive.SHIPPED_PAIRS)
    notices, watch = opened.notices, opened.watch
    upload(world, opened.folder, opened.south)
    until(lambda: len(watch.events) == 2 or watch.error is not None)
    assert watch.error is None and not any(e.caught_up for e in watch.events)
    monkeypatch.setattr(opened.s1, "exhaustive", 0)  # now S1 blocks every pair
    upload(world, opened.folder, opened.south)
    until(lambda: any("Caught up on" in n for n in notices) or watch.error is not None)
    assert watch.error is None
    assert "Caught up on south's upload: 0 events" in notices[-1]
    assert "(2 more this watch had told already, not told again)" in notices[-1]
    assert [(e.partner, e.index, e.caught_up) for e in watch.events] == [
        ("south", 0, False), ("south", 1, False)
    ]  # fmt: skip
    upload(world, opened.folder, opened.south)  # the re-opened watch's own are told as ever
    until(lambda: len(watch.events) == 4 or watch.error is not None)
    assert watch.error is None and not any(e.caught_up for e in watch.events)


def test_a_watch_open_when_the_matcher_stops_is_told_so_and_its_records_forgotten(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
) -> None:
    """The matcher stopping ends the watch at once, UNAVAILABLE `the matcher is stopping`
    (not after the grace, as a lost connection), and S1 and S2 forget its records."""
    opened = opening(exhaustive.SHIPPED_PAIRS)
    watch, name = opened.watch, opened.watch.watch.name
    assert name in opened.s1.held and name in world.roles["s2"].service.held
    world.server.stop(grace=5)
    until(lambda: watch.error is not None)
    assert isinstance(watch.error, UnavailableError)
    assert str(watch.error).startswith("the matcher is stopping; the watch is ended")
    assert name not in opened.s1.held and name not in world.roles["s2"].service.held


def test_a_band_keys_needed_end_without_the_partner_in_its_metadata_names_a_partner() -> None:
    """The partner is read from the trailing metadata only: its text is for people."""
    said = "band_keys_needed: south's new upload could not be compared with this watch"
    assert blocked_partner(RejectedError(said)) == "a partner"
    named = RejectedError("band_keys_needed: worded otherwise")
    named.trailing = {"blindmatch-blocked-partner": "south"}
    assert blocked_partner(named) == "south"


def test_a_catch_up_refused_by_the_quota_says_which_partners_upload_was_not_compared(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
) -> None:
    """The watch (2 records) and its re-opening (2) take the member's day of 4: the catch-up
    query is refused; the watch goes on, and the user is told south's upload was missed."""
    opened = opening(0, per_day=4)
    notices, watch = opened.notices, opened.watch
    upload(world, opened.folder, opened.south)
    until(lambda: any("NOT COMPARED" in n for n in notices) or watch.error is not None)
    assert watch.error is None and not watch.events
    missed = [n for n in notices if "NOT COMPARED" in n]
    assert len(missed) == 1 and "south's upload" in missed[0], missed
    upload(world, opened.folder, opened.south)  # the re-opened watch still watches
    until(lambda: len(watch.events) == 2 or watch.error is not None)
    assert watch.error is None and not any(e.caught_up for e in watch.events)


def test_a_reopening_refused_by_the_quota_ends_the_watch_naming_the_partners_upload(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
) -> None:
    """The watch (2 records) takes the member's day of 2: opening it again with its keys is
    refused, and the watch ends saying south's upload was not compared."""
    opened = opening(0, per_day=2)
    watch = opened.watch
    upload(world, opened.folder, opened.south)
    until(lambda: watch.error is not None)
    assert isinstance(watch.error, RejectedError) and not watch.events
    assert "south's upload was not compared with the watched records" in str(watch.error)


def upload_before_the_catch_up(
    world: World,  # noqa: F811
    opened: Opened,
    monkeypatch: pytest.MonkeyPatch,
    watch_first: bool,
) -> list[str]:
    """South's upload ends north's keyless watch; once the watch is open again (registered),
    its catch-up query is held while south uploads again: that upload is compared by the
    re-opened watch before the query runs (`watch_first`), or after it (the comparing thread
    held until the query has answered). Then the catch-up query; the watch.notify entries of
    north's audit after (the matches the matcher told the re-opened watch)."""
    two = world.server.realtime.two_watches
    query = twoserver_realtime._Records.query

    def drained() -> None:  # the comparing thread done with what was asked of it so far
        two._pool.submit(lambda: None).result()

    def late(records: twoserver_realtime._Records, with_keys: bool, **catch_up: str) -> QueryAnswer:
        held = threading.Event()
        if not watch_first:
            two._pool.submit(held.wait, 60)
        upload(world, opened.folder, opened.south)  # between registration and the query
        if watch_first:
            drained()
        try:
            return query(records, with_keys, **catch_up)
        finally:
            held.set()
            drained()

    monkeypatch.setattr(twoserver_realtime._Records, "query", late)
    upload(world, opened.folder, opened.south)  # blocked: the watch ends, re-opened
    until(
        lambda: (
            any("Caught up on" in n or "NOT COMPARED" in n for n in opened.notices)
            or opened.watch.error is not None
        )
    )
    assert not [n for n in opened.notices if "NOT COMPARED" in n], opened.notices
    until(lambda: len(opened.watch.events) >= 2 or opened.watch.error is not None)
    assert opened.watch.error is None
    with world.operator() as op:
        return [str(e["action"]) for e in op.audit("shares")
                if e["member"] == "north" and str(e["action"]).startswith("watch.")]  # fmt: skip


def test_an_upload_the_reopened_watch_told_before_its_catch_up_is_not_told_again(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The re-opened watch tells south's upload; the catch-up query, finding it as south's
    current upload, does not search it again: each (record, south) match told once."""
    opened = opening(0)  # S1 blocks every pair: keys needed
    notify = upload_before_the_catch_up(world, opened, monkeypatch, watch_first=True)
    assert notify == ["watch.notify", "watch.notify"]
    events = opened.watch.events
    assert [(e.partner, e.index, e.caught_up) for e in events[:2]] == [
        ("south", 0, False), ("south", 1, False)
    ]  # fmt: skip
    assert "Caught up on south's upload: 0 events" in opened.notices[-1]


def test_an_upload_the_catch_up_told_is_not_told_again_by_the_reopened_watch(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The catch-up query tells south's upload before the re-opened watch's turn to compare
    it comes: the watch does not tell it again. South's next upload is told as ever."""
    opened = opening(0)
    notify = upload_before_the_catch_up(world, opened, monkeypatch, watch_first=False)
    assert notify == []  # the matcher told the re-opened watch nothing of that upload
    events = opened.watch.events
    assert [(e.partner, e.index, e.caught_up) for e in events] == [
        ("south", 0, True), ("south", 1, True)
    ]  # fmt: skip
    upload(world, opened.folder, opened.south)
    until(lambda: len(events) >= 4 or opened.watch.error is not None)
    assert [(e.index, e.caught_up) for e in events[2:]] == [(0, False), (1, False)]


def test_under_s1s_refuse_a_watch_over_its_bound_ends_at_that_upload_and_sends_no_keys(
    world: World,  # noqa: F811
    opening: Callable[..., Opened],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 18: S1 under `--query-band-keys refuse` (its default; "allow" in the suite) and
    a partner's upload that puts the watch over its bound: the watch ends at that upload,
    saying why, and is not opened again with its keys: S1 received the watched records once,
    without a band key."""
    opened = opening(0)  # S1 blocks every pair
    monkeypatch.setattr(opened.s1, "query_band_keys", "refuse")
    watch = opened.watch
    upload(world, opened.folder, opened.south)
    until(lambda: watch.error is not None)
    said = str(watch.error)
    assert "south's new upload could not be compared with this watch: this watch of 2 records " \
        "against south (" in said  # fmt: skip
    assert "start S1 with --query-band-keys allow" in said and "band_keys_needed" not in said
    assert list(opened.received.values()) == [0] and watch.events == []
    assert not opened.notices  # no re-opening, no catch-up
