"""S1's memory for a run's join (docs/performance.md "S1's memory at a run's start
(2026-12-06)"): each pair of members' and CLK's pairs of tokens made when S2's stream takes
them and let go before the next, and one join's own arrays a small multiple of what it returns.
S2's for the stream (docs/performance.md "S2's Expand opens each message as it comes
(2026-12-06)"): each message's tokens opened and let go as it comes. Counted (objects alive,
bytes traced), not timed."""

from __future__ import annotations

import gc
import mmap
import re
import secrets
import threading
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver_parts import upload_parts
from blindmatch.matcher.core import twoblocking, twoserver
from blindmatch.matcher.rpc import twoserver_peers
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import MESSY_SECRET, auth

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


@pytest.mark.server
def test_s2_opens_each_expand_message_as_it_comes(
    messy_members: tuple[list[npt.NDArray[np.uint8]], int],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """S1's stream to a real S2's Expand (loopback gRPC) for three members on two CLKs, in
    messages of 4,096 pairs of tokens: S2's traced peak over the call stays under a quarter
    of the stream's tokens (main kept every message's to the last: 1.16 times them), its
    pairs are those the tokens open to (core/twoblocking.py `expand` over them all at once,
    as main's S2 made them, where S2 makes each part's distinct every 4,096 opened), and a
    stream whose last message is bad is refused as before, with no record of an expansion."""
    monkeypatch.setattr(twoserver_peers, "MATCHES_PART", 1 << 12)
    datasets, bits = messy_members
    ups = uploads(datasets, bits, client.BandPlan(bits=8, bands=100))
    s1 = twoserver.BlockingServer([u.s1.bands for u in ups], [u.s1.shares for u in ups], b"")
    names = ["north", "south", "east"]
    run = pb.ProposeRequest(members=names, records=[len(d) for d in datasets], fallback=True)
    stream = list(twoserver_peers.matches_parts(run, s1.join(2)))
    tokens = sum(len(m.tokens_a) + len(m.tokens_b) for m in stream)
    want = twoblocking.expand(
        [twoblocking.Matched(m.member_a, m.member_b, m.clk,
                             np.frombuffer(m.tokens_a, np.uint8).reshape(-1, 16),
                             np.frombuffer(m.tokens_b, np.uint8).reshape(-1, 16))
         for m in stream[1:]],
        [u.s2.seal_key for u in ups], [len(d) for d in datasets], 2,
    )  # fmt: skip
    assert sum(len(m.tokens_a) for m in stream) // 16 < twoblocking.OPENED_PAIRS  # (no merge)
    monkeypatch.setattr(twoblocking, "OPENED_PAIRS", 1 << 12)  # S2's: merged many times
    key, member_key = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    s2 = create_role("s2", "127.0.0.1:0", key, member_key, data_dir=tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{s2.port}") as ch:
            stub = pb_grpc.TwoServerSharesStub(ch)
            for name, u in zip(names, ups, strict=True):
                stub.Upload(iter(upload_parts(name, "s2", u)), metadata=auth(member_key))
            list(stub.Expand(iter(stream[:2]), metadata=auth(key)))  # (warm)
            for thread in threading.enumerate():  # S2's circuits built ahead, not counted
                if thread.name == "bm-circuits":
                    thread.join()
            gc.collect()
            tracemalloc.start()
            try:
                held, _ = tracemalloc.get_traced_memory()
                out = list(stub.Expand(iter(stream), metadata=auth(key)))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            bad = pb.SealedMatches(member_a=0, member_b=1, clk=2, tokens_a=b"", tokens_b=b"")
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.Expand(iter([*stream, bad]), metadata=auth(key)))
        assert s2.service.audit is not None
        expansions = [e for e in s2.service.audit.log.entries() if e.action == "twoserver.expand"]
    finally:
        s2.stop()
    got = twoserver_peers.read_expanded(iter(out), "S2")
    assert len(stream) > 200 and tokens > 24 << 20
    assert peak - held < tokens // 4, (peak - held, tokens)
    assert [(b.member_a, b.member_b, b.clk) for b in got] == [
        (b.member_a, b.member_b, b.clk) for b in want
    ]
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.rows_a, w.rows_a) and np.array_equal(g.rows_b, w.rows_b)
    assert sum(len(b) for b in got) > 10_000
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"clk (message {len(stream)}): 2 of 2" in (refused.value.details() or "")
    assert len(expansions) == 2  # the warm-up's and the stream's, none for the refused one
