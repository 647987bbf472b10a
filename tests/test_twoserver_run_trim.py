"""S1's and S2's freed heap given back through a run over real gRPC roles on loopback
(rpc/twoserver_trim.py, docs/performance.md "S1's memory through a two-server run
(2026-12-07)"): after the proposal, after each block of a part's blocks and after each batch,
so that the temporaries of a block or a batch run on one of gRPC's threads do not stay in
the server's resident memory. Reuses tests/test_twoserver_blocks.py's roles and uploads
(three members, every pair unblocked, each part by blocks)."""

from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import denseblock
from blindmatch.matcher.rpc import twoserver_trim
from blindmatch.matcher.rpc.twoserver_service import RunningRole
from tests.test_twoserver_blocks import drive, entries, every_part_by_blocks, roles, upload
from tests.test_twoserver_blocks import uploads as uploads  # the fixtures

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("every_part_by_blocks")]
_FIXTURES = (every_part_by_blocks, roles)


def test_a_run_gives_back_each_servers_freed_heap_after_each_block_and_each_call(
    tmp_path: Path, roles: dict[str, RunningRole], uploads: list[client.SharedUpload],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Blocks of at most 32 rows (each part's cut into several): S1 and S2 each trim before
    every block of a part but its first (the one before's let go), and after each call of
    the run that makes large temporaries (Propose, each part's PrepareBlocks and
    BlockExchange, each batch's Evaluate and Exchange; S2's Expand too where S1 joins, none
    here); the links those with no trim.
    (Before: no trim at all, and a thread that ran a block or a batch kept its temporaries.)"""
    monkeypatch.setattr(denseblock, "ROWS", 32)
    upload(roles, uploads)
    monkeypatch.setattr(twoserver_trim, "TRIM", False)
    untrimmed = drive(roles, uploads, dense=True)
    monkeypatch.setattr(twoserver_trim, "TRIM", True)
    trims: Counter[str] = Counter()
    trim = twoserver_trim.trim

    def counted() -> None:
        caller = inspect.stack()[1]
        if caller.function == "party":
            trims["block"] += 1
        else:  # a call's handler, by name (`trimmed`'s wrapper called `_after`)
            trims[inspect.stack()[2].frame.f_locals["method"].__name__] += 1
        trim()  # (the real malloc_trim on glibc)

    monkeypatch.setattr(twoserver_trim, "trim", counted)
    upload(roles, uploads)  # (each pair is evaluated once an upload)
    got = drive(roles, uploads, dense=True)
    for name in ("dset", "row", "partner", "partner_row", "score"):
        assert np.array_equal(getattr(got.links, name), getattr(untrimmed.links, name)), name
    assert got.groups == untrimmed.groups and got.comparisons == 23_400
    # this run's parts' blocks, as S1 audited them (the second run's half of the entries)
    logged = entries(tmp_path, "s1", "twoserver.blocks")
    parts = [e["blocks"] for e in logged[len(logged) // 2 :]]
    blocks = sum(len(b) for b in parts)  # type: ignore[arg-type, misc]
    assert blocks > len(parts) >= 3  # several blocks a part
    assert trims["block"] == 2 * (blocks - len(parts))  # S1 and S2, each block but a part's first
    # S1's Propose, a PrepareBlocks (S1) and a BlockExchange (S2) a part, each batch's
    # Evaluate (S1) and Exchange (S2)
    batches = trims["Evaluate"]  # S1's of each batch, S2's Exchange of it
    assert batches >= len(parts) and trims["Exchange"] == batches
    # no join here (every pair unblocked): no Expand
    assert trims == {"block": 2 * (blocks - len(parts)), "Propose": 1, "Evaluate": batches,
                     "Exchange": batches, "PrepareBlocks": len(parts),
                     "BlockExchange": len(parts)}, trims  # fmt: skip
