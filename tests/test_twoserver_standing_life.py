"""A standing partner's conversion over gRPC when it does not go to its end, and while queries
are answered (rpc/twoserver_standdeal.py, rpc/twoserver_standcache.py,
rpc/twoserver_standing.py; docs/protocol.md "A conversion given up"): S1 and S2 on loopback,
C's RemoteServers, the fixtures of tests/test_twoserver_standing.py (south's 90 records
converted in 3 pieces). A conversion that fails part-way (a piece refused, C failing) or that
no piece of comes any more is dropped at both servers, audited; a background conversion's
next piece waits while a query dealing standing parts is being answered, PAUSE_SECONDS at
most."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher import errors
from blindmatch.matcher.core import ring64
from blindmatch.matcher.rpc import twoserver_conversions, twoserver_standing
from blindmatch.matcher.rpc import twoserver_standcache as standcache
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_standdeal import Conversions
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.test_standing import _wrong_dabit
from tests.test_twoserver_blocks import KEY, entries
from tests.test_twoserver_standing import NAMES, Roles, ask
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares

pytestmark = pytest.mark.server
ROLES = ("s1", "s2")


def until(what: Callable[[], bool]) -> None:
    """Wait for `what` (a bound on a hang, not a timing)."""
    for _ in range(6_000):
        if what():
            return
        time.sleep(0.01)
    raise AssertionError("not reached in 60 s")


def held(made: Roles) -> list[int]:
    """The bytes of standing partners S1 and S2 hold, whole or half-made."""
    return [made.running[r].service.standing.bytes_kept() for r in ROLES]


def open_query(made: Roles, query: client.SharedUpload, conversions: Conversions) -> RemoteServers:
    """A query's servers dealing standing parts and not yet answered (as `prepare_standing`
    registers one): a background conversion's next piece waits for its `close`."""
    bits = [8 * int(x.shape[1]) for x in query.s1.shares]
    servers = RemoteServers(f"127.0.0.1:{made.running['s1'].port}",
                            f"127.0.0.1:{made.running['s2'].port}", KEY, NAMES, [3, 90],
                            bits)  # fmt: skip
    servers.conversions = conversions
    conversions.asking(servers)
    return servers


