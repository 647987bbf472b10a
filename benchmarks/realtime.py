"""Real-time query latency: one-record queries against partners' standing indexes.

Starts `blindmatch serve` as its own process on loopback, gives three partners a
standing index of N CLKs each through ChangeIndex (the same RPC `blindmatch
index sync` uses), then has 20 concurrent queriers (one channel each, in this process)
ask single-record queries, half of them noisy copies of indexed records
(hits) and half fresh random CLKs (no hits), and prints p50/p95/p99 latency. It also
checks every planted hit is found, and that an index change is visible to the very
next query. The measured runs follow an unmeasured warm-up of 3,000 queries (`--warm-up`),
printed on a line of its own, so the rounds measure a service that has been running rather
than one just started (the matcher warms up its look-ups before it listens; the client's
channels and threads are new too). Each round is run once for each way of asking in
`--clients` (default `async,calls`): over an `AsyncQuerySession` per querier (coroutines of
one event loop), and by one `MatcherClient.query` call a question (threads); `session` adds
threads with a `MatcherClient.query_session` each.

    .venv/bin/python benchmarks/realtime.py                      # 3 x 1,000,000 records
    .venv/bin/python benchmarks/realtime.py --records 100000 --queries 20
    .venv/bin/python benchmarks/realtime.py --clks random        # uniformly random CLKs
    .venv/bin/python benchmarks/realtime.py --rates 200,400      # and open loops at 200, 400/s
    .venv/bin/python benchmarks/realtime.py --matcher-cpus 0 --client-cpus 1   # apart
    .venv/bin/python benchmarks/realtime.py --lookup-threads 0   # no thread placement
    .venv/bin/python benchmarks/realtime.py --restart   # measure a matcher restarted on its data
    .venv/bin/python benchmarks/realtime.py --data-dir /dev/shm/bm   # fsync costs nothing there
    .venv/bin/python benchmarks/realtime.py --record-level   # cached 1M record-level CLKs
    .venv/bin/python benchmarks/realtime.py --cached-pair    # the same people, default layout

Every answered query is in the audit log, durably, before its answer leaves (a group
commit: one fsync for the queries that arrived together; docs/security.md). The matcher
reports, when it stops, how many audit entries it wrote in how many such commits; running
once with the data dir on a disk and once on a tmpfs (`--data-dir /dev/shm/...`, where an
fsync costs nothing) measures what that durability costs the query latency.

By default (`--clks realistic`) the CLKs are real clkhash encodings under the default schema,
as `blindmatch encode` uploads them (benchmarks/realclks.py, `realistic_pair(..., whole=True)`:
2,048 bits, a 1,024-bit record-level CLK followed by a 1,024-bit fallback CLK), indexed with
`fallback_bits` as `blindmatch index sync` sends them, so the matcher searches them half by
half under the fallback rule (matcher/core/fallbackindex.py). `--clks synthetic` uses
synthetic person encodings (benchmarks/synthclks.py: 1,024 bits, field values from Zipf-like
tables, about 39% of bits set, as clkhash output), the planted hits the same people
re-encoded with typos in one or two fields (Dice about 0.85-0.95), the misses people no
partner holds. `--clks random` uses uniformly random 1024-bit strings instead (50% of bits
set, hits with 3% of bits flipped), as the first measurements did.

With `--lookup-queries` (the default) it also times the look-up alone in this process and
prints, for each run, the matcher's CPU a query less that: its serving overhead (gRPC, the
checks, disclosure, the audit write, the reply). `--record-level` serves the cached
record-level encodings (1,024 bits, no fallback CLK) of benchmarks/realclks.py's 1,000,000 x
1,000,000 pair, which need no encoding at any size up to 1,000,000; `--cached-pair` serves
the same people's whole CLKs (the default layout, fallback CLK included) from that pair's
cache (`benchmarks/realclks.py 1000000 1000000` makes it once).

The indexes and queries carry `--schema`'s `blindmatch.rule` (default schemas/person-uk.json,
the default schema, which has one) as `blindmatch index sync` and `blindmatch query` send it
(IndexHeader.rule, QueryRequest.rule), and the planted hits are those the rule scores at 0.8;
`--schema schemas/person-uk-no-rule.json` indexes and asks without it (the first CLKs' Dice
alone, as before the rule), the A/B of what the rule costs served (CLKs are the same bits).

The load average is printed around each run: the machine's cores are shared, and the
client (this process) runs on the same cores as the matcher unless `--matcher-cpus` and
`--client-cpus` keep them apart (the client's from after loading). Within its CPUs the
matcher places its own threads (request handling on one core, look-ups on the others:
matcher/placement.py); `--lookup-threads 0` turns that off, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import Served, blindmatch, serve
from benchmarks.synthclks import Population
from blindmatch.client import MatcherClient, QueryAnswer
from blindmatch.client.remote.session import AsyncQuerySession
from blindmatch.matcher.core import fallback
from blindmatch.matcher.core.fallbackindex import FallbackSnapshot
from blindmatch.matcher.core.index import as_words, merge_point
from blindmatch.matcher.domain import Rule

# The synthetic and random CLKs' length (no fallback CLK); realistic ones are the default
# schema's (`RealPartner.clk_bits`, `fallback_bits`).
CLK_BITS = 1024
ROOT = Path(__file__).resolve().parent.parent
FINGERPRINT = bytes(range(32))
# The schema's `blindmatch.rule` (gap, offset, reach) the indexes and queries carry, as
# `blindmatch index sync` and `blindmatch query` send it (IndexHeader.rule, QueryRequest.rule);
# None: none (one CLK a pair). Set from `--schema` before any partner is made.
SCORE_RULE: tuple[float, float, float] | None = None
PARTNERS = ("north", "south", "east")
QUERIER = "west"


def random_clks(rng: np.random.Generator, n: int, clk_bits: int = CLK_BITS) -> np.ndarray:
    return rng.integers(0, 256, size=(n, clk_bits // 8), dtype=np.uint8)


def rule_dice(a: np.ndarray, b: np.ndarray, clk_bits: int, fallback_bits: int) -> np.ndarray:
    """Score of each row pair (CLK bytes) as the matcher scores it: Dice of the whole CLKs, or
    with a fallback CLK of the fallback CLKs when either record lacks the date of birth, of the
    first CLKs otherwise (`core.fallback.on_fallback`), by `SCORE_RULE` over both CLKs' Dice
    when it is set (S from D1 and D2)."""

    def dice(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        both = np.bitwise_count(x & y).sum(axis=1)
        total = np.bitwise_count(x).sum(axis=1) + np.bitwise_count(y).sum(axis=1)
        return 2 * both / np.maximum(total, 1)

    if not fallback_bits:
        return dice(a, b)
    cut = (clk_bits - fallback_bits) // 8
    lacks = [fallback.lacking(x[:, :cut], x[:, cut:]) for x in (a, b)]
    d1, d2 = dice(a[:, :cut], b[:, :cut]), dice(a[:, cut:], b[:, cut:])
    if SCORE_RULE is not None:
        d1 = Rule(*SCORE_RULE).score(d1, d2)
    return np.where(fallback.on_fallback(*lacks), d2, d1)


def noisy(rng: np.random.Generator, clks: np.ndarray, flip: float) -> np.ndarray:
    """Copies with about `flip` of their bits flipped (Dice stays well above 0.8 at 0.03)."""
    bits = np.unpackbits(clks, axis=1)
    bits ^= (rng.random(bits.shape) < flip).astype(np.uint8)
    return np.packbits(bits, axis=1)


class Partner:
    """One partner's indexed CLKs, and how to make a hit or a miss against them.

    Synthetic partners share one population (one schema and secret): partner k holds
    people k*n .. (k+1)*n - 1, and the last 100,000 people are held by no one.
    """

    clk_bits = CLK_BITS
    fallback_bits = 0

    def __init__(self, kind: str, n: int, k: int, population: Population | None, seed: int):
        self.kind = kind
        self.n = n
        self.first = k * n
        self.population = population
        self.rng = np.random.default_rng(seed)
        if population is not None:
            people = self.first + np.arange(n)
            self.clks = population.encode(people, self.rng, np.zeros(n, dtype=bool))
        else:
            self.clks = random_clks(self.rng, n)

    def hit(self) -> np.ndarray:
        row = int(self.rng.integers(0, self.n))
        if self.population is not None:
            person = np.array([self.first + row])
            return self.population.encode(person, self.rng, np.ones(1, dtype=bool))[0]
        return noisy(self.rng, self.clks[row : row + 1], 0.03)[0]

    def miss(self) -> np.ndarray:
        if self.population is not None:
            person = self.population.n - 1 - int(self.rng.integers(0, 100_000))
            return self.population.encode(np.array([person]), self.rng, np.zeros(1, bool))[0]
        return random_clks(self.rng, 1)[0]


class RealPartner:
    """One partner's indexed CLKs from real clkhash encodings (benchmarks/realclks.py): the
    whole CLKs the default schema uploads, with its fallback CLK when it has one.

    north holds member A of `realistic_pair(n, 20,000, seed 1)`, south and east members A
    and B of `realistic_pair(n, n, seed 0)` (10% of their people shared). A hit is another
    organisation's record of a person the partner holds (north: B of seed 1; south: B of
    seed 0, itself indexed by east; east: A of seed 0, itself indexed by south), so a hit
    on south or east also finds that record's own copy; a miss is a person of another
    seed, whom no partner holds by design (a namesake may still match: real data). Hits
    are drawn from the people whose two records reach 0.8 as the matcher scores them (the
    fallback rule under a schema with a fallback CLK), so each must be found.

    With `same` every partner holds member A of seed 1, as benchmarks/rtlookup.py's three
    indexes do (three copies of one population: no 2,000,000 more encodings to make, and
    the served figures beside rtlookup.py's look-up cost on the same rows).
    """

    def __init__(self, n: int, k: int, seed: int, same: bool = False):
        from benchmarks.realclks import layout, realistic_pair

        self.n = n
        self.rng = np.random.default_rng(seed)
        self.clk_bits, self.fallback_bits = layout()
        if k == 0 or same:
            pair = realistic_pair(n, 20_000, seed=1, overlap=0.5, quiet=True, whole=True)
        else:
            pair = realistic_pair(n, n, seed=0, overlap=0.1, quiet=True, whole=True)
        if k < 2 or same:
            self.clks, held, asked = pair.a, pair.truth_a, pair.b[pair.truth_b]
        else:
            self.clks, held, asked = pair.b, pair.truth_b, pair.a[pair.truth_a]
        # Only the people whose two records reach the threshold must be found (real
        # corruptions take a share of true pairs below it: no matcher finds those).
        scores = rule_dice(self.clks[held], asked, self.clk_bits, self.fallback_bits)
        self.hits = asked[scores >= 0.8]
        self.strangers = realistic_pair(4_000, 0, seed=1001, overlap=0.0, quiet=True, whole=True).a

    def hit(self) -> np.ndarray:
        return self.hits[int(self.rng.integers(0, len(self.hits)))]

    def miss(self) -> np.ndarray:
        return self.strangers[int(self.rng.integers(0, len(self.strangers)))]


class RecordLevelPartner(RealPartner):
    """Real clkhash encodings of the record-level CLK alone (1,024 bits, no fallback CLK:
    the layout `realtime.py` indexed before 2026-12-03), from the cached 1,000,000 x
    1,000,000 pair of seed 0 (`realistic_pair` without `whole` reads the version 1 cache,
    so nothing is encoded). Every partner holds member A's first n records (one
    population, as `--one-population`); a hit is member B's record of a person a partner
    holds whose pair reaches 0.8, a miss one of B's records of a person A does not hold."""

    whole = False  # the record-level CLKs alone; CachedPairPartner: the whole CLKs
    flag = "--record-level"

    def __init__(self, n: int, k: int, seed: int, same: bool = True):
        from benchmarks.realclks import layout, realistic_pair

        self.n = n
        self.rng = np.random.default_rng(seed)
        pair = realistic_pair(1_000_000, 1_000_000, seed=0, overlap=0.1, quiet=True,
                              whole=self.whole)  # fmt: skip
        if n > len(pair.a):
            raise SystemExit(f"{self.flag}: at most {len(pair.a):,} records a partner")
        self.clk_bits, self.fallback_bits = layout() if self.whole else (pair.a.shape[1] * 8, 0)
        self.clks = pair.a[:n]
        kept = pair.truth_a < n
        held, asked = pair.truth_a[kept], pair.b[pair.truth_b[kept]]
        scores = rule_dice(self.clks[held], asked, self.clk_bits, self.fallback_bits)
        self.hits = asked[scores >= 0.8]
        strangers = np.ones(len(pair.b), dtype=bool)
        strangers[pair.truth_b] = False
        self.strangers = pair.b[np.flatnonzero(strangers)[:4_000]]


