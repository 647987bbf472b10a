"""The Dice kernel finds exactly anonlink's pairs and scores, on every path this CPU has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.matcher.core import kernel
from blindmatch.matcher.core._anonlink import dice_coefficient_accelerated
from tests.support import FEBRL4

PATHS = kernel.paths()

Pairs = dict[tuple[int, int], float]


def anonlink_pairs(a: np.ndarray, b: np.ndarray, threshold: float) -> Pairs:
    sims, (r0, r1) = dice_coefficient_accelerated(
        [[r.tobytes() for r in a], [r.tobytes() for r in b]], threshold
    )
    return {(int(i), int(j)): s for s, i, j in zip(sims, r0, r1, strict=True)}


def kernel_pairs(a: np.ndarray, b: np.ndarray, threshold: float, path: str, **kw: int) -> Pairs:
    sims, ia, ib = kernel.dice_candidates(a, b, threshold, path=path, **kw)
    found = {(int(i), int(j)): float(s) for s, i, j in zip(sims, ia, ib, strict=True)}
    assert len(found) == len(sims), "a pair was reported twice"
    return found


def noisy(rng: np.random.Generator, clks: np.ndarray, flips: int) -> np.ndarray:
    bits = np.unpackbits(clks, axis=1)
    for row in bits:
        row[rng.choice(bits.shape[1], size=flips, replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def random_clks(rng: np.random.Generator, n: int, bits: int, density: float) -> np.ndarray:
    return np.packbits(rng.random((n, bits)) < density, axis=1)


@pytest.fixture(scope="module")
def febrl4_clks(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """Real clkhash encodings of the first 2,000 and 2,500 records of Febrl4's two files
    (1024-bit CLKs). Only those rows are encoded (each record's CLK is its own: the same
    bytes as the whole file's first rows), not the files' 5,000 each."""
    schema = load_schema(FEBRL4 / "schema.json")
    mapping = load_mapping(FEBRL4 / "mapping.toml", schema)
    out = []
    for name, rows in (("febrl4_a.csv", 2000), ("febrl4_b.csv", 2500)):
        head = tmp_path_factory.mktemp("febrl4") / name
        with (FEBRL4 / name).open(encoding="utf-8") as whole:
            head.write_text("".join(next(whole) for _ in range(rows + 1)), encoding="utf-8")
        enc = encode_csv(head, schema, mapping, b"kernel test secret", max_workers=1)
        out.append(np.frombuffer(enc.clks, dtype=np.uint8).reshape(-1, enc.clk_bits // 8))
        assert len(out[-1]) == rows
    return out[0], out[1]


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.75, 0.8, 0.9, 1.0])
def test_real_encodings_give_anonlinks_pairs_and_scores(
    febrl4_clks: tuple[np.ndarray, np.ndarray], path: str, threshold: float
) -> None:
    a, b = febrl4_clks
    if threshold < 0.75 or path == "numpy":  # most pairs come back: keep it small
        a, b = a[:300], b[:400]
    theirs = anonlink_pairs(a, b, threshold)
    assert kernel_pairs(a, b, threshold, path) == theirs
    if threshold == 0.8 and len(a) == 2000:
        assert len(theirs) > 300  # a real test: Febrl4's duplicates are found


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits", [64, 128, 192, 512, 1024, 2048])
def test_random_clks_of_any_multiple_of_64_bits(path: str, bits: int) -> None:
    rng = np.random.default_rng(bits)
    base = random_clks(rng, 157, bits, 0.4)  # 157: not a multiple of any tile
    a = base[:101]
    b = np.concatenate([noisy(rng, base[:60], max(1, bits // 20)), base[101:], base[:5]])
    for threshold in (0.0, 0.6, 0.85, 1.0):
        assert kernel_pairs(a, b, threshold, path) == anonlink_pairs(a, b, threshold)


@pytest.mark.parametrize("path", PATHS)
def test_empty_and_all_ones_clks(path: str) -> None:
    rng = np.random.default_rng(7)
    a = random_clks(rng, 20, 1024, 0.3)
    a[3] = 0
    a[4] = 255
    b = random_clks(rng, 30, 1024, 0.3)
    b[[0, 9]] = 0
    b[[1, 17]] = 255
    b[2] = a[5]
    for threshold in (0.0, 1e-9, 0.3, 0.5, 1.0):
        assert kernel_pairs(a, b, threshold, path) == anonlink_pairs(a, b, threshold)


@pytest.mark.parametrize("path", PATHS)
def test_ties_at_the_threshold_are_kept(path: str) -> None:
    # Popcounts 45 and 55 with 45 bits in common: Dice is exactly 0.9, which
    # anonlink's own pre-filter decides (|45 - 55| against int(90 * (1/0.9 - 1))).
    a = np.zeros((1, 1024), dtype=bool)
    b = np.zeros((3, 1024), dtype=bool)
    a[0, :45] = True
    b[0, :55] = True
    b[1, :45] = True
    b[2, 5:50] = True
    a, b = np.packbits(a, axis=1), np.packbits(b, axis=1)
    for threshold in (0.9, 45 / 50, 0.81818181818181823, 1.0):
        assert kernel_pairs(a, b, threshold, path) == anonlink_pairs(a, b, threshold)


@pytest.mark.parametrize("path", PATHS)
def test_no_rows_on_either_side(path: str) -> None:
    a = np.zeros((0, 128), dtype=np.uint8)
    b = np.ones((5, 128), dtype=np.uint8)
    assert kernel_pairs(a, b, 0.5, path) == {}
    assert kernel_pairs(b, a, 0.5, path) == {}


def test_worker_threads_change_nothing(febrl4_clks: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = febrl4_clks
    assert kernel_pairs(a, b, 0.8, "auto", workers=3) == anonlink_pairs(a, b, 0.8)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    words=st.integers(1, 20),
    density=st.floats(0.0, 1.0),
    # Below ~4e-6, anonlink's popcount bound overflows uint32 (docs/performance.md).
    threshold=st.one_of(st.just(0.0), st.floats(1e-5, 1.0)),
)
def test_any_random_input_matches_anonlink(
    seed: int, words: int, density: float, threshold: float
) -> None:
    rng = np.random.default_rng(seed)
    a = random_clks(rng, int(rng.integers(1, 40)), words * 64, density)
    b = np.concatenate([noisy(rng, a, 1), random_clks(rng, 30, words * 64, density)])
    theirs = anonlink_pairs(a, b, threshold)
    for path in PATHS:
        assert kernel_pairs(a, b, threshold, path) == theirs, path


def test_given_pairs_are_decided_as_anonlink_decides(
    febrl4_clks: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = febrl4_clks
    rng = np.random.default_rng(3)
    ia = np.concatenate([np.arange(1000), rng.integers(0, len(a), 5000)]).astype(np.uint32)
    ib = np.concatenate([np.arange(1000), rng.integers(0, len(b), 5000)]).astype(np.uint32)
    theirs = anonlink_pairs(a, b, 0.85)
    sims, pos = kernel.dice_pairs(a, b, ia, ib, 0.85)
    ours = {(int(ia[k]), int(ib[k])): float(s) for s, k in zip(sims, pos, strict=True)}
    assert ours == {p: theirs[p] for p in zip(ia.tolist(), ib.tolist(), strict=True) if p in theirs}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        kernel.dice_candidates(np.zeros((2, 12), np.uint8), np.zeros((2, 12), np.uint8), 0.5)
    with pytest.raises(ValueError, match="threshold"):
        kernel.dice_candidates(np.zeros((2, 8), np.uint8), np.zeros((2, 8), np.uint8), 1.5)


def test_the_native_kernel_is_built_here() -> None:
    # CI builds it with `make install`; without it everything still works, slowly.
    assert kernel.NATIVE, "matcher/core/_kernel.c did not build: see `pip install -e .` output"
    assert Path(kernel._kernel.__file__).exists()
