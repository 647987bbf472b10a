"""The link bit on the shares (matcher/core/linkbit.py): the circuit's bit is the kernel's test
on the CLKs, and what S1, S2 and C receive says nothing beyond the bits C is meant to learn."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.matcher.core import kernelrule, linkbit, triplecheck
from blindmatch.matcher.core.kernel import dice_pairs, popcounts

Clks = npt.NDArray[np.uint8]


def split(d: Clks, rng: np.random.Generator) -> tuple[Clks, Clks]:
    """Two XOR shares of `d`."""
    u = rng.integers(0, 256, d.shape, dtype=np.uint8)
    return u, u ^ d


def width_bytes(n_bits: int) -> int:
    return (n_bits + 7) // 8


def differences(n_bits: int, hamming: npt.NDArray[np.int64], rng: np.random.Generator) -> Clks:
    """Rows of `n_bits` bits (the rest of the last byte clear) with hamming[k] bits set."""
    rows = np.zeros((len(hamming), n_bits), dtype=np.uint8)
    for k, h in enumerate(hamming.tolist()):
        rows[k, rng.choice(n_bits, size=h, replace=False)] = 1
    padded = np.zeros((len(hamming), 8 * width_bytes(n_bits)), dtype=np.uint8)
    padded[:, :n_bits] = rows
    return np.packbits(padded, axis=1, bitorder="little")


def clear_rule(
    pa: npt.NDArray[np.int64], pb: npt.NDArray[np.int64], h: npt.NDArray[np.int64],
    cutoffs: tuple[float, ...], n_bits: int,
) -> npt.NDArray[np.bool_]:  # fmt: skip
    """The kernel's test in the clear, by the bounds (its own float64 arithmetic)."""
    return h[None, :] < linkbit.hamming_bounds(pa, pb, cutoffs, n_bits)


def on_shares(
    d: Clks, pa: npt.NDArray[np.int64], pb: npt.NDArray[np.int64], cutoffs: tuple[float, ...],
    n_bits: int, rng: np.random.Generator, t: linkbit.Transcript | None = None,
    seeds: tuple[bytes, bytes] | None = None,
) -> npt.NDArray[np.bool_]:  # fmt: skip
    """The circuit on XOR shares of d and of the popcounts (any popcounts, even ones no pair
    of CLKs has: the circuit's arithmetic on its own)."""
    u, v = split(d, rng)
    pa1, pa2 = linkbit.split_popcounts(pa, n_bits)
    pb1, pb2 = linkbit.split_popcounts(pb, n_bits)
    return linkbit.compare(u, v, (pa1, pb1), (pa2, pb2), cutoffs, n_bits, t, seeds)


@pytest.mark.parametrize("n_bits", [1, 7, 64, 100])
@pytest.mark.parametrize("cutoffs", [(0.8,), (0.55, 0.7, 0.9), (1.0,), (0.3, 0.99)])
def test_the_circuit_is_the_kernels_rule_for_every_pair_of_popcounts(
    n_bits: int, cutoffs: tuple[float, ...]
) -> None:
    """Every (|a|, |b|) of small CLKs, each with the distances at its bounds' edges (B - 1,
    B) and a random one: the circuit's bits are the bounds' test."""
    rng = np.random.default_rng(n_bits)
    pa, pb = (x.ravel() for x in np.meshgrid(np.arange(n_bits + 1), np.arange(n_bits + 1)))
    bounds = linkbit.hamming_bounds(pa, pb, cutoffs, n_bits)
    picks = [np.clip(bounds[j] + k, 0, n_bits) for j in range(len(cutoffs)) for k in (-1, 0)]
    picks.append(rng.integers(0, n_bits + 1, len(pa)))
    h = np.concatenate(picks)
    pa, pb = np.tile(pa, len(picks)), np.tile(pb, len(picks))
    got = on_shares(differences(n_bits, h, rng), pa, pb, cutoffs, n_bits, rng)
    assert np.array_equal(got, clear_rule(pa, pb, h, cutoffs, n_bits))
    assert got[0].any() and not got[0].all()