class CachedPairPartner(RecordLevelPartner):
    """The default layout (whole 2,048-bit CLKs with their fallback CLK, searched half by
    half) on the same people as `RecordLevelPartner`: member A of the batch benchmarks'
    cached 1,000,000 x 1,000,000 pair of seed 0 (`realistic_pair(..., whole=True)`), one
    population; hits B's records of held people that reach 0.8 under the fallback rule,
    misses B's people A does not hold. Needs no encoding where that pair is cached."""

    whole = True
    flag = "--cached-pair"


def rule_for(fallback_bits: int) -> tuple[float, float, float] | None:
    """The rule an index or query of this layout carries (a rule needs a fallback CLK)."""
    return SCORE_RULE if fallback_bits else None


def scoring_of(fallback_bits: int) -> dict[str, Any]:
    """A query's `fallback_bits` and `rule`, as `blindmatch query` sends its schema's."""
    return {"fallback_bits": fallback_bits, "rule": rule_for(fallback_bits)}


def load_index(target: str, token: str, partner: Partner | RealPartner) -> None:
    with MatcherClient(target, token) as client:
        step = 250_000
        for start in range(0, partner.n, step):
            block = partner.clks[start : start + step]
            puts = [(f"r{start + i}", block[i].tobytes()) for i in range(len(block))]
            client.change_index("rt", clk_bits=partner.clk_bits, fingerprint=FINGERPRINT,
                                puts=puts, fallback_bits=partner.fallback_bits,
                                rule=rule_for(partner.fallback_bits))  # fmt: skip


