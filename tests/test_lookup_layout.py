"""A look-up server and the layout and state of the data dir it reads, after its start: a
re-read the matcher asks for (`Reload`) of a store a newer blindmatch wrote since is refused,
naming the file and both layouts, and the matcher says so and answers from its own copy
(before: the server read it anyway); and a look-up server reading a stopped matcher's data dir
leaves it byte for byte (before: its read-only SQLite reader made a -wal and a -shm beside
each database), while one reading a serving matcher's reads through its WAL."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthclks import CLK_BITS
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.errors import Unavailable
from blindmatch.matcher.rpc.lookup_client import LookupServers
from blindmatch.matcher.rpc.lookup_service import create_lookup_server
from blindmatch.matcher.storage import index_store
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.matcher.storage.shard_source import lookup_key
from tests.support import Clock, files_of, set_layout, start
from tests.test_lookup_behind import fail_once
from tests.test_lookup_servers import (
    ROWS,
    Cluster,
    answers,
    clks,
    once_read,
    project_of,
    put,
    query,
    refs_of,
    remove,
    sharded,
)

pytestmark = pytest.mark.server
__all__ = ["clks", "sharded"]  # (fixtures shared with that module)

NEWER = index_store.LAYOUT + 1


def test_a_reread_of_an_index_a_newer_blindmatch_wrote_is_refused_and_the_matcher_says_so(
    sharded: Cluster, clks: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    """Look-up server 1 misses south's remove (its apply fails) after index.sqlite became a
    newer blindmatch's layout (the matcher upgraded, the server not). Asked to read its
    shards again, it refuses, naming the file and both layouts (before: it read them from a
    store it does not know); it keeps what it held, answers no search from it, and the matcher
    keeps it behind, says why (its log, a search without its own copy) and answers queries
    from its own copy. Once the store is one it knows again, it reads them and is asked."""
    matcher = sharded.matcher
    server = sharded.lookups[1]
    assert matcher is not None and server is not None
    tokens = project_of(matcher).tokens
    put(matcher, tokens["south"], "south", clks[1], range(ROWS))
    asked = clks[0][0:20]
    before = answers(once_read(matcher, tokens["north"], asked))
    assert [r[0][1] for r in before] == [(f"south-{i}",) for i in range(20)]
    held = server.shards.records
    index = DataDir(sharded.data_dir).index_db
    set_layout(index, NEWER)
    fail_once(server.shards)
    remove(matcher, tokens["south"], refs_of("south", range(20)))
    remote = matcher.server.realtime.remote
    assert isinstance(remote, LookupServers) and remote.behind() == [remote._name(1)]
    caplog.set_level(logging.INFO)
    assert answers(query(matcher, tokens["north"], asked)) == [[]] * 20  # (its own copy)
    assert answers(query(matcher, tokens["north"], asked)) == [[]] * 20
    newer = (
        f"{index}: store layout {NEWER}, written by a newer blindmatch; this one knows layout "
        f"{index_store.LAYOUT} and older. The look-up server does not read its shards from it"
    )
    words = as_words(asked.tobytes(), CLK_BITS)
    with pytest.raises(Unavailable) as refused:  # (without the matcher's copy: refused)
        remote.search("trial", ["south"], words, 0.8)
    said = str(refused.value)
    assert said.startswith(f"{remote._name(1)} missed an index change and refused to read")
    assert newer in said and "upgrade its blindmatch to the matcher's" in said
    warned = [r.getMessage() for r in caplog.records if r.name == "blindmatch.matcher"]
    assert len([m for m in warned if newer in m]) == 1  # (once, not at every query)
    on_server = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len([m for m in on_server if newer in m]) == 1
    assert server.shards.records == held  # kept, not searched
    with pytest.raises(Unavailable, match="written by a newer blindmatch"):
        server.shards.search("trial", ["south"], words, 0.8)
    set_layout(index, index_store.LAYOUT)  # (the matcher's blindmatch put back, say)
    assert answers(once_read(matcher, tokens["north"], asked)) == [[]] * 20
    assert remote.behind() == [] and not server.shards.failed


def _stopped(data_dir: Path, rows: int) -> tuple[np.ndarray, dict[str, str]]:
    """A data dir a matcher served (south's index of `rows` records put), the matcher
    stopped, and its look-up key made: south's CLKs, and the members' tokens."""
    found = np.random.default_rng(5).integers(0, 256, (rows, CLK_BITS // 8), dtype=np.uint8)
    matcher = start(data_dir, Clock())
    try:
        tokens = project_of(matcher).tokens
        put(matcher, tokens["south"], "south", found, range(rows))
    finally:
        matcher.server.stop(grace=None)
    lookup_key(data_dir)  # (a look-up server makes it, where the matcher has not)
    return found, tokens


def _beside(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if p.name.endswith(("-wal", "-shm")))


def test_a_look_up_server_leaves_a_stopped_data_dir_byte_for_byte(tmp_path: Path) -> None:
    """Read at its start and read again (as a Reload has it): nothing made beside the
    databases, nothing changed in them (before: a -wal and a -shm beside each)."""
    data_dir = tmp_path / "d"
    _stopped(data_dir, 40)
    before = files_of(data_dir)
    running = create_lookup_server("127.0.0.1:0", data_dir, 0, 1, wait=True)
    try:
        assert running.shards.ready and running.shards.records == 40
        running.shards.reload(wait=True)
        assert running.shards.ready and running.shards.records == 40
    finally:
        running.stop(None)
    assert files_of(data_dir) == before


def test_a_look_up_server_reads_a_serving_matchers_changes_through_its_wal(
    tmp_path: Path,
) -> None:
    """Started on a stopped data dir (read as immutable); then its matcher starts and stores
    changes it does not forward (they sit in index.sqlite's WAL): a read asked for then sees
    them (an immutable read would not); the matcher stopped, a read leaves nothing beside."""
    data_dir = tmp_path / "d"
    south, tokens = _stopped(data_dir, 40)
    running = create_lookup_server("127.0.0.1:0", data_dir, 0, 1, wait=True)
    try:
        assert running.shards.records == 40 and _beside(data_dir) == []
        matcher = start(data_dir, Clock())
        try:
            put(matcher, tokens["west"], "west", south, range(25))
            assert "index.sqlite-wal" in _beside(data_dir)  # (held in the WAL)
            running.shards.reload(wait=True)
            assert running.shards.ready and running.shards.records == 65
        finally:
            matcher.server.stop(grace=None)
        assert _beside(data_dir) == []
        running.shards.reload(wait=True)
        assert running.shards.ready and running.shards.records == 65
        assert _beside(data_dir) == []
    finally:
        running.stop(None)