@settings(max_examples=25, deadline=None)
@given(threshold=st.floats(0.01, 1.0), n_bits=st.sampled_from([64, 1024]))
def test_the_integer_rule_is_the_kernels_float64_test_for_every_pair_of_popcounts(
    threshold: float, n_bits: int
) -> None:
    """`linkbit.rule`'s integer inequalities against the kernel's float64 arithmetic on every
    (pa, pb) (the pre-filter) and every (S, H) (Dice), H <= n_bits."""
    r = linkbit.rule(threshold, n_bits)
    pa, pb = (x.ravel().astype(np.int64) for x in np.meshgrid(np.arange(n_bits + 1),
                                                             np.arange(n_bits + 1)))  # fmt: skip
    extra = np.isin(pa, r.pre.extra)
    integer = (pa > 0) & (r.pre.b * np.abs(pa - pb) <= r.pre.a * pa + r.pre.c + r.pre.b * extra)
    assert np.array_equal(integer, linkbit.prefilter(pa, pb, threshold, n_bits))
    s, h = (x.ravel().astype(np.int64) for x in np.meshgrid(np.arange(1, 2 * n_bits + 1),
                                                           np.arange(n_bits + 1)))  # fmt: skip
    extra = np.isin(s, r.dice.extra)
    integer = r.dice.b * h <= r.dice.a * s + r.dice.c + r.dice.b * extra
    kernel = (h <= s) & ((s - h).astype(np.float64) / s >= threshold)
    assert np.array_equal(integer, kernel)


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.55, 2 / 3, 0.8, 0.8123, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("n_bits", [64, 1024])
@pytest.mark.parametrize("uncapped", [False, True])
def test_the_largest_distance_read_near_s_times_1_minus_t_is_the_whole_tables(
    threshold: float, n_bits: int, uncapped: bool
) -> None:
    """kernelrule's reference tests eight H per S, around S (1 - t): the same as the kernel's
    float64 test at every (S, H), H up to S (`uncapped`) or n_bits, and never left to the
    whole table for these thresholds."""
    near = kernelrule._largest_near(threshold, n_bits, (2 if uncapped else 1) * n_bits)
    s = np.arange(2 * n_bits + 1, dtype=np.int64)[:, None]
    h = np.arange((2 if uncapped else 1) * n_bits + 1, dtype=np.int64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (h <= s) & ((s - h).astype(np.float64) / s >= threshold)
    ok[0] = False
    assert near is not None
    assert near.tolist() == [int(np.flatnonzero(row).max(initial=-1)) for row in ok]


def test_the_circuit_costs_a_fifth_more_and_gates_than_the_popcount_in_a_few_more_rounds() -> None:
    one = linkbit.circuit(1024, (0.8,))
    assert 1024 <= one.and_gates <= 1130
    assert one.rounds <= 18
    four = linkbit.circuit(1024, (0.8, 0.85, 0.9, 0.95))
    assert four.and_gates - one.and_gates <= 3 * 50  # a cut-off's Dice test, about 45 ANDs
    assert four.rounds <= 18
    # A threshold whose float64 pre-filter no line matches (0.55) costs its exceptions.
    assert linkbit.rule(0.55, 1024).pre.extra
    assert linkbit.circuit(1024, (0.55,)).and_gates < 2100


def kernel_links(a: Clks, b: Clks, threshold: float) -> npt.NDArray[np.bool_]:
    k = np.arange(len(a), dtype=np.uint32)
    _, keep = dice_pairs(a, b, k, k, threshold)
    out = np.zeros(len(a), dtype=bool)
    out[keep] = True
    return out


def link_bits(a: Clks, b: Clks, cutoffs: list[float], seed: int) -> npt.NDArray[np.bool_]:
    """C's bits for pairs (a[k], b[k]): each CLK and popcount split in two shares, S1 and S2
    each XOR theirs."""
    rng = np.random.default_rng(seed)
    a1, a2 = split(a, rng)
    b1, b2 = split(b, rng)
    n_bits = 8 * a.shape[1]
    pa1, pa2 = linkbit.split_popcounts(popcounts(a), n_bits)
    pb1, pb2 = linkbit.split_popcounts(popcounts(b), n_bits)
    return linkbit.compare(a1 ^ b1, a2 ^ b2, (pa1, pb1), (pa2, pb2), tuple(cutoffs), n_bits)


def test_the_link_bits_are_the_kernels_test_on_the_edges() -> None:
    rng = np.random.default_rng(3)
    n = 400
    a = (rng.random((n, 1024)) < rng.random((n, 1))).astype(np.uint8)
    # b: a with a few bits flipped, so that Dice runs through 0.8 and beyond.
    b = a ^ (rng.random((n, 1024)) < rng.random((n, 1)) * 0.3).astype(np.uint8)
    a[0], b[0] = 0, 0  # S = 0: two empty CLKs
    a[1], b[1] = 1, 1  # all ones
    a[2], b[2] = 0, 1  # one empty: the pre-filter
    a[3, :], b[3, :] = 0, 0
    a[3, :10], b[3, :8] = 1, 1  # S = 18, H = 2: Dice 16/18
    a[4, :], b[4, :] = 0, 0
    a[4, :5], b[4, 1:6] = 1, 1  # S = 10, H = 2: Dice exactly 0.8
    a[5, :], b[5, :] = 0, 0
    a[5, :5], b[5, 2:7] = 1, 1  # S = 10, H = 4: Dice 0.6
    packed_a = np.packbits(a, axis=1, bitorder="little")
    packed_b = np.packbits(b, axis=1, bitorder="little")
    for t in (0.8, 0.6, 0.95, 1.0, 1e-9):
        want = kernel_links(packed_a, packed_b, t)
        got = link_bits(packed_a, packed_b, [t], seed=7)[0]
        assert np.array_equal(got, want), t
        assert 0 < want.sum() < n
    assert link_bits(packed_a[:6], packed_b[:6], [0.8], seed=8)[0].tolist() == [
        False, True, False, True, True, False,
    ]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    pairs=st.integers(1, 150),
    flip=st.floats(0.0, 0.5),
    cutoffs=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4, unique=True),
)
def test_the_link_bits_equal_the_kernels_test_on_random_pairs(
    seed: int, pairs: int, flip: float, cutoffs: list[float]
) -> None:
    rng = np.random.default_rng(seed)
    density = rng.random((pairs, 1))
    a = np.packbits(rng.random((pairs, 1024)) < density, axis=1, bitorder="little")
    noise = np.packbits(rng.random((pairs, 1024)) < flip * rng.random((pairs, 1)), axis=1,
                        bitorder="little")  # fmt: skip
    b = a ^ noise
    cutoffs = sorted(cutoffs)
    got = link_bits(a, b, cutoffs, seed)
    for j, t in enumerate(cutoffs):
        # Bound j: Dice >= cutoffs[j] among the pairs passing the pre-filter at cutoffs[0].
        assert np.array_equal(got[j], kernel_links(a, b, t) & kernel_links(a, b, cutoffs[0]))


