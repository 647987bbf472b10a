"""S1's reach quota with a fallback CLK (core/rowledger.py; docs/privacy-design.md "A
dishonest combiner's reach pairs, attacked"), through real S1 and S2 over gRPC: C, which does
not know who lacks the fallback's fields, names each reach pair on both CLKs, and S1 answers
it 0 on the CLK it does not score it by. A pair named within the quota holds its place on
both CLKs, so the pairs S1 evaluates are the first the quota admits in C's order, whichever
CLK S1 scores each by (C learns nothing of that from which pairs are answered), and an
honest run loses none of the quota to the other CLK."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import linkbit, twoserver
from blindmatch.matcher.core.rowledger import REACH_FLOOR
from blindmatch.matcher.core.twocomplete import reach_bits
from blindmatch.matcher.core.tworun import link_bits
from blindmatch.matcher.core.twoserver import FALLBACK, RECORD, PairBatch
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from tests.support import MESSY_SECRET
from tests.test_rowledger_restart import NAMES, PLAN, RECORDS, THRESHOLD, Roles
from tests.test_twocomplete import subjects

pytestmark = pytest.mark.server
CUTOFFS = (THRESHOLD, *twoserver.default_buckets(THRESHOLD))
SOUTH, WEST = NAMES.index("south"), NAMES.index("west")


def with_fallback(clks: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A member's CLKs with a fallback CLK after them: an even row lacks the fallback's
    left-out fields (its fallback CLK is its first: the same popcount), an odd row has them
    (half its bits in the fallback)."""
    keep = np.frombuffer(bytes([0x55] * clks.shape[1]), np.uint8)
    fallback = clks & keep
    fallback[::2] = clks[::2]
    return np.ascontiguousarray(np.concatenate([clks, fallback], axis=1))


class Combiner:
    """C over gRPC: a fresh proposal over the three uploads, reach batches of its choosing."""

    def __init__(self, roles: Roles) -> None:
        s1 = roles.running["s1"].service
        self.bits = s1.held["south"].bits
        self.servers = RemoteServers(f"127.0.0.1:{roles.running['s1'].port}",
                                     f"127.0.0.1:{roles.running['s2'].port}", roles.key, NAMES,
                                     [RECORDS] * 3, self.bits)  # fmt: skip
        self.servers.propose(None, CUTOFFS)
        self.combiner = twoserver.Combiner(None, THRESHOLD, buckets=list(CUTOFFS[1:]),
                                           clks=len(self.bits))  # fmt: skip
        assert self.combiner.has_fallback and self.combiner.lacking() is None

    def ask(self, clk: int, rows_south: list[int], rows_west: list[int]) -> None:
        """One reach batch of south's and west's rows on `clk`, as reach_bits sends one."""
        part = PairBatch(SOUTH, WEST, clk, np.array(rows_south, np.uint32),
                         np.array(rows_west, np.uint32))  # fmt: skip
        circuit = self.combiner.reach_circuit(self.bits[clk], clk)
        dealt = linkbit.deal(circuit, len(part))
        self.servers.evaluate_reach(part, circuit, dealt, linkbit.Transcript(),
                                    {"S1": 0.0, "S2": 0.0, "C": 0.0})  # fmt: skip


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[Roles]:
    """S1, S2 and C on data dirs, holding three uploads with a fallback CLK; no run yet
    (the reach quota of south and west untouched: REACH_FLOOR, at 153 records)."""
    running = Roles(tmp_path)
    try:
        for name, d in zip(NAMES, subjects(), strict=True):
            running.send(name, client.shared_upload(with_fallback(d), MESSY_SECRET, PLAN, 1024))
        yield running
    finally:
        running.stop()


def reach_entries(roles: Roles) -> list[dict[str, object]]:
    with closing(sqlite3.connect(roles.root / "s1" / "twoserver-s1.sqlite")) as db:
        rows = db.execute("SELECT detail FROM audit WHERE action = 'twoserver.reach' ORDER BY seq")
        return [json.loads(d) for (d,) in rows]


def test_the_fixture_scores_pairs_of_an_even_row_by_the_fallback(roles: Roles) -> None:
    lacking = roles.running["s1"].service.held["south"].lacking
    assert lacking is not None and lacking[::2].all() and not lacking[1::2].any()


def test_an_honest_runs_reach_pairs_on_both_clks_use_the_whole_quota(roles: Roles) -> None:
    """More reach pairs than the quota, each named on both CLKs in one order (as
    twocomplete.reach_bits names them without knowing who lacks the fallback's fields), the
    fallback's first: S1 evaluates exactly the quota's worth, none lost to the other CLK."""
    c = Combiner(roles)
    on_fallback = [(2 * k, 2 * k) for k in range(10)]  # even rows: the fallback CLK
    on_record = [(2 * k + 1, 2 * k + 1) for k in range(10, 20)]  # odd rows: the first CLK
    pairs = [(SOUTH, a, WEST, b) for a, b in on_fallback + on_record]
    try:
        reach_bits(c.servers, c.combiner, pairs, None, linkbit.Transcript(), {})
    finally:
        c.servers.close()
    record, fallback = reach_entries(roles)[-2:]
    assert (record["clk"], fallback["clk"]) == (RECORD, FALLBACK)
    assert int(record["pairs"]) + int(fallback["pairs"]) == REACH_FLOOR  # type: ignore[call-overload]
    assert int(record["over_quota"]) + int(fallback["over_quota"]) == 20 - REACH_FLOOR  # type: ignore[call-overload]
    assert fallback["quota_used"] == REACH_FLOOR


