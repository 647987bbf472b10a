"""Real-time queries against the in-process standing index vs 1 and 2 look-up servers.

    .venv/bin/python benchmarks/lookupservers.py [--records 250000] [--queries 1000]

Three members each index `--records` realistic CLKs (benchmarks/realclks.py: the default
schema's record-level CLKs, slices of the cached 1,000,000 x 1,000,000 pair, as
`cluster.py index` uses them); a fourth asks `--queries` of B's records one at a time
(half of them people the first member holds), through `blindmatch serve` as a separate
process, with a unary `Query` each (the client in this process). The same data dir is
served three ways in turn: the indexes in the matcher's process (today's default), then
the matcher with one look-up server holding every shard (`--shard 0/1`), then with two
(`0/2`, `1/2`), each a `blindmatch lookup-server` process reading the data dir.

The three take turns, `--rounds` times, so that the machine's other load falls on each
alike. Printed for each: the query's wall time as the client sees it (p50, p99), and CPU a
query: the matcher's and the look-up servers', from /proc (utime + stime of each process
over the measured queries, divided by the queries). On a 2-core host shared with other
jobs, spreading memory and CPU over machines cannot show; what this measures is what the
hop costs: the latency a query keeps (or loses) when its look-up moves out of the
matcher's process, and the CPU the fan-out and merge add. The answers are compared
(partners, refs, scores) across the three.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import Served, lookup_server, serve
from benchmarks.ports import on_free_addresses
from blindmatch.client import MatcherClient

MEMBERS = ("m0", "m1", "m2")
ASKER = "asker"
FINGERPRINT = b"lookup-servers benchmark fprint!"
CLK_BITS = 1024
PURPOSE = "benchmark"
PUT_CHUNK = 50_000


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def data(records: int, queries: int, size: int = 1_000_000) -> tuple[list[np.ndarray], np.ndarray]:
    """Three members' CLKs (A's first slice, B's first, A's second) and the queries: B's
    rows past its indexed slice, half of them people the first member holds."""
    from benchmarks.realclks import realistic_pair

    pair = realistic_pair(size, size)
    if 2 * records > len(pair.a):
        raise SystemExit(f"--records: at most {size // 2:,} (two slices of A's {size:,})")
    indexed = [pair.a[:records], pair.b[:records], pair.a[records : 2 * records]]
    held = pair.truth_b[(pair.truth_a < records) & (pair.truth_b >= records)][: queries // 2]
    rest = np.setdiff1d(np.arange(records, len(pair.b)), pair.truth_b)[: queries - len(held)]
    return [np.ascontiguousarray(m) for m in indexed], pair.b[np.concatenate([held, rest])]


def load(served: Served, members: list[np.ndarray]) -> dict[str, str]:
    """The project, and every member's index, through the matcher; the asker's token."""
    with MatcherClient(served.target, served.admin_token) as op:
        tokens = op.create_project("bench", [*MEMBERS, ASKER], disclosure="scores").tokens
        op.set_query_limits("bench", per_minute=1_000_000, per_day=1_000_000)
    for name, clks in zip(MEMBERS, members, strict=True):
        with MatcherClient(served.target, tokens[name]) as member:
            for start in range(0, len(clks), PUT_CHUNK):
                rows = range(start, min(start + PUT_CHUNK, len(clks)))
                member.change_index(
                    "bench",
                    clk_bits=CLK_BITS,
                    fingerprint=FINGERPRINT,
                    puts=[(f"{name}-{i}", clks[i].tobytes()) for i in rows],
                )
    return tokens


Answer = list[tuple[str, tuple[str, ...], tuple[float, ...]]]


def measure(
    served: Served, token: str, queries: np.ndarray, lookups: Sequence[Served]
) -> tuple[list[float], float, float, list[Answer]]:
    """Wall seconds of each query, CPU seconds a query (matcher, look-up servers), answers."""
    with MatcherClient(served.target, token) as client:

        def ask(clk: np.ndarray) -> Answer:
            for _ in range(600):  # a look-up server still reading its shards says so
                try:
                    answer = client.query(
                        "bench", clk.tobytes(), clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                        purpose=PURPOSE,
                    )  # fmt: skip
                    return [(m.partner, m.refs, m.scores) for m in answer.results[0]]
                except Exception as exc:
                    if "is being read" not in str(exc):
                        raise
                    time.sleep(0.5)
            raise RuntimeError("the look-up servers never finished reading their shards")

        for clk in queries[:100]:  # warm up: connections, the servers' first look-ups
            ask(clk)
        # A server the matcher asked to read its shards again (each configuration's start:
        # its servers are not those of the last) has its shards searched in the matcher's own
        # copy until the matcher has seen it done: measured after that.
        for _ in range(600):
            log = list(served.log)
            if sum("has read its shards again" in line for line in log) >= sum(
                "reads its shards again from index.sqlite" in line for line in log
            ):
                break
            ask(queries[0])
            time.sleep(0.1)
        pids = [served.process.pid, *(s.process.pid for s in lookups)]
        before = [cpu_seconds(p) for p in pids]
        times, answers = [], []
        for clk in queries:
            t0 = time.perf_counter()
            answers.append(ask(clk))
            times.append(time.perf_counter() - t0)
        used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    n = len(queries)
    return times, used[0] / n, sum(used[1:]) / n, answers


@contextmanager
def configuration(data_dir: Path, servers: int) -> Iterator[tuple[Served, list[Served]]]:
    """The matcher on `data_dir` with `servers` look-up servers (0: in-process)."""

    def enter(stack: ExitStack, addresses: list[str]) -> tuple[Served, list[Served]]:
        extra = [a for address in addresses for a in ("--lookup-server", address)]
        served = stack.enter_context(serve(data_dir, *extra))
        lookups = [
            stack.enter_context(lookup_server(data_dir, f"{i}/{servers}", listen=address))
            for i, address in enumerate(addresses)
        ]
        return served, lookups

    # Ports picked before the matcher starts (one taken meanwhile: all stopped, picked again).
    with on_free_addresses(servers, enter) as (served, lookups):
        yield served, lookups


def pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=250_000, help="per member (3 members)")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=2, help="each configuration in turn")
    parser.add_argument("--data-dir", type=Path, help="(default: a temporary folder)")
    parser.add_argument("--pair", type=int, default=1_000_000, metavar="N",
                        help="the cached realistic N x N pair the slices are cut from "
                        "(a smaller one for a quick run: it is encoded on first use)")  # fmt: skip
    args = parser.parse_args()
    import tempfile

    load_avg: Callable[[], str] = lambda: " ".join(f"{x:.1f}" for x in os.getloadavg())  # noqa: E731
    print(
        f"lookupservers: 3 members x {args.records:,} realistic CLKs, {args.queries:,} "
        f"queries one at a time; load average {load_avg()}",
        flush=True,
    )
    members, queries = data(args.records, args.queries, args.pair)
    labels = {0: "in-process", 1: "1 look-up server", 2: "2 look-up servers"}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        times: dict[str, list[float]] = {label: [] for label in labels.values()}
        cpu: dict[str, list[float]] = {label: [0.0, 0.0] for label in labels.values()}
        answered: dict[str, list[Answer]] = {}
        started = time.perf_counter()
        # Indexed in a session of its own: every configuration measured starts from the
        # indexes as index.sqlite holds them (no delta, no merge running).
        with configuration(data_dir, 0) as (served, _):
            tokens = load(served, members)
        print(f"  indexed in {time.perf_counter() - started:.0f} s", flush=True)
        for round_ in range(args.rounds):  # in turn, so that the load falls on each alike
            for servers, label in labels.items():
                with configuration(data_dir, servers) as (served, lookups):
                    took, matcher_cpu, lookup_cpu, answers = measure(
                        served, tokens[ASKER], queries, lookups
                    )
                times[label] += took
                cpu[label][0] += matcher_cpu / args.rounds
                cpu[label][1] += lookup_cpu / args.rounds
                answered.setdefault(label, answers)
                print(
                    f"  round {round_ + 1} {label:>17}: wall p50 {pct(took, 0.5) * 1e3:6.2f} ms, "
                    f"p99 {pct(took, 0.99) * 1e3:7.2f} ms; CPU a query: matcher "
                    f"{matcher_cpu * 1e3:.2f} ms, look-up servers {lookup_cpu * 1e3:.2f} ms; "
                    f"{sum(1 for a in answers if a)} queries with hits; load {load_avg()}",
                    flush=True,
                )
        base = labels[0]
        print(f"all rounds ({args.rounds} x {len(queries):,} queries each):")
        for label in labels.values():
            same = [
                k for k, (x, y) in enumerate(zip(answered[label], answered[base], strict=True))
                if x == y
            ]  # fmt: skip
            total, base_total = sum(cpu[label]), sum(cpu[base])
            print(
                f"  {label:>17}: wall p50 {pct(times[label], 0.5) * 1e3:6.2f} ms "
                f"(x{pct(times[label], 0.5) / pct(times[base], 0.5):.2f}), p99 "
                f"{pct(times[label], 0.99) * 1e3:6.2f} ms "
                f"(x{pct(times[label], 0.99) / pct(times[base], 0.99):.2f}); CPU a query "
                f"{total * 1e3:.2f} ms (matcher {cpu[label][0] * 1e3:.2f}, look-up servers "
                f"{cpu[label][1] * 1e3:.2f}; x{total / base_total:.2f}); answers equal to "
                f"in-process: {len(same):,} of {len(queries):,}"
            )
            for k in sorted(set(range(len(queries))) - set(same))[:3]:
                print(f"    query {k}: {answered[label][k]} vs in-process {answered[base][k]}")


if __name__ == "__main__":
    main()
