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
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.twocheck import _upload, synthetic_members
from blindmatch.matcher.core.proposal import Refused
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


def test_the_oracle_asks_only_what_s1_admits(tmp_path: Path) -> None:
    oracle = _oracle(tmp_path)
    rows_a, rows_b = _admitted(oracle, 6)
    bits = oracle.ask(rows_a[:3], rows_b[:3])  # a matching: admitted, one bit a pair
    assert bits.shape == (3,) and oracle.asked == 3
    # a record in a second reach pair with the other member in the same run: refused whole
    with pytest.raises(Refused, match="two reach pairs"):
        oracle.ask(rows_a[:1], rows_b[3:4])
    # a new run (C proposing again over the same uploads) starts S1's bound afresh, but the
    # budget still refuses a pair asked at the reach cut-off before
    oracle.next_run()
    with pytest.raises(Refused, match="already"):
        oracle.ask(rows_a[:1], rows_b[:1])
    assert oracle.ask(rows_a[:1], rows_b[3:4]).shape == (1,)
    assert oracle.refused == 2 and oracle.asked == 4 and oracle.runs == 2
    # a record in no proposed pair is refused
    lonely = np.flatnonzero(~oracle.proposed(0))
    if len(lonely):
        with pytest.raises(Refused, match="no proposed pair"):
            oracle.ask(lonely[:1].astype(np.uint32), rows_b[4:5])


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
