"""A whole block by arithmetic sharing (core/densearith.py, core/denseblock.py, core/gmwsum.py):
its link bits are the boolean circuit's and the rule's in the clear pair for pair, on real
encodings; a combiner dealing anything wrong is refused before any output; what each server
receives is padded; the circuit after the matrix products has half the AND gates."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing
from blindmatch.matcher import errors
from blindmatch.matcher.core import (
    densearith,
    denseblock,
    linkbit,
    partpath,
    ruleform,
    tworun,
    twoserver,
)
from blindmatch.matcher.core.gmwcircuit import circuit
from blindmatch.matcher.core.gmwrule import rule_circuit
from blindmatch.matcher.core.gmwsum import sum_circuit, sum_rule_circuit
from blindmatch.matcher.core.triplecheck import DealRefused
from blindmatch.matcher.domain import NO_RULE, Rule
from tests.support import MESSY_SECRET, in_process_servers
from tests.test_twoserver import assert_same_links

DEFAULT = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
CUTOFFS = (0.8, 0.85, 0.9, 0.95)
Clks = npt.NDArray[np.uint8]


def _block(a: list[Clks], b: list[Clks]) -> tuple[list[Clks], list[Clks], list[Clks]]:
    """Each CLK's rows, A's then B's, and S1's and S2's XOR shares of them."""
    rows = [np.vstack([x, y]) for x, y in zip(a, b, strict=True)]
    shares = [sharing.split_shares(r) for r in rows]
    return rows, [s[0] for s in shares], [s[1] for s in shares]


def _pops(rows: list[Clks]) -> tuple[list[npt.NDArray[np.uint32]], ...]:
    split = [linkbit.split_popcounts(sharing.popcounts(r), 8 * r.shape[1]) for r in rows]
    return [s[0] for s in split], [s[1] for s in split]


def _clear(rows: list[Clks], n_a: int) -> list[npt.NDArray[np.int64]]:
    """pa, pb, H of every pair (row order) on each CLK."""
    out = []
    for r in rows:
        bits = np.unpackbits(r, axis=1).astype(bool)
        a, b = bits[:n_a], bits[n_a:]
        h = (a[:, None, :] != b[None, :, :]).sum(axis=2).ravel()
        pops = bits.sum(axis=1)
        out += [np.repeat(pops[:n_a], len(b)), np.tile(pops[n_a:], n_a), h]
    return out


@pytest.fixture(scope="module")
def encoded(messy_members: tuple[list[Clks], int]) -> list[list[Clks]]:
    """Two members' first 24 and 40 records of the messy exports, as their two CLKs."""
    datasets, fallback_bits = messy_members
    return [
        sharing.clk_parts(d[:n], fallback_bits) for d, n in zip(datasets, (24, 40), strict=False)
    ]


def test_a_block_has_the_boolean_circuits_bits_and_the_rule_in_the_clear(
    encoded: list[list[Clks]],
) -> None:
    a, b = encoded
    rows, one, two = _block(a, b)
    p1, p2 = _pops(rows)
    n_a, pairs = len(a[0]), len(a[0]) * len(b[0])
    t = linkbit.Transcript()
    got = denseblock.compare(one, two, p1, p2, n_a, CUTOFFS, DEFAULT, t)
    clear = _clear(rows, n_a)
    form = ruleform.integer_form(DEFAULT, CUTOFFS, 8 * rows[0].shape[1], 8 * rows[1].shape[1])
    assert (got == ruleform.rule_bounds(form, 8 * rows[0].shape[1], *clear)).all()
    # The boolean circuit on the same pairs' a ^ b shares.
    ia, ib = np.divmod(np.arange(pairs), len(b[0]))
    diffs = [(s[ia] ^ s[n_a + ib]) for s in (one[0], one[1], two[0], two[1])]
    pops = [[p[0][ia], p[0][n_a + ib], p[1][ia], p[1][n_a + ib]] for p in (p1, p2)]
    c = rule_circuit(8 * rows[0].shape[1], 8 * rows[1].shape[1], CUTOFFS, DEFAULT)
    boolean = linkbit.compare((diffs[0], diffs[1]), (diffs[2], diffs[3]), *pops, CUTOFFS, 0, c=c)
    assert (got == boolean).all()
    assert got[0].sum() >= 1  # the records' own pairs link
    assert set(t.sent) == {("C", "S1"), ("C", "S2"), ("S1", "S2"), ("S2", "S1"), ("S1", "C"),
                           ("S2", "C")}  # fmt: skip


def test_one_clk_block_is_the_kernels_circuit(encoded: list[list[Clks]]) -> None:
    a, b = encoded
    rows, one, two = _block(a[:1], b[:1])
    p1, p2 = _pops(rows)
    n_a = len(a[0])
    got = denseblock.compare(one, two, p1, p2, n_a, (0.7, 0.8))
    ia, ib = np.divmod(np.arange(n_a * len(b[0])), len(b[0]))
    d1, d2 = one[0][ia] ^ one[0][n_a + ib], two[0][ia] ^ two[0][n_a + ib]
    want = linkbit.compare(d1, d2, [p1[0][ia], p1[0][n_a + ib]], [p2[0][ia], p2[0][n_a + ib]],
                           (0.7, 0.8), 8 * rows[0].shape[1])  # fmt: skip
    assert (got == want).all() and want.any()


