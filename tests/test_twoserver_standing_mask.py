"""Standing partners kept without [M_B] over gRPC (standmask, issue 18 (b)): where a partner
fits S1's and S2's `--standing-bytes` only without its [M_B], each server converts it without
keeping [M_B] (regenerated from its seed at each query: core/standing.py
`Partner.forget_mask`) and C admits it at that size (rpc/twoserver_standcache.py
`keeps_mask`, the one rule). Reuses tests/test_twoserver_standing.py's fixtures (S1 and S2 on
loopback, a partner of 90 records converted in 3 pieces)."""

from __future__ import annotations

import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.rpc import twoserver_standcache as standcache
from blindmatch.matcher.rpc import twoserver_standing as standing_rpc
from blindmatch.matcher.rpc.twoserver_standdeal import Conversions
from tests.test_twoserver_standing import Roles, ask, ask_each, older_roles, rounds, sizes
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares

pytestmark = pytest.mark.server
ROLES = ("s1", "s2")
CLKS = (1024, 1024)  # the shipped schema's two CLKs


def test_the_rule_keeps_m_b_where_the_partner_fits_with_it_else_4128_bytes_a_record() -> None:
    """12,320 bytes a record with [M_B], 4,128 without, at two 1,024-bit CLKs: a partner of
    1,000,000 records fits 4 GiB (the default bound) only without it; 300,000 with it."""
    assert standcache.kept_bytes(1, CLKS) == 12_320 + 32
    assert standcache.kept_bytes(1_000_000, CLKS, 4 << 30) == 4_128_000_032
    assert not standcache.keeps_mask(1_000_000, CLKS, 4 << 30)
    assert standcache.keeps_mask(300_000, CLKS, 4 << 30)
    assert standcache.kept_bytes(300_000, CLKS, 4 << 30) == 300_000 * 12_320 + 32


