"""The gap rule's link-bit circuit (core/gmwrule.py): on shares of both CLKs of a pair it
outputs the rule in the clear (core/ruleform.py `rule_bounds`: the kernel's test at the
candidate floor, and the integer S >= t at each cut-off), and what it costs beside the
kernel's circuit."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.matcher.core import linkbit, ruleform
from blindmatch.matcher.core.gmwrule import naf, rule_circuit
from blindmatch.matcher.core.kernelrule import hamming_bounds
from blindmatch.matcher.domain import Rule

DEFAULT = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
CUTOFFS = (0.8, 0.85, 0.9, 0.95)
Pops3 = tuple[int, int, int]  # pa, pb, H of a pair of CLKs


def _clks(pa: int, pb: int, h: int, n: int, rng: np.random.Generator) -> tuple[bytes, bytes]:
    """Two n-bit CLKs with popcounts pa, pb at Hamming distance h, bits in a random order."""
    both = (pa + pb - h) // 2
    assert (pa + pb - h) % 2 == 0 and 0 <= both <= min(pa, pb) and pa + pb - both <= n
    a = np.zeros(n, np.uint8)
    b = np.zeros(n, np.uint8)
    a[:pa] = 1
    b[pa - both : pa - both + pb] = 1
    order = rng.permutation(n)
    return (np.packbits(a[order], bitorder="little").tobytes(),
            np.packbits(b[order], bitorder="little").tobytes())  # fmt: skip


def _shares(
    rows: list[tuple[int, int, int]], n: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], list[npt.NDArray[np.uint32]]]:
    """Each server's share of each pair's a ^ b, and XOR shares of pa, pb (S1's, S2's)."""
    pairs = [_clks(pa, pb, h, n, rng) for pa, pb, h in rows]
    a = np.frombuffer(b"".join(p[0] for p in pairs), np.uint8).reshape(len(rows), n // 8)
    b = np.frombuffer(b"".join(p[1] for p in pairs), np.uint8).reshape(len(rows), n // 8)
    mask = rng.integers(0, 256, a.shape, dtype=np.uint8)
    pops = []
    for k in (0, 1):
        one, two = linkbit.split_popcounts(np.array([r[k] for r in rows]), n)
        pops += [one, two]
    return mask, (a ^ b) ^ mask, pops


def _evaluate(
    first: list[tuple[int, int, int]],
    second: list[tuple[int, int, int]],
    n1: int,
    n2: int,
    rule: Rule = DEFAULT,
    cutoffs: tuple[float, ...] = CUTOFFS,
) -> npt.NDArray[np.bool_]:
    rng = np.random.default_rng(len(first))
    u1, v1, p1 = _shares(first, n1, rng)
    u2, v2, p2 = _shares(second, n2, rng)
    c = rule_circuit(n1, n2, cutoffs, rule)
    return linkbit.compare(
        (u1, u2), (v1, v2), (p1[0], p1[2], p2[0], p2[2]), (p1[1], p1[3], p2[1], p2[3]),
        cutoffs, n1, c=c,
    )  # fmt: skip


def _columns(first: list[Pops3], second: list[Pops3]) -> list[npt.NDArray[np.int64]]:
    """pa1, pb1, h1, pa2, pb2, h2 as arrays over the pairs."""
    rows = [f + s for f, s in zip(first, second, strict=True)]
    return [np.array(c, dtype=np.int64) for c in zip(*rows, strict=True)]


@st.composite
def clk_pair(draw: st.DrawFn, n: int) -> tuple[int, int, int]:
    pa = draw(st.integers(0, n))
    pb = draw(st.integers(0, n))
    both = draw(st.integers(max(0, pa + pb - n), min(pa, pb)))
    return pa, pb, pa + pb - 2 * both


def test_naf_writes_a_constant_in_signed_powers_of_two() -> None:
    assert naf(125) == [1, -4, 128]
    for k in range(-300, 300):
        assert sum(naf(k)) == k


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_the_rule_circuit_is_the_rule_in_the_clear_on_any_popcounts(data: st.DataObject) -> None:
    pairs = data.draw(st.lists(st.tuples(clk_pair(128), clk_pair(96)), min_size=1, max_size=70))
    first, second = [p[0] for p in pairs], [p[1] for p in pairs]
    got = _evaluate(first, second, 128, 96)
    form = ruleform.integer_form(DEFAULT, CUTOFFS, 128, 96)
    cols = _columns(first, second)
    assert (got == ruleform.rule_bounds(form, 128, *cols)).all()


def _near(n: int, rng: np.random.Generator, pairs: int) -> tuple[list[Pops3], list[Pops3]]:
    """Pairs of realistic popcounts whose S is next to each cut-off and D1 next to the floor."""
    first: list[Pops3] = []
    second: list[Pops3] = []
    form = ruleform.integer_form(DEFAULT, CUTOFFS, n, n)
    while len(first) < pairs:
        pa1, pb1 = (int(x) for x in rng.integers(250, 460, 2))
        pa2, pb2 = (int(x) for x in rng.integers(170, 300, 2))
        h2 = int(rng.integers(0, 80)) * 2 + (pa2 + pb2) % 2
        s1, s2, n2 = pa1 + pb1, pa2 + pb2, pa2 + pb2 - h2
        c = form.c[int(rng.integers(0, len(form.c)))]
        star = (form.b * n2 * s1 + c * s1 * s2) / (form.a * s2)
        for n1 in range(int(star) // 2 * 2 - 6, int(star) + 7, 2):  # N = 2 |a & b|: even
            h1 = s1 - n1
            if abs(pa1 - pb1) <= h1 <= min(s1, 2 * n - s1) and (
                abs(pa2 - pb2) <= h2 <= min(s2, 2 * n - s2)
            ):
                first.append((pa1, pb1, h1))
                second.append((pa2, pb2, h2))
    return first, second


def test_next_to_the_cutoffs_the_circuit_is_the_rule_in_the_clear_and_the_float_rule() -> None:
    """1,024-bit CLKs (the default schema's), pairs whose S is within a few steps of a
    cut-off: the circuit's bits are the integer test's, and the clk-mode float64 test's
    wherever S is not exactly the cut-off."""
    rng = np.random.default_rng(7)
    first, second = _near(1024, rng, 600)
    got = _evaluate(first, second, 1024, 1024)
    form = ruleform.integer_form(DEFAULT, CUTOFFS, 1024, 1024)
    cols = _columns(first, second)
    want = ruleform.rule_bounds(form, 1024, *cols)
    assert (got == want).all()
    assert want[0].any() and not want[0].all()  # both sides of the threshold
    floor_ok = cols[2] < hamming_bounds(cols[0], cols[1], (form.floor,), 1024)[0]
    assert floor_ok.any() and not floor_ok.all()
    for j, t in enumerate(CUTOFFS):
        ties = ruleform.integer_margin(form, j, *cols) == 0
        clk_mode = floor_ok & ruleform.float_test(DEFAULT, t, *cols)
        assert ((got[j] == clk_mode) | ties).all()


def test_the_rule_circuit_costs_about_three_kernel_circuits() -> None:
    """AND gates and rounds a pair at 1,024 + 1,024 bits, the threshold and the default
    buckets: both popcounts (about 1,000 ANDs each), the floor test, three 12 x 12-bit
    products and four signs; the rounds follow the products' carries."""
    kernel = linkbit.circuit(1024, CUTOFFS)
    rule = rule_circuit(1024, 1024, CUTOFFS, DEFAULT)
    assert (kernel.and_gates, kernel.rounds) == (1248, 17)
    assert rule.and_gates <= 3.2 * kernel.and_gates
    assert rule.rounds <= 3 * kernel.rounds
    print(f"kernel {kernel.and_gates} ANDs {kernel.rounds} rounds; "
          f"rule {rule.and_gates} ANDs {rule.rounds} rounds")  # fmt: skip
