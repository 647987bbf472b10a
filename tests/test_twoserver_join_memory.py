"""S1's memory for a run's join (docs/performance.md "S1's memory at a run's start
(2026-12-06)"): each pair of members' and CLK's pairs of tokens made when S2's stream takes
them and let go before the next, and one join's own arrays a small multiple of what it returns.
Counted (objects alive, bytes traced), not timed."""

from __future__ import annotations

import gc
import mmap
import re
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import twoblocking, twoserver
from blindmatch.matcher.rpc import twoserver_peers
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import MESSY_SECRET

PLAN = client.BandPlan(bits=12, bands=40)


def uploads(
    datasets: list[npt.NDArray[np.uint8]], bits: int, plan: client.BandPlan = PLAN
) -> list[Any]:
    return [client.shared_upload(d, MESSY_SECRET, plan, bits) for d in datasets]


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """Every object alive before the test moved out of the collector's reach (gc.freeze): the
    test's `gc.collect()` then walks only what the test made, which is all it needs freed (a
    join's arrays). Late in the suite a worker holds millions of objects, and each full
    collection of them took seconds (6 of them: 28 s of a loaded run, 1 s alone)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_s1_streams_one_join_at_a_time_to_s2(
    messy_members: tuple[list[npt.NDArray[np.uint8]], int],
    monkeypatch: pytest.MonkeyPatch,
    frozen_heap: None,
) -> None:
    """What S1 streams to S2's Expand for three members on two CLKs (six joins): when each
    join starts, no earlier one is alive (a list of them all held every one to the end), and
    the stream's tokens are every join's, in order."""
    datasets, bits = messy_members
    ups = uploads(datasets, bits)
    s1 = twoserver.BlockingServer([u.s1.bands for u in ups], [u.s1.shares for u in ups], b"")
    alive: list[weakref.ref[twoblocking.Matched]] = []
    when: list[int] = []
    made: list[tuple[int, int, int, int]] = []
    real = twoserver.join

    def counted(*args: Any, **kwargs: Any) -> twoblocking.Matched:
        gc.collect()
        when.append(sum(r() is not None for r in alive))
        m = real(*args, **kwargs)
        alive.append(weakref.ref(m))
        made.append((m.member_a, m.member_b, m.clk, len(m)))
        return m

    monkeypatch.setattr(twoserver, "join", counted)
    sent: dict[tuple[int, int, int], int] = {}
    for msg in twoserver_peers.matches_parts(pb.ProposeRequest(), s1.join(2)):
        if not msg.HasField("run"):
            key = (msg.member_a, msg.member_b, msg.clk)
            sent[key] = sent.get(key, 0) + len(msg.tokens_a) // twoblocking.TOKEN_BYTES
    assert len(when) == 6 and when == [0] * 6
    assert sent == {(x, y, clk): n for x, y, clk, n in made if n}


def test_a_join_holds_under_twice_the_tokens_it_returns(
    messy_members: tuple[list[npt.NDArray[np.uint8]], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One join's peak of traced bytes, its keys' sorts and offsets made before: under twice
    the pairs of tokens it returns (32 bytes a pair; made JOIN_PAIRS at a time, here a few
    thousand so that a small join is made in many steps as a large one is); the index arrays
    it made whole took it to 3 times here, 4.4 at 1,500 households a member."""
    monkeypatch.setattr(twoblocking, "JOIN_PAIRS", 1 << 12, raising=False)
    datasets, bits = messy_members
    plan = client.BandPlan(bits=8, bands=100)  # short keys: many pairs of tokens a key
    bands = [u.s1.bands[0] for u in uploads(datasets[:2], bits, plan)]
    a, b = (twoblocking.Sealed(s.counts, s.keys, s.classes, s.sealed) for s in bands)
    for s in (a, b):
        s.presort()
    twoblocking.matched_keys(a, b)  # (warm: numpy's own first-call allocations not counted)
    tracemalloc.start()
    try:
        matched = twoblocking.join(0, 1, 0, a, b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    returned = matched.tokens_a.nbytes + matched.tokens_b.nbytes
    assert len(matched) > 100_000
    assert peak < 2 * returned, (peak, returned)


def _rss_file() -> int:
    """The process's resident pages mapped from files, in bytes (Linux)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"RssFile:\s+(\d+) kB", status)[1]) << 10  # type: ignore[index]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
def test_a_join_drops_the_mapped_tokens_it_read(
    messy_members: tuple[list[npt.NDArray[np.uint8]], int], tmp_path: Path
) -> None:
    """Each upload's tokens mapped from a file, as S1 holds them: after the stream to S2 the
    process's resident file pages have not grown by the tokens the joins read (they did by
    all of them: the pages stayed in S1's RSS to the end of the run)."""
    datasets, bits = messy_members
    ups = uploads(datasets, bits, client.BandPlan(bits=12, bands=200))
    s1 = twoserver.BlockingServer([u.s1.bands for u in ups], [u.s1.shares for u in ups], b"")
    for _ in twoserver_peers.matches_parts(pb.ProposeRequest(), s1.join(2)):
        pass  # (warm: the code's own pages resident first)
    mapped = []
    for k, u in enumerate(ups):
        member = []
        for c, b in enumerate(u.s1.bands):
            path = tmp_path / f"tokens{k}.{c}"
            path.write_bytes(np.ascontiguousarray(b.sealed).tobytes())
            with open(path, "rb") as fh:
                tokens = np.frombuffer(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
            member.append(twoblocking.Sealed(b.counts, b.keys, b.classes, tokens))
        mapped.append(member)
    s1 = twoserver.BlockingServer(mapped, [u.s1.shares for u in ups], b"")
    size = sum(c.sealed.nbytes for m in mapped for c in m)
    before = _rss_file()
    for _ in twoserver_peers.matches_parts(pb.ProposeRequest(), s1.join(2)):
        pass
    assert size > 8 << 20
    assert _rss_file() - before < size // 4, (_rss_file() - before, size)
