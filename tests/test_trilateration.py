"""The trilateration attack's scoring (client/tools/privacy/trilateration.py), against its
definition: a seed of B (row b, the attacker's record q) adds to the score of (row a of A, the
attacker's record p) log P(not a candidate | level of (p, q)), and where (a, b) is a candidate
the likelihood of its value's level under the attacker's level, and the log-odds that they
block together. The fast forms (by seed and level, argmax by blocks of rows) must agree with
the plain sums; privacy-check --mode two-server runs it many times over (one per reading of
S2's counts and number of known pairs)."""

from __future__ import annotations

import numpy as np

from blindmatch.client.tools.privacy.trilateration import (
    SAME,
    CombinerView,
    Model,
    Trilateration,
    column_argmax,
    levels,
)


def _random_model(rng: np.random.Generator, n: int) -> Model:
    nl = SAME + 1
    level = rng.integers(0, nl, (n, n)).astype(np.int8)
    f32 = np.float32
    return Model(
        level, rng.normal(size=nl).astype(f32), rng.normal(size=nl).astype(f32),
        rng.normal(size=(nl, nl)).astype(f32), np.zeros((nl, 9), f32), np.zeros(n, np.int64), 1.0,
    )  # fmt: skip


def test_a_seed_adds_what_its_definition_says() -> None:
    rng = np.random.default_rng(3)
    n_a, n_b, n = 40, 30, 60
    pairs = np.unique(np.stack([rng.integers(0, n_a, 300), rng.integers(0, n_b, 300)], 1), axis=0)
    # values at level 0 (S1's view: every value 0), in between, and 1
    dice = rng.choice([0.0, 0.71, 0.85, 0.93, 1.0], len(pairs))
    view = CombinerView(n_a, n_b, pairs.astype(np.intp), dice, np.zeros(n_a, np.int64),
                        np.zeros(n_b, np.int64), pops=False)  # fmt: skip
    model = _random_model(rng, n)
    mine = np.sort(rng.choice(n, n_a, replace=False))
    prior = rng.normal(size=(n_a, n_a)).astype(np.float32)
    tri = Trilateration(view, model, mine, prior)
    first = {int(b): int(rng.integers(0, n)) for b in rng.choice(n_b, 12, replace=False)}
    second = {b: q for b, q in list(first.items())[:5]}
    tri.add(first)
    tri.add(second, -1.0)  # dropped seeds taken back out
    kept = {b: q for b, q in first.items() if b not in second}
    expected = prior.astype(np.float64).copy()
    value = {(int(a), int(b)): int(k) for (a, b), k in zip(pairs, levels(dice), strict=True)}
    for b, q in kept.items():
        expected += model.log_miss[model.level[mine, q]][None, :]
        for a in range(n_a):
            if (a, b) in value:
                expected[a] += model.table[value[a, b]][model.level[mine, q]]
                expected[a] += model.logit_pc[model.level[mine, q]]
    np.testing.assert_allclose(tri.score, expected, atol=1e-3)


def test_column_argmax_is_numpys() -> None:
    rng = np.random.default_rng(5)
    for shape in [(1, 4), (7, 1), (300, 9), (129, 3), (128, 5)]:
        score = rng.normal(size=shape).astype(np.float32)
        score[rng.random(shape) < 0.3] = -np.inf  # taken rows and columns
        if shape[0] > 2:
            score[2] = score[1]  # ties: the first row wins
        np.testing.assert_array_equal(column_argmax(score), np.argmax(score, axis=0))
        score[:] = -np.inf
        np.testing.assert_array_equal(column_argmax(score), np.argmax(score, axis=0))
