"""Each party's link-bit circuits are built ahead at start-up (core/circuitwarm.py), so that
a first run or query finds them built: the calls a run's combiner and S1 and S2 make for
them are then answered from the cache (counted by the caches themselves, not timed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from blindmatch.client.remote.client import MatcherClient
from blindmatch.matcher.core import circuitwarm, gmwcircuit, gmwrule
from blindmatch.matcher.core.circuitwarm import Shape
from blindmatch.matcher.core.twoblocking import FALLBACK, RECORD
from blindmatch.matcher.core.twoserver import Combiner
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from tests.support import ADMIN_TOKEN

RULE = Rule(gap=0.25, offset=0.03, reach=0.01)


def built_ahead(shape: Shape, threshold: float) -> bool:
    """Whether every circuit a run at `threshold` on uploads of `shape` asks for is built."""
    caches = (gmwcircuit.circuit, gmwrule.rule_circuit)
    misses = [c.cache_info().misses for c in caches]
    c = Combiner(None, threshold, clks=len(shape.bits), rule=shape.rule)
    second = shape.bits[FALLBACK] if len(shape.bits) == 2 else 0
    c.circuit(shape.bits[RECORD], RECORD, second)
    assert c.reach is not None
    c.reach_circuit(shape.bits[RECORD], RECORD, second)
    if second:
        c.circuit(second, FALLBACK)
        c.reach_circuit(second, FALLBACK)
    return [c.cache_info().misses for c in caches] == misses


def test_the_circuits_of_each_threshold_and_shape_are_built_ahead() -> None:
    shapes = [Shape((256,)), Shape((128, 192), RULE)]
    assert not built_ahead(Shape((256,)), 0.7)  # (the first asks build it)
    assert circuitwarm.build(shapes, [0.75, 0.75, 0.85]) == 4
    for shape in shapes:
        for threshold in (0.75, 0.85):
            assert built_ahead(shape, threshold)
    # A threshold no run can have is passed over, the others built.
    assert circuitwarm.build([Shape((64,))], [0.0, 0.9]) == 1


def test_a_role_builds_the_default_runs_circuits_as_it_starts() -> None:
    gmwcircuit.circuit.cache_clear()
    s2 = create_role("s2", "127.0.0.1:0", "the key", "the members' key")
    try:
        deadline = time.monotonic() + 120
        while any(t.name == "bm-circuits" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the circuits were not built"
            time.sleep(0.05)
        assert built_ahead(Shape(), 0.8)
    finally:
        s2.stop(grace=None)


def circuits_built(seconds: float = 120) -> None:
    """Wait for every circuit-building thread (`warm`'s) to end."""
    deadline = time.monotonic() + seconds
    while any(t.name == "bm-circuits" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the circuits were not built"
        time.sleep(0.05)


def test_a_two_server_project_created_after_the_start_has_its_circuits_built_then(
    tmp_path: Path,
) -> None:
    """The matcher builds its live two-server projects' circuits as it starts; one created
    later has them built on a thread as it is created (servicer `CreateProject`), not by its
    first query, at its threshold (here none of the start's) on the recommended shape; a CLK
    project's creation builds none."""
    setup = combiner_setup("127.0.0.1:1", "127.0.0.1:2", "the key", "the members' key")
    server = create_server("127.0.0.1:0", tmp_path / "matcher", ADMIN_TOKEN, two_server=setup)
    try:
        circuits_built()
        for cache in (gmwcircuit.circuit, gmwrule.rule_circuit):
            cache.cache_clear()
        with MatcherClient(f"127.0.0.1:{server.port}", ADMIN_TOKEN) as op:
            op.create_project("clks", ["north", "south"], threshold=0.85, mode="clk")
            circuits_built()
            assert not built_ahead(Shape(), 0.85)
            for cache in (gmwcircuit.circuit, gmwrule.rule_circuit):
                cache.cache_clear()
            op.create_project("shares", ["north", "south"], threshold=0.85, mode="two-server")
        circuits_built()
        assert built_ahead(Shape(), 0.85)
    finally:
        server.stop(grace=None)
