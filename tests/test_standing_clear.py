"""What benchmarks/twoserver_standing_rpc.py checks each query's links against (standfault):
benchmarks/standing_clear.py `clear_links`, the rule in the clear on the run's own CLKs, is
what a query gets by pairs and by the standing path over gRPC, buckets and rows, with records
that lack the fallback's fields among the query's and the partner's. (Before: a `--no-pairs`
run checked nothing, and its members' fresh secret each run moved a pair near the 0.80 cut-off
in and out of the links: read as a wrong link of the standing path.) Reuses
tests/test_twoserver_standing.py's fixtures (S1 and S2 on loopback, south's 90 records
converted in 3 pieces)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.standing_clear import clear_links, dice
from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import fallback, twoserver
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_standdeal import Conversions
from tests.support import MESSY_SECRET
from tests.test_twoserver_blocks import RULE, THRESHOLD
from tests.test_twoserver_standing import Roles, ask
from tests.test_twoserver_standing import roles as roles  # the fixture

pytestmark = pytest.mark.server
Clks = npt.NDArray[np.uint8]


def test_the_clear_links_are_both_paths_answers_over_grpc(
    roles: Roles, messy_members: tuple[list[Clks], int]
) -> None:
    """Two queries of three of south's records against its 90 (one query all with a date of
    birth; one with a record lacking it twice, which is scored on the fallback CLK alone):
    by pairs, then by the standing path once south is converted, each query's links,
    buckets and rows are `clear_links`'s; a link's Dice on each CLK is the clear's."""
    datasets, fallback_bits = messy_members
    south = datasets[1][:90]
    lack = fallback.Split.of([south], fallback_bits).lacking[0]
    mixed = [int(np.flatnonzero(lack)[0]), int(np.flatnonzero(~lack)[0])]
    queries = {"whole": south[:3], "mixed": south[[mixed[0], mixed[1], mixed[0]]]}
    plan = client.BandPlan(bits=20, bands=30)
    partner = client.shared_upload(south, MESSY_SECRET, plan, fallback_bits)
    roles.upload("south", partner)
    cutoffs = twoserver.Combiner(None, THRESHOLD, clks=2, rule=Rule(*RULE)).cutoffs
    conversions = Conversions()
    for name, rows in queries.items():
        query = client.shared_upload(rows, MESSY_SECRET, plan, fallback_bits)
        parts = [client.clk_parts(x, fallback_bits) for x in (rows, south)]
        clear = clear_links(parts[0], parts[1], Rule(*RULE), cutoffs)
        assert {r for r, _, _ in clear} == {0, 1, 2}  # each query record finds itself
        by_pairs, _ = ask(roles, query, partner, None)
        assert by_pairs == clear, name
        ask(roles, query, partner, conversions)  # (the first converts south)
        before = conversions.queried
        standing, _ = ask(roles, query, partner, conversions)
        assert standing == clear and conversions.queried > before, name  # (asked standing)
    assert conversions.converted == 1
    own = clear_links(client.clk_parts(south[:1], fallback_bits),
                      client.clk_parts(south, fallback_bits), Rule(*RULE), cutoffs)  # fmt: skip
    assert (0, 0, 0.95) in own
    assert dice(client.clk_parts(south[:1], fallback_bits),
                client.clk_parts(south, fallback_bits), (0, 0, 0.95)) == [1.0, 1.0]  # fmt: skip
