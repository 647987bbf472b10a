"""The trilateration attack with B's side held sparse (client/tools/privacy/trisparse.py)
against the dense attack (trilateration.py): an entry's score is the dense one's, the blind
start is the dense one's, and where every record of B is a candidate of every record of A
and each record's nearest are all records, the claims are the dense attack's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from blindmatch.client.tools.privacy.trilateration import (
    CombinerView,
    Trilateration,
    fit_model,
    mutual_best,
    own_graph,
    signature,
    trilaterate,
)
from blindmatch.client.tools.privacy.trimodel import cross_graph
from blindmatch.client.tools.privacy.trisparse import SparseSide, blind_best


def _case(seed: int, full: bool, n_u: int = 80, n_a: int = 30, bits: int = 256) -> Any:
    """The attacker's packed encodings of n_u people, A a noisy copy of n_a of them, B of
    all; the view: every pair (`full`) or those of Dice over 0.55, with their Dice."""
    rng = np.random.default_rng(seed)
    centres = rng.random((8, bits)) < 0.3
    people = np.array([np.where(rng.random(bits) < 0.25, rng.random(bits) < 0.3,
                                centres[rng.integers(8)]) for _ in range(n_u)])  # fmt: skip
    a_ids, b_ids = rng.choice(n_u, n_a, replace=False), rng.permutation(n_u)
    a, b = (people[ids] ^ (rng.random((len(ids), bits)) < 0.03) for ids in (a_ids, b_ids))
    dice = 2 * (a.astype(float) @ b.T) / (a.sum(1)[:, None] + b.sum(1)[None, :])
    pairs = np.argwhere(np.ones_like(dice, bool) if full else dice > 0.55).astype(np.intp)
    view = CombinerView(n_a, n_u, pairs, dice[pairs[:, 0], pairs[:, 1]],
                        np.zeros(n_a, np.int64), np.zeros(n_u, np.int64), pops=False)  # fmt: skip
    return np.packbits(people, axis=1), view, a_ids.astype(np.intp), b_ids.astype(np.intp)


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_claims_are_the_dense_ones_where_it_holds_every_pair(seed: int) -> None:
    own, view, truth_a, truth_b = _case(seed, full=True)
    in_a, in_b = np.sort(truth_a), np.sort(truth_b)
    known = {i: int(truth_a[i]) for i in range(3)}
    out = []
    for graph in (own_graph(own), cross_graph(own, in_a, len(own))):
        model = fit_model(graph, 4, 20, view, truth_a, truth_b)
        out.append(trilaterate(view, model, in_a, in_b, known, {}, blind=5, margin=1.0,
                               cap=20_000, robust=True))  # fmt: skip
    assert out[0] == out[1]
    assert len(out[1][0]) > 10  # claims were made


def test_held_entries_and_blind_start_are_the_dense_ones() -> None:
    own, view, truth_a, truth_b = _case(2, full=False)
    in_a, in_b = np.sort(truth_a), np.sort(truth_b)
    flipped = view.flipped()
    dense = fit_model(own_graph(own), 4, 20, view, truth_a, truth_b)
    sparse = fit_model(cross_graph(own, in_a, 6), 4, 20, view, truth_a, truth_b)
    sig = signature(flipped, dense, in_b, in_a)
    centred = sig - sig.mean(axis=1, keepdims=True)
    side = SparseSide(flipped, sparse, in_b, in_a)
    found, expected = blind_best(side, {}, 7), mutual_best(centred, {}, 0.0)[:7]
    assert [f[1:] for f in found] == [e[1:] for e in expected]  # the same pairs
    np.testing.assert_allclose([f[0] for f in found], [e[0] for e in expected], atol=1e-4)
    tri = Trilateration(flipped, dense, in_b, sig)
    seeds = {i: int(truth_a[i]) for i in range(0, 30, 3)}
    for held in (tri, side):
        held.add(seeds)
        held.add({i: q for i, q in seeds.items() if i % 2}, -1.0)  # dropped seeds
    score, rows, cols = side._scores()
    assert len(score) > 100
    np.testing.assert_allclose(score, tri.centred()[rows, cols], atol=1e-3)
