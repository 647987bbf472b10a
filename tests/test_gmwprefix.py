"""Shallow arithmetic for the GMW circuits (core/gmwprefix.py) and the gap rule's circuit built
on it (core/gmwrule.py `rule_circuit`), evaluated in the clear (XOR sharing is linear, so the
circuit's bits on shares are these): the sums are the integer sums, the rule circuit is the
integer rule on every popcount at small sizes and the first circuit's bits, and its rounds
grow with the logarithm of the sums' widths."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.matcher.core import gmwprefix as prefix
from blindmatch.matcher.core import ruleform
from blindmatch.matcher.core.gmwcircuit import ONE, Circuit, Term, _Builder
from blindmatch.matcher.core.gmwrule import ripple_rule_circuit, rule_circuit
from blindmatch.matcher.core.kernelrule import hamming_bounds
from blindmatch.matcher.domain import Rule

DEFAULT = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
CUTOFFS = (0.8, 0.85, 0.9, 0.95)
Bits = npt.NDArray[np.bool_]


def _run(b: _Builder, inputs: dict[int, Bits], pairs: int) -> Bits:
    """Every wire of a builder's gates in the clear (wire ids are in topological order)."""
    w = np.zeros((len(b.depth), pairs), dtype=bool)
    w[ONE] = True
    for wire, bits in inputs.items():
        w[wire] = bits
    gates = sorted([(o, x, y, False) for o, x, y in b.xor_gates]
                   + [(o, x, y, True) for o, x, y in b.and_gates])  # fmt: skip
    for out, x, y, is_and in gates:
        w[out] = (w[x] & w[y]) if is_and else (w[x] ^ w[y])
    return w


def _value(w: Bits, bits: list[int]) -> npt.NDArray[np.int64]:
    return sum(
        (w[x].astype(np.int64) << i for i, x in enumerate(bits)), np.zeros(w.shape[1], np.int64)
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 12), st.integers(-300, 300)), min_size=1, max_size=5),
    st.integers(-5000, 5000),
)
def test_sign_and_add_are_the_integer_sum(numbers: list[tuple[int, int]], const: int) -> None:
    pairs = 400
    rng = np.random.default_rng(abs(const) + len(numbers))
    b = _Builder(2 + sum(n for n, _ in numbers))
    terms: list[Term] = []
    at = 2
    for n, weight in numbers:
        terms.append((list(range(at, at + n)), weight))
        at += n
    width = prefix.width_for(terms, const)
    sign = prefix.sign(b, terms, const)
    total = prefix.add(b, terms, const, width)
    inputs = {x: rng.random(pairs) < 0.5 for x in range(2, at)}
    w = _run(b, inputs, pairs)
    want = sum((weight * _value(w, bits) for bits, weight in terms), np.full(pairs, const))
    assert (w[sign] == (want >= 0)).all()
    assert (_value(w, total) == want % (1 << width)).all()


def test_a_comparison_takes_log_rounds_of_its_width() -> None:
    """[x - y >= 0] on 32-bit x, y: a carry-save level, the generates, five prefix levels,
    where a ripple of carries takes 32 rounds."""
    b = _Builder(2 + 64)
    sign = prefix.sign(b, [(list(range(2, 34)), 1), (list(range(34, 66)), -1)])
    assert b.depth[sign] <= 7
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 1 << 32, 500), rng.integers(0, 1 << 32, 500)
    inputs = {2 + i: (x >> i) & 1 == 1 for i in range(32)}
    inputs |= {34 + i: (y >> i) & 1 == 1 for i in range(32)}
    assert (_run(b, inputs, 500)[sign] == (x >= y)).all()


def _clear(c: Circuit, d1: Bits, d2: Bits, pops: list[npt.NDArray[np.int64]]) -> Bits:
    """A compiled circuit's outputs in the clear: d1, d2 (bits, pairs), pa1, pb1, pa2, pb2."""
    pairs = d1.shape[1]
    w = np.zeros((c.n_wires, pairs), dtype=bool)
    w[ONE] = True
    w[2 : 2 + c.n_bits] = d1
    w[2 + c.n_bits : 2 + c.n_bits + c.n_bits2] = d2
    for k, values in enumerate(pops):
        for i in range(c.pop_bits):
            w[c.pop_wires[k, i]] = (values >> i) & 1 == 1
    for depth in range(len(c.xors)):
        if depth:
            out, x, y = c.ands[depth - 1]
            w[out] = w[x] & w[y]
        for out, x, y in c.xors[depth]:
            w[out] = w[x] ^ w[y]
    return w[c.outputs]


def _popcounts(n: int) -> list[tuple[int, int, int]]:
    """Every (pa, pb, H) two n-bit CLKs can have."""
    return [(pa, pb, pa + pb - 2 * both) for pa in range(n + 1) for pb in range(n + 1)
            for both in range(max(0, pa + pb - n), min(pa, pb) + 1)]  # fmt: skip


def _d(hs: list[int], n: int) -> Bits:
    """(n, pairs): a ^ b with the first H bits set."""
    return np.arange(n)[:, None] < np.asarray(hs)[None, :]


def test_on_every_popcount_at_small_sizes_the_circuit_is_the_integer_rule() -> None:
    """8 + 4 bits (powers of two: H counted in one bit fewer plus the last bit) and 6 + 5,
    every (pa1, pb1, H1, pa2, pb2, H2): the integer rule in the clear, the pairs nearest each
    cut-off on both sides included, and the first (ripple-carry) circuit's bits."""
    for n1, n2 in ((8, 4), (6, 5)):
        rows = [f + s for f, s in itertools.product(_popcounts(n1), _popcounts(n2))]
        cols = [np.array(c, dtype=np.int64) for c in zip(*rows, strict=True)]
        d1, d2 = _d(list(cols[2]), n1), _d(list(cols[5]), n2)
        pops = [cols[0], cols[1], cols[3], cols[4]]
        got = _clear(rule_circuit(n1, n2, CUTOFFS, DEFAULT), d1, d2, pops)
        form = ruleform.integer_form(DEFAULT, CUTOFFS, n1, n2)
        assert (got == ruleform.rule_bounds(form, n1, *cols)).all()
        assert (got == _clear(ripple_rule_circuit(n1, n2, CUTOFFS, DEFAULT), d1, d2, pops)).all()
        floor_ok = cols[2] < hamming_bounds(cols[0], cols[1], (form.floor,), n1)[0]
        for j in range(len(CUTOFFS)):  # the pairs nearest the cut-off on either side
            margin = ruleform.integer_margin(form, j, *cols)
            above, below = floor_ok & (margin >= 0), floor_ok & (margin < 0)
            assert got[j][above & (margin == margin[above].min())].all()
            assert not got[j][below & (margin == margin[below].max())].any()


def test_the_rule_circuit_takes_fewer_than_half_the_rounds_of_the_ripple_one() -> None:
    """1,024 + 1,024 bits, the threshold and the default buckets: 21 rounds against 49, for
    about as many AND gates."""
    fast = rule_circuit(1024, 1024, CUTOFFS, DEFAULT)
    ripple = ripple_rule_circuit(1024, 1024, CUTOFFS, DEFAULT)
    assert (ripple.and_gates, ripple.rounds) == (3840, 49)
    assert fast.rounds <= 21
    assert fast.and_gates <= 1.03 * ripple.and_gates
