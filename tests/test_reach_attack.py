"""A dishonest combiner's reach pairs (docs/privacy-design.md, "A dishonest combiner's reach
pairs, attacked"): the attack asks only what S1 admits, and gets a result.

After a run of three members, C may name reach pairs of its choosing. S1 admits each batch
only within its bound (each record in at most one reach pair with each other member over a
run, both records in some proposed pair) and the reach budget (each pair once an upload);
the attack (benchmarks/reach_attack.py) goes through that same admission code, so it can
only learn what a dishonest combiner could.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.reach_attack import dishonest_combiner
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import population, reachprobes
from blindmatch.client.tools.privacy.twocheck import _upload, synthetic_members
from blindmatch.matcher.core import proposal, solve, twoserver
from blindmatch.matcher.core.proposal import Refused
from blindmatch.matcher.core.rowledger import REACH_FLOOR, REACH_SHARE, RowLedger, reach_quota
from blindmatch.matcher.core.twoprobe import ReachOracle
from blindmatch.matcher.core.twoviews import views_and_oracle
from tests.support import PERSON_SCHEMA

SCHEMA = load_schema(PERSON_SCHEMA)
SECRET = b"\x05" * 32


def _oracle(tmp_path: Path, size: int = 120) -> ReachOracle:
    (a_rows, _), (b_rows, _), _u = synthetic_members(tmp_path, 3, size, SCHEMA)
    m_rows = population.noisy_copy(a_rows[: size // 2], [r.kind for r in SCHEMA.rules], seed=5)
    uploads = [_upload(SCHEMA, rows, SECRET, NONE) for rows in (a_rows, b_rows, m_rows)]
    _views, oracle = views_and_oracle(uploads, 0.8, SCHEMA.rule)
    return oracle


def _admitted(oracle: ReachOracle, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` records of A and of B that S1 would admit (in some proposed pair)."""
    a, b = np.flatnonzero(oracle.proposed(0)), np.flatnonzero(oracle.proposed(1))
    assert len(a) >= count and len(b) >= count
    return a[:count].astype(np.uint32), b[:count].astype(np.uint32)


@pytest.mark.parametrize("cap", [True, False])
def test_the_oracle_asks_only_what_s1_admits(tmp_path: Path, cap: bool) -> None:
    oracle = _oracle(tmp_path)
    oracle = ReachOracle(oracle.servers, oracle.combiner, cap)
    rows_a, rows_b = _admitted(oracle, 6)
    bits = oracle.ask(rows_a[:3], rows_b[:3])  # a matching: admitted, one bit a pair
    assert bits.shape == (3,) and oracle.asked == oracle.evaluated == 3
    # a record in a second reach pair with the other member in the same run: refused whole
    with pytest.raises(Refused, match="two reach pairs"):
        oracle.ask(rows_a[:1], rows_b[3:4])
    # a new run (C proposing again over the same uploads): the budget still refuses a pair
    # asked at the reach cut-off before
    oracle.next_run()
    with pytest.raises(Refused, match="already"):
        oracle.ask(rows_a[:1], rows_b[:1])
    got = oracle.ask(rows_a[:1], rows_b[3:4])  # a record of the first run, another partner
    assert got.shape == (1,) and oracle.asked == 4 and oracle.runs == 2
    if cap:
        # S1's per-upload cap (core/rowledger.py): answered 0, not evaluated, as a pair on
        # the other CLK is (C cannot tell it from an evaluated 0)
        assert not got[0] and oracle.evaluated == 3
    else:
        # S1 as it was: each run's bound starts afresh, a second partner evaluated
        assert oracle.evaluated == 4
    assert oracle.refused == 2
    # records in no reach pair yet are evaluated in the second run either way
    oracle.ask(rows_a[4:6], rows_b[4:6])
    assert oracle.evaluated == (5 if cap else 6)
    # a record in no proposed pair is refused
    lonely = np.flatnonzero(~oracle.proposed(0))
    if len(lonely):
        with pytest.raises(Refused, match="no proposed pair"):
            oracle.ask(lonely[:1].astype(np.uint32), rows_b[5:6])


