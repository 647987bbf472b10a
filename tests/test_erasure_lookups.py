"""An erasure cut short beside look-up servers: the matcher's next start tells them too.

The look-up servers keep running while the matcher stops after the erasure's transaction
(the state a kill at `erase.logged` leaves: tests/test_erasure_crash.py), still holding the
member's shards in memory; the restarted matcher completes the erasure and forwards it, so a
partner's query no longer finds the member. Both kinds of look-up server: reading the data
dir, and loaded by the matcher (no data dir).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_lookup_servers import (
    ROWS,
    Cluster,
    answers,
    clks,
    either,
    once_read,
    project_of,
    put,
    remote,
    sharded,
)

pytestmark = pytest.mark.server
__all__ = ["clks", "either", "remote", "sharded"]  # (fixtures shared with that module)


def test_an_erasure_cut_short_reaches_the_look_up_servers_at_the_next_start(
    either: Cluster, clks: list[np.ndarray]
) -> None:
    assert either.matcher is not None
    tokens = project_of(either.matcher).tokens
    put(either.matcher, tokens["north"], "north", clks[0], range(ROWS))
    asked = clks[0][0:20]
    found = answers(once_read(either.matcher, tokens["south"], asked))
    assert [r[0][1] for r in found] == [(f"north-{i}",) for i in range(20)]
    either.matcher.server.store.erase_member("trial", "north")  # the transaction, no more
    either.matcher.server.stop(grace=None)  # the look-up servers keep north's shards
    either.matcher = None
    matcher = either.start_matcher()
    assert answers(once_read(matcher, tokens["south"], asked)) == [[] for _ in range(20)]