def run_views(
    d: Clks, u: Clks, pops: tuple[int, int], cutoffs: tuple[float, ...],
    seeds: tuple[bytes, bytes] | None,
) -> tuple[npt.NDArray[np.bool_], linkbit.Transcript]:  # fmt: skip
    """The circuit with S1's shares u (of d) and zero shares of the popcounts for S1: S2's
    shares are then d ^ u and the popcounts themselves."""
    t = linkbit.Transcript(keep=True)
    n = len(d)
    zero = np.zeros(n, np.uint32)
    theirs = (np.full(n, pops[0], np.uint32), np.full(n, pops[1], np.uint32))
    bits = linkbit.compare(u, u ^ d, (zero, zero), theirs, cutoffs, 8 * d.shape[1], t, seeds)
    return bits, t


def received(t: linkbit.Transcript, who: str, what: str | None = None) -> Clks:
    return np.frombuffer(
        b"".join(p for _, r, w, p in t.messages if r == who and what in (None, w)), np.uint8
    )


def test_c_receives_only_the_output_shares_and_each_alone_is_uniform() -> None:
    rng = np.random.default_rng(11)
    pairs = 4096
    u = rng.integers(0, 256, (pairs, 128), dtype=np.uint8)
    words = linkbit.words_for(pairs)
    d_zero = np.zeros((pairs, 128), np.uint8)
    for pops, want in (((0, 0), False), ((500, 500), True)):  # every bit 0, every bit 1
        bits, t = run_views(d_zero, u, pops, (0.8, 0.9), (bytes(32), bytes(range(32))))
        assert bits.all() == want and bits.any() == want
        to_c = [(s, w, len(p)) for s, r, w, p in t.messages if r == "C"]
        assert to_c == [("S1", "output", 2 * 8 * words), ("S2", "output", 2 * 8 * words)]
        # Each server's share alone is balanced whatever the bits are.
        for share in (t.messages[-2][3], t.messages[-1][3]):
            ones = np.bitwise_count(np.frombuffer(share, np.uint8)).sum() / (8 * len(share))
            assert 0.47 < ones < 0.53
        # C sends S1 its seed only.
        assert [len(p) for s, r, _, p in t.messages if (s, r) == ("C", "S1")] == [32]


