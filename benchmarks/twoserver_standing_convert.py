"""A standing partner's one-off conversion alone (core/standing.py `convert`, every party in
this process): its CPU a record by role, the process's user and system time, page faults,
wall and peak RSS (convspeed; docs/performance.md "The standing conversion's CPU a record"),
and its bytes a record each way (`linkbit.Transcript`'s count; bytes32).

    .venv/bin/python benchmarks/twoserver_standing_convert.py [--partner-records 64000]
        [--seed 1] [--numpy] [--repeat 1] [--split]

The partner: N records of two 1,024-bit CLKs of uniform bits (a conversion's cost does not
depend on the bits), XOR-shared, their popcounts split as an upload's; C's mask seeds fixed
(`standing.deal`'s `seeds`), so D_B and each server's [M_B] are the same bytes on any code and
their digest (printed) tells two runs converted alike. `--numpy`: ring64's numpy path (the
native daBit kernels of core/dabitslices.py left out, `ring64._NATIVE` None). Each role's CPU
is `process_time` around its steps (user and system); the process's user and system time and
minor page faults are `getrusage`'s over the conversion. `--split`: the CPU a record of each
step, user and system (`getrusage` of the thread around each function: C's deals, each
server's daBits set up from its setup, its first message, its converted shares, its D_B share
and opening, the rest of `convert`). Exit 1 where D_B + M_B is not the
bits or a record's popcount shares do not sum to its popcount.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from blindmatch.client.encoding import sharing
from blindmatch.matcher.core import linkbit, ring64, standing
from blindmatch.matcher.core.margincircuit import plan
from blindmatch.matcher.domain import Rule

RULE = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json's
CUTOFFS = (0.8, 0.85, 0.9, 0.95)
WIDTHS = (1024, 1024)
ROLES = ("S1", "S2", "C")
WAYS = (("C", "S1"), ("C", "S2"), ("S1", "S2"), ("S2", "S1"))
STEPS = {  # (module, function): the step, every role's calls together
    (ring64, "deal"): "C: the daBits' deals (both seeds' streams, S2's explicit values)",
    (ring64.Party, "__init__"): "S1+S2: a deal's setup read (the seeds' streams, numpy's path)",
    (ring64.Party, "first"): "S1+S2: the first message (bits masked, the pads)",
    (ring64.Party, "converted"): "S1+S2: the converted shares and the check's digest",
    (standing, "_d_share"): "S1+S2: [M_B]'s stream and the share of D_B",
    (standing, "_opened"): "S1+S2: D_B opened",
}


def _split(spent: dict[str, list[float]]) -> Callable[[], None]:
    """Each of STEPS timed (user, system: the thread's `getrusage`); the undo."""
    undo = []
    for (owner, name), label in STEPS.items():
        f = getattr(owner, name)

        def timed(*args: object, _f: Any = f, _label: str = label, **kw: object) -> object:
            r0 = resource.getrusage(resource.RUSAGE_THREAD)
            try:
                return _f(*args, **kw)
            finally:
                r1 = resource.getrusage(resource.RUSAGE_THREAD)
                got = spent.setdefault(_label, [0.0, 0.0])
                got[0] += r1.ru_utime - r0.ru_utime
                got[1] += r1.ru_stime - r0.ru_stime

        setattr(owner, name, timed)
        undo.append((owner, name, f))

    def restore() -> None:
        for owner, name, f in undo:
            setattr(owner, name, f)

    return restore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partner-records", type=int, default=64000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--numpy", action="store_true", help="ring64's numpy path")
    parser.add_argument("--repeat", type=int, default=1, help="conversions, one after another")
    parser.add_argument("--split", action="store_true", help="the CPU a record by step")
    args = parser.parse_args()
    if args.numpy and hasattr(ring64, "_NATIVE"):
        ring64._NATIVE = None
    n, rng = args.partner_records, np.random.default_rng(args.seed)
    clks = [rng.integers(0, 256, (n, w // 8), dtype=np.uint8) for w in WIDTHS]
    shares = [sharing.split_shares(x) for x in clks]
    split = [linkbit.split_popcounts(sharing.popcounts(x), 8 * x.shape[1]) for x in clks]
    p = plan(WIDTHS[0], WIDTHS[1], CUTOFFS, RULE)
    path = "numpy" if getattr(ring64, "_NATIVE", None) is None else "native slices"
    print(f"a standing partner of {n:,} records, CLKs of {WIDTHS} bits, ring64's path: {path}; "
          f"load {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)  # fmt: skip
    ok = True
    for k in range(args.repeat):
        clock: dict[str, float] = {}
        spent: dict[str, list[float]] = {}
        restore = _split(spent) if args.split else (lambda: None)
        t = linkbit.Transcript()
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        s = standing.deal(n, WIDTHS, (bytes(range(32)), bytes(range(1, 33))))
        sides = standing.convert(s, p, ([x[0] for x in shares], [x[1] for x in shares]),
                                 ([x[0] for x in split], [x[1] for x in split]), t,
                                 clock)  # fmt: skip
        wall, r1 = time.perf_counter() - w0, resource.getrusage(resource.RUSAGE_SELF)
        restore()
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        digest = hashlib.sha256()
        for c, x in enumerate(clks):
            bits = np.unpackbits(x, axis=1, bitorder="little").astype(np.uint32)
            low = np.uint32((1 << sides[0].levels(c)) - 1)
            ok = ok and bool(((sides[0].d[c] + sides[0].mask[c] + sides[1].mask[c]) & low
                              == bits).all())  # fmt: skip
            pops = bits.sum(axis=1)
            ok = ok and bool((sides[0].pops[c] + sides[1].pops[c] == pops).all())
            ok = ok and bool((sides[0].arith_pops[c] + sides[1].arith_pops[c] == pops).all())
            for a in (sides[0].d[c], sides[0].mask[c], sides[1].mask[c]):
                digest.update(a.tobytes())
        roles = ", ".join(f"{r} {1e3 * clock.get(r, 0.0) / n:.3f}" for r in ROLES)
        print(f"  conversion {k}: CPU ms a record {roles} (all "
              f"{1e3 * sum(clock.values()) / n:.3f}); process user {user:.1f} s, system "
              f"{system:.1f} s ({1e3 * (user + system) / n:.3f} ms a record), minor faults "
              f"{r1.ru_minflt - r0.ru_minflt:,}; wall {wall:.1f} s; peak RSS "
              f"{r1.ru_maxrss / 1024:,.0f} MiB; D_B, [M_B] digest {digest.hexdigest()[:16]}; "
              f"the clear's bits and popcounts: {ok}", flush=True)  # fmt: skip
        ways = ", ".join(f"{a}->{b} {t.sent.get((a, b), 0) / n:,.0f}" for a, b in WAYS)
        print(f"    bytes a record on the wire: {sum(t.sent.values()) / n:,.0f} ({ways})")
        for label, (u, sy) in spent.items():
            print(f"    {label}: user {1e3 * u / n:.3f}, system {1e3 * sy / n:.3f} ms a record")
        if spent:
            u, sy = (user - sum(v[0] for v in spent.values()),
                     system - sum(v[1] for v in spent.values()))  # fmt: skip
            print(f"    the rest (C's mask seeds, the popcounts' daBits outside these, the kept "
                  f"arrays filled): user {1e3 * u / n:.3f}, system {1e3 * sy / n:.3f} ms a "
                  f"record")  # fmt: skip
        del sides
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
