"""Primitives of the two-server design: keyed band keys, XOR shares, permuted differences and
the combiner's Dice (client/encoding/sharing.py, matcher/core/sharing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.client.encoding import bandkeys
from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import kernel
from blindmatch.matcher.core import sharing as server
from blindmatch.matcher.core.kernel import dice_pairs

SECRET = b"a project secret of enough length...."
KEY = b"the two servers' shared key......"

clk_bytes = st.binary(min_size=16, max_size=16)


def as_clks(*rows: bytes) -> np.ndarray:
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), -1).copy()


def plaintext_dice(a: bytes, b: bytes) -> float:
    x, y = as_clks(a), as_clks(b)
    total = int(np.bitwise_count(x).sum() + np.bitwise_count(y).sum())
    return 2 * int(np.bitwise_count(x & y).sum()) / total if total else 0.0


def three_party_dice(a: bytes, b: bytes, ids: tuple[int, int]) -> float:
    """The whole protocol: members split, each server sends its message, the combiner adds."""
    x1, x2 = client.split_shares(as_clks(a, b))
    m1 = server.permuted_difference(x1[0], x1[1], KEY, *ids)
    m2 = server.permuted_difference(x2[0], x2[1], KEY, *ids)
    pops = client.popcounts(as_clks(a, b))
    return server.combiner_dice(m1, m2, int(pops[0]), int(pops[1]))


@settings(max_examples=60, deadline=None)
@given(clk_bytes, clk_bytes, st.integers(0, 2**32), st.integers(0, 2**32))
def test_combiner_dice_is_the_plaintext_dice_for_any_clks(
    a: bytes, b: bytes, i: int, j: int
) -> None:
    assert three_party_dice(a, b, (i, j)) == pytest.approx(plaintext_dice(a, b), abs=1e-12)


def test_combiner_dice_matches_the_matchers_kernel_on_full_width_clks() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (20, 128), dtype=np.uint8)
    b = a ^ np.packbits(rng.random((20, 1024)) < 0.1, axis=1)  # about 10% of bits flipped
    rows = np.arange(20, dtype=np.uint32)
    sims, keep = dice_pairs(a, b, rows, rows, 0.01)
    assert keep.tolist() == list(range(20))  # every pair kept, in order
    for k in range(20):
        got = three_party_dice(a[k].tobytes(), b[k].tobytes(), (k, 1000 + k))
        assert got == pytest.approx(float(sims[k]), abs=1e-9)


@given(st.binary(min_size=1, max_size=64))
def test_each_share_is_fresh_and_the_two_rebuild_the_clk(raw: bytes) -> None:
    clks = as_clks(raw)
    x1, x2 = client.split_shares(clks)
    assert np.array_equal(x1 ^ x2, clks)
    y1, _ = client.split_shares(clks)
    if len(raw) >= 8:  # 2^-64: two draws of the first share never agree
        assert not np.array_equal(x1, y1)


def test_permuted_difference_hides_where_the_clks_differ() -> None:
    # The same difference pattern in two pairs reaches the combiner at different places,
    # with the same number of bits.
    a = np.zeros(128, np.uint8)
    b = a.copy()
    b[:4] = 0xFF  # 32 bits differ, all at the start
    m_first = server.permuted_difference(a, b, KEY, 1, 2)
    m_second = server.permuted_difference(a, b, KEY, 3, 4)
    assert int(np.bitwise_count(m_first).sum()) == int(np.bitwise_count(m_second).sum()) == 32
    assert not np.array_equal(m_first, m_second)
    assert int(np.bitwise_count(m_first[:4]).sum()) < 32  # no longer where they were


def test_pair_permutation_is_a_permutation_shared_by_both_servers() -> None:
    p = server.pair_permutation(KEY, 7, 9, 1024)
    assert sorted(p.tolist()) == list(range(1024))
    assert np.array_equal(p, server.pair_permutation(KEY, 7, 9, 1024))
    assert not np.array_equal(p, server.pair_permutation(KEY, 9, 7, 1024))
    assert not np.array_equal(p, server.pair_permutation(b"another key", 7, 9, 1024))


def test_band_positions_come_from_the_secret_and_the_pool() -> None:
    pool = list(range(3, 1000, 2))
    pos = client.band_positions(SECRET, pool, 16, 40)
    assert pos.shape == (40, 16)
    assert set(pos.ravel().tolist()) <= set(pool)
    assert all(len(set(row)) == 16 for row in pos.tolist())
    assert np.array_equal(pos, client.band_positions(SECRET, pool, 16, 40))
    assert not np.array_equal(pos, client.band_positions(b"another secret", pool, 16, 40))


def test_band_positions_refuse_a_bad_plan() -> None:
    with pytest.raises(ValueError, match="pool of 3"):
        client.band_positions(SECRET, [1, 2, 3], 4, 1)
    with pytest.raises(ValueError, match="repeated"):
        client.band_positions(SECRET, [1, 1, 2], 1, 1)


@settings(max_examples=40, deadline=None)
@given(clk_bytes, clk_bytes)
def test_band_keys_are_equal_exactly_where_the_sampled_bits_are(a: bytes, b: bytes) -> None:
    clks = as_clks(a, b)
    pos = client.band_positions(SECRET, range(128), 6, 12)
    keys = client.band_keys(clks, pos, SECRET)
    bits = np.unpackbits(clks, axis=1, bitorder="little")
    same_bits = (bits[0][pos] == bits[1][pos]).all(axis=1)
    assert np.array_equal(keys[0] == keys[1], same_bits)


def test_band_keys_differ_between_secrets() -> None:
    clks = as_clks(bytes(range(16)))
    pos = client.band_positions(SECRET, range(128), 8, 4)
    assert not np.array_equal(
        client.band_keys(clks, pos, SECRET), client.band_keys(clks, pos, b"another secret")
    )


def test_the_native_pair_messages_are_the_python_reference_permutation() -> None:
    rng = np.random.default_rng(5)
    for width in (128, 8):  # the record-level CLK, and a narrow one
        a = rng.integers(0, 256, (30, width), dtype=np.uint8)
        b = rng.integers(0, 256, (40, width), dtype=np.uint8)
        rows_a = rng.integers(0, 30, 25).astype(np.uint32)
        rows_b = rng.integers(0, 40, 25).astype(np.uint32)
        got = server.pair_messages(a, b, 2, 5, rows_a, rows_b, KEY)
        for k, (i, j) in enumerate(zip(rows_a.tolist(), rows_b.tolist(), strict=True)):
            want = server.permuted_difference(
                a[i], b[j], KEY, server.record_number(2, i), server.record_number(5, j)
            )
            assert np.array_equal(got[k], want), (width, k)
    if not kernel.NATIVE:
        pytest.skip("the native module is not built: only the reference ran")


def test_pair_messages_refuse_rows_outside_the_shares() -> None:
    shares = np.zeros((3, 128), np.uint8)
    with pytest.raises(ValueError, match="outside the shares"):
        server.pair_messages(
            shares, shares, 0, 1, np.array([3], np.uint32), np.array([0], np.uint32), KEY
        )


def test_band_keys_are_siphash_2_4() -> None:
    # The reference implementation's test vector: key 00..0f, message 00..07.
    k0 = np.uint64(int.from_bytes(bytes(range(8)), "little"))
    k1 = np.uint64(int.from_bytes(bytes(range(8, 16)), "little"))
    m = np.array([int.from_bytes(bytes(range(8)), "little")] * 3, dtype=np.uint64)
    assert bandkeys.siphash24(k0, k1, m).tolist() == [0x93F5F5799A932462] * 3


@pytest.mark.parametrize("part_bytes", [1, 300, 2_000, 1 << 20])
def test_sealed_keys_go_to_s1_in_parts_of_part_bytes_a_band_cut_only_where_it_does_not_fit(
    part_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each part at most `PART_BYTES` of keys, classes and tokens (or one key), in order:
    whole bands as many as fit, the next band not fitting; a band cut over parts (each after
    the first `band_continued`) only where it does not fit in one (client/remote/
    twoserver_parts.py). Whole bands a part sent one band of 500,000 records' keys as one
    107 MB message, over the roles' 64 MiB limit."""
    from blindmatch.client.remote import twoserver_parts as remote

    monkeypatch.setattr(remote, "PART_BYTES", part_bytes)
    rng = np.random.default_rng(5)
    clks = rng.integers(0, 256, (40, 16), dtype=np.uint8)
    bands = client.shared_upload(clks, SECRET, client.BandPlan(bits=6, bands=12)).s1.bands[0]
    offsets, ends = bands.offsets(), np.concatenate([[0], np.cumsum(bands.counts)])
    parts = list(remote._sealed_parts("m", 0, 128, bands))
    counts: list[int] = []
    k0 = 0
    for n, p in enumerate(parts):
        keys = int(sum(p.band_counts))
        size = len(p.band_keys) + len(p.classes) + len(p.sealed)
        assert len(p.sealed) == int(offsets[k0 + keys] - offsets[k0])
        assert keys == 1 or size <= part_bytes
        assert p.band_continued == (k0 not in ends)  # a band cut here, continued
        assert p.band_lo == len(counts) - p.band_continued
        if p.band_continued:
            counts[-1] += p.band_counts[0]
            counts += p.band_counts[1:]
        else:
            counts += p.band_counts
        k0 += keys
        cut = n + 1 < len(parts) and parts[n + 1].band_continued
        if cut:  # the band (or what was left of it) would not have fit
            assert len(p.band_counts) == 1
            first, end = k0 - keys, int(ends[p.band_lo + 1])
            assert int(offsets[end] - offsets[first]) + 9 * (end - first) > part_bytes
        elif k0 < ends[-1]:  # the next band would not have fit
            band = len(counts)
            more = int(offsets[ends[band + 1]] - offsets[k0]) + 9 * int(bands.counts[band])
            assert size + more > part_bytes
    assert counts == bands.counts.tolist() and k0 == ends[-1]
    biggest = max(np.diff(offsets[ends]) + 9 * bands.counts)  # a band's bytes
    assert any(p.band_continued for p in parts) == (biggest > part_bytes)
    assert part_bytes > 1 or len(parts) == len(bands.keys)
    for field, dtype in (("band_keys", "<u8"), ("classes", np.uint8), ("sealed", np.uint8)):
        got = np.concatenate([np.frombuffer(getattr(p, field), dtype) for p in parts])
        want = {"band_keys": bands.keys, "classes": bands.classes, "sealed": bands.sealed}
        assert np.array_equal(got, want[field])


