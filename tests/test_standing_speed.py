"""The standing conversion's daBits a slice at a time in native code (core/dabitslices.py,
matcher/core/_standing.c `dabit_*`, convspeed): the same messages, shares and checks byte for
byte as ring64's numpy path on the same seeds, mod 2^64 and mod 2^32 (a partner's and a
query's CLK bits, bytes32), and a partner so converted answers a query as the rule in the
clear does; a piece dealt or sent at the old 8 bytes a value refused, naming its size."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing
from blindmatch.matcher.core import (
    dabitslices,
    densemargin,
    linkbit,
    ring64,
    ruleform,
    standing,
    standingsteps,
)
from blindmatch.matcher.core.margincircuit import plan
from blindmatch.matcher.core.triplecheck import DealRefused
from tests.test_densearith import CUTOFFS, DEFAULT, _clear, _pops
from tests.test_standing import _query, encoded  # noqa: F401 (the partner's records)

Clks = npt.NDArray[np.uint8]
Sides = tuple[standing.Partner, standing.Partner]
U64 = npt.NDArray[np.uint64]
native = pytest.mark.skipif(ring64._NATIVE is None, reason="the native kernel is not built")


def _seeded(seed: int) -> Callable[[int], bytes]:
    """`secrets.token_bytes` drawn from a fixed seed: every deal's seeds and every nonce."""
    state = [hashlib.sha256(seed.to_bytes(8, "little")).digest()]

    def token_bytes(n: int = 32) -> bytes:
        state[0] = hashlib.sha256(state[0]).digest()
        return (state[0] * (n // 32 + 1))[:n]

    return token_bytes


def _exchange(n: int, bits: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
              seed: int, monkeypatch: pytest.MonkeyPatch, width: int = 8,
              ) -> tuple[tuple[ring64.Ring, ring64.Ring], list[bytes], ring64.Deal]:  # fmt: skip
    monkeypatch.setattr(secrets, "token_bytes", _seeded(seed))
    size = ring64.Size(n, 0, width=width)
    dealt = ring64.deal(size)
    t = linkbit.Transcript(keep=True)
    parties = (ring64.Party(0, size, dealt.to_s1), ring64.Party(1, size, dealt.to_s2))
    got = ring64.exchange(parties[0], parties[1], bits, t)
    return got, [m[3] for m in t.messages], dealt


@native
@pytest.mark.parametrize("width", [8, 4])
@pytest.mark.parametrize("n", [1, 13, 64, dabitslices.SLICE + 5, 2 * dabitslices.SLICE + 8])
def test_a_dabit_conversion_by_slices_is_numpys_byte_for_byte(
    n: int, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Odd sizes (a section of the stream starting mid counter block: two words a block mod
    2^64, four mod 2^32), several slices and a part of one: C's deal, both servers' messages
    and shares the numpy path's, `width` bytes a value, and the shares the bits (mod
    2^(8 width))."""
    rng = np.random.default_rng(n)
    bits = (rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8))
    fast, fast_sent, fast_deal = _exchange(n, bits, 7, monkeypatch, width)
    monkeypatch.setattr(ring64, "_NATIVE", None)
    slow, slow_sent, slow_deal = _exchange(n, bits, 7, monkeypatch, width)
    assert fast_deal == slow_deal and fast_sent == slow_sent
    assert all((x == y).all() and x.dtype == y.dtype == np.dtype(f"u{width}")
               for x, y in zip(fast, slow, strict=True))  # fmt: skip
    assert ((fast[0] + fast[1]) == (bits[0] ^ bits[1])).all()
    assert len(fast_deal.to_s2) == linkbit.SEED_BYTES + 2 * width * n
    assert [len(m) for m in fast_sent[2:4]] == [(n + 7) // 8 + width * n] * 2


@pytest.mark.parametrize("path", ["native", "numpy"])
@pytest.mark.parametrize("width", [8, 4])
def test_a_dabit_dealt_wrong_is_refused_by_slices_as_by_numpy(
    width: int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S2's [p]2 of one daBit in the last slice off by one: the digests differ, refused
    (mod 2^64 and mod 2^32, either path)."""
    if path == "numpy":
        monkeypatch.setattr(ring64, "_NATIVE", None)
    elif ring64._NATIVE is None:
        pytest.skip("the native kernel is not built")
    n = dabitslices.SLICE + 9
    size = ring64.Size(n, 0, width=width)
    dealt = ring64.deal(size)
    body = np.frombuffer(dealt.to_s2[linkbit.SEED_BYTES :], f"<u{width}").copy()
    body[n - 2] += size.dtype(1)
    wrong = dealt.to_s2[: linkbit.SEED_BYTES] + body.tobytes()
    parties = (ring64.Party(0, size, dealt.to_s1), ring64.Party(1, size, wrong))
    bits = np.zeros(n, np.uint8)
    with pytest.raises(DealRefused, match=f"mod 2\\^{8 * width} failed"):
        ring64.exchange(parties[0], parties[1], (bits, bits), linkbit.Transcript())


def _convert(b: list[Clks], shares: list[tuple[Clks, Clks]], seed: int,
             monkeypatch: pytest.MonkeyPatch,
             ) -> tuple[standing.Standing, Sides, list[bytes]]:  # fmt: skip
    monkeypatch.setattr(secrets, "token_bytes", _seeded(seed))
    widths = tuple(8 * x.shape[1] for x in b)
    s = standing.deal(len(b[0]), widths, (bytes(range(32)), bytes(range(1, 33))))
    t = linkbit.Transcript(keep=True)
    pops = _pops(b)
    both = standing.convert(s, plan(widths[0], widths[1], CUTOFFS, DEFAULT),
                            ([x[0] for x in shares], [x[1] for x in shares]), pops, t)  # fmt: skip
    return s, both, [m[3] for m in t.messages]


@native
def test_a_partner_converted_by_slices_is_numpys_and_answers_as_the_clear(
    encoded: list[list[Clks]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partner (40 records, two 1,024-bit CLKs: three slices of its bits' daBits) on the
    same seeds both ways: every message and every kept array (D_B, [M_B], [|b|], the
    popcounts' shares) the same; D_B + M_B the bits, the popcounts' shares the popcounts;
    then a query against it the rule in the clear."""
    a, b = encoded
    shares = [sharing.split_shares(x) for x in b]
    with monkeypatch.context() as m:
        s, fast, fast_sent = _convert(b, shares, 3, m)
        m.setattr(ring64, "_NATIVE", None)
        _, slow, slow_sent = _convert(b, shares, 3, m)
    assert fast_sent == slow_sent
    for x, y in zip(fast, slow, strict=True):
        for name in ("d", "mask", "pops", "xor_pops", "arith_pops"):
            assert all((u == v).all() for u, v in zip(getattr(x, name), getattr(y, name),
                                                       strict=True))  # fmt: skip
    for c, clk in enumerate(b):
        bits = np.unpackbits(clk, axis=1, bitorder="little").astype(np.uint32)
        low = np.uint32((1 << fast[0].levels(c)) - 1)
        mask = fast[0].mask[c] + fast[1].mask[c]
        assert ((fast[0].d[c] + mask) & low == bits).all()
        assert (fast[0].pops[c] + fast[1].pops[c] == bits.sum(axis=1)).all()
        assert (fast[0].arith_pops[c] + fast[1].arith_pops[c] == bits.sum(axis=1)).all()
    widths = tuple(8 * x.shape[1] for x in b)
    form = ruleform.integer_form(DEFAULT, CUTOFFS, *widths)
    q = [x[:3] for x in a]
    got = _query(s, fast, q)
    clear = _clear([np.vstack([x, y]) for x, y in zip(q, b, strict=True)], len(q[0]))
    assert (got == ruleform.rule_bounds(form, widths[0], *clear)).all()
    assert int(got[0].sum()) >= 3  # A's first three records are in the partner


def _pieces(b: list[Clks], shares: list[tuple[Clks, Clks]], seed: int,
            monkeypatch: pytest.MonkeyPatch) -> list[standing.Partner]:  # fmt: skip
    """The partner converted as S1 and S2 do over gRPC (`piece_steps`, two pieces: its
    setups and first messages read as views), C's deals on fixed seeds."""
    monkeypatch.setattr(secrets, "token_bytes", _seeded(seed))
    monkeypatch.setattr(standing, "CHUNK", 24)
    widths = tuple(8 * x.shape[1] for x in b)
    p = plan(widths[0], widths[1], CUTOFFS, DEFAULT)
    s = standing.deal(len(b[0]), widths, (bytes(range(32)), bytes(range(1, 33))))
    pieces = standing.chunks(len(b[0]))
    into = [standingsteps.Converting(role, widths, p, len(pieces), len(b[0])) for role in (0, 1)]
    pops = _pops(b)
    for piece, (start, stop) in enumerate(pieces):
        bits = ring64.deal(standing.bits_size(stop - start, widths))
        popdeal = densemargin.pops_deal(p, stop - start)
        setups = (s.to_s1 + bits.to_s1 + popdeal.to_s1, s.to_s2 + bits.to_s2 + popdeal.to_s2)
        standingsteps.drive(*[
            standingsteps.piece_steps(into[r], piece, setups[r],
                                      [x[r][start:stop] for x in shares],
                                      [q[start:stop] for q in pops[r]], start)
            for r in (0, 1)
        ])  # fmt: skip
    return [c.finish(pops[r]) for r, c in enumerate(into)]


@native
def test_a_partner_converted_piece_by_piece_by_slices_is_numpys(
    encoded: list[list[Clks]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S1's and S2's steps as over gRPC (two pieces, the setups and first messages read as
    views): the same kept arrays both ways, the mask seed kept as bytes (not a view)."""
    b = encoded[1]
    shares = [sharing.split_shares(x) for x in b]
    with monkeypatch.context() as m:
        fast = _pieces(b, shares, 5, m)
        m.setattr(ring64, "_NATIVE", None)
        slow = _pieces(b, shares, 5, m)
    for x, y in zip(fast, slow, strict=True):
        for name in ("d", "mask", "pops", "xor_pops", "arith_pops"):
            assert all((u == v).all() for u, v in zip(getattr(x, name), getattr(y, name),
                                                       strict=True))  # fmt: skip
        assert x.seed == y.seed and isinstance(x.seed, bytes)


def test_a_pieces_clk_bits_are_converted_mod_2_32_and_an_old_sized_piece_is_refused(
    encoded: list[list[Clks]],  # noqa: F811
) -> None:
    """bytes32: a piece's CLK bits' daBits are 4 bytes a value (S2's setup 8 bytes a bit, each
    first message 4 a bit and the bits packed, where they were 16 and 8); a setup, or the
    other server's first message, at the old 8 bytes a value (a role of the earlier
    version) is refused with its size and the size wanted, before anything is kept."""
    b = [x[:24] for x in encoded[1]]
    widths, rows = tuple(8 * x.shape[1] for x in b), 24
    p = plan(widths[0], widths[1], CUTOFFS, DEFAULT)
    bits = sum(widths) * rows
    assert standing.bits_size(rows, widths).setup_bytes == (32, 32 + 8 * bits)
    s = standing.deal(rows, widths)
    shares = [sharing.split_shares(x) for x in b]
    pops = _pops(b)

    def steps(r: int, setup: bytes, into: standingsteps.Converting) -> standingsteps.Steps:
        return standingsteps.piece_steps(into, 0, setup, [x[r] for x in shares], pops[r], 0)

    def fresh() -> list[standingsteps.Converting]:
        return [standingsteps.Converting(r, widths, p, 1, rows) for r in (0, 1)]

    new, old = ring64.deal(standing.bits_size(rows, widths)), ring64.deal(ring64.Size(bits, 0))
    popdeal = densemargin.pops_deal(p, rows)
    setups = [s.to_s1 + new.to_s1 + popdeal.to_s1, s.to_s2 + new.to_s2 + popdeal.to_s2]
    into = fresh()
    one, two = steps(0, setups[0], into[0]), steps(1, setups[1], into[1])
    next(one), next(two)
    sent = [one.send(b"\0" * 64), two.send(b"\0" * 64)]  # (the nonces: any will do here)
    packed = (bits + 7) // 8
    pop_bits = popdeal.size.dabits  # (mod 2^64 still: the margin reads them so)
    assert [len(m) for m in sent] == [packed + 4 * bits + (pop_bits + 7) // 8 + 8 * pop_bits] * 2
    old_s2 = s.to_s2 + old.to_s2 + popdeal.to_s2
    want = 32 + 32 + 8 * bits + popdeal.size.setup_bytes[1]
    with pytest.raises(ValueError, match=f"is {len(old_s2):,} bytes, not {want:,}"):
        next(steps(1, old_s2, fresh()[1]))
    into = fresh()
    two = steps(1, setups[1], into[1])
    next(two)
    two.send(b"\0" * 64)
    longer = b"\0" * (len(sent[0]) + 4 * bits)  # S1 of the old version: 8 bytes a value
    with pytest.raises(ValueError, match=f"conversion is {len(longer):,} bytes, not "
                                         f"{len(sent[0]):,}"):  # fmt: skip
        two.send(longer)
    assert not into[1].done