def test_what_s1_and_s2_receive_is_uniform_whatever_the_inputs() -> None:
    """Each server's view is its own shares, its seed, and messages padded by randomness it
    does not hold (S2's by S1's seed stream and C's c2; S1's by S2's seed stream), so it is
    simulated by uniform bytes. Checked on the inputs furthest from uniform: d = 0 with
    popcounts 0, and d = all ones with the largest popcounts, S2's shares all zero in the
    first (sent unpadded, S1 would receive zeros): every message is balanced and no pad row
    is used twice (a reused triple would repeat one)."""
    rng = np.random.default_rng(12)
    pairs = 2048
    u = rng.integers(0, 256, (pairs, 128), dtype=np.uint8)
    for d, pops in ((u, (0, 0)), (~u, (1024, 1024))):  # S2's shares u ^ d: all zeros, all ones
        bits, t = run_views(d, u, pops, (0.8,), None)
        assert not bits.any()
        views = {
            "S1 from S2": received(t, "S1", "round"),
            "S2 from S1": received(t, "S2", "round"),
            "S2 from C": received(t, "S2", "setup")[linkbit.SEED_BYTES :],  # past S2's seed
        }
        assert len(received(t, "S1", "setup")) == linkbit.SEED_BYTES  # S1: a seed, nothing else
        for who, view in views.items():
            share = np.bitwise_count(view).sum() / (8 * len(view))
            assert 0.49 < share < 0.51, who
            rows = view.view("<u8").reshape(-1, linkbit.words_for(pairs))
            assert len(np.unique(rows, axis=0)) == len(rows), who


def test_the_bounds_are_the_largest_distance_the_threshold_allows() -> None:
    pa = np.array([0, 5, 5, 100, 500, 1024, 3, 600], np.int64)
    pb = np.array([0, 5, 4, 40, 520, 1024, 0, 200], np.int64)
    b = linkbit.hamming_bounds(pa, pb, [0.8, 0.9], 1024)
    # S = 10 at 0.8: H <= 2 (8/10 = 0.8 exactly), so B = 3; S = 9: H <= 1 (7/9 < 0.8 < 8/9).
    assert b[0, :3].tolist() == [0, 3, 2]
    assert b[1, 1] == 2  # 9/10 >= 0.9
    assert b[0, 3] == 0 and b[0, 6] == 0 and b[0, 7] == 0  # the pre-filter (|pa - pb|, pa = 0)
    assert b[0, 4] == 205  # H <= 204: (1020 - 204) / 1020 = 0.8
    assert b[0, 5] == 410 and b[1, 5] == 205  # S = 2048: H <= 409 at 0.8
    with pytest.raises(ValueError, match="popcounts outside"):
        linkbit.hamming_bounds(np.array([1025]), np.array([1024]), [0.8], 1024)
    with pytest.raises(ValueError, match="does not fit the round"):
        c = linkbit.circuit(64)
        dealt = linkbit.deal(c, 2)
        zero = np.zeros(2, np.uint32)
        s1 = linkbit.Party(0, c, np.zeros((2, 8), np.uint8), dealt.to_s1, (zero, zero))
        s1.agree(bytes(linkbit.SEED_BYTES))
        s1.open()
        s1.close(b"\0" * 8)


