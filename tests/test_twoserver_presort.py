"""S1 sorts each upload's band keys as it arrives, off the request path (matcher/rpc/
twoserver_presort.py, core/twoblocking.py `Sealed.presort`): a join finds them sorted, each
band range is sorted once however many joins ask for it at once, the join's matches are the
lazily sorted join's, and uploads restored at start are sorted too. A query's few records
are looked up band by band in the partner's keys (`looked_up`), sorting nothing, with the
matches the sorted join finds."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import twoblocking
from blindmatch.matcher.core.twoblocking import BAND_STEP, Sealed, matched_keys
from blindmatch.matcher.rpc.twoserver_presort import Presorter
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role

MEMBER_KEY = "the members' key"
PLAN = client.BandPlan(bits=20, bands=150)  # three band ranges of BAND_STEP (64)


def sealed(clks: npt.NDArray[np.uint8]) -> Sealed:
    """A member's record-level sealed band keys as S1 holds them."""
    b = client.shared_upload(clks, b"secret", PLAN).s1.bands[0]
    return Sealed(b.counts, b.keys, b.classes, b.sealed)


def people(rng: np.random.Generator, n: int) -> npt.NDArray[np.uint8]:
    return rng.integers(0, 256, (n, 128), dtype=np.uint8)


def test_presorted_keys_join_as_the_lazily_sorted_ones() -> None:
    rng = np.random.default_rng(1)
    base = people(rng, 300)
    noisy = base.copy()
    noisy[:, :4] ^= 1  # the same people, a few bits apart: many shared band keys
    a, presorted, lazy = sealed(base[:50]), sealed(noisy), sealed(noisy)
    assert len(presorted.ranges()) == 3 and presorted.ranges()[0] == (0, BAND_STEP)
    assert presorted.presort() == 3
    assert presorted.presort() == 0  # each range once
    # a uint32 order and uint32 token offsets (the sorted keys, 8 bytes a key more, were kept
    # too: now gathered by the order for each join)
    assert presorted.token_offsets().dtype == np.uint32
    assert presorted.kept_bytes() == 4 * len(presorted.keys) + 4 * (len(presorted.keys) + 1)
    assert lazy.kept_bytes() == 0
    got, want = matched_keys(a, presorted), matched_keys(a, lazy)
    assert len(got[0]) > 50
    assert all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))
    lazy.token_offsets()  # (a join's, not matched_keys')
    assert lazy.kept_bytes() == presorted.kept_bytes()  # the lazy join kept the same


def test_joins_at_once_sort_each_range_once_and_get_the_same_order() -> None:
    b = sealed(people(np.random.default_rng(2), 2000))
    got: list[object] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        got.append(b.sorted_keys(0, BAND_STEP))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g[0] is got[0][0] for g in got)  # one sort, kept
    order, keys = b.sorted_keys(0, BAND_STEP)
    assert np.array_equal(keys, np.sort(b.keys[: b.ends[BAND_STEP]]))
    assert np.array_equal(b.keys[order], keys)
    assert not order.flags.writeable


def test_a_presort_no_longer_wanted_stops() -> None:
    b = sealed(people(np.random.default_rng(3), 200))
    assert b.presort(wanted=lambda: False) == 0
    assert b.kept_bytes() == 0


