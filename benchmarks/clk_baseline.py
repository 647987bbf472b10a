"""The baseline printed beside a two-server view's attack (`--clk-baseline` of
benchmarks/twoserver.py and benchmarks/twoserver_queries.py; a part of them, not a script):
the graph-matching attack (client/tools/privacy/graphcheck.py `graph_attacks`, what
`privacy-check` runs on a CLK project) on the CLKs the same records would upload to a matcher
in a CLK project, the same project secret, blind and with the same known pairs; the
attacker's plaintext restricted to the attacked records' people (its plaintext on them, full
overlap: the CLK check's own setting)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from blindmatch.client.encoding.harden import NONE
from blindmatch.client.tools.privacy.graphcheck import graph_attacks

Member = tuple[Sequence[Sequence[str]], Sequence[Any]]


def report(
    schema: Any,
    victim: Member,
    attacker: Member,
    secret: bytes,
    known: Sequence[int],
    attacker_key: bytes | None = None,
) -> None:
    """Print the graph-matching attack's share of `victim`'s records re-identified from their
    CLKs (record-level and fallback, as uploaded), at each of `known`."""
    (v_rows, v_people), (u_rows, u_people) = victim, attacker
    held = set(v_people)
    keep = [k for k, p in enumerate(u_people) if p in held]
    t0 = time.process_time()
    results = graph_attacks(
        schema,
        v_rows,
        [u_rows[k] for k in keep],
        list(v_people),
        [u_people[k] for k in keep],
        secret,
        NONE,
        known=known,
        attacker_secret=attacker_key,
    )
    print(
        f"baseline, the same {len(v_rows):,} records' CLKs as a CLK project uploads them "
        f"(privacy-check's graph matching, the attacker's plaintext on {len(keep):,} of them):"
    )
    for r in results:
        print(
            f"  CLK {r.attack:<26} {r.record_share:>7.2%}  ({r.records_reidentified} of "
            f"{r.records}; {r.public_list})"
        )
    print(f"  ({time.process_time() - t0:.0f} CPU s)", flush=True)
