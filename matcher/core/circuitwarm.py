"""Each party's link-bit circuits built ahead, at start-up, so that the first run or query of
a process does not pay for them (docs/realtime.md "The first query after an upload").

A circuit is built once a process for its widths, cut-offs and rule (`gmwcircuit.circuit`,
`gmwrule.rule_circuit`: cached), about 0.1-0.2 s CPU for the first at 1,024 bits, which the
first batch of C, S1 and S2 each paid before. `warm` builds, on a thread of its own, the
circuits a run or a query at each threshold would build on uploads of each shape (the
combiner's `Combiner.circuit` and `reach_circuit` on each CLK: the same calls, so the same
cache entries): the matcher's from its two-server projects' thresholds and current uploads,
S1's and S2's from the uploads they hold (at S1's own threshold when it has one), the
recommended shape at the default threshold when there is none; and the matcher's again for
a two-server project created or uploaded to after its start (rpc/servicer.py). A call that
needs a circuit before the thread has built it builds it itself, as it did before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from blindmatch.matcher.core.twoblocking import FALLBACK, RECORD
from blindmatch.matcher.core.twoserver import Combiner
from blindmatch.matcher.domain import DEFAULT_THRESHOLD, NO_RULE, Rule, counted

log = logging.getLogger("blindmatch.matcher")

RECOMMENDED_BITS = (1024, 1024)  # an upload of the recommended schema: a CLK and a fallback


@dataclass(frozen=True)
class Shape:
    """An upload's CLK widths (one, or a CLK and its fallback) and the gap rule it carries."""

    bits: tuple[int, ...] = RECOMMENDED_BITS
    rule: Rule = NO_RULE


def build(shapes: Iterable[Shape], thresholds: Iterable[float]) -> int:
    """Build the circuits of a run and a query at each threshold on uploads of each shape
    (each once a process); how many distinct (threshold, shape) were built. A threshold or
    shape no run could have (no integer form of the kernel's test) is passed over."""
    done = 0
    for threshold in sorted(set(thresholds)):
        for shape in sorted(set(shapes), key=repr):
            try:
                _build(shape, threshold)
            except ValueError as exc:
                log.debug("link-bit circuits at %s on %s not built ahead: %s", threshold,
                          shape, exc)  # fmt: skip
                continue
            done += 1
    return done


def _build(shape: Shape, threshold: float) -> None:
    clks = len(shape.bits)
    rule = shape.rule if clks == 2 else NO_RULE
    c = Combiner(None, threshold, clks=clks, rule=rule)
    second = shape.bits[FALLBACK] if clks == 2 else 0
    c.circuit(shape.bits[RECORD], RECORD, second)
    if c.reach is not None:
        c.reach_circuit(shape.bits[RECORD], RECORD, second)
    if clks == 2:
        c.circuit(second, FALLBACK)
        if c.reach is not None:
            c.reach_circuit(second, FALLBACK)


def warm(
    who: str, shapes: Iterable[Shape] = (), thresholds: Iterable[float] = ()
) -> threading.Thread:
    """`build` on a daemon thread of its own, started (`who` names the party in the log);
    no shapes: the recommended one; no thresholds: the default."""
    shapes = list(shapes) or [Shape()]
    thresholds = list(thresholds) or [DEFAULT_THRESHOLD]

    def run() -> None:
        start = time.thread_time()
        try:
            built = build(shapes, thresholds)
        except Exception:  # a warm-up never stops a party: the first call builds it
            log.exception("%s: link-bit circuits not built ahead", who)
            return
        circuits = counted(built, "link-bit circuit")
        log.info("%s: %s (a threshold and upload shape each) built ahead in %.0f ms CPU", who,
                 circuits, 1000 * (time.thread_time() - start))  # fmt: skip

    thread = threading.Thread(target=run, name="bm-circuits", daemon=True)
    thread.start()
    return thread


__all__ = ["RECOMMENDED_BITS", "Shape", "build", "warm"]