def test_partners_that_fit_only_without_m_b_are_kept_so_and_all_go_standing(
    roles: Roles, shares: dict[str, client.SharedUpload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two partners where S1's and S2's `--standing-bytes` hold both without [M_B] but not
    one with it: both converted once, kept without [M_B] (the smaller figure, at S1, S2 and
    in C's count), every later query standing, each answer that by pairs; each server's heap
    trimmed after each conversion's last piece (TRIM_EVERY 16, more than its 3). (Before: the
    first kept with [M_B], over the bound alone, and the second went by pairs every time; no
    trim.)"""
    partners = ["south", "east"]
    for name in partners:
        roles.upload(name, shares["south"])
    widths = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
    small = standcache.kept_bytes(90, widths, 0)
    most = 2 * small + small // 2
    assert standcache.kept_bytes(90, widths) > most and not standcache.keeps_mask(90, widths, most)
    for r in ROLES:
        roles.running[r].service.standing.most = most
    trims = [0]
    trim = standcache.trim

    def counted() -> None:
        trims[0] += 1
        trim()  # (the real malloc_trim on glibc)

    monkeypatch.setattr(standcache, "trim", counted)
    conversions = Conversions()
    by_pairs = ask_each(roles, shares["query"], shares["south"], partners, None)
    for _ in range(2):
        assert ask_each(roles, shares["query"], shares["south"], partners, conversions) == by_pairs
    assert conversions.converted == 2 and roles.conversions() == [2, 2]
    assert conversions.declined == 0 and conversions.queried == 2  # the second round standing
    assert sorted(conversions._bytes.values()) == [small, small]
    assert trims[0] == 2 * 2 * 1  # each server's heap trimmed after the last piece of both
    for r in ROLES:
        kept = roles.running[r].service.standing
        assert kept.bytes_kept() == 2 * small
        assert all(not e.conv.partner.mask for e in kept._held.values())  # type: ignore[union-attr]


def test_a_conversion_trims_each_servers_heap_every_trim_every_pieces_and_after_its_last(
    roles: Roles, shares: dict[str, client.SharedUpload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partner of 3 pieces under TRIM_EVERY 2: each server's heap trimmed after piece 2 and
    after the last, not after each (qcost's knob: each piece's temporaries reused by the next
    rather than mapped and zeroed afresh; 1, after each, by default); the answers those by
    pairs. (Before: no knob, after each piece, 3 a server.)"""
    roles.upload("south", shares["south"])
    trims = [0]
    trim = standcache.trim

    def counted() -> None:
        trims[0] += 1
        trim()

    monkeypatch.setattr(standcache, "trim", counted)
    monkeypatch.setattr(standing_rpc, "TRIM_EVERY", 2)
    conversions = Conversions()
    by_pairs = ask_each(roles, shares["query"], shares["south"], ["south"], None)
    for _ in range(2):
        assert ask_each(roles, shares["query"], shares["south"], ["south"], conversions) == by_pairs
    assert conversions.converted == 1 and roles.conversions() == [1, 1]
    assert trims[0] == 2 * 2  # S1 and S2: after piece 2 and piece 3 (the last)


def test_partners_each_fitting_alone_with_m_b_but_together_only_without_all_go_standing(
    roles: Roles, shares: dict[str, client.SharedUpload]
) -> None:
    """Three partners, each fitting S1's and S2's `--standing-bytes` alone with [M_B] but the
    three together only without: C decides for them all (`Conversions.without_mask`, told
    S1 and S2 in piece 0): the first kept with [M_B], the others without, all converted once
    and every later query standing, each answer that by pairs; S1 and S2 keep what C counts.
    (Before: each server looked at each partner alone, kept [M_B] of all, and C declined the
    second and third: by pairs at every query.)"""
    widths, size, small = sizes(shares)
    most = size + 2 * small + small // 2
    assert standcache.keeps_mask(90, widths, most) and 2 * size > most
    conversions = rounds(roles, shares, ["south", "east", "west"], most, 3)
    assert conversions.converted == 3 and roles.conversions() == [3, 3]
    assert conversions.declined == 0 and conversions.queried == 2 * 3  # rounds 2 and 3
    assert sorted(conversions._bytes.values()) == [small, small, size]
    for r in ROLES:
        kept = roles.running[r].service.standing
        assert kept.bytes_kept() == size + 2 * small
        masks = {e.member: bool(e.conv.partner.mask) for e in kept._held.values()}  # type: ignore[union-attr]
        assert masks == {"south": True, "east": False, "west": False}


def test_servers_given_different_bounds_keep_a_partner_alike_as_the_combiner_counts(
    roles: Roles, shares: dict[str, client.SharedUpload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1 at the default `--standing-bytes`, S2 at one that holds south only without [M_B],
    both older than `HoldsReply`'s bounds (since capsfirst C asks them first and deals
    piece 0 once: tests/test_twoserver_standing_caps.py): C, not yet told S2's bound, asks
    for [M_B] in piece 0; S2 refuses it (`standing_room`, naming its bound) and C deals
    piece 0 again without, within the same query. Both servers
    then keep south without [M_B], at the size C counts, and the next query goes standing,
    its answer that by pairs. (Before: S1 kept [M_B] and S2 did not, each by its own bound.)"""
    older_roles(monkeypatch)
    roles.upload("south", shares["south"])
    _, size, small = sizes(shares)
    roles.running["s2"].service.standing.most = size - 1
    conversions = Conversions()
    by_pairs, _ = ask(roles, shares["query"], shares["south"], None)
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == by_pairs
    assert conversions.converted == 1 and conversions.budget == size - 1
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == by_pairs
    assert conversions.queried == 1 and list(conversions._bytes.values()) == [small]
    for r in ROLES:
        kept = roles.running[r].service.standing
        assert kept.bytes_kept() == small and kept.dropped == 0
        assert all(not e.conv.partner.mask for e in kept._held.values())  # type: ignore[union-attr]
