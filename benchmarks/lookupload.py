"""What loading a look-up server without a data dir costs (`lookup-server --key-file`).

    .venv/bin/python benchmarks/lookupload.py [--records 250000] [--members 2] [--servers 2]

`blindmatch serve` with `--servers` look-up server processes that have no data dir (as on
other machines: a copy of the matcher's lookup.key only). `--members` members each index
`--records` synthetic CLKs (benchmarks/synthclks.py) through the matcher (which loaded
the servers, empty, at its start). Then every server is killed and started again, empty:
the first query finds them so and the matcher loads them, at once, from its memory
(`Load`, rpc/lookup_client.py): printed, how long a change made during those loads took to
be acknowledged (it does not wait for them: it is replayed to the servers after), the
seconds from that query to the first one answered, and what the matcher's log says of each
load (records, seconds: from gathering the rows in the matcher to the server's index
built). Then one server is killed and started again, empty, and re-loaded: the time a
restarted server is away. The anchor is a look-up server reading the same shards from the
matcher's index.sqlite (`--data-dir`, on the matcher's machine), timed from its start to
its first answered query.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import Served, lookup_server, serve
from benchmarks.ports import on_free_addresses
from benchmarks.synthclks import CLK_BITS, members
from blindmatch.client import MatcherClient

FINGERPRINT = b"lookup-load benchmark fingerprint"[:32]
PURPOSE = "benchmark"
PUT_CHUNK = 50_000


def answered(served: Served, token: str, clk: np.ndarray, lines: int) -> float:
    """Seconds until a query is answered through the look-up servers: until the matcher's
    log has `lines` lines in all saying a server was loaded or has read its shards again
    (meanwhile queries are answered from the matcher's own copy of the indexes, asked every
    0.05 s; by a matcher from before that, refused while a server was loaded or read)."""
    started = time.perf_counter()
    meanwhile: list[float] = []  # the walls of the queries answered before that, and after
    with MatcherClient(served.target, token) as client:

        def ask() -> float:
            asked = time.perf_counter()
            client.query(
                "bench", clk.tobytes(), clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                purpose=PURPOSE,
            )  # fmt: skip
            return time.perf_counter() - asked

        while True:
            try:
                took = ask()
                if len(ready(served)) >= lines:
                    done = time.perf_counter() - started
                    after = sorted(ask() for _ in range(20))
                    print(f"    {walls(sorted(meanwhile))} answered meanwhile; through the "
                          f"servers after: {walls(after)}")  # fmt: skip
                    return done
                meanwhile.append(took)
            except Exception as exc:
                if "being loaded" not in str(exc) and "being read" not in str(exc):
                    raise
            time.sleep(0.05)


def walls(times: list[float]) -> str:
    """Sorted query walls, as `N queries: p50 X ms, max Y ms`."""
    if not times:
        return "0 queries"
    return (f"{len(times)} queries: p50 {times[len(times) // 2] * 1e3:.1f} ms, max "
            f"{times[-1] * 1e3:.1f} ms")  # fmt: skip


def ready(served: Served) -> list[str]:
    """The matcher's log lines saying a look-up server was loaded or has read its shards
    again (seen: a search it answered, or its state)."""
    return [line for line in list(served.log)
            if re.search(r"loaded with |has read its shards again", line)]  # fmt: skip


def loads(served: Served) -> list[str]:
    return [
        m.group(0)
        for line in list(served.log)
        if (m := re.search(r"shard \d+ of \d+\) loaded with .*", line))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=250_000, help="per member")
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--servers", type=int, default=2)
    args = parser.parse_args()
    names = [f"m{i}" for i in range(args.members)]
    clks = members(args.members, args.records, overlap=0.1, seed=3)
    print(
        f"lookupload: {args.members} members x {args.records:,} CLKs of {CLK_BITS} bits, "
        f"{args.servers} look-up servers",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        asked, token = loaded(data, Path(tmp), names, clks, args.servers)
        anchor(data, asked, token, args.servers)


def loaded(
    data: Path, tmp: Path, names: list[str], clks: list[np.ndarray], of: int
) -> tuple[np.ndarray, str]:
    """Index through a matcher whose servers have no data dir; time their loads."""
    key_file = tmp / "lookup.key"

    def enter(group: ExitStack, addresses: list[str]) -> tuple[list[str], Served, list[Served]]:
        served = group.enter_context(
            serve(data, *[a for address in addresses for a in ("--lookup-server", address)])
        )
        key_file.write_text((data / "lookup.key").read_text())
        key_file.chmod(0o600)
        servers = [
            group.enter_context(lookup_server(data, f"{i}/{of}", listen=address, key_file=key_file))
            for i, address in enumerate(addresses)
        ]
        return addresses, served, servers

    with ExitStack() as stack:
        # Ports picked before the matcher starts: it makes the lookup.key its servers need (one
        # taken meanwhile: all stopped, picked again; a restart below comes back on the same
        # port, after the kill).
        addresses, served, servers = stack.enter_context(on_free_addresses(of, enter))
        with MatcherClient(served.target, served.admin_token) as op:
            tokens = op.create_project("bench", [*names, "asker"], disclosure="scores").tokens
            op.set_query_limits("bench", per_minute=1_000_000, per_day=1_000_000)
        started = time.perf_counter()
        for name, rows in zip(names, clks, strict=True):
            with MatcherClient(served.target, tokens[name]) as member:
                for start in range(0, len(rows), PUT_CHUNK):
                    part = range(start, min(start + PUT_CHUNK, len(rows)))
                    member.change_index(
                        "bench", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                        puts=[(f"{name}-{i}", rows[i].tobytes()) for i in part],
                    )  # fmt: skip
        total = sum(len(rows) for rows in clks)
        print(f"  indexed {total:,} records in {time.perf_counter() - started:.1f} s", flush=True)
        asked = clks[0][0]
        for i, server in enumerate(servers):  # every server back empty: loaded again
            server.process.kill()
            server.process.wait(timeout=30)
            servers[i] = stack.enter_context(
                lookup_server(data, f"{i}/{of}", listen=addresses[i], key_file=key_file)
            )
        at_start, seen = len(loads(served)), len(ready(served))
        started = time.perf_counter()
        with MatcherClient(served.target, tokens["asker"]) as client:
            try:  # finds the servers empty: starts their loads (answered from the matcher's copy)
                client.query(
                    "bench", asked.tobytes(), clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                    purpose=PURPOSE,
                )  # fmt: skip
            except Exception as exc:
                if "being loaded" not in str(exc):
                    raise
        written = time.perf_counter()
        with MatcherClient(served.target, tokens[names[0]]) as member:
            member.change_index(
                "bench", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                puts=[(f"{names[0]}-during-load", clks[0][0].tobytes())],
            )  # fmt: skip
        print(
            f"  a change made during the loads acknowledged in "
            f"{time.perf_counter() - written:.3f} s"
        )
        answered(served, tokens["asker"], asked, seen + of)
        first = time.perf_counter() - started
        print(f"  answered through every server after {first:.2f} s (each loaded, at once):")
        for line in loads(served)[at_start:]:
            print(f"    {line}")
        seen = len(ready(served))
        servers[-1].process.kill()
        servers[-1].process.wait(timeout=30)
        stack.enter_context(
            lookup_server(data, f"{of - 1}/{of}", listen=addresses[-1], key_file=key_file)
        )
        again = answered(served, tokens["asker"], asked, seen + 1)
        print(f"  a restarted server (shard {of - 1} of {of}) answered again after {again:.2f} s:")
        print(f"    {loads(served)[-1]}")
        return asked, tokens["asker"]


def anchor(data: Path, asked: np.ndarray, token: str, of: int) -> None:
    """The same shards read from index.sqlite by servers on the matcher's machine, timed
    from their start to the first query answered."""

    def enter(group: ExitStack, addresses: list[str]) -> Served:
        served = group.enter_context(
            serve(data, *[a for address in addresses for a in ("--lookup-server", address)])
        )
        for i, address in enumerate(addresses):
            group.enter_context(lookup_server(data, f"{i}/{of}", listen=address))
        return served

    # Ports picked before the matcher starts (one taken meanwhile: all stopped, picked again).
    with on_free_addresses(of, enter) as served:
        took = answered(served, token, asked, of)
        print(
            f"  anchor: {of} servers reading index.sqlite (--data-dir, the matcher's machine) "
            f"answered {took:.2f} s after they listened (they read in parallel)"
        )


if __name__ == "__main__":
    main()