def test_the_bytes_and_rounds_are_what_the_protocol_says() -> None:
    """Per circuit: C sends S1 a seed and S2 a seed and its c shares (2 bits a gate a pair,
    and the opened rows); S1 and S2 send each other a nonce, the triples' check (2 bits a
    gate a pair, the opened rows, a digest) and 2 bits a gate a pair in the rounds; each
    sends C a bit a cut-off a pair; one round an AND-depth, however many pairs."""
    rng = np.random.default_rng(5)
    pairs, n_bits, cuts = 1000, 1024, (0.8, 0.85, 0.9, 0.95)
    d = rng.integers(0, 256, (pairs, 128), dtype=np.uint8)
    t = linkbit.Transcript()
    pops = rng.integers(0, n_bits + 1, pairs)
    on_shares(d, pops, pops, cuts, n_bits, rng, t)
    c, words = linkbit.circuit(n_bits, cuts), linkbit.words_for(pairs)
    g, opened = c.and_gates, triplecheck.OPENED
    check = 32 + 32 + 8 * words * (2 * g + 3 * opened)  # a nonce, the check and its digest
    assert t.sent == {
        ("C", "S1"): 32,
        ("C", "S2"): 32 + 8 * words * triplecheck.rows(g),  # two rows a gate, 2 opened
        ("S1", "S2"): check + 2 * 8 * words * g,  # then the rounds
        ("S2", "S1"): check + 2 * 8 * words * g,
        ("S1", "C"): 8 * words * len(cuts),
        ("S2", "C"): 8 * words * len(cuts),
    }
    assert t.rounds == c.rounds and t.pairs == pairs


def test_a_party_refuses_steps_out_of_order_and_setups_that_do_not_fit() -> None:
    c = linkbit.circuit(64)
    dealt = linkbit.deal(c, 2)
    diffs = np.zeros((2, 8), np.uint8)
    zero = np.zeros(2, np.uint32)
    s2 = linkbit.Party(1, c, diffs, dealt.to_s2, (zero, zero))
    with pytest.raises(RuntimeError, match="open before the servers agree"):
        s2.open()
    with pytest.raises(ValueError, match="nonce is 32 bytes"):
        s2.agree(b"short")
    s2.agree(bytes(linkbit.SEED_BYTES))
    with pytest.raises(RuntimeError, match="agreed already"):
        s2.agree(bytes(linkbit.SEED_BYTES))
    with pytest.raises(RuntimeError, match="close before open"):
        s2.close(b"")
    with pytest.raises(RuntimeError, match="output before the last round"):
        s2.output()
    with pytest.raises(ValueError, match="S2's setup does not fit"):
        z65 = np.zeros(65, np.uint32)
        linkbit.Party(1, c, np.zeros((65, 8), np.uint8), dealt.to_s2, (z65, z65))  # a word more
    with pytest.raises(ValueError, match="S1's setup is its seed"):
        linkbit.Party(0, c, diffs, dealt.to_s2, (zero, zero))
    with pytest.raises(ValueError, match="popcount share beyond 7 bits"):
        linkbit.Party(0, c, diffs, dealt.to_s1, (zero, zero + 128))
    with pytest.raises(ValueError, match="a popcount share a CLK of each pair"):
        linkbit.Party(0, c, diffs, dealt.to_s1, (zero, zero[:1]))


