"""Which path a two-server query's unblocked part takes (core/partpath.py `by_blocks`):
a query of a few records by pairs, with no block deal, PrepareBlocks or BlockExchange (its
blocks would convert every partner record for a pair or two a record), and the same links,
buckets and rows as by blocks; many records a partner record by blocks (docs/performance.md
"A two-server query by pairs or by blocks")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import linkbit, partpath, twoserver
from blindmatch.matcher.core.twoserver import Proposed
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.realtime import twopartner
from blindmatch.matcher.rpc.twoserver_service import RunningRole
from tests.support import MESSY_SECRET
from tests.test_twoserver_blocks import RULE, THRESHOLD, entries, remote, roles  # noqa: F401

pytestmark = pytest.mark.server
Clks = npt.NDArray[np.uint8]
NAMES = ["asker", "south"]  # the query's records (3 of south's own), south's upload


@pytest.fixture(scope="module")
def shares(messy_members: tuple[list[Clks], int]) -> list[client.SharedUpload]:
    datasets, fallback_bits = messy_members
    plan = client.BandPlan(bits=20, bands=30)
    return [client.shared_upload(d, MESSY_SECRET, plan, fallback_bits)
            for d in (datasets[1][:3], datasets[1][:90])]  # fmt: skip


def query(
    roles: dict[str, RunningRole],  # noqa: F811
    shares: list[client.SharedUpload],
) -> tuple[list[tuple[int, int, float]], linkbit.Transcript]:
    """The query's records against south's upload, both uploaded afresh (a fresh pair
    budget): (links as rows and buckets, the calls' transcript)."""
    servers = remote(roles, NAMES, shares)
    combiner = twoserver.Combiner(None, THRESHOLD, clks=2, rule=Rule(*RULE))
    transcript = linkbit.Transcript()
    try:
        links, pairs = twopartner.query_links(servers, combiner, transcript)
    finally:
        servers.close()
    assert pairs == 270  # every pair: S1 compares the query whole against south
    found = sorted(zip(links.rec0.tolist(), links.rec1.tolist(), links.sims.tolist(),
                       strict=True))  # fmt: skip
    return found, transcript


def test_a_few_records_query_goes_by_pairs_with_no_block_calls_and_the_same_links(
    tmp_path: Path, roles: dict[str, RunningRole], shares: list[client.SharedUpload],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """3 query records x 90: by pairs, so C deals no block and neither S1 nor S2 prepares
    one (no `twoserver.blocks` entry: no PrepareBlocks, no BlockExchange); before, every
    unblocked part went by blocks, converting south's 90 records a part for 3 pairs each.
    Forced by blocks, the same links (each query record is south's own: found)."""
    got, by_pairs = query(roles, shares)
    for role in ("s1", "s2"):
        assert not entries(tmp_path, role, "twoserver.blocks"), role
    monkeypatch.setattr(partpath, "PATH", "blocks")
    want, by_blocks = query(roles, shares)
    for role in ("s1", "s2"):  # the record CLK's part and the fallback's, if it has pairs
        assert entries(tmp_path, role, "twoserver.blocks"), role
    assert got == want and {row for row, _, _ in got} == {0, 1, 2}
    assert by_pairs.rounds and by_blocks.rounds


def test_a_part_goes_by_blocks_where_its_pairs_amortise_them() -> None:
    """`by_blocks`: a part's pairs against the rows its blocks convert (both sides of each
    block: the query's records again in each of the partner's blocks of 1,024 rows)."""

    def part(a: int, b: int) -> Proposed:
        blocks = tuple((a, min(1024, b - k)) for k in range(0, b, 1024))
        return Proposed(0, 1, 0, a * b, blocks)

    assert not partpath.by_blocks(part(1, 16_000))  # one record: a pair a row
    assert not partpath.by_blocks(part(3, 652))  # the demo's query
    assert not partpath.by_blocks(part(100, 4_000))  # 91 pairs a row converted
    assert partpath.by_blocks(part(400, 1_600))  # 320 pairs a row
    assert partpath.by_blocks(part(1_000, 16_000))  # a query of the most records
    assert not partpath.by_blocks(Proposed(0, 1, 0, 10**6))  # blocked: no blocks
    described = [part(1, 5_000), part(1_000, 5_000)]
    assert [bool(p.blocks) for p in partpath.by_shape(described)] == [False, True]