def test_a_pair_named_beyond_the_quota_is_answered_0_whichever_clk_s1_scores_it_by(
    roles: Roles,
) -> None:
    """C fills the quota on the first CLK with pairs of both kinds, then names one more
    pair, scored by the fallback, on the fallback CLK alone: S1 answers it 0 beyond the
    quota, as it would had every pair been scored by the first CLK (a pair named within the
    quota held its place, on either CLK); before, the pairs the first batch answered 0 on the
    other CLK left room behind them, so whether the last pair was evaluated told C how many
    of the first were scored by the fallback."""
    c = Combiner(roles)
    fill = list(range(1, 1 + REACH_FLOOR))  # odd and even rows: both CLKs
    try:
        c.ask(RECORD, fill, fill)
        c.ask(FALLBACK, [40], [40])  # an even row: the fallback's
    finally:
        c.servers.close()
    first, last = reach_entries(roles)[-2:]
    assert (first["pairs"], first["over_quota"]) == (REACH_FLOOR // 2, 0)
    assert (last["pairs"], last["over_quota"]) == (0, 1)
    assert last["quota_used"] == REACH_FLOOR


def rows_written(roles: Roles) -> dict[str, int]:
    """The rows of S1's and S2's pair budget and of S1's ledger, in their stores."""
    out = {}
    for role, table in (("s1", "spent"), ("s1", "ledger"), ("s2", "spent")):
        with closing(sqlite3.connect(roles.root / role / f"twoserver-{role}-held.sqlite")) as db:
            out[f"{role} {table}"] = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return out


def written(roles: Roles, batch: Callable[[], None]) -> dict[str, int]:
    """The rows `batch` adds to S1's and S2's pair budget and S1's ledger."""
    before = rows_written(roles)
    batch()
    return {k: n - before[k] for k, n in rows_written(roles).items()}


def test_a_batch_s1_answers_all_0_writes_what_an_evaluated_one_does(roles: Roles) -> None:
    """A reach batch S1 evaluates, one all on the other CLK, and one S1 answers 0 by its
    per-upload cap (a later run, the record's other partner): each adds one row to S1's and
    S2's pair budget and one to S1's ledger (a commit each), so that C timing S1 cannot tell
    them apart (before, a batch answered all 0 skipped the three commits)."""
    first = Combiner(roles)
    try:
        evaluated = written(roles, lambda: first.ask(RECORD, [1], [1]))
        other_clk = written(roles, lambda: first.ask(FALLBACK, [5], [5]))  # odd: the first CLK's
    finally:
        first.servers.close()
    later = Combiner(roles)  # a later run over the same uploads
    try:
        capped = written(roles, lambda: later.ask(RECORD, [1], [3]))
    finally:
        later.servers.close()
    got = [(e["clk"], e["pairs"], e["capped"]) for e in reach_entries(roles)[-3:]]
    assert got == [(RECORD, 1, 0), (FALLBACK, 0, 0), (RECORD, 0, 1)]
    assert evaluated == other_clk == capped == {"s1 spent": 1, "s1 ledger": 1, "s2 spent": 1}


def test_the_batch_writes_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/s1_batch_writes.py: both kinds of batch timed, each with its commits."""
    done = subprocess.run(
        [sys.executable, "benchmarks/s1_batch_writes.py", "--batches", "3", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "evaluated: 3 batches" in done.stdout and "answered all 0: 3 batches" in done.stdout


def test_an_extras_batch_s1_evaluates_nothing_of_is_logged_and_written_as_any(
    roles: Roles,
) -> None:
    """An extras batch S1 evaluates and one all on the other CLK (neither capped): each has
    its `twoserver.extras` entry at S1 and adds one row to S1's and S2's pair budget and one
    to S1's ledger (before, the second had none of them)."""
    c = Combiner(roles)
    proposal = roles.running["s1"].service.proposals.of("south", "west")
    assert proposal is not None
    proposal._block({(SOUTH, WEST)})  # (S1 blocks a pair of members at its first batch)
    none = np.empty(0, np.uint64)
    proposed = {int(k) for clk in (RECORD, FALLBACK)
                for k in proposal._pairs.get((SOUTH, WEST, clk), none)}  # fmt: skip
    odd = [(a, b) for a in range(1, RECORDS, 2) for b in range(1, RECORDS, 2)
           if (a << 32 | b) not in proposed]  # fmt: skip
    (a1, b1), (a2, b2) = odd[0], next(p for p in odd if p[0] != odd[0][0] and p[1] != odd[0][1])

    def extras(clk: int, a: int, b: int) -> Callable[[], None]:
        batch = PairBatch(SOUTH, WEST, clk, np.array([a], np.uint32), np.array([b], np.uint32))
        return lambda: link_bits(c.servers, c.combiner, batch, linkbit.Transcript(), {})  # type: ignore[return-value]

    try:
        before = len(extras_entries(roles))
        evaluated = written(roles, extras(RECORD, a1, b1))
        other_clk = written(roles, extras(FALLBACK, a2, b2))  # odd rows: the first CLK's
    finally:
        c.servers.close()
    got = [(e["clk"], e["pairs"], e["capped"]) for e in extras_entries(roles)[before:]]
    assert got == [(RECORD, 1, 0), (FALLBACK, 0, 0)]
    assert evaluated == other_clk == {"s1 spent": 1, "s1 ledger": 1, "s2 spent": 1}


def extras_entries(roles: Roles) -> list[dict[str, object]]:
    with closing(sqlite3.connect(roles.root / "s1" / "twoserver-s1.sqlite")) as db:
        rows = db.execute("SELECT detail FROM audit WHERE action = 'twoserver.extras' ORDER BY seq")
        return [json.loads(d) for (d,) in rows]