@settings(max_examples=30, deadline=None)
@given(joint=st.binary(min_size=32, max_size=32), rows=st.integers(1, 3000))
def test_the_rows_order_is_a_permutation_both_servers_derive_alike(joint: bytes, rows: int) -> None:
    order = linkbit.row_order(joint, rows)
    assert sorted(order.tolist()) == list(range(rows))
    assert (linkbit.row_order(joint, rows) == order).all()


def flipped(dealt: linkbit.Deal, row: int | None, bits: int = -1) -> bytes:
    """C's dishonest setup for S2 (a stand-in for the attacker): c2's row `row` (every row
    with None) flipped on the pairs of `bits` (a word's mask; every pair by default)."""
    words = linkbit.words_for(dealt.pairs)
    c2 = np.frombuffer(dealt.to_s2[32:], "<u8").reshape(-1, words).copy()
    c2[slice(None) if row is None else row] ^= np.uint64(bits & 0xFFFF_FFFF_FFFF_FFFF)
    return dealt.to_s2[:32] + c2.tobytes()


def checked(
    c: linkbit.Circuit, dealt: linkbit.Deal, to_s2: bytes, nonces: bytes
) -> tuple[str, str]:
    """S1 and S2's check of the triples (`agree`, `check`, `verify`, `confirm`), each one's
    verdict: "ok" or DealRefused's message."""
    diffs, zero = np.zeros((dealt.pairs, 8), np.uint8), np.zeros(dealt.pairs, np.uint32)
    s1 = linkbit.Party(0, c, diffs, dealt.to_s1, (zero, zero), nonce=nonces[:32])
    s2 = linkbit.Party(1, c, diffs, to_s2, (zero, zero), nonce=nonces[32:])
    s1.agree(s2.nonce())
    s2.agree(s1.nonce())
    d1, d2 = s1.verify(s2.check()), s2.verify(s1.check())
    verdicts = []
    for party, theirs in ((s1, d2), (s2, d1)):
        try:
            party.confirm(theirs)
            verdicts.append("ok")
        except triplecheck.DealRefused as exc:
            verdicts.append(str(exc))
    return verdicts[0], verdicts[1]


def test_the_servers_order_the_dealt_rows_so_a_row_serves_a_gate_c_does_not_know() -> None:
    """C deals rows, S1 and S2 order them after: where a row C chose lands (a gate, its
    spare, or opened) is uniform over the layout, whatever row C chose."""
    gates = linkbit.circuit(64).and_gates
    rng = np.random.default_rng(9)
    for row in (0, 2 * gates + 1):
        seen = []
        for _ in range(600):
            order = linkbit.row_order(rng.bytes(32), triplecheck.rows(gates))
            seen.append(int(np.flatnonzero(order == row)[0]))
        at = np.asarray(seen)
        assert 0.4 < (at < gates).mean() < 0.6  # serves a gate about half the time
        assert len(set(at[at < gates].tolist())) > 0.6 * gates  # any gate, not a few
        assert np.bincount(at, minlength=triplecheck.rows(gates)).max() <= 8


def test_an_honest_deal_passes_the_check_on_both_servers() -> None:
    c = linkbit.circuit(64)
    rng = np.random.default_rng(3)
    for pairs in (1, 64, 130):
        dealt = linkbit.deal(c, pairs)
        assert checked(c, dealt, dealt.to_s2, rng.bytes(64)) == ("ok", "ok")


def test_one_wrong_row_anywhere_is_refused_by_both_servers() -> None:
    """Every row of a small circuit's deal (a gate's, a spare, an opened one), one pair's c2
    bit flipped: both servers refuse, whatever the nonces."""
    c = linkbit.circuit(8)
    dealt = linkbit.deal(c, 3)
    rng = np.random.default_rng(4)
    for row in range(triplecheck.rows(c.and_gates)):
        v1, v2 = checked(c, dealt, flipped(dealt, row, 1 << int(rng.integers(3))), rng.bytes(64))
        assert v1 != "ok" and v2 != "ok", row
        assert v1 == v2


