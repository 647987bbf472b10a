"""The rule's margin by arithmetic (core/densemargin.py, margincircuit.py, ring64.py): its link
bits are core/gmwsum.py's and the rule's in the clear pair for pair (real encodings, and
pairs of popcounts and distances at the rule's edges); a combiner dealing any value wrong is
refused before any output; what each server receives is padded; its circuits are a quarter
of gmwsum's AND gates or less."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing
from blindmatch.matcher.core import (
    densearith,
    denseblock,
    densemargin,
    kernelrule,
    linkbit,
    margincircuit,
    ring64,
    ruleform,
)
from blindmatch.matcher.core.gmwsum import sum_rule_circuit
from blindmatch.matcher.core.kernelrule import hamming_bounds
from blindmatch.matcher.core.margincircuit import Plan, plan
from blindmatch.matcher.core.triplecheck import DealRefused
from blindmatch.matcher.core.twoblocking import PairBatch
from blindmatch.matcher.domain import Rule
from tests.test_densearith import CUTOFFS, DEFAULT, _block, _clear, _pops

Clks = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]


@pytest.fixture(scope="module")
def encoded(messy_members: tuple[list[Clks], int]) -> list[list[Clks]]:
    """Two members' first 30 and 50 records of the messy exports, as their two CLKs, with
    an empty record (both CLKs) in A and an empty fallback CLK in B (pa1 = 0, Σ2 = 0)."""
    datasets, fallback_bits = messy_members
    out = []
    for d, n, empty in zip(datasets, (30, 50), (slice(None), slice(1, 2)), strict=False):
        clks = sharing.clk_parts(d[:n], fallback_bits)
        for c in clks[empty]:
            c[-1] = 0
        out.append(clks)
    return out


@pytest.mark.parametrize("depth", [0, margincircuit.RIPPLE])
def test_a_block_by_the_margin_has_gmwsums_bits_and_the_rule_in_the_clear(
    encoded: list[list[Clks]], depth: int
) -> None:
    a, b = encoded
    rows, one, two = _block(a, b)
    p1, p2 = _pops(rows)
    n_a = len(a[0])
    t = linkbit.Transcript()
    got = densemargin.compare(one, two, p1, p2, n_a, CUTOFFS, DEFAULT, t, depth=depth)
    n1, n2 = 8 * rows[0].shape[1], 8 * rows[1].shape[1]
    form = ruleform.integer_form(DEFAULT, CUTOFFS, n1, n2)
    assert (got == ruleform.rule_bounds(form, n1, *_clear(rows, n_a))).all()
    assert (got == denseblock.compare(one, two, p1, p2, n_a, CUTOFFS, DEFAULT)).all()
    assert got[0].sum() >= 1  # the records' own pairs link


def test_a_batch_across_a_parts_blocks_is_gathered_from_each(encoded: list[list[Clks]]) -> None:
    """`gather` on a part of two blocks (A's rows 0-14 with B's even rows, A's 15-29 with
    B's odd ones), a batch holding pairs of both in a shuffled order: the rule in the
    clear on each pair."""
    a, b = encoded
    rows, one, two = _block(a, b)
    p1, p2 = _pops(rows)
    n_a, n_b = len(a[0]), len(b[0])
    widths = (8 * rows[0].shape[1], 8 * rows[1].shape[1])
    p = plan(*widths, CUTOFFS, DEFAULT)
    every_a, every_b = np.arange(n_a, dtype=np.uint32), np.arange(n_b, dtype=np.uint32)
    sides = [(every_a[:15], every_b[::2]), (every_a[15:], every_b[1::2])]
    t = linkbit.Transcript()
    deals = [densearith.deal(densearith.Shape(len(x), len(y), widths)) for x, y in sides]
    pop_deals = [densemargin.pops_deal(p, len(x) + len(y)) for x, y in sides]
    blocks, arith = [], []
    for role, (clks, pops) in enumerate(((one, p1), (two, p2))):
        halves = ([c[:n_a] for c in clks], [c[n_a:] for c in clks])
        pop_halves = ([q[:n_a] for q in pops], [q[n_a:] for q in pops])
        setups = [(d.to_s1, d.to_s2)[role] for d in deals]
        blocks.append(denseblock.side(role, halves, pop_halves, sides, setups))
    for k in range(len(sides)):
        denseblock.exchange(blocks[0].blocks[k], blocks[1].blocks[k], t)
        d = pop_deals[k]
        conv = [ring64.Party(role, d.size, (d.to_s1, d.to_s2)[role]) for role in (0, 1)]
        xor = (blocks[0].pops[k], blocks[1].pops[k])
        arith.append(densemargin.convert_pops(p, conv[0], conv[1], xor, t))
    ia, ib = np.meshgrid(every_a, every_b, indexing="ij")
    keep = (ia < 15) == (ib % 2 == 0)
    order = np.random.default_rng(3).permutation(int(keep.sum()))
    batch_a, batch_b = ia[keep][order], ib[keep][order]
    batch = PairBatch(0, 1, 0, batch_a.astype(np.uint32), batch_b.astype(np.uint32))
    dealt = densemargin.deal(p, len(batch))
    parties = []
    for role in (0, 1):
        h, xor_pops, pops = densemargin.gather(blocks[role], [x[role] for x in arith], batch)
        parties.append(densemargin.Side(role, p, h, xor_pops, pops,
                                        (dealt.to_s1, dealt.to_s2)[role]))  # fmt: skip
    densemargin.exchange(parties[0], parties[1], t)
    got = linkbit.reveal(p.second, parties[0].output(), parties[1].output(), len(batch))
    clear = [c.reshape(n_a, n_b)[batch_a, batch_b] for c in _clear(rows, n_a)]
    assert (got == ruleform.rule_bounds(p.form, widths[0], *clear)).all()
    with pytest.raises(ValueError, match="none of the part's blocks"):
        densemargin.gather(blocks[0], [x[0] for x in arith], PairBatch(0, 1, 0, every_a[:1],
                                                                       every_b[1:2]))  # fmt: skip


def _shares(values: npt.NDArray[np.int64], bits: int, rng: np.random.Generator,
            xor: bool) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:  # fmt: skip
    """Two shares of each value: XOR on `bits` bits, or additive mod 2^bits."""
    mask = np.uint64((1 << bits) - 1)
    r = rng.integers(0, mask, len(values), dtype=np.uint64, endpoint=True)
    v = values.astype(np.uint64)
    other = r ^ v if xor else (v - r) & mask
    return r, other


def _batch(p: Plan, cols: list[npt.NDArray[np.int64]], seed: int = 0,
           t: linkbit.Transcript | None = None, dealt: densemargin.Deal | None = None,
           ) -> npt.NDArray[np.bool_]:  # fmt: skip
    """A batch of pairs given in the clear (pa1, pb1, H1, pa2, pb2, H2 a pair), each value
    shared at random as the servers would hold it, through the three roles."""
    rng = np.random.default_rng(seed)
    t = t if t is not None else linkbit.Transcript()
    l1, l2 = p.levels
    pops = [cols[k] for k in (0, 1, 3, 4)]
    xor = [_shares(v, lv, rng, True) for v, lv in zip(pops, (l1, l1, l2, l2), strict=True)]
    arith = [_shares(v, 64, rng, False) for v in pops]
    hs = [_shares(cols[k], lv, rng, False) for k, lv in ((2, l1), (5, l2))]
    dealt = dealt or densemargin.deal(p, len(cols[0]))
    sides = [densemargin.Side(role, p, (hs[0][role], hs[1][role]), [x[role] for x in xor],
                              [x[role] for x in arith],
                              t.send("C", ("S1", "S2")[role], "setup",
                                     (dealt.to_s1, dealt.to_s2)[role]))
             for role in (0, 1)]  # fmt: skip
    densemargin.exchange(sides[0], sides[1], t)
    o1, o2 = (
        t.send(w, "C", "output", s.output()) for w, s in zip(("S1", "S2"), sides, strict=True)
    )
    return linkbit.reveal(p.second, o1, o2, len(cols[0]))


def _edges(form: ruleform.IntegerRule, n1: int, n2: int, count: int,
           seed: int = 1) -> list[npt.NDArray[np.int64]]:  # fmt: skip
    """Pairs at the rule's edges: popcounts anywhere (0 included), H1 at the floor test's
    bound +-1, H2 where the first cut-off's margin is near 0, some exactly 0 (ties)."""
    rng = np.random.default_rng(seed)
    pa1, pb1 = rng.integers(0, n1 + 1, (2, count))
    pa1[:50] = 0
    pa2, pb2 = rng.integers(0, n2 + 1, (2, count))
    pa2[50:120], pb2[50:120] = 0, 0
    bound = hamming_bounds(pa1, pb1, (form.floor,), n1)[0]
    h1 = np.clip(bound - 1 + rng.integers(-1, 2, count), 0, n1)
    h2 = rng.integers(0, n2 + 1, count)
    h2[pa2 + pb2 == 0] = 0
    # where it exists, the H2 whose margin at cut-off 0 is closest to 0 (ties included)
    s1, s2 = np.maximum(pa1 + pb1, 1), np.maximum(pa2 + pb2, 1)
    n_1 = s1 - h1
    want = (form.a * n_1 * s2 - form.c[0] * s1 * s2) / (form.b * s1)  # N2 for M = 0
    near = np.clip(np.rint(s2 - want) + rng.integers(-1, 2, count), 0, n2).astype(np.int64)
    h2[120:] = np.where(pa2 + pb2 > 0, near, 0)[120:]
    cols = [x.astype(np.int64) for x in (pa1, pb1, h1, pa2, pb2, h2)]
    # exact ties: small Σ1 (pa1 = pb1), N2 = Σ2 (A N1 - C Σ1) / (B Σ1) where it is whole
    half, s2 = rng.integers(1, 31, 300_000), rng.integers(1, n2 + 1, 300_000)
    n_1 = (rng.random(300_000) * (2 * half + 1)).astype(np.int64)
    top = s2 * (form.a * n_1 - form.c[0] * 2 * half)
    n_2 = top // (form.b * 2 * half)
    tie = (top % (form.b * 2 * half) == 0) & (n_2 >= 0) & (n_2 <= s2) & (s2 - n_2 <= n2)
    k = np.flatnonzero(tie)[:200]
    more = [half[k], half[k], 2 * half[k] - n_1[k], s2[k] - s2[k] // 2, s2[k] // 2, s2[k] - n_2[k]]
    return [np.concatenate([c, m]) for c, m in zip(cols, more, strict=True)]


@pytest.mark.parametrize(
    ("rule", "threshold"),
    [
        (DEFAULT, 0.8),
        (Rule(0.25, 0.03, 0.01), 0.75),
        (Rule(0.5, -0.02, 0.05), 0.9),
        (Rule(0.05, 0.0, 0.1), 0.8),  # Σ2 = 0 decides at 0.85: D1 >= 0.85 / 1.05 > the floor
    ],
)
def test_pairs_at_the_rules_edges_get_the_rule_in_the_clear(rule: Rule, threshold: float) -> None:
    """Popcounts and distances chosen at the floor test's and the margin's edges (exact ties
    among them), 0.75 the threshold whose floor (0.74) has points off the pre-filter's line."""
    cutoffs = (threshold, round(threshold + 0.05, 2))
    p = plan(1024, 1024, cutoffs, rule)
    cols = _edges(p.form, 1024, 1024, 6000)
    want = ruleform.rule_bounds(p.form, 1024, *cols)
    margin = ruleform.integer_margin(p.form, 0, *cols)
    assert ((margin == 0) & want[0]).sum() >= 20  # exact ties where the floor test passes
    assert want[0].sum() > 100 and (~want[0]).sum() > 100
    assert (_batch(p, cols) == want).all()
    if threshold == 0.75:
        assert p.pre.extra and "e_pre" in p.converted


def _by_lines(p: Plan, cols: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.bool_]:
    """The plan's tests in the clear as its lines state them (core/kernelrule.py `Line`: a
    floor of a line plus its extra points) and the integer margin."""
    pa1, pb1, h1 = cols[:3]
    s1 = pa1 + pb1
    pre, dice = p.pre, p.dice
    e_p, e_d = np.isin(pa1, pre.extra), np.isin(s1, dice.extra)
    up = pre.a * pa1 + pre.c + pre.b * e_p - pre.b * (pb1 - pa1) >= 0
    down = pre.a * pa1 + pre.c + pre.b * e_p - pre.b * (pa1 - pb1) >= 0
    f = (pa1 > 0) & up & down & (dice.a * s1 + dice.c + dice.b * e_d - dice.b * h1 >= 0)
    return np.stack([f & (ruleform.integer_margin(p.form, j, *cols) >= 0)
                     for j in range(len(p.form.c))])  # fmt: skip


def test_extra_points_on_both_floor_lines_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """No shipped threshold's dice line has extra points at 1,024 bits (the pre-filter's do,
    as at 0.74 above): the floor's lines made one lower with extra points on both, the
    first circuit's indicators (Σ1's by a prefix adder) give the lines' tests in the clear."""
    real = plan(1024, 1024, CUTOFFS, DEFAULT)
    cols = _edges(real.form, 1024, 1024, 3000)
    assert (_by_lines(real, cols) == ruleform.rule_bounds(real.form, 1024, *cols)).all()
    floor = kernelrule.rule(real.form.floor, 1024)
    pre = kernelrule.Line(floor.pre.a, floor.pre.b, floor.pre.c - floor.pre.b, (40, 300, 777))
    dice = kernelrule.Line(floor.dice.a, floor.dice.b, floor.dice.c - floor.dice.b,
                           (80, 301, 1000, 1500, 2047))  # fmt: skip
    monkeypatch.setattr(margincircuit, "kernel_rule",
                        lambda t, n: kernelrule.Rule(pre, dice))  # fmt: skip
    p = margincircuit.plan.__wrapped__(1024, 1024, CUTOFFS, DEFAULT)
    assert p.converted == ("wrap1", "wrap2", "z2", "e_pre", "e_dice")
    rng = np.random.default_rng(7)
    n = len(cols[0])
    pa1 = rng.choice([40, 300, 777, 41, 299, 1], n)
    s1 = rng.choice([80, 301, 1000, 1500, 2047, 81, 999], n)
    pb1 = np.where(rng.random(n) < 0.5, s1 - pa1, pa1 + rng.integers(-300, 301, n))
    pb1 = np.clip(pb1, 0, 1024)
    total = pa1 + pb1
    bound = (dice.a * total + dice.c) // dice.b + np.isin(total, dice.extra)
    h1 = np.clip(bound + rng.integers(-1, 2, n), 0, 1024)
    cols[:3] = [np.concatenate([c, x]) for c, x in zip(cols[:3], (pa1, pb1, h1), strict=True)]
    cols[3:] = [np.concatenate([c, c[:n]]) for c in cols[3:]]
    want = _by_lines(p, cols)
    on_extra = np.isin(cols[0] + cols[1], dice.extra) & np.isin(cols[0], pre.extra)
    assert want[0].sum() > 100 and (~want[0]).sum() > 100 and on_extra.sum() > 100
    assert (_batch(p, cols) == want).all()


def _off(setup: bytes, word: int, delta: int) -> bytes:
    """`setup` with its uint64 `word` (counted from the end) off by `delta`."""
    body = np.frombuffer(setup, np.uint8).copy()
    at = len(body) - 8 * (word + 1)
    value = (int.from_bytes(body[at : at + 8].tobytes(), "little") + delta) % (1 << 64)
    body[at : at + 8] = np.frombuffer(value.to_bytes(8, "little"), np.uint8)
    return body.tobytes()


@pytest.mark.parametrize(
    ("where", "delta"),
    [
        ("second circuit", 1),  # a triple row of the signs' circuit (its c2 bits)
        ("triple spare", 1),  # the last triple's spare, c2'
        ("triple", 1 << 28),  # a product's bit 28 (the margin's top bit at the default)
        ("triple", 1),
        ("daBit spare", 1),
        ("daBit", 1),  # a converted bit's [p]2: the bit off by 2
        ("first circuit", 1 << 63),  # a triple row of the first circuit
    ],
)
def test_a_combiner_dealing_any_value_of_a_batch_wrong_is_refused_before_any_output(
    where: str, delta: int
) -> None:
    p = plan(1024, 1024, CUTOFFS, DEFAULT)
    cols = _edges(p.form, 1024, 1024, 500)
    n = len(cols[0])
    honest = densemargin.deal(p, n)
    second = linkbit.dealt_rows(p.second) * linkbit.words_for(n) + 4  # its c2 words, its seed
    size = densemargin.batch_size(p, n)
    word = {"second circuit": 3, "triple spare": second + 1, "triple": second + size.triples + 7,
            "daBit spare": second + 2 * size.triples + 2,
            "daBit": second + 2 * size.triples + size.dabits + 5,
            "first circuit": second + size.explicit + 4 + 40}[where]  # fmt: skip
    _batch(p, cols, dealt=honest)
    wrong = densemargin.Deal(honest.to_s1, _off(honest.to_s2, word, delta), n)
    t = linkbit.Transcript(keep=True)
    with pytest.raises(DealRefused):
        _batch(p, cols, t=t, dealt=wrong)
    assert not [m for m in t.messages if m[1] == "C"]


def test_a_combiner_dealing_a_records_popcount_wrong_is_refused(encoded: list[list[Clks]],
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:  # fmt: skip
    a, b = encoded
    rows, one, two = _block(a, b)
    p1, p2 = _pops(rows)
    honest = densemargin.pops_deal

    def dishonest(p: object, records: int, seeds: object = None) -> ring64.Deal:
        d = honest(p, records)  # type: ignore[arg-type]
        return ring64.Deal(d.to_s1, _off(d.to_s2, d.size.dabits + 5, 2), d.size)

    monkeypatch.setattr(densemargin, "pops_deal", dishonest)
    t = linkbit.Transcript(keep=True)
    with pytest.raises(DealRefused):
        densemargin.compare(one, two, p1, p2, len(a[0]), CUTOFFS, DEFAULT, t)
    assert not [m for m in t.messages if m[1] == "C"]


def _balanced(data: bytes, what: str) -> None:
    ones = np.bitwise_count(np.frombuffer(data, np.uint8)).sum()
    assert 0.48 < ones / (8 * len(data)) < 0.52, what


def test_what_each_server_receives_in_the_arithmetic_is_padded_whatever_the_pairs() -> None:
    """Every pair the same (all popcounts and distances 0, then all at their top): the
    masked bits, the checks' pads and the products' openings each server receives are
    balanced bits, each value's top byte too; the tests' values never leave a server."""
    p = plan(1024, 1024, CUTOFFS, DEFAULT)
    n = 4000
    for value in (0, 1024):
        cols = [np.full(n, value, np.int64) for _ in range(6)]
        t = linkbit.Transcript(keep=True)
        _batch(p, cols, t=t)
        for who in ("S1", "S2"):
            convert = b"".join(m[3] for m in t.messages if m[1] == who and m[2] == "convert")
            bits = (3 * n + 7) // 8
            _balanced(convert[:bits], f"{who}'s masked bits")
            _balanced(convert[bits:], f"{who}'s pads")
            opened = b"".join(m[3] for m in t.messages if m[1] == who and m[2] == "multiply")
            _balanced(opened[32:], f"{who}'s openings")
            k = densemargin.batch_size(p, n).opened  # 4 bytes a value at the default
            top = np.frombuffer(opened[32:], np.uint8).reshape(-1, k)[:, -1]
            _balanced(top.tobytes(), f"{who}'s openings' top byte")


def test_the_margins_circuits_have_a_quarter_of_gmwsums_and_gates() -> None:
    summed = sum_rule_circuit(1024, 1024, CUTOFFS, DEFAULT)
    tree, ripple = plan(1024, 1024, CUTOFFS, DEFAULT), plan(1024, 1024, CUTOFFS, DEFAULT, 64)
    same = plan(1024, 1024, CUTOFFS, DEFAULT, 11)  # as many rounds as gmwsum's
    assert same.first.rounds + same.second.rounds + 2 <= summed.rounds
    assert ripple.and_gates < same.and_gates < tree.and_gates
    assert tree.and_gates < 0.25 * summed.and_gates
    assert ripple.and_gates < 0.15 * summed.and_gates
    assert tree.first.rounds + tree.second.rounds + 2 <= summed.rounds


def test_ring64_converts_and_multiplies_and_refuses_steps_out_of_order() -> None:
    rng = np.random.default_rng(2)
    s = ring64.Size(40, 25)
    dealt = ring64.deal(s)
    one, two = ring64.Party(0, s, dealt.to_s1), ring64.Party(1, s, dealt.to_s2)
    with pytest.raises(RuntimeError):
        one.first(np.zeros(40, np.uint8))
    one.agree(two.nonce())
    two.agree(one.nonce())
    bits, pad = rng.integers(0, 2, (2, 40))
    m1, m2 = one.first(pad), two.first(bits ^ pad)
    c1, c2 = one.converted(m2), two.converted(m1)
    assert ((c1 + c2) == bits).all()
    x, y, x1, y1 = (rng.integers(0, 1 << 63, 25, dtype=np.uint64) << np.uint64(1) for _ in range(4))
    m1, m2 = one.second(x1, y1), two.second(x - x1, y - y1)
    assert ((one.products(m2) + two.products(m1)) == x * y).all()
    with pytest.raises(ValueError, match="setup"):
        ring64.Party(1, s, dealt.to_s2[:-8])
