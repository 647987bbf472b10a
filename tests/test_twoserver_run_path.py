"""Which path a two-server run's unblocked parts take (core/partpath.py `by_blocks`, applied in
core/tworun.py `drive` as to a query's): a small pair of members by pairs, with no block
dealt, prepared or exchanged, and the same links and buckets as by blocks (docs/performance.md
"A two-server run's parts by pairs or by blocks")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import partpath, tworun, twoserver
from blindmatch.matcher.core.twoserver import Proposed
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_service import RunningRole
from tests.test_twoserver_blocks import RULE, THRESHOLD, entries, remote, roles, uploads  # noqa: F401

pytestmark = pytest.mark.server
NAMES = ["north", "south"]  # the first two of tests/test_twoserver_blocks.py's uploads


def run(roles: dict[str, RunningRole], shares: list[client.SharedUpload]  # noqa: F811
        ) -> tworun.TwoServerResult:  # fmt: skip
    """North's 120 records and south's 90 uploaded afresh (a fresh pair budget), then the
    combiner's run over S1 and S2 as the matcher drives it (`tworun.drive`)."""
    servers = remote(roles, NAMES, shares[:2])
    try:
        return tworun.drive(servers, twoserver.Combiner(None, THRESHOLD, clks=2, rule=Rule(*RULE)))
    finally:
        servers.close()


def test_a_small_runs_parts_go_by_pairs_with_no_block_calls_and_the_same_links(
    tmp_path: Path, roles: dict[str, RunningRole], uploads: list[client.SharedUpload],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """120 x 90 records, every pair unblocked: by pairs, so C is told the parts without their
    blocks, deals none, and neither S1 nor S2 prepares one (no `twoserver.blocks` entry in
    either audit log); before, every unblocked part of a run went by blocks. Forced by
    blocks, the same links and buckets."""
    got = run(roles, uploads)
    assert got.comparisons == 120 * 90 and not any(p.blocks for p in got.proposed)
    for role in ("s1", "s2"):
        assert not entries(tmp_path, role, "twoserver.blocks"), role
    monkeypatch.setattr(partpath, "PATH", "blocks")
    want = run(roles, uploads)
    assert all(p.blocks for p in want.proposed if p.pairs)
    for role in ("s1", "s2"):
        assert entries(tmp_path, role, "twoserver.blocks"), role
    assert len(want.links) == 10  # 5 pairs, each listed both ways
    for name in ("dset", "row", "partner", "partner_row", "score"):  # score: the bucket
        assert np.array_equal(getattr(got.links, name), getattr(want.links, name)), name


def test_a_part_under_the_rule_goes_by_blocks_from_fewer_pairs_a_row() -> None:
    """`by_blocks`: the record CLK's part under the gap rule saves the rule's circuit a pair
    (3,945 AND gates against the margin's 474), so it goes by blocks from RULED_PAIRS_A_ROW
    (64) pairs a row its blocks convert; a part without the rule (the fallback CLK's, or no
    rule) from BLOCKS_PAIRS_A_ROW (200) and BLOCKS_MIN_PAIRS, as a query's always did."""

    def part(a: int, b: int, clk: int = twoserver.RECORD) -> Proposed:
        blocks = tuple((a, min(1024, b - k)) for k in range(0, b, 1024))
        return Proposed(0, 1, clk, a * b, blocks)

    assert not partpath.by_blocks(part(50, 50), ruled=True)  # 25 pairs a row
    assert not partpath.by_blocks(part(120, 90), ruled=True)  # 51: the test above's
    assert partpath.by_blocks(part(150, 150), ruled=True)  # 75
    assert partpath.by_blocks(part(100, 1000), ruled=True)  # 91
    assert not partpath.by_blocks(part(100, 1000))  # 91, without the rule
    assert partpath.by_blocks(part(1000, 1000)) and partpath.by_blocks(part(1000, 1000), True)
    rule, record, fallback = Rule(*RULE), part(150, 150), part(150, 150, twoserver.FALLBACK)
    assert [bool(p.blocks) for p in partpath.by_shape([record, fallback], rule)] == [True, False]
    assert [bool(p.blocks) for p in partpath.by_shape([record, fallback])] == [False, False]