@pytest.mark.parametrize("how", ["refused", "combiner"])
def test_a_conversion_that_fails_part_way_is_dropped_at_both_servers_and_audited(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:  # fmt: skip
    """South's conversion fails after piece 0: piece 1 refused by both servers (a daBit of C's
    off; C told not to give it up, so each drops it itself), or C failing before piece 2 (it
    gives it up at both, `standing_drop`). S1 and S2 then hold none of its bytes, each audits
    `twoserver.standing_dropped` naming it, and no later piece can be added to it; the query
    was answered by pairs all the same. (Before: its arrays stayed until the next trim.)"""
    roles.upload("south", shares["south"])
    by_pairs, _ = ask(roles, shares["query"], shares["south"], None)
    later: list[pb.BlockDeal] = []
    if how == "refused":
        widths = sum(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
        wrong, honest, pieces = _wrong_dabit(32 * widths, 1), ring64.deal, []

        def deal(size: ring64.Size, seeds: object = None) -> ring64.Deal:
            if size.dabits == 32 * widths:  # a piece of 32 records' bits: 0, then 1
                pieces.append(1)
                return (wrong if len(pieces) == 2 else honest)(size)
            return honest(size)

        monkeypatch.setattr(ring64, "deal", deal)
        monkeypatch.setattr(standdeal, "give_up", lambda *_: None, raising=False)
    else:
        dealt = standdeal._deal

        def failing(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
            if m.standing_piece == 2:
                later.append(m)
                raise errors.Unavailable("C failed before piece 2")
            return dealt(remote, conversions, m, *rest)

        monkeypatch.setattr(standdeal, "_deal", failing)
    conversions = Conversions()
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == by_pairs
    assert conversions.failed == 1 and conversions.converted == 0
    assert held(roles) == [0, 0]
    for role in ROLES:
        assert roles.running[role].service.standing.dropped == 1
        (dropped,) = entries(tmp_path, role, "twoserver.standing_dropped")
        assert dropped["members"] == NAMES and int(dropped["bytes"]) > 0  # type: ignore[call-overload]
        assert dropped["done"] == (1 if how == "refused" else 2) and dropped["pieces"] == 3
        why = "piece 1 of 3 failed: " if how == "refused" else "the combiner gave it up"
        assert why in str(dropped["reason"])
    if later:  # its piece 2, dealt now: refused, the conversion not held
        s1 = pb_grpc.TwoServerBlockingStub(grpc.insecure_channel(
            f"127.0.0.1:{roles.running['s1'].port}"))  # fmt: skip
        with pytest.raises(grpc.RpcError, match="standing_needed: conversion"):
            s1.PrepareBlocks(later[0], metadata=(("authorization", f"Bearer {KEY}"),))
    assert roles.conversions() == [0, 0]


def test_a_half_made_conversion_no_piece_of_which_comes_is_dropped_by_the_servers(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """C stops dealing after piece 0 without a word (killed, its link down: here held before
    piece 1, its `give_up` lost): each server drops the half-made conversion STALE_SECONDS
    after its last piece, on its own (no other call comes), audited; the piece that comes
    after that is refused `standing_needed` and C counts the conversion failed."""
    # longer than piece 0 takes on a loaded host (at 0.05 s a server could drop it mid-piece,
    # `done` 0: seen with -n 2), far shorter than the default
    monkeypatch.setattr(standcache, "STALE_SECONDS", 3.0, raising=False)
    roles.upload("south", shares["south"])
    gate, dealt = [False], standdeal._deal

    def held_back(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
        if m.standing_piece == 1:
            until(lambda: gate[0])
        return dealt(remote, conversions, m, *rest)

    monkeypatch.setattr(standdeal, "_deal", held_back)
    monkeypatch.setattr(standdeal, "give_up", lambda *_: None, raising=False)
    conversions = Conversions()
    ask(roles, shares["query"], shares["south"], conversions, settle=False)
    kept = [roles.running[r].service.standing for r in ROLES]
    until(lambda: all(k.dropped == 1 for k in kept))  # by the servers' own timers
    assert held(roles) == [0, 0]
    for role in ROLES:
        (dropped,) = entries(tmp_path, role, "twoserver.standing_dropped")
        assert dropped["done"] == 1 and "no piece for 3 s" in str(dropped["reason"])
    gate[0] = True
    assert conversions.idle(600)  # (a bound on a hang, not a timing)
    assert conversions.failed == 1 and conversions.converted == 0
    assert roles.conversions() == [0, 0] and held(roles) == [0, 0]


def test_a_background_conversion_waits_while_a_query_is_answered_pause_seconds_at_most(
    roles: Roles, shares: dict[str, client.SharedUpload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a query dealing standing parts is being answered, the background conversion's
    next piece is not dealt (it waits: `paused`), and it goes on once the query is answered;
    with PAUSE_SECONDS small, under a query that is never answered it goes on all the same."""
    roles.upload("south", shares["south"])
    monkeypatch.setattr(twoserver_conversions, "PAUSE_SECONDS", 600.0)
    conversions = Conversions()
    other = open_query(roles, shares["query"], conversions)
    dealt, seen = standdeal._deal, []

    def deal(remote: Any, conv: Any, m: pb.BlockDeal, *rest: Any) -> int:
        if m.standing_piece:
            seen.append((m.standing_piece, other.closed))
        return dealt(remote, conv, m, *rest)

    monkeypatch.setattr(standdeal, "_deal", deal)
    by_pairs, _ = ask(roles, shares["query"], shares["south"], conversions, settle=False)
    until(lambda: conversions.paused == 1 or bool(seen))
    assert seen == [] and conversions.paused == 1 and roles.conversions() == [0, 0]
    other.close()  # answered: the conversion goes on
    assert conversions.idle(600)  # (a bound on a hang, not a timing)
    assert seen == [(1, True), (2, True)] and conversions.converted == 1
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == by_pairs
    assert conversions.queried == 1
    # PAUSE_SECONDS bounds the wait: a query never answered holds no conversion for ever
    monkeypatch.setattr(twoserver_conversions, "PAUSE_SECONDS", 0.01)
    never = open_query(roles, shares["query"], conversions)
    roles.upload("south", shares["south"])  # its upload anew: converted again
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == by_pairs
    assert conversions.converted == 2 and conversions.paused == 3 and not never.closed


class LookedBefore(Conversions):
    """C's conversions, where the first part of the query `arm`ed for finds none held and,
    before it asks for admission (`start` asks S1's and S2's bounds first: `learn`), the
    conversion being made goes on to its end (`gate` set) and is kept."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate, self.armed = gate, False

    def learn(self, remote: RemoteServers) -> None:
        if self.armed:
            self.armed = False
            self.gate.set()
            assert self.idle(600)  # (a bound on a hang, not a timing)
        super().learn(remote)


def test_a_query_that_looked_as_the_conversion_ended_uses_it_and_converts_none_again(
    roles: Roles, shares: dict[str, client.SharedUpload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next query comes while south's conversion deals its last piece: a part finds none
    held, and the conversion ends whole before that part is admitted. The part uses it
    (standing, the same answer) and S1 and S2 convert south once. (Before: admitted, it
    converted south again: two conversions at S1 and S2, minutes of their CPU at 1M
    records; the matcher's test of two queries counted 2 in one CI run under load.)"""
    roles.upload("south", shares["south"])
    by_pairs, _ = ask(roles, shares["query"], shares["south"], None)
    gate, at_last, dealt = threading.Event(), threading.Event(), standdeal._deal

    def deal(remote: Any, conv: Any, m: pb.BlockDeal, *rest: Any) -> int:
        if m.standing_piece == 2:  # the last (past the pause: no query is being answered)
            at_last.set()
            assert gate.wait(600)  # (a bound on a hang, not a timing)
        return dealt(remote, conv, m, *rest)

    monkeypatch.setattr(standdeal, "_deal", deal)
    conversions = LookedBefore(gate)
    assert ask(roles, shares["query"], shares["south"], conversions, settle=False)[0] == by_pairs
    assert at_last.wait(600) and conversions.converted == 0  # (a bound on a hang)
    conversions.armed = True
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == by_pairs
    assert conversions.converted == 1 and roles.conversions() == [1, 1]
    assert conversions.queried >= 1 and not conversions.armed


def test_the_combiner_counts_no_room_for_a_partners_conversion_its_next_one_replaces() -> None:
    """`Conversions.admit`: a partner's new conversion (its upload replaced: another number of
    records) is admitted where S1's and S2's room holds it alone, the earlier one of the same
    partner forgotten (the servers drop it when the new one's piece 0 comes). (Before: the
    earlier one was counted as in use, and the partner went by pairs for an hour.)"""
    kept = Conversions()
    kept.told(10_000, 10_000)
    old, new = ("south", 90, (64,), (0.8,), b""), ("south", 87, (64,), (0.8,), b"")
    assert kept.admit(old, 9_000) == ""
    kept.put(old, ("id-old", None), 9_000)  # type: ignore[arg-type]
    kept.end()
    assert kept.admit(new, 8_700) == "" and kept.get(old) is None
    kept.end()
    other = ("east", 90, (64,), (0.8,), b"")  # another partner's: still counted
    kept.put(new, ("id-new", None), 8_700)  # type: ignore[arg-type]
    assert "do not fit beside the 8,700" in kept.admit(other, 9_000)


def test_the_servers_make_room_for_a_conversion_as_it_starts_not_when_it_ends(
    roles: Roles, shares: dict[str, client.SharedUpload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1's and S2's `--standing-bytes` hold one partner: south converted, then east (queried
    once south has been idle for RECENT_SECONDS) admitted in its place. While east's later
    pieces are held back, S1 and S2 hold east's half-made conversion alone (south dropped for
    room when east's piece 0 came), never over the bound; east then whole, alone. (Before:
    south stayed until east's end, one partner over the bound for the whole conversion.)"""
    for name in ("south", "east"):
        roles.upload(name, shares["south"])
    widths = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    size, small = standdeal.kept_bytes(90, widths), standdeal.kept_bytes(90, widths, 0)
    for r in ROLES:  # (nor east beside south without [M_B]: C then converts it with, alone)
        roles.running[r].service.standing.most = size + small // 2
    now = [0.0]
    conversions = Conversions(clock=lambda: now[0])
    south, _ = ask(roles, shares["query"], shares["south"], conversions)
    assert held(roles) == [size, size]
    now[0] += standdeal.RECENT_SECONDS + 1
    gate, dealt, during = [False], standdeal._deal, []

    def held_back(remote: Any, conv: Any, m: pb.BlockDeal, *rest: Any) -> int:
        if m.standing_piece == 1:
            during.append(held(roles))
            until(lambda: gate[0])
        return dealt(remote, conv, m, *rest)

    monkeypatch.setattr(standdeal, "_deal", held_back)
    east, _ = ask(roles, shares["query"], shares["south"], conversions, name="east", settle=False)
    until(lambda: bool(during))
    gate[0] = True
    assert conversions.idle(600)  # (a bound on a hang, not a timing)
    assert all(b <= size for b in during[0]) and conversions.converted == 2
    assert held(roles) == [size, size] and east == south


def test_a_query_whose_piece_0_fails_returns_before_the_conversion_is_given_up(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """C fails just after piece 0 of south's conversion (both servers hold it), within a
    query: the query returns its error while S2's `standing_drop` handler is still held (the
    test releases it only then), and the give-up then goes on off the query's thread: both
    servers drop the conversion, audited, and the matcher's stop waits for it. (Before: the
    query's thread made the drops, DROP_SECONDS each, a query failing anyway waiting up to
    20 s more; here it waited for the handlers' bound, not released by then.)"""
    roles.upload("south", shares["south"])
    monkeypatch.setattr(sys.modules[standdeal.give_up.__module__], "DROP_SECONDS", 600.0)
    dealt = standdeal._deal

    def failing(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
        out = dealt(remote, conversions, m, *rest)
        if m.standing_pieces and m.standing_piece == 0:
            raise errors.Unavailable("C failed after piece 0")
        return out

    monkeypatch.setattr(standdeal, "_deal", failing)
    released, entered, waited = threading.Event(), list[str](), list[bool]()
    given_up = twoserver_standing._given_up

    def held_drop(role: Any, m: pb.BlockDeal) -> None:
        entered.append(role.role)
        waited.append(released.wait(60))  # (a bound on a hang: True where the test let it go)
        given_up(role, m)

    monkeypatch.setattr(twoserver_standing, "_given_up", held_drop)
    conversions = Conversions()
    with pytest.raises(errors.Unavailable, match="C failed after piece 0"):
        ask(roles, shares["query"], shares["south"], conversions, settle=False)
    assert all(b > 0 for b in held(roles))  # piece 0 held at both, not yet given up
    released.set()
    until(lambda: held(roles) == [0, 0])
    assert conversions.close()  # (the give-up's thread ended)
    assert waited == [True, True] and entered == ["s2", "s1"]
    for role in ROLES:
        (dropped,) = entries(tmp_path, role, "twoserver.standing_dropped")
        assert "the combiner gave it up" in str(dropped["reason"]) and dropped["done"] == 1


@pytest.mark.parametrize("old", ["combiner", "s1"])
def test_a_role_of_the_version_before_bytes32_is_refused_naming_the_size(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch, old: str,
) -> None:  # fmt: skip
    """bytes32 halved a piece's CLK-bit daBits (mod 2^32, 4 bytes a value). C of the version
    before (its deal to S2 8 bytes a value), or S1 of it (its first message 8 bytes a value):
    the piece is refused naming the size got and the size wanted, rather than converted amiss
    (C's: S2's INVALID_ARGUMENT; S1's: S2's INVALID_ARGUMENT or, where S1 reads S2's message
    first, S1's DATA_LOSS naming S2, rpc/twoserver_blocks.py `s1_exchange`); no conversion
    is kept."""
    roles.upload("south", shares["south"])
    if old == "combiner":
        honest = ring64.deal

        def deal(size: ring64.Size, seeds: object = None) -> ring64.Deal:
            return honest(dataclasses.replace(size, width=8) if size.width == 4 else size)

        monkeypatch.setattr(ring64, "deal", deal)
        said = "setup: C's setup is [0-9,]+ bytes, not [0-9,]+"
    else:
        first = ring64.Party.first

        def longer(party: ring64.Party, bits: Any) -> bytes:
            sent = first(party, bits)
            wide = party.role == 0 and party.size.width == 4
            return sent + bytes(4 * party.size.dabits) if wide else sent

        monkeypatch.setattr(ring64.Party, "first", longer)
        said = "the other server's conversion is [0-9,]+ bytes, not [0-9,]+"
    conversions = Conversions()
    with pytest.raises(errors.ServiceError, match=said) as got:
        ask(roles, shares["query"], shares["south"], conversions)
    kinds = (errors.InvalidArgument,) if old == "combiner" else (errors.InvalidArgument,
                                                                 errors.DataLoss)  # fmt: skip
    assert isinstance(got.value, kinds)
    assert held(roles) == [0, 0] and roles.conversions() == [0, 0]
    assert conversions.converted == 0
