"""A query against a standing partner converted once (core/standing.py, standingquery.py):
several queries' link bits are the rule's in the clear pair for pair on real encodings; a
combiner dealing a query's Z, its spare Z' or a query bit's daBit wrong is refused before any
output share; what each server receives is padded and never depends on the partner's mask."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing
from blindmatch.matcher.core import densemargin, linkbit, ring64, ruleform, standing, standingrows
from blindmatch.matcher.core import standingquery as sq
from blindmatch.matcher.core.margincircuit import plan
from blindmatch.matcher.core.triplecheck import DealRefused
from tests.test_densearith import CUTOFFS, DEFAULT, _block, _clear, _pops

Clks = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
Parts = tuple[standing.Standing, tuple[standing.Partner, standing.Partner]]


@pytest.fixture(scope="module")
def encoded(messy_members: tuple[list[Clks], int]) -> list[list[Clks]]:
    """Queries: member A's first 6 records; the standing partner: member B's first 40 with
    A's first 3 among them (so that queries link) and an empty fallback CLK (pb2 = 0); both
    as their two CLKs."""
    datasets, fallback_bits = messy_members
    a = sharing.clk_parts(datasets[0][:6], fallback_bits)
    b = sharing.clk_parts(datasets[1][:40], fallback_bits)
    for c in range(2):
        b[c][5:8] = a[c][:3]
    b[1][1] = 0
    return [a, b]


def _partner(b: list[Clks], t: linkbit.Transcript | None = None, split: bool = True) -> Parts:
    """The standing partner converted once; not `split`: S1's shares the CLKs, S2's zero."""
    widths = tuple(8 * x.shape[1] for x in b)
    shares = [sharing.split_shares(x) if split else (x, np.zeros_like(x)) for x in b]
    pops = _pops(b)
    if not split:
        pops = ([sharing.popcounts(x).astype(np.uint32) for x in b],
                [np.zeros(len(x), np.uint32) for x in b])  # fmt: skip
    s = standing.deal(len(b[0]), widths)
    p = plan(widths[0], widths[1], CUTOFFS, DEFAULT)
    both = standing.convert(s, p, ([x[0] for x in shares], [x[1] for x in shares]), pops, t)
    return s, both


def _query(s: standing.Standing, partners: tuple[standing.Partner, standing.Partner],
           q: list[Clks], t: linkbit.Transcript | None = None,
           ) -> npt.NDArray[np.bool_]:  # fmt: skip
    _rows, one, two = _block(q, [x[:0] for x in q])
    p1, p2 = _pops(q)
    return sq.compare(s, partners, (one, two), (p1, p2), CUTOFFS, DEFAULT, t)


def test_several_queries_against_one_standing_partner_are_the_rule_in_the_clear(
    encoded: list[list[Clks]],
) -> None:
    """The partner converted once, then three queries (one record, three, two) against it:
    every cut-off of every pair the rule's in the clear, and the block path's
    (core/densemargin.py) on the same pairs; the last with C keeping M_B."""
    a, b = encoded
    t = linkbit.Transcript()
    s, partners = _partner(b, t)
    once = dict(t.sent)
    widths = tuple(8 * x.shape[1] for x in b)
    form = ruleform.integer_form(DEFAULT, CUTOFFS, *widths)
    linked = 0
    for rows in (slice(0, 1), slice(1, 4), slice(4, 6)):
        q = [x[rows] for x in a]
        if rows.start == 4:
            s.keep()  # the last query: C's M_B kept, not regenerated
        got = _query(s, partners, q)
        clear = _clear([np.vstack([x, y]) for x, y in zip(q, b, strict=True)], len(q[0]))
        assert (got == ruleform.rule_bounds(form, widths[0], *clear)).all()
        linked += int(got[0].sum())
        if rows.start == 1:
            all_rows, one, two = _block(q, b)
            p1, p2 = _pops(all_rows)
            block = densemargin.compare(one, two, p1, p2, len(q[0]), CUTOFFS, DEFAULT)
            assert (got == block).all()
    assert linked >= 3  # A's first three records are in the partner
    assert partners[0].records == 40 and t.sent == once  # nothing more of the partner's


def _wrong_query_deal(what: str, delta: int) -> Callable[..., sq.QueryDeal]:
    honest = sq.deal

    def dishonest(s: standing.Standing, rows: int, seeds: object = None) -> sq.QueryDeal:
        dealt = honest(s, rows)
        body = np.frombuffer(dealt.to_s2[linkbit.SEED_BYTES :], "<u4").copy()
        at = {"Z": 3, "Z'": rows * s.records + 3}[what]  # the record CLK's Z2, then Z'2
        body[at] += np.uint32(delta)
        return sq.QueryDeal(dealt.to_s1, dealt.to_s2[: linkbit.SEED_BYTES] + body.tobytes(), rows)

    return dishonest


def _wrong_dabit(bits: int, delta: int) -> Callable[..., ring64.Deal]:
    honest = ring64.deal

    def dishonest(size: ring64.Size, seeds: object = None) -> ring64.Deal:
        dealt = honest(size)
        if size.dabits != bits:  # the popcounts' daBits: honest
            return dealt
        body = np.frombuffer(dealt.to_s2[linkbit.SEED_BYTES :], f"<u{size.width}").copy()
        body[bits // 2] += size.dtype(delta)  # [p]2 of a query bit's daBit
        return ring64.Deal(dealt.to_s1, dealt.to_s2[: linkbit.SEED_BYTES] + body.tobytes(), size)

    return dishonest


@pytest.mark.parametrize(
    ("what", "delta"),
    [
        ("Z", 1),  # a pair's inner product: H off by 2
        ("Z", 1 << 9),  # the highest bit that changes H mod 2^11
        ("Z", 1 << 20),  # a bit the H does not read: refused all the same
        ("Z'", 1),  # the spare alone
        ("daBit", 1),  # a query bit's conversion
    ],
)
def test_a_combiner_dealing_a_querys_value_wrong_is_refused_before_any_output(
    encoded: list[list[Clks]], monkeypatch: pytest.MonkeyPatch, what: str, delta: int
) -> None:
    a, b = encoded
    s, partners = _partner(b)
    q = [x[:2] for x in a]
    _query(s, partners, q)  # the honest deals pass
    if what == "daBit":
        monkeypatch.setattr(ring64, "deal", _wrong_dabit(2 * sum(s.widths), delta))
    else:
        monkeypatch.setattr(sq, "deal", _wrong_query_deal(what, delta))
    t = linkbit.Transcript(keep=True)
    with pytest.raises(DealRefused):
        _query(s, partners, q, t)
    assert not [m for m in t.messages if m[1] == "C" or m[2] == "output"]


def _steps(partners: tuple[standing.Partner, standing.Partner], q: Sequence[U32],
           dealt: sq.QueryDeal, t: linkbit.Transcript) -> None:  # fmt: skip
    """A query's steps from [Q] (S1's `q`, S2's zero), with fixed nonces."""
    sides = [sq.Query(role, partners[role], len(q[0]), (dealt.to_s1, dealt.to_s2)[role],
                      bytes([role + 1]) * 32) for role in (0, 1)]  # fmt: skip
    zero = [np.zeros_like(x) for x in q]
    sq.exchange(sides[0], sides[1], (list(q), zero), t)