@pytest.mark.parametrize(("rows", "seal_keys"), [(1, 1 << 16), (3, 1 << 16), (40, 4000)])
def test_sealing_a_few_rows_in_one_range_seals_the_same_keys_and_rows(
    rows: int, seal_keys: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few rows' bands sealed in one range (SEAL_KEYS), as SEAL_BANDS at a time would: the
    same counts, keys and classes, and tokens that open to the same rows (fresh bytes each);
    40 rows at 4,000 keys a range: two ranges of 100 bands against three of SEAL_BANDS."""
    from blindmatch.client.encoding import sealing
    from blindmatch.matcher.core.twoblocking import open_tokens

    keys = np.random.default_rng(rows).integers(0, 50, (rows, 150)).astype(np.uint64)
    seal_key = bytes(range(32))
    monkeypatch.setattr(sealing, "SEAL_KEYS", seal_keys)
    got = sealing.seal_bands(keys, 0, seal_key)
    monkeypatch.setattr(sealing, "SEAL_KEYS", 0)  # SEAL_BANDS bands at a time
    want = sealing.seal_bands(keys, 0, seal_key)
    for field in ("counts", "keys", "classes"):
        assert np.array_equal(getattr(got, field), getattr(want, field))
    opened = [open_tokens(seal_key, 0, b.sealed.reshape(-1, 16), rows, "a") for b in (got, want)]
    assert np.array_equal(*opened) and not np.array_equal(got.sealed, want.sealed)