def test_every_row_wrong_alike_is_refused_by_the_opened_rows() -> None:
    """Flipped alike everywhere, every sacrifice passes (t = e ^ e = 0) and every gate would
    be a NAND: the opened rows catch it."""
    c = linkbit.circuit(64)
    dealt = linkbit.deal(c, 5)
    v1, v2 = checked(c, dealt, flipped(dealt, None), bytes(64))
    assert (
        v1
        == v2
        == f"{triplecheck.OPENED} of the {triplecheck.OPENED} triple rows opened are not triples"
    )


def test_two_rows_wrong_alike_pass_only_when_paired_about_once_in_2g_minus_1() -> None:
    """Two rows flipped alike pass only if the order pairs them (a gate and its spare) and
    opens neither: (2G - 2 choose 2)... about 1 / (2G - 1) of the orders."""
    c = linkbit.circuit(4)
    g = c.and_gates
    dealt = linkbit.deal(c, 1)
    bent = flipped(dealt, 0)
    bent = flipped(linkbit.Deal(dealt.to_s1, bent, 1), 1)
    rng = np.random.default_rng(6)
    trials = 3000
    passed = sum(checked(c, dealt, bent, rng.bytes(64)) == ("ok", "ok") for _ in range(trials))
    n = triplecheck.rows(g)
    expect = (n - 2) * (n - 3) / (n * (n - 1)) / (2 * g - 1)
    assert 0.4 * expect * trials <= passed <= 2.0 * expect * trials + 3, (passed, expect)


@settings(max_examples=40, deadline=None)
@given(
    words=st.integers(1, 3),
    gates=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    error=st.integers(0, 2**64 - 1),
    spare_error=st.integers(0, 2**64 - 1),
)
def test_the_sacrifice_opens_t_equal_to_the_two_rows_errors(
    words: int, gates: int, seed: int, error: int, spare_error: int
) -> None:
    """Shares of a triple with c off by e and its spare with z off by e': the two servers'
    t shares differ by exactly e ^ e' (so t = 0, equal digests, iff e = e')."""
    rng = np.random.default_rng(seed)

    def words_(n: int = gates) -> npt.NDArray[np.uint64]:
        return rng.integers(0, 2**63, (n, words), dtype=np.uint64) << np.uint64(1) | rng.integers(
            0, 2, (n, words), dtype=np.uint64
        )

    def shared(err: int) -> tuple[triplecheck.Triple, triplecheck.Triple]:
        a1, a2, b1, b2, c1 = (words_() for _ in range(5))
        c2 = ((a1 ^ a2) & (b1 ^ b2)) ^ c1
        c2[0, 0] ^= np.uint64(err)
        return (a1, b1, c1), (a2, b2, c2)

    used, spare = shared(error), shared(spare_error)
    opened = tuple(words_(triplecheck.OPENED) for _ in range(3))
    m = [triplecheck.message(used[r], spare[r], opened) for r in (0, 1)]  # type: ignore[arg-type]
    d = [triplecheck.digest(r, m[r], m[1 - r], used[r], spare[r]) for r in (0, 1)]
    assert (d[0] == d[1]) == (error == spare_error)


@pytest.mark.parametrize("count", [0, 1, 2, 8191, 8192, 8193, 3 * 8192 + 5])
def test_the_prg_is_aes_ctr_over_zeros_across_its_chunks(count: int) -> None:
    """`prg` encrypts its zeros a 64 kB chunk (8,192 words) at a time into its words: the
    same stream as encrypting them all at once, at and across a chunk's edge, and words a
    caller may write to."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    seed = bytes(range(32))
    whole = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(8 * count))
    got = linkbit.prg(seed, count)
    assert got.shape == (count,) and got.dtype == np.uint64 and got.flags.writeable
    assert got.tobytes() == whole