def test_the_attack_stays_within_s1s_bound_and_reports(tmp_path: Path) -> None:
    members = synthetic_members(tmp_path, 2, 150, load_schema(PERSON_SCHEMA))
    rows = dishonest_combiner(members, SCHEMA, SECRET, known=[10], runs=[0, 2],
                              attacker_key=b"\x09" * 32)  # fmt: skip
    honest, probed = rows
    assert honest["runs"] == 0 and honest["asked"] == 0
    # two runs' reach pairs, each run a matching of A and B: S1 refused none of them
    assert probed["runs"] == 2 and probed["refused"] == 0
    assert 0 < probed["asked"] <= 2 * 150
    for row in rows:
        assert 0.0 <= row["A"] <= 1.0 and 0.0 <= row["A precision"] <= 1.0


def test_s1_caps_extra_and_reach_partners_an_upload_not_a_run() -> None:
    """core/rowledger.py: a second run over the same uploads (C proposing again) answers 0,
    unevaluated, an extra or reach pair whose record had another partner with that member in
    an earlier run; the same partners stay admitted, and a new upload starts afresh."""
    rows = np.arange(4, dtype=np.uint32)
    proposed = [twoserver.PairBatch(0, 1, twoserver.RECORD, rows[:3], rows[:3]),
                twoserver.PairBatch(1, 2, twoserver.RECORD, rows[:3], rows[:3])]  # fmt: skip
    names = ["north", "south", "west"]
    cuts = (0.8, *twoserver.default_buckets(0.8))
    ledger = RowLedger()

    def run() -> proposal.Proposal:
        p = proposal.Proposal(names, [4, 4, 4], proposed, cuts, None)
        p.ledger = ledger  # as S1 holds it across its proposals (rpc/twoserver_proposals.py)
        return p

    one, two = np.array([1], np.uint32), np.array([2], np.uint32)
    first = run()
    for check, commit in ((first.check, first.commit), (first.check_reach, first.commit_reach)):
        got = check("north", "west", 0, one, one, cuts)
        assert not got.proposed.any()
        commit(got)
    second = run()
    for check in (second.check, second.check_reach):
        assert check("north", "west", 0, one, two, cuts).proposed.tolist() == [True]
        assert check("west", "north", 0, two, one, cuts).proposed.tolist() == [True]
        assert check("north", "west", 0, two, two, cuts).proposed.tolist() == [False]
    assert second.check("north", "west", 0, one, one, cuts).extras == 1  # the same partner
    ledger.forget(["west"])  # west uploads again
    assert run().check_reach("north", "west", 0, one, two, cuts).proposed.tolist() == [False]


def test_s1_answers_reach_pairs_beyond_a_pair_of_uploads_quota_0() -> None:
    """core/rowledger.py `reach_quota`: 1% of the smaller upload's records, at least 16, over
    every run; the pairs beyond it answered 0, not evaluated (an honest run asks a few)."""
    assert reach_quota(1000, 5000) == REACH_FLOOR == 16
    assert reach_quota(100_000, 5000) == 50
    ledger = RowLedger()
    rows = np.arange(40, dtype=np.uint32)
    first = ledger.capped("north", "west", "reach", rows[:10], rows[:10], "run 1", quota=16)
    assert not first.any()
    ledger.note("north", "west", "reach", rows[:10], rows[:10], "run 1")
    later = ledger.capped("west", "north", "reach", rows[10:20], rows[10:20], "run 2", quota=16)
    assert later.tolist() == [False] * 6 + [True] * 4  # 16 in all, over both runs


def test_the_clients_copy_of_s1s_quota_is_the_matchers() -> None:
    """privacy-check's C* (client/tools/privacy/reachprobes.py `quota_view`) reads S1's quota
    and the reach cut-off as the matcher sets them (the client does not import the matcher)."""
    assert (reachprobes.REACH_SHARE, reachprobes.REACH_FLOOR) == (REACH_SHARE, REACH_FLOOR)
    assert reachprobes.REACH_BELOW == solve.REACH
