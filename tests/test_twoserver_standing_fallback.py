"""A query's fallback part against a standing partner over gRPC (fallstand): the pairs where a
record lacks the fallback CLK's fields (a date of birth) are scored on the fallback CLK alone;
where they are most of the query's pairs (core/partpath.py `fallback_standing`) they go against
the partner converted once, the kernel's test on the query's fallback-CLK H shares
(core/standingsteps.py `query_steps` with clk 1), the links those by pairs. Reuses
tests/test_twoserver_standing.py's fixtures (S1 and S2 on loopback, south's 90 records
converted in 3 pieces)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import (
    densemargin,
    fallback,
    linkbit,
    partpath,
    ring64,
    standingrows,
    twoserver,
)
from blindmatch.matcher.core import standing as standing_
from blindmatch.matcher.core import standingquery as sq
from blindmatch.matcher.core import standingsteps as steps
from blindmatch.matcher.core.margincircuit import plan
from blindmatch.matcher.core.twoserver import FALLBACK, RECORD, Proposed
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.realtime import twopartner
from blindmatch.matcher.rpc import twoserver_standcache as standcache
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_standdeal import Conversions
from tests.support import MESSY_SECRET
from tests.test_densearith import CUTOFFS, DEFAULT, _block, _pops
from tests.test_standing import _partner
from tests.test_standing import encoded as encoded  # the fixture
from tests.test_twoserver_blocks import KEY, RULE, THRESHOLD, entries
from tests.test_twoserver_standing import NAMES, Clks, Found, Roles
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def lacking(messy_members: tuple[list[Clks], int]) -> dict[str, client.SharedUpload]:
    """Queries of south's own records: its one lacking a date of birth ("one"); that one
    twice around one with it ("mixed")."""
    datasets, fallback_bits = messy_members
    south = datasets[1][:90]
    lack = np.flatnonzero(fallback.Split.of([south], fallback_bits).lacking[0])
    have = np.flatnonzero(~fallback.Split.of([south], fallback_bits).lacking[0])
    assert len(lack) and len(have) and len(lack) < 45  # (few of south's lack it)
    plan = client.BandPlan(bits=20, bands=30)
    made = {"one": south[lack[:1]], "mixed": south[[lack[0], have[0], lack[0]]]}
    return {k: client.shared_upload(d, MESSY_SECRET, plan, fallback_bits)
            for k, d in made.items()}  # fmt: skip


def ask(roles: Roles, query: client.SharedUpload, partner: client.SharedUpload,
        conversions: Conversions | None) -> tuple[Found, linkbit.Transcript]:  # fmt: skip
    """`query` (uploaded afresh) compared whole against south's upload (`partner`), by the
    standing path with `conversions`, else by pairs; once answered, any conversion started
    made. (rows and buckets of the links, the calls' transcript)"""
    roles.upload(NAMES[0], query)
    bits = [8 * int(x.shape[1]) for x in query.s1.shares]
    rows = [len(query.s1.shares[0]), len(partner.s1.shares[0])]
    servers = RemoteServers(f"127.0.0.1:{roles.running['s1'].port}",
                            f"127.0.0.1:{roles.running['s2'].port}", KEY, NAMES, rows,
                            bits)  # fmt: skip
    servers.conversions = conversions
    combiner = twoserver.Combiner(None, THRESHOLD, clks=2, rule=Rule(*RULE))
    t = linkbit.Transcript()
    try:
        described = servers.propose(combiner.lacking(), combiner.cutoffs, combiner.rule)
        links, pairs = twopartner.proposed_query_links(servers, combiner, described, t, True)
    finally:
        servers.close()
    if conversions is not None:
        assert conversions.idle(600)  # (a bound on a hang, not a timing)
    assert pairs == rows[0] * rows[1]  # compared whole
    return sorted(zip(links.rec0.tolist(), links.rec1.tolist(), links.sims.tolist(),
                      strict=True)), t  # fmt: skip


@pytest.mark.parametrize("mask", [True, False])
def test_a_one_record_query_without_a_date_of_birth_goes_standing_with_the_pairs_links(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    lacking: dict[str, client.SharedUpload], mask: bool,
) -> None:  # fmt: skip
    """A record lacking a date of birth has only a fallback part (1 x south's 90): it starts
    south's conversion (piece 0 within the query, the rest in the background), and the next
    such query goes standing, its links, buckets and rows those by pairs (itself among
    them), with fewer bytes between S1 and S2; with S1 and S2 keeping south's [M_B] or (a
    bound that holds it only without) regenerating it past the record CLK's. (Before: its
    fallback part always by pairs; nothing converted, nothing queried standing.)"""
    roles.upload("south", shares["south"])
    if not mask:
        small = standcache.kept_bytes(90, (1024, 1024), 0)
        for r in ("s1", "s2"):
            roles.running[r].service.standing.most = small + small // 2
    by_pairs, paired = ask(roles, lacking["one"], shares["south"], None)
    conversions = Conversions()
    first, _ = ask(roles, lacking["one"], shares["south"], conversions)
    assert conversions.converted == 1 and roles.conversions() == [1, 1]
    assert conversions.queried == 0  # converting: by pairs
    second, stood = ask(roles, lacking["one"], shares["south"], conversions)
    assert conversions.queried == 1 and conversions.converted == 1
    assert first == second == by_pairs and by_pairs and {r for r, _, _ in by_pairs} == {0}
    assert stood.sent[("S1", "S2")] < paired.sent[("S1", "S2")]
    assert not entries(tmp_path, "s1", "twoserver.refused")
    held = [e.conv.partner for e in roles.running["s1"].service.standing._held.values()]
    assert [bool(p.mask) for p in held if p is not None] == [mask]


def test_a_query_with_and_without_dates_of_birth_has_both_parts_standing(
    roles: Roles, shares: dict[str, client.SharedUpload], lacking: dict[str, client.SharedUpload],
) -> None:  # fmt: skip
    """Two records lacking a date of birth and one with it, against south converted once:
    the record part (1 x south's records with it) and the fallback part (2 x 90, and 1 x
    south's lacking it) both standing, at once; the links those by pairs."""
    roles.upload("south", shares["south"])
    by_pairs, _ = ask(roles, lacking["mixed"], shares["south"], None)
    conversions = Conversions()
    ask(roles, shares["query"], shares["south"], conversions)  # converted by the record part
    assert conversions.converted == 1 and conversions.queried == 0
    got, _ = ask(roles, lacking["mixed"], shares["south"], conversions)
    assert got == by_pairs and {r for r, _, _ in got} == {0, 1, 2}
    assert conversions.queried == 2 and conversions.converted == 1


def test_a_querys_fallback_part_goes_standing_where_it_is_most_of_its_pairs() -> None:
    """`partpath.for_query`: the fallback CLK's unblocked part under the rule, against a
    partner of at least STANDING_RECORDS records, where its pairs are at least FALLBACK_SHARE
    of the query's records x the partner's (a record lacking a date of birth: all); not a
    query with one against a partner of few lacking it, nor without the rule, nor a watch's."""
    rule = Rule(*RULE)
    n = partpath.STANDING_RECORDS
    lacks = Proposed(0, 1, FALLBACK, n, ((1, n),))
    has = Proposed(0, 1, FALLBACK, n // 10, ((1, n // 10),))
    record = Proposed(0, 1, RECORD, n - n // 10, ((1, n - n // 10),))
    assert [p.standing for p in partpath.for_query([lacks], [1, n], rule)] == [True]
    assert [p.standing for p in partpath.for_query([record, has], [1, n], rule)] == [True, False]
    assert not partpath.for_query([lacks], [1, n], Rule())[0].standing
    assert not partpath.for_query([lacks], [1, n - 1], rule)[0].standing
    assert not partpath.for_query([lacks], [1, n], rule, standing=False)[0].standing
    half = Proposed(0, 1, FALLBACK, n, ((2, n),))
    assert partpath.for_query([half], [2, n], rule)[0].standing  # 2 x n: half of them
    assert not partpath.for_query([half], [3, n], rule)[0].standing


def test_a_stream_started_past_the_clks_before_is_the_later_clks_mask() -> None:
    """`stream_times(..., before)`: a CLK's mask regenerated alone, its streams started past
    the CLKs `mask_share` draws ahead of it, is that CLK's of the whole mask."""
    rng = np.random.default_rng(5)
    seeds, widths, rows = (bytes(range(32)), bytes(32)), (64, 128), standingrows.SLICE + 3
    vec = rng.integers(0, 1 << 32, (2, 128), dtype=np.uint32)
    shares = [standing_.mask_share(seed, 2, rows, widths)[1] for seed in seeds]
    (both,) = standingrows.stream_times(seeds, 2, rows, widths[1:], [vec], before=64)
    (one,) = standingrows.stream_times(seeds[1:], 2, rows, widths[1:], [vec], before=64)
    assert (both == standingrows.numpy_rows_times(vec, shares[0] + shares[1])).all()
    assert (one == standingrows.numpy_rows_times(vec, shares[1])).all()


def _fallback_h(
    s: standing_.Standing,
    partners: tuple[standing_.Partner, standing_.Partner],
    q: list[Clks],
    clk: int,
) -> np.ndarray:  # type: ignore[type-arg]
    """The H of every pair of query `q` x the partner on the fallback CLK, opened from the
    servers' shares that `query_steps` gives between them in this process: the whole query's
    (`clk` 0: both CLKs) or the fallback part's (`clk` 1: that CLK's view alone)."""
    _rows, one, two = _block(q, [x[:0] for x in q])
    pops = _pops(q)
    p = plan(s.widths[0], s.widths[1], CUTOFFS, DEFAULT)
    view, rows = s.view(clk) if clk else s, len(q[0])
    bits = ring64.deal(standing_.bits_size(rows, view.widths))
    pd, dealt = densemargin.pops_deal(p, rows), sq.deal(view, rows)
    setups = [bits.to_s1 + pd.to_s1 + dealt.to_s1, bits.to_s2 + pd.to_s2 + dealt.to_s2]
    out: list[list[Any]] = [[], []]
    made = [steps.query_steps(partners[r], p, setups[r], (one, two)[r], pops[r], out[r], clk)
            for r in (0, 1)]  # fmt: skip
    steps.drive(made[0], made[1])
    h = [o[0].blocks[0].hamming(0 if clk else 1).astype(np.uint32) for o in out]
    return (h[0] + h[1]) & np.uint32((1 << s.widths[1].bit_length()) - 1)


@pytest.mark.parametrize("kept", ["by both", "by neither", "by C"])
def test_a_fallback_parts_query_gives_the_fallback_clks_h_alone(
    encoded: list[list[Clks]], kept: str
) -> None:
    """`query_steps` with clk 1 (`Partner.view`, `Standing.view`: the fallback CLK's bits
    converted and its products made, not the record CLK's): every pair's H on the fallback
    CLK, the whole query's on it and the clear Hamming distance, against a partner of two
    chunks, with the servers' [M_B] kept or regenerated past the record CLK's, and C's M_B
    regenerated or kept."""
    a, b = encoded
    b = [np.vstack([x] * 27) for x in b]  # 1,080 records: two chunks
    s, partners = _partner(b)
    if kept == "by neither":
        for side in partners:
            side.forget_mask()
    if kept == "by C":
        s.keep()
    q = [x[:2] for x in a]
    clear = np.bitwise_count(q[1][:, None, :] ^ b[1][None, :, :]).sum(axis=2)
    alone = _fallback_h(s, partners, q, 1)
    assert (alone == clear).all() and (alone == _fallback_h(s, partners, q, 0)).all()
