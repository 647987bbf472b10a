"""The link-bit circuit's outputs in the clear (matcher/core/twoclear.py), what
`privacy-check --mode two-server` uses: the same bits as the circuit's on the same uploads,
for the gap rule's circuit (both CLKs) and the fallback CLK's kernel circuit, tagged rows and
dropped pairs included; and so C's view of a run of three members (links, extras, reach
pairs) is the same either way, blocked or not, C dealing no triple in the clear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.twocheck import _upload, synthetic_members
from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.twoclear import clear_outputs
from blindmatch.matcher.core.twoinprocess import InProcess
from blindmatch.matcher.core.twoserver import (
    FALLBACK,
    RECORD,
    BlockingServer,
    Combiner,
    PairBatch,
    ShareServer,
)
from blindmatch.matcher.core.twoviews import role_views
from blindmatch.matcher.domain import Rule
from tests.support import PERSON_SCHEMA

SCHEMA = load_schema(PERSON_SCHEMA)
SECRET = b"\x05" * 32


def _uploads(tmp_path: Path, size: int) -> list:
    (a_rows, _), (b_rows, _), _u = synthetic_members(tmp_path, 3, size, SCHEMA)
    m_rows = population.noisy_copy(a_rows[: size // 2], [r.kind for r in SCHEMA.rules], seed=5)
    return [_upload(SCHEMA, rows, SECRET, NONE) for rows in (a_rows, b_rows, m_rows)]


def test_the_clear_outputs_are_the_circuits_on_the_same_shares(tmp_path: Path) -> None:
    uploads = _uploads(tmp_path, 40)[:2]
    assert SCHEMA.rule is not None
    key = b"\x07" * 32
    s1 = BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads], key,
                        [u.s1.popcounts for u in uploads])  # fmt: skip
    s2 = ShareServer([u.s2.shares for u in uploads], key, [u.s2.popcounts for u in uploads],
                     [u.s2.seal_key for u in uploads])  # fmt: skip
    servers = InProcess(s1, s2)
    pops = [[np.asarray(p1, np.int64) ^ np.asarray(p2, np.int64)
             for p1, p2 in zip(u.s1.popcounts, u.s2.popcounts, strict=True)]
            for u in uploads]  # fmt: skip
    combiner = Combiner(None, 0.8, clks=2, rule=Rule(*SCHEMA.rule))
    rows_a, rows_b = (x.ravel().astype(np.uint32) for x in np.meshgrid(range(40), range(40)))
    drop = np.random.default_rng(1).random(len(rows_a)) < 0.2
    widths = s1.bits(RECORD), s1.bits(FALLBACK)
    circuits = [(RECORD, combiner.circuit(widths[0], RECORD, widths[1])),
                (FALLBACK, combiner.circuit(widths[1], FALLBACK, widths[1])),
                (RECORD, combiner.reach_circuit(widths[0], RECORD, widths[1]))]  # fmt: skip
    for clk, circuit in circuits:
        part = PairBatch(0, 1, clk, rows_a, rows_b)
        for tagged, dropped in ((True, None), (False, drop)):
            dealt = linkbit.deal(circuit, len(part))
            real = servers._run(part, circuit, dealt, linkbit.Transcript(), {}, tagged, dropped)
            clear = clear_outputs(s1, s2, pops, part, circuit, tagged, dropped)
            want = linkbit.reveal(circuit, *real, len(part), tagged=tagged)
            got = linkbit.reveal(circuit, *clear, len(part), tagged=tagged)
            assert want[0].any() and not want[0].all()  # pairs on both sides of the cut-off
            assert (got == want).all()


def _no_deal(circuit: linkbit.Circuit, pairs: int, seeds: object = None) -> linkbit.Deal:
    raise AssertionError("a triple dealt for outputs computed in the clear")


@pytest.mark.parametrize("exhaustive", [0, 10**6], ids=["blocked", "not blocked"])
def test_c_sees_the_same_in_the_clear_as_through_the_circuit(
    tmp_path: Path, exhaustive: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads = _uploads(tmp_path, 60)
    through = role_views(uploads, 0.8, SCHEMA.rule, exhaustive=exhaustive)
    # In the clear C deals no triple (nothing reads it), and every view is the same.
    monkeypatch.setattr(linkbit, "deal", _no_deal)
    clear = role_views(uploads, 0.8, SCHEMA.rule, exhaustive=exhaustive, clear=True)
    assert set(through) == set(clear)
    for role in through:
        assert (through[role][0] == clear[role][0]).all(), role
        assert (through[role][1] == clear[role][1]).all(), role
    pairs, values = clear["C"]
    assert len(pairs) and (values >= 0.8).any()