@pytest.mark.parametrize("seed", range(4))
def test_a_few_records_are_looked_up_band_by_band_sorting_nothing(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    base = people(rng, 400)
    noisy = base ^ (rng.random(base.shape) < 0.01).astype(np.uint8)
    query, partner = sealed(noisy[: int(rng.integers(1, 20))]), sealed(base)
    got = matched_keys(query, partner)  # at most 1/16 of the partner's keys: looked up
    assert partner.kept_bytes() == 0  # nothing sorted, nothing waited for
    monkeypatch.setattr(twoblocking, "LOOKUP_SHARE", 0.0)  # the sorted join
    want = matched_keys(query, partner)
    assert partner.kept_bytes() > 0
    assert len(got[0]) and all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_key_matches_in_its_own_band_only(share: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """b: band 0 keys 1, 5; band 1 keys 3, 5. a: band 0 key 5, band 1 key 1 (b's band 0's)."""
    monkeypatch.setattr(twoblocking, "LOOKUP_SHARE", share)  # 0: sorted; 1: looked up

    def keys(counts: list[int], values: list[int]) -> Sealed:
        classes = np.zeros(len(values), np.uint8)  # a slot, two copies: 32 bytes a key
        return Sealed(np.array(counts, np.int64), np.array(values, np.uint64), classes,
                      np.zeros(32 * len(values), np.uint8))  # fmt: skip

    ia, ib = matched_keys(keys([1, 1], [5, 1]), keys([2, 2], [1, 5, 3, 5]))
    assert ia.tolist() == [0] and ib.tolist() == [1]


def send(roles: dict[str, RunningRole], member: str, up: client.SharedUpload) -> None:
    for role, running in roles.items():
        with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as c:
            assert c.upload(member, up) == len(up)


def start(key: str, data_dir: Path | None = None) -> dict[str, RunningRole]:
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY,
                     data_dir=None if data_dir is None else data_dir / "s2")  # fmt: skip
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=None if data_dir is None else data_dir / "s1")  # fmt: skip
    return {"s2": s2, "s1": s1}


def kept(s1: RunningRole) -> dict[str, int]:
    """Each upload's sorted keys S1 keeps, in bytes, once its sorts are done."""
    presorter = s1.service.presorter
    assert presorter is not None and presorter.wait(60)
    return {name: sum(s.kept_bytes() for s in h.sealed) for name, h in s1.service.held.items()}


def test_s1_sorts_an_upload_as_it_arrives_and_a_restored_one_at_start(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    key = secrets.token_urlsafe(16)
    roles = start(key, tmp_path)
    try:
        for member in ("north", "south"):
            send(roles, member, client.shared_upload(people(rng, 300), b"s", PLAN))
        sizes = kept(roles["s1"])
        assert sorted(sizes) == ["north", "south"] and all(sizes.values())
        # A replaced upload's sort is the new one's.
        send(roles, "south", client.shared_upload(people(rng, 100), b"s", PLAN))
        assert kept(roles["s1"])["south"] < sizes["south"]
    finally:
        for running in roles.values():
            running.stop(grace=None)
    roles = start(key, tmp_path)  # the same data dirs: the uploads restored, then sorted
    try:
        restored = kept(roles["s1"])
        assert sorted(restored) == ["north", "south"] and all(restored.values())
        assert roles["s2"].service.presorter is None  # S2 sorts nothing
    finally:
        for running in roles.values():
            running.stop(grace=None)


def test_a_closed_presorter_sorts_nothing_more() -> None:
    presorter = Presorter()
    b = sealed(people(np.random.default_rng(5), 200))
    presorter.close()
    presorter.submit("north", (b,), lambda: True)
    assert presorter.wait(5) and b.kept_bytes() == 0  # a join sorts what it needs


def test_a_lookup_finds_each_key_in_its_own_slice_or_nowhere() -> None:
    """`looked_up` against a search of each slice by hand: empty slices (first, last and
    between), slices of one key, keys below, between and above a slice's, an empty `kb`."""
    rng = np.random.default_rng(7)
    sizes = [0, 1, 0, 5, 1, 300, 2, 0]
    kb = np.concatenate([np.sort(rng.choice(1000, n, replace=False)) for n in sizes])
    kb = kb.astype(np.uint64)
    ends = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    slice_of = np.repeat(np.arange(len(sizes)), 40)
    ka = rng.integers(0, 1000, len(slice_of)).astype(np.uint64)
    ka[::3] = [kb[rng.integers(ends[i], ends[i + 1])] if sizes[i] else 1 for i in slice_of[::3]]
    found, where = twoblocking.looked_up(ka, ends[slice_of], ends[slice_of + 1], kb)
    want = [(i, ends[s] + k) for i, s in enumerate(slice_of)
            for k in np.flatnonzero(kb[ends[s] : ends[s + 1]] == ka[i])]  # fmt: skip
    assert list(zip(found.tolist(), where.tolist(), strict=True)) == want and len(want) > 40
    none = twoblocking.looked_up(ka, np.zeros(len(ka), np.int64), np.zeros(len(ka), np.int64),
                                 np.empty(0, np.uint64))  # fmt: skip
    assert len(none[0]) == len(none[1]) == 0