def _balanced(raw: npt.NDArray[np.integer], bits: int) -> bool:
    ones = (raw.astype(np.uint64)[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)
    return bool((np.abs(ones.mean(axis=0) - 0.5) < 0.02).all())


def test_what_each_server_receives_is_padded_and_never_a_function_of_the_partners_mask() -> None:
    """A partner of all-zero CLKs (S2's shares zero: unpadded, S1 would read them) and one of
    all-one CLKs, converted once: D_B uniform mod 2^k. Then 2 L + 5 one-record queries of
    all-zero and all-one CLKs against each (L = 64 bits: more queries than M_B has columns, so
    that any opened combination of M_B would give M_B): every opening S1 or S2 receives is
    balanced bit for bit, C's explicit values too, and each query's openings are byte for
    byte the same against either partner (a different mask M_B): none is a function of
    M_B. The digest each receives is the one it computes."""
    n, widths = 200, (64, 64)
    queries = 2 * widths[0] + 5
    seen: dict[str, list[bytes]] = {}
    for fill in (0, 255):
        b = [np.full((n, w // 8), fill, np.uint8) for w in widths]
        t = linkbit.Transcript(keep=True)
        s, partners = _partner(b, t, split=False)
        for side in partners:
            d = np.concatenate([x.ravel() for x in side.d])
            assert d.max() < 1 << 7 and _balanced(d, 7)
        rng = np.random.default_rng(9)
        for k in range(queries):
            q = [np.full((1, w), k % 2, np.uint32) for w in widths]
            seeds = (rng.bytes(32), rng.bytes(32))
            _steps(partners, q, sq.deal(s, 1, seeds), t)
        for who in ("S1", "S2"):
            seen[f"{who} {fill}"] = [m[3] for m in t.messages if m[1] == who and m[2] == "open"]
            digests = [m[3] for m in t.messages if m[2] == "check"]
            assert len(digests) == 2 * queries and len(set(digests)) == queries
        explicit = b"".join(m[3][32:] for m in t.messages if m[:3] == ("C", "S2", "setup"))
        assert _balanced(np.frombuffer(explicit, "<u4"), 32)
    for who in ("S1", "S2"):
        assert seen[f"{who} 0"] == seen[f"{who} 255"]  # the same whatever M_B (and B)
        assert len(seen[f"{who} 0"]) == queries
        raw = np.vstack([np.frombuffer(m, np.uint8) for m in seen[f"{who} 0"]])
        w = widths[0]  # a CLK's D_Q (2 bytes a bit) then its rho (4 bytes a bit)
        d = np.hstack([raw[:, k : k + 2 * w] for k in (0, 6 * w)]).ravel().view("<u2")
        rho = np.hstack([raw[:, k : k + 4 * w] for k in (2 * w, 8 * w)]).ravel().view("<u4")
        assert d.max() < 1 << 7 and _balanced(d, 7) and _balanced(rho, 32), who


def test_a_query_refuses_steps_out_of_order_and_setups_that_do_not_fit() -> None:
    b = [np.zeros((3, 8), np.uint8), np.zeros((3, 8), np.uint8)]
    s, partners = _partner(b)
    dealt = sq.deal(s, 1)
    with pytest.raises(ValueError, match="setup"):
        sq.Query(1, partners[1], 1, dealt.to_s2[:-4])
    with pytest.raises(ValueError, match="role"):
        sq.Query(0, partners[1], 1, dealt.to_s1)
    one = sq.Query(0, partners[0], 1, dealt.to_s1)
    with pytest.raises(RuntimeError):
        one.open([np.zeros((1, 64), np.uint32)] * 2)
    with pytest.raises(RuntimeError):
        one.hamming(0)
    with pytest.raises(ValueError):
        standing.deal(0, (64, 64))
    with pytest.raises(ValueError, match="share of each record"):
        standing.convert(s, plan(64, 64, CUTOFFS, DEFAULT), ([b[0]], [b[0]]), ([], []))


def test_a_combiner_dealing_a_partner_bits_dabit_wrong_is_refused_before_anything_is_kept(
    encoded: list[list[Clks]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-off conversion: a partner bit's daBit off (its [p]2) and S1 and S2 refuse it
    before D_B is opened."""
    b = [x[:5] for x in encoded[1]]
    monkeypatch.setattr(ring64, "deal", _wrong_dabit(5 * 8 * sum(x.shape[1] for x in b), 1))
    t = linkbit.Transcript(keep=True)
    with pytest.raises(DealRefused):
        _partner(b, t)
    assert not [m for m in t.messages if m[2] == "open partner"]


def _exact(vecs: U32, mat: npt.NDArray[np.unsignedinteger]) -> U32:
    """vecs mat^T mod 2^32 in Python integers (no fixed-width arithmetic at all)."""
    out = [[sum(int(x) * int(y) for x, y in zip(v, m, strict=True)) % (1 << 32) for m in mat]
           for v in vecs]  # fmt: skip
    return np.array(out, dtype=np.uint32)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_the_native_products_are_numpys_bit_for_bit_wrap_around_included(dtype: type) -> None:
    """A query's rows times a partner's matrix (core/standingrows.py): every native path this
    build has (AVX2, generic) gives numpy's bits, one to five rows (pairs and an odd one),
    widths not a multiple of the vectors' lanes, values at the top of their range so that
    every sum wraps mod 2^32 many times; with a second matrix added as it is read (C's two
    shares); numpy's own is the exact product mod 2^32 (Python integers), and so mod 2^k."""
    rng = np.random.default_rng(3)
    top = np.iinfo(dtype).max
    paths = ["numpy"]
    if standingrows.native():
        paths += ["generic", "auto"] + (["avx2"] if _has_avx2() else [])
    low = np.uint32((1 << 11) - 1)  # a 1,024-bit CLK's k
    for rows, width in ((1, 1024), (2, 64), (3, 72), (5, 13)):
        mat = rng.integers(top - 3, top, (37, width), dtype=dtype, endpoint=True)
        mat[::5] = rng.integers(0, top, (8, width), dtype=dtype, endpoint=True)
        vecs = rng.integers((1 << 32) - 5, 1 << 32, (rows, width), dtype=np.uint32)
        vecs[:, ::3] = rng.integers(0, 1 << 32, (rows, (width + 2) // 3), dtype=np.uint32)
        want = standingrows.numpy_rows_times(vecs, mat)
        assert (want == _exact(vecs, mat)).all()
        for path in paths:
            got = standingrows.rows_times(vecs, mat, path=path)
            assert got.dtype == np.uint32 and (got == want).all(), path
            assert ((got & low) == (_exact(vecs & low, mat & low) & low)).all(), path
        if dtype is np.uint32:
            other = rng.integers(0, 1 << 32, mat.shape, dtype=np.uint32)
            both = standingrows.numpy_rows_times(vecs, mat + other)
            for path in paths:
                assert (standingrows.rows_times(vecs, mat, other, path) == both).all(), path


def _has_avx2() -> bool:
    try:
        standingrows.rows_times(np.ones((1, 8), np.uint32), np.ones((1, 8), np.uint32),
                                path="avx2")  # fmt: skip
    except ValueError:
        return False
    return True


def test_a_product_with_regenerated_mask_shares_is_the_kept_shares_product() -> None:
    """`stream_times` (C's M_B from both seeds, a server's [M_B] from its own, a slice at a
    time, never stored) is the product with `standing.mask_share`'s matrices, on a chunk of
    records that is not a multiple of the slice."""
    rng = np.random.default_rng(4)
    seeds, widths, rows = (bytes(range(32)), bytes(32)), (64, 128), standingrows.SLICE * 2 + 7
    vecs = [rng.integers(0, 1 << 32, (2, w), dtype=np.uint32) for w in widths]
    shares = [standing.mask_share(seed, 5, rows, widths) for seed in seeds]
    both = standingrows.stream_times(seeds, 5, rows, widths, vecs)
    one = standingrows.stream_times(seeds[:1], 5, rows, widths, vecs)
    for c in range(2):
        assert (
            both[c] == standingrows.numpy_rows_times(vecs[c], shares[0][c] + shares[1][c])
        ).all()
        assert (one[c] == standingrows.numpy_rows_times(vecs[c], shares[0][c])).all()


def test_servers_regenerating_their_mask_share_answer_as_when_they_keep_it(
    encoded: list[list[Clks]],
) -> None:
    """Each server's [M_B] forgotten after the conversion (`Partner.forget_mask`) and
    regenerated from its seed at the query: the same link bits as kept, on a partner of more
    than one chunk, with 8,192 bytes a record fewer kept at two 1,024-bit CLKs."""
    a, b = encoded
    b = [np.vstack([x] * 27) for x in b]  # 1,080 records: two chunks
    s, partners = _partner(b)
    q = [x[:2] for x in a]
    kept = _query(s, partners, q)
    before = [p.bytes_kept() for p in partners]
    for side in partners:
        side.forget_mask()
    assert [x - p.bytes_kept() for x, p in zip(before, partners, strict=True)] == [
        8192 * len(b[0])
    ] * 2
    assert (_query(s, partners, q) == kept).all() and kept[0].sum() >= 2 * 27
