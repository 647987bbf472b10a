"""Attacks from the outside security review (issue 16) by someone on the matcher's host or
at a member's machine, each mounted against a real matcher and real files, and shown to
do no harm now."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.faults import Server, free_port
from benchmarks.knownclks import CLK_BITS, FINGERPRINT, population, write
from blindmatch.client import MatcherClient
from tests.support import HOUR, Clock, start

CLKS = population(1, 60, 0.0, seed=16)[0].clks


def index_puts(start: int, n: int) -> list[tuple[str, bytes]]:
    return [(f"r{i}", CLKS[i].tobytes()) for i in range(start, start + n)]


def found_in_data_dir(data_dir: Path, clks: list[bytes]) -> list[str]:
    """Every file of the data dir holding any of `clks`, byte for byte (as `grep -r` would)."""
    found = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        content = path.read_bytes()
        hits = sum(1 for clk in clks if clk in content)
        if hits:
            found.append(f"{path.relative_to(data_dir)}: {hits} of {len(clks)} CLKs")
    return found


# -- 3. erasure and expiry leave no encoding on disk -----------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", free_port(), "bm_admin_" + secrets.token_hex(8))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_an_erased_index_and_upload_leave_no_clk_in_any_file(
    served: Server, tmp_path: Path
) -> None:
    with MatcherClient(served.target, served.admin_token) as op:
        tokens = op.create_project("p", ["north", "south"]).tokens
    puts = index_puts(0, 40)
    uploaded = population(1, 20, 0.0, seed=61)[0]
    with MatcherClient(served.target, tokens["north"]) as north:
        north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
        north.change_index("p", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, removes=["r0"])
        north.upload("p", write(uploaded, tmp_path / "north.encoded"))
    erased = [clk for _, clk in puts] + [row.tobytes() for row in uploaded.clks]
    assert found_in_data_dir(served.data_dir, erased)  # the test can see them when present

    with MatcherClient(served.target, tokens["north"]) as north:
        north.erase("p")
    assert found_in_data_dir(served.data_dir, erased) == []  # at once, the server running
    served.kill()  # SIGKILL right after the acknowledgement: nothing left to flush
    assert found_in_data_dir(served.data_dir, erased) == []
    served.start()  # a restart replays whatever SQLite kept
    try:
        assert found_in_data_dir(served.data_dir, erased) == []
        with MatcherClient(served.target, tokens["north"]) as north:
            assert north.list_index("p") == {}
    finally:
        served.stop()
    assert found_in_data_dir(served.data_dir, erased) == []


@pytest.mark.server
def test_an_expired_projects_index_leaves_no_clk_in_any_file(tmp_path: Path) -> None:
    clock = Clock()
    matcher = start(tmp_path / "data", clock)
    try:
        with matcher.operator() as op:
            tokens = op.create_project(
                "short", ["north", "south"], expires_unix=int(clock.now + HOUR)
            ).tokens
        puts = index_puts(0, 40)
        with matcher.member(tokens["north"]) as north:
            north.change_index("short", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
        indexed = [clk for _, clk in puts]
        assert found_in_data_dir(matcher.data_dir, indexed)
        clock.advance(2 * HOUR)
        assert matcher.server.sweeper.sweep() == ["short"]
        deadline = time.monotonic() + 10  # the index goes on the sweep's own hook
        while found_in_data_dir(matcher.data_dir, indexed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found_in_data_dir(matcher.data_dir, indexed) == []
    finally:
        matcher.server.stop(grace=None)
    assert found_in_data_dir(matcher.data_dir, indexed) == []
