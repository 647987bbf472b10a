"""Each party's link-bit circuits are built ahead at start-up (core/circuitwarm.py), so that
a first run or query finds them built: the calls a run's combiner and S1 and S2 make for
them are then answered from the cache (counted by the caches themselves, not timed)."""

from __future__ import annotations

import threading
import time

from blindmatch.matcher.core import circuitwarm, gmwcircuit, gmwrule
from blindmatch.matcher.core.circuitwarm import Shape
from blindmatch.matcher.core.twoblocking import FALLBACK, RECORD
from blindmatch.matcher.core.twoserver import Combiner
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_service import create_role

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