def _run(shape: densearith.Shape, clks: list[Clks], dealt: densearith.BlockDeal,
         t: linkbit.Transcript | None = None, split: bool = True,
         ) -> tuple[densearith.Party, densearith.Party]:  # fmt: skip
    """S1 and S2 on the block; not `split`: S1's shares are the CLKs, S2's all zero."""
    t = t if t is not None else linkbit.Transcript()
    shares = [sharing.split_shares(c) if split else (c, np.zeros_like(c)) for c in clks]
    s1 = densearith.Party(0, shape, t.send("C", "S1", "setup", dealt.to_s1), [s[0] for s in shares])
    s2 = densearith.Party(1, shape, t.send("C", "S2", "setup", dealt.to_s2), [s[1] for s in shares])
    denseblock.exchange(s1, s2, t)
    return s1, s2


def test_the_shares_are_every_pairs_hamming_distance_mod_2_to_the_k() -> None:
    rng = np.random.default_rng(4)
    shape = densearith.Shape(9, 13, (256, 64))
    clks = [rng.integers(0, 256, (22, w // 8), dtype=np.uint8) for w in shape.widths]
    s1, s2 = _run(shape, clks, densearith.deal(shape))
    for c, rows in enumerate(clks):
        h = (s1.hamming(c) + s2.hamming(c)) & ((1 << shape.levels(c)) - 1)
        assert (h.ravel() == _clear([rows], 9)[2]).all()


def _wrong(dealt: densearith.BlockDeal, value: int, delta: int) -> densearith.BlockDeal:
    """The deal with S2's explicit value `value` (uint32 index past its seed) off by delta."""
    body = np.frombuffer(dealt.to_s2[linkbit.SEED_BYTES :], "<u4").copy()
    body[value] += np.uint32(delta)
    return densearith.BlockDeal(dealt.to_s1, dealt.to_s2[: linkbit.SEED_BYTES] + body.tobytes(),
                                dealt.shape)  # fmt: skip


@pytest.mark.parametrize(
    ("where", "delta"),
    [
        ("daBit", 1),  # a record bit's conversion: [a] off by +-2, as the bit says
        ("daBit", 1 << 9),  # its highest bit that changes [a] mod 2^11
        ("spare", 1),  # the sacrifice's spare
        ("product", 1),  # an inner product of the block: H off by 2
        ("product", 1 << 10),  # the top bit of H
        ("spare product", 7),  # a spare row's product, used only by the check
    ],
)
def test_a_combiner_dealing_any_value_wrong_is_refused(where: str, delta: int) -> None:
    rng = np.random.default_rng(5)
    shape = densearith.Shape(6, 7, (1024,))
    clks = [rng.integers(0, 256, (13, 128), dtype=np.uint8)]
    dealt = densearith.deal(shape)
    bits = 13 * 1024
    value = {"daBit": bits // 2, "spare": bits + 3, "product": 2 * bits + 4 * (7 + 2) + 5,
             "spare product": 2 * bits + 6 * (7 + 2) + 7}[where]  # fmt: skip
    _run(shape, clks, dealt)  # the honest deal passes
    with pytest.raises(DealRefused):
        _run(shape, clks, _wrong(dealt, value, delta))


def _view(t: linkbit.Transcript, who: str, what: str) -> bytes:
    return b"".join(p for _, to, w, p in t.messages if to == who and w == what)


def test_what_each_server_receives_is_padded_whatever_the_clks() -> None:
    """All-zero and all-one CLKs, S2's shares all zero in the first (unpadded, S1 would read
    them): the masked bits are balanced, D's values uniform mod 2^k, rho and sigma balanced,
    S1 receives a seed from C and nothing else, C nothing at all here."""
    shape = densearith.Shape(40, 50, (1024,))
    for fill in (0, 255):
        clks = [np.full((90, 128), fill, np.uint8)]
        t = linkbit.Transcript(keep=True)
        _run(shape, clks, densearith.deal(shape), t, split=False)
        assert len(_view(t, "S1", "setup")) == linkbit.SEED_BYTES
        assert not [m for m in t.messages if m[1] == "C"]
        for who in ("S1", "S2"):
            convert = np.frombuffer(_view(t, who, "convert"), np.uint8)
            masked, pads = convert[: 90 * 128], convert[90 * 128 :]
            for part in (masked, pads):
                assert 0.49 < np.bitwise_count(part).sum() / (8 * len(part)) < 0.51, who
            opened = np.frombuffer(_view(t, who, "reconcile")[32 : 32 + 2 * 90 * 1024], "<u2")
            assert opened.max() < 1 << 11
            ones = (opened[:, None] >> np.arange(11)) & 1
            assert (np.abs(ones.mean(axis=0) - 0.5) < 0.01).all(), who
        explicit = np.frombuffer(_view(t, "S2", "setup")[linkbit.SEED_BYTES :], np.uint8)
        assert 0.49 < np.bitwise_count(explicit).sum() / (8 * len(explicit)) < 0.51


def test_the_circuit_on_the_shares_of_h_has_half_the_and_gates() -> None:
    full = rule_circuit(1024, 1024, CUTOFFS, DEFAULT)
    summed = sum_rule_circuit(1024, 1024, CUTOFFS, DEFAULT)
    assert summed.and_gates < 0.5 * full.and_gates and summed.rounds <= full.rounds
    assert sum_circuit(1024, CUTOFFS).and_gates < 0.25 * circuit(1024, CUTOFFS).and_gates


def test_a_party_refuses_steps_out_of_order_and_setups_that_do_not_fit() -> None:
    shape = densearith.Shape(2, 3, (64,))
    dealt = densearith.deal(shape)
    clks = [np.zeros((5, 8), np.uint8)]
    with pytest.raises(ValueError, match="setup"):
        densearith.Party(1, shape, dealt.to_s2[:-4], clks)
    with pytest.raises(ValueError, match="seed"):
        densearith.Party(0, shape, dealt.to_s2, clks)
    with pytest.raises(ValueError, match="share of each record"):
        densearith.Party(0, shape, dealt.to_s1, [np.zeros((4, 8), np.uint8)])
    s1 = densearith.Party(0, shape, dealt.to_s1, clks)
    with pytest.raises(RuntimeError):
        s1.convert()
    with pytest.raises(RuntimeError):
        s1.hamming(0)
    with pytest.raises(ValueError):
        densearith.Shape(0, 3, (64,))


@pytest.mark.parametrize("rule", [NO_RULE, DEFAULT])
def test_an_unblocked_run_in_process_goes_by_blocks_with_the_same_links(
    messy_members: tuple[list[Clks], int], rule: Rule, monkeypatch: pytest.MonkeyPatch
) -> None:
    """core/tworun.py over core/twoinprocess.py: every pair of two members of 150 and 120
    records unblocked, by blocks (forced: core/partpath.py's rule takes a part this small by
    pairs) and by the boolean circuit a pair: the same links and buckets, fewer bytes
    between S1 and S2."""
    monkeypatch.setattr(partpath, "PATH", "blocks")
    datasets, fallback_bits = messy_members
    plan = sharing.BandPlan(bits=20, bands=30)
    firsts = zip(datasets, (150, 120), strict=False)
    uploads = [sharing.shared_upload(d[:n], MESSY_SECRET, plan, fallback_bits) for d, n in firsts]
    runs = {}
    for dense in (True, False):
        s1, s2 = in_process_servers(uploads)
        s1.exhaustive = 10**9
        servers = tworun.InProcess(s1, s2)
        servers.dense = dense
        combiner = twoserver.Combiner(None, 0.8, clks=2, rule=rule)
        runs[dense] = tworun.drive(servers, combiner)
    by_blocks, by_pairs = runs[True], runs[False]
    assert by_blocks.comparisons == by_pairs.comparisons == 150 * 120
    assert len(by_blocks.links) > 20
    assert_same_links(by_blocks.links, by_pairs.links)
    assert (by_blocks.links.score == by_pairs.links.score).all()
    sent = [r.transcript.sent[("S1", "S2")] for r in (by_blocks, by_pairs)]
    assert sent[0] < 0.8 * sent[1]


def test_a_combiner_dealing_a_block_wrong_in_a_run_is_refused_before_any_output(
    encoded: list[list[Clks]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """C's block deal with one product off (as a dishonest dealer would send it): S1 and S2
    refuse the part as a batch's bad triples are refused, naming the dealer (by blocks,
    forced: core/partpath.py's rule takes parts this small by pairs)."""
    monkeypatch.setattr(partpath, "PATH", "blocks")
    plan = sharing.BandPlan(bits=20, bands=30)
    uploads = [sharing.shared_upload(np.hstack(m), MESSY_SECRET, plan, 8 * m[1].shape[1])
               for m in encoded]  # fmt: skip
    honest = densearith.deal

    def dishonest(shape: densearith.Shape, seeds: object = None) -> densearith.BlockDeal:
        return _wrong(honest(shape), 2 * shape.records * shape.widths[0] + 1, 1)

    monkeypatch.setattr(densearith, "deal", dishonest)
    s1, s2 = in_process_servers(uploads)
    s1.exhaustive = 10**9
    with pytest.raises(errors.PermissionDenied, match="dealer"):
        tworun.drive(tworun.InProcess(s1, s2), twoserver.Combiner(None, 0.8, clks=2, rule=DEFAULT))