def filesystem(path: Path) -> str:
    """The type of the filesystem `path` (or its nearest existing parent) is on."""
    best, kind = "", "unknown"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, point, fstype, *_ = line.split()
            target = str(path.resolve())
            if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(
                best
            ):
                best, kind = point, fstype
    return kind


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Measured:
    queriers: int
    rate: float  # offered queries/s in all (open loop); 0 for a closed loop
    latencies: list[float]  # ms
    wall: float  # s
    missed: int  # planted hits not found
    planted: int
    load: tuple[float, float]  # 1-minute load average before and after
    cpu_ms: tuple[float, float]  # CPU per query: the matcher process, this (client) process
    finished: list[float] = field(default_factory=list)  # s from the start, per latency
    client: str = "async"  # how the queriers asked (CLIENTS)
    # The matcher's thread switches per query: voluntary (a thread waited: for a message,
    # the GIL, a lock, the disk), involuntary (a thread was preempted).
    switches: tuple[float, float] = (0.0, 0.0)


def pin(pid: int, cpus: set[int]) -> None:
    """Keep every thread of process `pid` on `cpus` (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.sched_setaffinity(int(tid), cpus)


def cpu_list(value: str) -> set[int]:
    """ "0-3,6" -> {0, 1, 2, 3, 6}."""
    cpus: set[int] = set()
    for part in value.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def memory(pid: int) -> str:
    """The process's resident memory and how much of it is on huge pages (Linux)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return "unknown"
    kib = {
        k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in rollup.splitlines()[1:])
    }
    return (
        f"{kib.get('Rss', 0) / 2**20:.2f} GiB resident, "
        f"{kib.get('AnonHugePages', 0) / 2**20:.2f} GiB of it on huge pages"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_switches(pid: int) -> tuple[int, int]:
    """Context switches so far of every live thread of process `pid`: (voluntary,
    involuntary) (Linux /proc; a thread that has ended is no longer counted)."""
    voluntary = involuntary = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


CLIENTS = {
    "async": "AsyncQuerySession each, one asyncio loop",
    "session": "MatcherClient.query_session each, threads",
    "calls": "MatcherClient.query calls, threads",
}


def measure(
    target: str,
    token: str,
    held: dict[str, Partner | RealPartner],
    queriers: int,
    queries: int,
    server_pid: int,
    rate: float = 0.0,
    during: Callable[[], None] | None = None,
    client: str = "async",
) -> Measured:
    """`queriers` queriers, each with its own channel, asking `queries` queries each.

    With `rate` 0 each querier asks again as soon as it has its answer (a closed loop: the
    matcher is kept as busy as 20 clients can make it). With a rate, queries arrive at
    random (Poisson) at `rate` per second in all, whatever the answers' speed (an open
    loop), and each latency counts from when its query was due, so time spent waiting
    behind a slow answer is counted too. `during`, when given, runs in a thread of its
    own while the queriers ask (an index change, say). `client` is how they ask
    (`CLIENTS`): over a query session each (one stream: `async` as coroutines of one
    event loop, `session` as threads) or by one `Query` call a question (`calls`).
    """
    clk_bits = next(iter(held.values())).clk_bits
    scoring = scoring_of(next(iter(held.values())).fallback_bits)
    total = queriers * queries
    planted: list[tuple[np.ndarray, str | None]] = []
    for i in range(total):
        if i % 2 == 0:
            partner = PARTNERS[(i // 2) % len(PARTNERS)]
            planted.append((held[partner].hit(), partner))
        else:
            planted.append((held[PARTNERS[0]].miss(), None))
    gaps = np.random.default_rng(len(planted)).exponential(
        queriers / rate if rate else 0.0, size=total
    )
    latencies: list[float] = []
    finished: list[float] = []
    missed: list[int] = []
    lock = threading.Lock()
    gate = threading.Barrier(queriers + 1 if client != "async" else 2)

    def due_after(i: int, due: float) -> float:
        """When query i is due: on the open loop's clock, or now (closed loop)."""
        return due + gaps[i] if rate else time.perf_counter()

    def record(i: int, due: float, answer: QueryAnswer) -> None:
        elapsed = (time.perf_counter() - due) * 1000
        partner = planted[i][1]
        with lock:
            latencies.append(elapsed)
            finished.append(time.perf_counter() - t0)
            if partner is not None and partner not in [m.partner for m in answer.results[0]]:
                missed.append(i)

    def querier(k: int) -> None:
        with MatcherClient(target, token) as matcher, contextlib.ExitStack() as stack:
            if client == "session":
                session = stack.enter_context(
                    matcher.query_session(
                        "rt", clk_bits=clk_bits, fingerprint=FINGERPRINT, **scoring
                    )
                )
                query: Callable[..., QueryAnswer] = session.query
            else:
                query = functools.partial(
                    matcher.query, "rt", clk_bits=clk_bits, fingerprint=FINGERPRINT, **scoring
                )
            query(planted[0][0].tobytes(), purpose="warm-up")
            gate.wait()
            due = time.perf_counter()
            for i in range(k * queries, (k + 1) * queries):
                due = due_after(i, due)
                if rate:
                    time.sleep(max(0.0, due - time.perf_counter()))
                record(i, due, query(planted[i][0].tobytes(), purpose=f"bench {i}"))

    async def async_querier(k: int, session: AsyncQuerySession, go: asyncio.Event) -> None:
        await go.wait()
        due = time.perf_counter()
        for i in range(k * queries, (k + 1) * queries):
            due = due_after(i, due)
            if rate:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            record(i, due, await session.query(planted[i][0].tobytes(), purpose=f"bench {i}"))

    def async_queriers() -> None:
        async def run() -> None:
            sessions = [
                AsyncQuerySession(
                    target, token, "rt", clk_bits=clk_bits, fingerprint=FINGERPRINT, **scoring
                )
                for _ in range(queriers)
            ]
            await asyncio.gather(
                *(s.query(planted[0][0].tobytes(), purpose="warm-up") for s in sessions)
            )
            go = asyncio.Event()
            tasks = [asyncio.create_task(async_querier(k, s, go)) for k, s in enumerate(sessions)]
            await asyncio.to_thread(gate.wait)
            go.set()
            await asyncio.gather(*tasks)
            for s in sessions:
                await s.close()

        asyncio.run(run())

    mode = f"at {rate:g} queries/s in all (open loop)" if rate else "(closed loop)"
    print(f"{queriers} queriers x {queries} single-record queries {mode}, "
          f"{CLIENTS[client]} ...", flush=True)  # fmt: skip
    if client == "async":
        threads = [threading.Thread(target=async_queriers)]
    else:
        threads = [threading.Thread(target=querier, args=(k,)) for k in range(queriers)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()  # before the gate opens, so the queriers never read it unset
    gate.wait()
    side = threading.Thread(target=during) if during else None
    if side:
        side.start()
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds(server_pid), cpu_seconds(os.getpid())
    switches_before = thread_switches(server_pid)
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    switched = [
        (after - before) / total
        for before, after in zip(switches_before, thread_switches(server_pid), strict=True)
    ]
    if side:
        side.join()
    cpu = [
        (after - before) * 1000 / total
        for before, after in zip(
            cpu_before, (cpu_seconds(server_pid), cpu_seconds(os.getpid())), strict=True
        )
    ]
    load = (load_before, os.getloadavg()[0])
    return Measured(
        queriers, rate, latencies, wall, len(missed), (total + 1) // 2, load, (cpu[0], cpu[1]),
        finished, client, (switched[0], switched[1]),
    )  # fmt: skip


def lookup_cost(held: dict[str, Partner | RealPartner], count: int) -> tuple[str, float, float]:
    """The look-up alone, in this process (no gRPC, no audit), after as many unmeasured
    look-ups: CPU ms per query against every partner's index (as the matcher builds it,
    threshold 0.8: with a fallback CLK, both halves with their own tables), one query a
    pass and 20 a pass (`search_batch`, what the matcher's combined passes run), with
    recall against the exhaustive scan under the same rule, which is timed on a few
    queries too."""
    from blindmatch.matcher.core.fallbackindex import FallbackIndex, search_batch
    from blindmatch.matcher.core.segment import Segment, Snapshot

    threshold = 0.8
    partners = list(held.values())
    clk_bits, fallback_bits = partners[0].clk_bits, partners[0].fallback_bits

    def snapshot(words: np.ndarray, tables: float | None) -> Snapshot | FallbackSnapshot:
        refs = [f"r{i}" for i in range(len(words))]
        if fallback_bits:
            return FallbackIndex.load(
                clk_bits, fallback_bits, refs, words, threshold=tables, rule=Rule(*SCORE_RULE or ())
            ).snapshot
        main = Segment.build(words, refs, threshold=tables)
        return Snapshot(main, Segment.empty(clk_bits // 64), frozenset(), len(main))

    words = {name: as_words(partner.clks, clk_bits) for name, partner in held.items()}
    snapshots = {name: snapshot(w, threshold) for name, w in words.items()}
    asked = np.stack([
        partners[(i // 2) % len(partners)].hit() if i % 2 == 0 else partners[0].miss()
        for i in range(count)
    ])  # fmt: skip
    queries = as_words(asked, clk_bits)
    # Unmeasured first, as the matcher's were (its warm-up, then the benchmark's): the first
    # look-ups of new tables cost several times what they settle at (page faults, TLB).
    for s in range(0, count, 20):
        search_batch([(snapshots, q[None, :], threshold) for q in queries[s : s + 20]])
    t0 = time.process_time()
    found = [search_batch([(snapshots, q[None, :], threshold)])[0][0] for q in queries]
    one = (time.process_time() - t0) * 1000 / count
    t0 = time.process_time()
    for s in range(0, count, 20):
        search_batch([(snapshots, q[None, :], threshold) for q in queries[s : s + 20]])
    twenty = (time.process_time() - t0) * 1000 / count
    scanned = min(count, 40)
    plain = {name: snapshot(w, None) for name, w in words.items()}  # no tables: scanned
    t0 = time.process_time()
    exact = [
        {name: {ref for ref, _ in snap.search(q, threshold)} for name, snap in plain.items()}
        for q in queries[:scanned]
    ]
    scan = (time.process_time() - t0) * 1000 / scanned
    pairs = sum(len(refs) for e in exact for refs in e.values())
    kept = sum(
        len(refs & {ref for ref, _ in f[name]})
        for e, f in zip(exact, found, strict=False)
        for name, refs in e.items()
    )
    # Each half's tables (or each whole index's), the plan shown of the first partner's.
    halves: dict[str, list[Segment]] = {}
    for snap in snapshots.values():
        if isinstance(snap, FallbackSnapshot):
            halves.setdefault("first halves", []).append(snap.first.main)
            halves.setdefault("fallback halves with a birth date", []).append(snap.second.main)
            halves.setdefault("fallback halves without", []).append(snap.lacks.main)
        else:
            halves.setdefault("indexes", []).append(snap.main)
    tabled = "; ".join(
        f"{sum(m.lsh is not None for m in mains)} of {len(mains)} {kind} with LSH tables"
        + (f", {mains[0].lsh.plan.describe()}" if mains[0].lsh is not None else "")
        for kind, mains in halves.items()
    )
    layout = f"{clk_bits}-bit CLKs" + (
        f" with a {fallback_bits}-bit fallback CLK" if fallback_bits else ""
    )
    return (
        f"look-up alone, in process, {len(held)} x {len(partners[0].clks):,} records "
        f"({layout}; {tabled}):"
        f" CPU ms per query {one:.2f} one a pass, {twenty:.2f} twenty a pass, {scan:.1f} by "
        f"exhaustive scan ({scan / max(one, 1e-9):.1f}x); recall against the scan on "
        f"{scanned} queries: {kept} of {pairs} pairs",
        one,
        twenty,
    )


def by_second(run: Measured) -> str:
    """Each second of a run: how many queries finished, and their p50, p99 and max."""
    seconds: dict[int, list[float]] = {}
    for done, ms in zip(run.finished, run.latencies, strict=True):
        seconds.setdefault(int(done), []).append(ms)
    return "; ".join(
        f"{s}: {len(v)}, {statistics.median(v):.1f}, {percentile(v, 99):.1f}, {max(v):.0f}"
        for s, v in sorted(seconds.items())
    )


def ask(
    client: MatcherClient, clk: bytes, clk_bits: int, purpose: str, fallback_bits: int = 0
) -> list[str]:
    scoring = scoring_of(fallback_bits)
    answer = client.query(
        "rt", clk, clk_bits=clk_bits, fingerprint=FINGERPRINT, **scoring, purpose=purpose
    )
    return [m.partner for m in answer.results[0]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="per partner")
    parser.add_argument(
        "--queriers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 20],
        help="concurrent queriers, one run per comma-separated count (default: 1,20)",
    )
    parser.add_argument(
        "--queries", type=int, default=150, help="queries per querier, a round (default: 150)"
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--schema", type=Path, default=ROOT / "schemas" / "person-uk.json",
                        help="whose blindmatch.rule the indexes and queries carry, as the "
                             "client sends it (person-uk-no-rule.json: none)")  # fmt: skip
    parser.add_argument("--clks", choices=("realistic", "synthetic", "random"), default="realistic")
    parser.add_argument("--repeat", type=int, default=1, help="measure each querier count N times")
    parser.add_argument(
        "--one-population",
        action="store_true",
        help="realistic: every partner indexes the same people (seed 1's member A, as "
        "benchmarks/rtlookup.py), instead of north seed 1 and south/east seed 0",
    )
    parser.add_argument(
        "--record-level",
        action="store_true",
        help="realistic: index the cached record-level CLKs alone (1,024 bits, no fallback "
        "CLK; seed 0's member A, one population), which needs no encoding at 1,000,000",
    )
    parser.add_argument(
        "--cached-pair",
        action="store_true",
        help="realistic: index the whole CLKs (the default layout, fallback CLK included) of "
        "the cached 1,000,000 x 1,000,000 pair of seed 0 (member A, one population, as "
        "--record-level), which needs no encoding where the batch benchmarks cached it",
    )
    parser.add_argument(
        "--matcher-cpus",
        type=cpu_list,
        help="start the matcher on these CPUs only (say 0-7; it places its own threads "
        "within them), to keep it off the client's",
    )
    parser.add_argument("--client-cpus", type=cpu_list, help="run the queriers on these CPUs")
    parser.add_argument(
        "--lookup-threads",
        type=int,
        help="passed to blindmatch serve (0: no thread placement; default: the matcher's)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="after loading, restart the matcher over its data dir (it rebuilds each index "
        "once, as after a deploy) and measure that one",
    )
    parser.add_argument(
        "--change",
        type=int,
        default=0,
        help="also run 20 closed-loop queriers while one partner replaces this many of its "
        "records in one change (enough, 15,625 at 1,000,000, merges its index)",
    )
    parser.add_argument(
        "--change-queries",
        type=int,
        default=1000,
        help="queries per querier in the --change run (long enough to span the merge)",
    )
    parser.add_argument(
        "--warm-up",
        type=int,
        default=3000,
        help="queries (from 20 queriers) before the measured runs, reported apart, so the "
        "rounds measure a service that has been running, not one just started "
        "(default: 3000; 0: none)",
    )
    parser.add_argument(
        "--clients",
        type=lambda v: v.split(","),
        default=["async", "calls"],
        help="how the queriers ask, one run per comma-separated kind: async (an "
        "AsyncQuerySession each), session (a MatcherClient.query_session each, threads), "
        "calls (a MatcherClient.query call each question) (default: async,calls; the first "
        "also does the warm-up and --change run)",
    )
    parser.add_argument(
        "--lookup-queries",
        type=int,
        default=600,
        help="after the served runs, time the look-up alone in this process on this many "
        "queries (0: skip; it builds the indexes again here)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the matcher's data dir, which must not exist yet: the benchmark makes it and "
        "deletes it at the end (default: a new temporary folder); on a tmpfs, the audit "
        "log's fsyncs cost nothing",
    )
    parser.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[],
        help="also run 20 queriers in an open loop at these total queries/s (comma-separated)",
    )
    args = parser.parse_args()
    global SCORE_RULE
    raw_rule = json.loads(args.schema.read_text()).get("blindmatch", {}).get("rule")
    SCORE_RULE = (raw_rule["gap"], raw_rule["offset"], raw_rule["reach"]) if raw_rule else None
    unknown = [c for c in args.clients if c not in CLIENTS]
    if unknown:
        parser.error(f"--clients: {', '.join(unknown)}: not one of {', '.join(CLIENTS)}")
    rng = np.random.default_rng(args.seed)
    serve_args = (
        [] if args.lookup_threads is None else ["--lookup-threads", str(args.lookup_threads)]
    )

    # What the matcher said (`Served.log`: `serve` reads its stderr as it comes, so the pipe
    # never fills; a second reader here would take lines from it) about merges and, as it
    # stops, about its audit log's group commits and its look-up passes.
    def said(served: Served, what: str) -> list[str]:
        return [line.strip() for line in list(served.log) if what in line]

    def start(stack: contextlib.ExitStack) -> Served:
        return stack.enter_context(serve(data_dir, *serve_args, cpus=args.matcher_cpus))

    if args.data_dir is not None and args.data_dir.exists():
        parser.error(f"--data-dir: {args.data_dir} exists; give a new folder")
    with (
        tempfile.TemporaryDirectory(prefix="bm-realtime-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        data_dir = args.data_dir or Path(tmp)
        served = start(stack)
        created = json.loads(
            blindmatch("project", "create", "rt", "--members", ",".join((*PARTNERS, QUERIER)),
                       "--json", "--server", served.target,
                       env={"BLINDMATCH_ADMIN_TOKEN": served.admin_token})
        )  # fmt: skip
        tokens = created["tokens"]
        with MatcherClient(served.target, served.admin_token) as op:
            op.set_query_limits("rt", per_minute=10**9, per_day=10**9)

        print(f"loading {len(PARTNERS)} partners x {args.records:,} records through "
              "ChangeIndex ...", flush=True)  # fmt: skip
        held: dict[str, Partner | RealPartner] = {}
        population = (
            Population(len(PARTNERS) * args.records + 100_000, args.seed)
            if args.clks == "synthetic"
            else None
        )
        for k, partner in enumerate(PARTNERS):
            held[partner] = (
                (
                    CachedPairPartner
                    if args.cached_pair
                    else RecordLevelPartner
                    if args.record_level
                    else RealPartner
                )(args.records, k, args.seed * 10 + k, args.one_population)
                if args.clks == "realistic"
                else Partner(args.clks, args.records, k, population, args.seed * 10 + k)
            )
            t0 = time.perf_counter()
            load_index(served.target, tokens[partner], held[partner])
            print(f"  {partner}: {time.perf_counter() - t0:.1f} s", flush=True)
        layout = held[PARTNERS[0]]

        if args.restart:
            print("restarting the matcher over its data dir ...", flush=True)
            stack.close()  # SIGTERM, and wait for it to stop
            t0 = time.perf_counter()
            served = start(stack)
            print(f"  listening again after {time.perf_counter() - t0:.1f} s", flush=True)
        pid = served.process.pid
        print(f"matcher memory: {memory(pid)}", flush=True)
        if args.client_cpus:
            pin(os.getpid(), args.client_cpus)
        first = args.clients[0]
        warm = (
            measure(served.target, tokens[QUERIER], held, 20, max(1, args.warm_up // 20), pid,
                    client=first)
            if args.warm_up
            else None
        )  # fmt: skip
        runs = [
            measure(served.target, tokens[QUERIER], held, n, args.queries, pid, client=c)
            for _ in range(args.repeat)
            for n in args.queriers
            for c in args.clients
        ]
        runs += [
            measure(served.target, tokens[QUERIER], held, 20, args.queries, pid, rate, client=c)
            for _ in range(args.repeat)
            for rate in args.rates
            for c in args.clients
        ]

        measured = len(runs)  # the --change run, if any, comes after these
        changed: list[float] = []

        def big_change() -> None:
            time.sleep(1.0)
            # Each record put again as it was: a replace (the merge's work), and every
            # planted hit still there to be found.
            clks = held["north"].clks
            puts = [(f"r{i}", clks[i].tobytes()) for i in range(args.change)]
            with MatcherClient(served.target, tokens["north"]) as north:
                t = time.perf_counter()
                north.change_index("rt", clk_bits=layout.clk_bits, fingerprint=FINGERPRINT,
                                   puts=puts, fallback_bits=layout.fallback_bits,
                               rule=rule_for(layout.fallback_bits))  # fmt: skip
                changed.append(time.perf_counter() - t)

        if args.change:
            print(f"closed loop while north replaces {args.change:,} records ...", flush=True)
            runs.append(
                measure(served.target, tokens[QUERIER], held, 20, args.change_queries, pid,
                        during=big_change, client=first)
            )  # fmt: skip

        with (
            MatcherClient(served.target, tokens["north"]) as north,
            MatcherClient(served.target, tokens[QUERIER]) as asker,
        ):
            fresh = random_clks(rng, 1, layout.clk_bits)[0].tobytes()
            t1 = time.perf_counter()
            north.change_index("rt", clk_bits=layout.clk_bits, fingerprint=FINGERPRINT,
                               puts=[("fresh", fresh)],
                               fallback_bits=layout.fallback_bits,
                               rule=rule_for(layout.fallback_bits))  # fmt: skip
            change_ms = (time.perf_counter() - t1) * 1000
            visible = ask(asker, fresh, layout.clk_bits, "visibility", layout.fallback_bits) == [
                "north"
            ]
        merge_at = merge_point(args.records)
        if changed and args.change > merge_at:  # it may still be merging: allow 2 minutes
            for _ in range(1200):
                if said(served, "merged"):
                    break
                time.sleep(0.1)
        stack.close()  # stop the matcher: it says how its audit entries were committed
        merges = said(served, "merged")
        commits = said(served, "group commit")
        passes = said(served, "real-time look-ups:")
        if args.data_dir is not None:
            shutil.rmtree(args.data_dir, ignore_errors=True)
    costs = lookup_cost(held, args.lookup_queries) if args.lookup_queries else None

    print()
    print(f"machine: {os.cpu_count()} cores (shared with other work: numbers are noisy)")
    said_rule = Rule(*SCORE_RULE).describe(0.8) if SCORE_RULE and layout.fallback_bits else "Dice"
    print(f"schema: {args.schema.name}; indexes and queries scored by {said_rule}")
    if args.lookup_threads is not None:
        print(f"blindmatch serve --lookup-threads {args.lookup_threads}")
    if args.matcher_cpus or args.client_cpus:
        print(f"matcher on CPUs {sorted(args.matcher_cpus or [])}, "
              f"queriers on CPUs {sorted(args.client_cpus or [])}")  # fmt: skip
    print(f"partners: {len(PARTNERS)} x {args.records:,} {args.clks} records, "
          f"{layout.clk_bits}-bit CLKs"
          + (f" ({layout.fallback_bits}-bit fallback CLK at the end, searched half by half)"
             if layout.fallback_bits else " (no fallback CLK)")
          + (" (matcher restarted after loading)" if args.restart else ""))  # fmt: skip
    print(
        f"data dir: {args.data_dir or 'a temporary folder'} ({filesystem(data_dir)}); "
        + (commits[-1].split(" INFO ")[-1] if commits else "audit commits not reported")
        + ("; " + passes[-1].split(" INFO ")[-1] if passes else "")
    )
    failed = not visible
    for r in [warm, *runs] if warm else runs:
        lat = r.latencies
        loop = f"open loop at {r.rate:g}/s" if r.rate else "closed loop"
        if r is warm:
            loop += ", warm-up (not counted)"
        if args.change and r is runs[-1]:
            loop += f", {args.change:,} records changed meanwhile"
        print(
            f"{r.queriers:>3} queriers, {loop}, {r.client}: {len(lat)} queries in {r.wall:.1f} s "
            f"({len(lat) / r.wall:.1f}/s); latency ms p50 {statistics.median(lat):.1f}  "
            f"p95 {percentile(lat, 95):.1f}  p99 {percentile(lat, 99):.1f}  max {max(lat):.1f}; "
            f"CPU ms per query: matcher {r.cpu_ms[0]:.2f}, client {r.cpu_ms[1]:.2f}; "
            f"matcher thread switches per query {r.switches[0]:.1f} voluntary, "
            f"{r.switches[1]:.1f} involuntary; planted hits missed {r.missed} of {r.planted}; "
            f"load average {r.load[0]:.1f} -> {r.load[1]:.1f}"
        )
        failed = failed or bool(r.missed)
    for n in args.queriers:
        closed = [r for r in runs[:measured] if r.queriers == n and not r.rate]
        if len({r.client for r in closed}) > 1:
            print(f"{n:>3} queriers, closed loop, p50 ms by client: " + "; ".join(
                f"{c} " + " / ".join(f"{statistics.median(r.latencies):.1f}"
                                     for r in closed if r.client == c)
                for c in args.clients
            ))  # fmt: skip
    if changed:
        print(f"index change ({args.change:,} puts, sent 1 s into the run) acknowledged in "
              f"{changed[0]:.1f} s (a merge it starts goes on in the background); that run, "
              "second by second (queries, p50, p99, max ms):")  # fmt: skip
        print("  " + by_second(runs[-1]))
        if args.change > merge_at:
            print("  the matcher: " + (merges[0] if merges else "still merging 2 minutes on"))
        else:
            print(f"  (no merge: the delta holds up to {merge_at:,} rows)")
    if costs:
        print(costs[0])
        # The serving overhead: what the matcher spent a query besides the look-up itself
        # (one a pass for a lone querier, twenty a pass otherwise: what its passes hold).
        for r in runs[:measured]:
            alone = costs[1] if r.queriers == 1 else costs[2]
            print(
                f"{r.queriers:>3} queriers, {r.client}: matcher CPU outside the look-up "
                f"{r.cpu_ms[0] - alone:.2f} ms a query ({r.cpu_ms[0]:.2f} - {alone:.2f})"
            )
    print(f"index change (1 put) acknowledged in {change_ms:.1f} ms; "
          f"visible to the next query: {visible}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
