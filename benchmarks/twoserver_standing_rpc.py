"""One-record queries compared whole against a partner over gRPC, by the standing path (the
partner's bits converted once: rpc/twoserver_standing.py, rpc/twoserver_standdeal.py) beside
by pairs (the rule's circuit a pair, the path core/partpath.py took before), in one run:

    .venv/bin/python benchmarks/twoserver_standing_rpc.py [--partner-records 16000,64000]
        [--queries 3] [--population households|messy] [--seed 1]
        [--partners P --standing-bytes N] [--inline-records N] [--stop-after-pieces K]
        [--regenerate] [--no-trim] [--bands 30] [--no-pairs]

S2 and S1 in this process on loopback gRPC ports (`create_role`, S1 comparing every pair
without blocking), C's `RemoteServers` driving `twopartner.proposed_query_links` as the
matcher does. Members: the `--population`'s people (benchmarks/densearith.py `members`) under
the shipped schema (two 1,024-bit CLKs, its gap rule), each upload `shared_upload`'s. For
each N of `--partner-records`, the partner (B's first N records) uploaded once; then
`--queries` one-record queries (alternately one of the partner's own records and one of A's),
each uploaded afresh (a fresh pair budget) and asked by the standing path, then again by
pairs. Per query and path: CPU of this process (every party: `process_time`; split into user
and system by `os.times`, qcost), wall, bytes between the parties (`linkbit.Transcript`; by
the query's part (its CLK, standing or by pairs), the function that counted them (`_deal`: a
standing deal; `_run`: a batch) and direction, qcost), and whether each path found the links,
buckets and rows of the rule in the clear on this run's CLKs (benchmarks/standing_clear.py:
the members are encoded under a fresh secret each run, so a pair near a cut-off links in some
runs and not others; a path's links that differ are printed, with their Dice); the first
standing query's conversion apart (its CPU and bytes less the later queries' median), what S1
and S2 keep a record, and how many pairs ~5 s of CPU a query would compare by each path.
With `--partners` P over 1 (`thrash`): P partners of each N, S1 and S2 keeping
`--standing-bytes` of conversions (fewer than P fit), `--queries` queries each against every
partner with the conversions kept, then by pairs: CPU and wall a query and the conversions
made (the same script on the old code shows each query converting again).
With `--stop-after-pieces` K (`stopped`, standfix2): the first query's conversion stopped
after K pieces (between pieces), twice: as the matcher's stop does now (`Conversions.close`:
its wall, and the bytes S1 and S2 hold of it after) and as before (C's thread gone without a
word: `give_up` left out), the bytes they then keep.
After the first query's conversion: the process's RSS against S1's and S2's bytes kept, before
and after `malloc_trim(0)` (`--no-trim`: the servers' trim after each piece left out, as
before standmask).
With `--regenerate` (standmask): S1 and S2 then forget [M_B] (as a partner that fits
`--standing-bytes` only so is kept) and the queries are asked standing again: CPU a pair
regenerating against keeping, in one run.
`--bands B`: the members' band plan's bands (30; S1 compares every pair, so their keys go
unread, but S1's upload holds them: at 500,000 records 30 bands of two CLKs are ~6.4 GB of
sealed keys, which the benchmark's one process builds and S1 receives at once; fewer bands fit
1,000,000 records in memory). `--no-pairs`: the queries asked standing only, not again by
pairs (C's standing answers still checked in the clear).
Exit 1 where a path's links are not those in the clear.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import densearith as bench
from benchmarks import standing_clear
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding import sharing
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import linkbit, memory, twoserver
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.realtime import twopartner
from blindmatch.matcher.rpc import twoserver_standcache as standcache
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc import twoserver_standing as standing_rpc
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.rpc.twoserver_standdeal import Conversions

KEY, MEMBER_KEY = "the parties' key", "the members' key"
NAMES = ["asker", "partner"]
THRESHOLD = 0.8
BUDGET_S = 5.0  # the CPU a query is allowed, to size QUERY_WHOLE_PAIRS
PLAN = sharing.BandPlan(bits=20, bands=30)  # (S1 compares every pair: band keys unread)
_Plain = linkbit.Transcript


@dataclass
class _Asked:
    """The last `ask`'s user and system CPU (the process's), its parts (clk, pairs) and bytes
    by part, message kind and direction."""

    user: float = 0.0
    system: float = 0.0
    parts: list[tuple[int, int]] = field(default_factory=list)
    kinds: dict[tuple[str, str, str], int] = field(default_factory=dict)


LAST = _Asked()


@dataclass
class _Kinds(linkbit.Transcript):
    """A transcript that also counts bytes by the function that counted them (the kind of
    message: a standing deal's, a margin batch's) and sender and receiver."""

    kinds: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _LIVE.append(self)

    def count(self, sender: str, receiver: str, nbytes: int) -> None:
        super().count(sender, receiver, nbytes)
        at: FrameType | None = sys._getframe(1)
        what, where = sys._getframe(1).f_code.co_name, ""
        while at is not None and at.f_code.co_name != "_parts_links":
            if at.f_code.co_name == "proposed_links":
                part = at.f_locals["part"]
                where = f"clk {part.clk} {'standing' if part.standing else 'by pairs'} "
                break
            at = at.f_back
        key = (f"{where}{what}", sender, receiver)
        self.kinds[key] = self.kinds.get(key, 0) + nbytes


_LIVE: list[_Kinds] = []  # every `_Kinds` made (the query's parts' own, `twopartner._parts_links`)


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss() -> float:
    """This process's resident set now, MiB (S1, S2 and C: all three run here)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _query(k: int, a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:  # type: ignore[type-arg]
    """Query `k`'s one record: alternately one of the partner's own and one of A's."""
    return [x[k // 2 : k // 2 + 1] for x in (b if k % 2 == 0 else a)]


def _upload(roles: dict[str, RunningRole], name: str, up: sharing.SharedUpload,
            rule: Rule) -> None:  # fmt: skip
    for role, running in roles.items():
        with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as rc:
            rc.upload(name, up, (rule.gap, rule.offset, rule.reach))


def _shared(parts: list[np.ndarray]) -> sharing.SharedUpload:  # type: ignore[type-arg]
    clks = np.ascontiguousarray(np.hstack(parts))
    return sharing.shared_upload(clks, b"a benchmark's secret", PLAN, 8 * parts[1].shape[1])


def _plan(bands: int) -> None:
    """`--bands`: the plan every upload of the run is shared under."""
    global PLAN
    PLAN = sharing.BandPlan(bits=PLAN.bits, bands=bands)


def _roles(work: Path, tag: str, most: int | None) -> dict[str, RunningRole]:
    """S2 and S1 on loopback (S1 comparing every pair), each keeping `most` bytes of
    conversions (None: the default)."""
    s2 = create_role("s2", "127.0.0.1:0", KEY, MEMBER_KEY, data_dir=work / f"s2-{tag}",
                     standing_bytes=most)  # fmt: skip
    s1 = create_role("s1", "127.0.0.1:0", KEY, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=work / f"s1-{tag}", exhaustive=10**12,
                     standing_bytes=most)  # fmt: skip
    return {"s1": s1, "s2": s2}


def _stop(roles: dict[str, RunningRole]) -> None:
    for r in roles.values():
        r.stop(grace=None)
        r.service.close()


def ask(roles: dict[str, RunningRole], records: list[int], bits: list[int], rule: Rule,
        conversions: Conversions | None, names: list[str] = NAMES,
        ) -> tuple[list[tuple[int, int, float]], float, float, int]:  # fmt: skip
    """A query (uploaded already) against the partner: links, CPU s, wall s, bytes."""
    servers = RemoteServers(f"127.0.0.1:{roles['s1'].port}", f"127.0.0.1:{roles['s2'].port}",
                            KEY, names, records, bits)  # fmt: skip
    servers.conversions = conversions
    combiner = twoserver.Combiner(None, THRESHOLD, clks=2, rule=rule)
    t, linkbit.Transcript = _Kinds(), _Kinds  # type: ignore[misc]
    _LIVE.clear()
    t0, c0, w0 = os.times(), time.process_time(), time.perf_counter()
    try:
        described = servers.propose(combiner.lacking(), combiner.cutoffs, combiner.rule)
        links, _ = twopartner.proposed_query_links(servers, combiner, described, t,
                                                   standing=True)  # fmt: skip
    finally:
        servers.close()
        linkbit.Transcript = _Plain  # type: ignore[misc]
    cpu, wall, t1 = time.process_time() - c0, time.perf_counter() - w0, os.times()
    kinds: dict[tuple[str, str, str], int] = {}
    for got in _LIVE:
        if got is not t:
            for key, v in got.kinds.items():
                kinds[key] = kinds.get(key, 0) + v
    LAST.user, LAST.system, LAST.kinds = t1.user - t0.user, t1.system - t0.system, kinds or t.kinds
    LAST.parts = [(p.clk, p.pairs) for p in described]
    found = sorted(zip(links.rec0.tolist(), links.rec1.tolist(), links.sims.tolist(),
                       strict=True))  # fmt: skip
    return found, cpu, wall, sum(t.sent.values())


def run(n: int, a: list[np.ndarray], b: list[np.ndarray], rule: Rule,  # type: ignore[type-arg]
        args: argparse.Namespace, work: Path) -> bool:  # fmt: skip
    roles = _roles(work, str(n), args.standing_bytes)
    s1, s2 = roles["s1"], roles["s2"]
    same = True
    try:
        _upload(roles, NAMES[1], _shared([x[:n] for x in b]), rule)
        bits = [8 * int(x.shape[1]) for x in b]
        conversions = Conversions()
        got: dict[str, list[tuple[float, float, int]]] = {"standing": [], "pairs": []}
        _upload(roles, NAMES[0], _shared([x[:1] for x in a]), rule)
        ask(roles, [1, n], bits, rule, None)  # warm: circuits built, channels made (not timed)
        rss0, answers = _rss(), []
        cutoffs = twoserver.Combiner(None, THRESHOLD, clks=2, rule=rule).cutoffs
        for k in range(args.queries):
            q = _query(k, a, b)
            clear = standing_clear.clear_links(q, [x[:n] for x in b], rule, cutoffs)
            found = {}
            for path in ("standing", "pairs")[: 1 if args.no_pairs else 2]:
                _upload(roles, NAMES[0], _shared(q), rule)
                links, cpu, wall, sent = ask(
                    roles, [1, n], bits, rule, conversions if path == "standing" else None
                )
                found[path] = links
                if args.show_links or links != clear:  # (each link's Dice on both CLKs)
                    print(f"    links (record of the query, of the partner, bucket; Dice): "
                          f"{[(*x, standing_clear.dice(q, b, x)) for x in links]}; in the clear "
                          f"{[(*x, standing_clear.dice(q, b, x)) for x in clear]}")  # fmt: skip
                first = " (converting the partner)" if path == "standing" and k == 0 else ""
                print(f"  query {k}, {path:8s}: CPU {cpu:.2f} s ({1e6 * cpu / n:.1f} us a pair), "
                      f"wall {wall:.2f} s, {sent:,} bytes ({sent / n:,.0f} a pair); "
                      f"{len(links)} links ({len(clear)} in the clear){first}",
                      flush=True)  # fmt: skip
                kinds = ", ".join(f"{w} {s}->{r} {v / n:,.0f}"
                                  for (w, s, r), v in sorted(LAST.kinds.items()) if v)  # fmt: skip
                print(f"    user {LAST.user:.2f} s, system {LAST.system:.2f} s; parts (clk, "
                      f"pairs) {LAST.parts}; bytes a pair {kinds}", flush=True)  # fmt: skip
                if path == "standing":  # a conversion the query left in the background
                    c0, w0, t0 = time.process_time(), time.perf_counter(), os.times()
                    assert conversions.idle(7200)
                    bg, t1 = (time.process_time() - c0, time.perf_counter() - w0), os.times()
                    if k == 0:
                        print(f"  (the conversion after query 0's answer, in the background: "
                              f"CPU {bg[0]:.1f} s (user {t1.user - t0.user:.1f}, system "
                              f"{t1.system - t0.system:.1f}), wall {bg[1]:.1f} s)",
                              flush=True)  # fmt: skip
                        _memory(roles, rss0)
                    cpu += bg[0]
                got[path].append((cpu, wall, sent))
            same = same and all(v == clear for v in found.values())
            answers.append(clear)
        later = got["standing"][1:] or got["standing"]
        med = [statistics.median(x[i] for x in later) for i in range(3)]
        pairs = [statistics.median(x[i] for x in got["pairs"]) for i in range(3)] if got[
            "pairs"] else []  # fmt: skip
        conv = [got["standing"][0][i] - med[i] for i in range(3)]
        kept = [r.service.standing.bytes_kept() / n for r in (s1, s2)]
        by = f" (by pairs {got['pairs'][0][1]:.1f} s)" if pairs else ""
        print(f"partner of {n:,} records, --inline-records {standdeal.INLINE_RECORDS:,}: the "
              f"first query's wall {got['standing'][0][1]:.1f} s{by}; the conversion (the "
              f"first standing query, with its background, less a later one's median) CPU "
              f"{conv[0]:.1f} s, wall within the query {conv[1]:.1f} s, {conv[2]:,.0f} "
              f"bytes ({conv[2] / n:,.0f} a record; C's count of conversions "
              f"{conversions.converted}); kept a record S1 {kept[0]:,.0f} B, S2 "
              f"{kept[1]:,.0f} B", flush=True)  # fmt: skip
        for path, m in (("standing", med), ("pairs", pairs))[: 2 if pairs else 1]:
            us = 1e6 * m[0] / n
            print(f"  {path}, median of the later queries: CPU {m[0]:.2f} s ({us:.1f} us a "
                  f"pair), wall {m[1]:.2f} s, {m[2] / n:,.0f} bytes a pair; at {BUDGET_S:.0f} s "
                  f"of CPU a query: {BUDGET_S / (us * 1e-6):,.0f} pairs", flush=True)  # fmt: skip
        if pairs:
            print(f"  by pairs / standing: CPU {pairs[0] / med[0]:.1f}x, wall "
                  f"{pairs[1] / med[1]:.1f}x, bytes {pairs[2] / med[2]:.1f}x; the links, buckets "
                  f"and rows in the clear by both: {same}", flush=True)  # fmt: skip
        print(f"  peak RSS so far {_peak():,.0f} MiB", flush=True)
        if args.regenerate:
            same = _regenerated(roles, n, a, b, bits, rule, conversions, answers, med[0]) and same
    finally:
        _stop(roles)
    return same


def _memory(roles: dict[str, RunningRole], before: float) -> None:
    """The process's RSS once the conversion is whole against S1's and S2's bytes kept: as the
    servers left it (with `--no-trim`, no `malloc_trim` after it), then after `malloc_trim(0)`
    (what S1 and S2 do after each piece, standmask: rpc/twoserver_standcache.py `trim`)."""
    kept = sum(r.service.standing.bytes_kept() for r in roles.values()) / 2**20
    now = _rss()
    standcache.TRIM, was = True, standcache.TRIM
    standcache.trim()
    standcache.TRIM = was
    trimmed = _rss()
    print(f"  RSS: {before:,.0f} MiB before the conversion, {now:,.0f} MiB after it (servers' "
          f"trim {'on' if was else 'off'}: +{now - before:,.0f} MiB for {kept:,.0f} MiB kept by "
          f"S1 and S2, excess {now - before - kept:,.0f} MiB), {trimmed:,.0f} MiB after "
          f"malloc_trim(0) (excess {trimmed - before - kept:,.0f} MiB)", flush=True)  # fmt: skip


def _regenerated(roles: dict[str, RunningRole], n: int, a: list[np.ndarray],  # type: ignore[type-arg]
                 b: list[np.ndarray], bits: list[int], rule: Rule,  # type: ignore[type-arg]
                 conversions: Conversions, answers: list[list[tuple[int, int, float]]],
                 kept_cpu: float) -> bool:  # fmt: skip
    """`--regenerate`: S1 and S2 then forget their [M_B] (`Partner.forget_mask`, as a partner
    that fits `--standing-bytes` only so is kept, standmask) and the same queries are asked
    by the standing path again: CPU a pair against the kept median of this run, bytes kept."""
    for r in roles.values():
        for e in r.service.standing._held.values():
            if e.conv.partner is not None:
                e.conv.partner.forget_mask()
    standcache.trim()
    queried, same, cpus = conversions.queried, True, list[float]()
    for k, pairs in enumerate(answers):
        _upload(roles, NAMES[0], _shared(_query(k, a, b)), rule)
        links, cpu, wall, _ = ask(roles, [1, n], bits, rule, conversions)
        same, cpus = same and links == pairs, [*cpus, cpu]
        print(f"  query {k}, S1 and S2 regenerating [M_B]: CPU {cpu:.2f} s "
              f"({1e6 * cpu / n:.1f} us a pair), wall {wall:.2f} s, {len(links)} links",
              flush=True)  # fmt: skip
    med = statistics.median(cpus)
    kept = [r.service.standing.bytes_kept() / n for r in roles.values()]
    every = conversions.queried - queried == len(answers)
    print(f"  regenerating [M_B] (every query standing: {every}): median CPU {med:.2f} s "
          f"({1e6 * med / n:.1f} us a pair) against kept {kept_cpu:.2f} s "
          f"({1e6 * kept_cpu / n:.1f} us a pair), +{1e6 * (med - kept_cpu) / n:.1f} us a pair; "
          f"kept a record S1 {kept[0]:,.0f} B, S2 {kept[1]:,.0f} B; the links in the "
          f"clear: {same}", flush=True)  # fmt: skip
    return same


def thrash(n: int, a: list[np.ndarray], b: list[np.ndarray], rule: Rule,  # type: ignore[type-arg]
           args: argparse.Namespace, work: Path) -> bool:  # fmt: skip
    """`--partners` P partners of `n` records each (B's records, P slices) where S1's and S2's
    `--standing-bytes` hold fewer: `--queries` one-record queries each compared against every
    partner in turn with the matcher's conversions kept across them, then the same queries by
    pairs; CPU and wall a query, the conversions made."""
    most = args.standing_bytes
    roles, names = _roles(work, f"t{n}", most), [f"partner{k}" for k in range(args.partners)]
    s1, s2 = roles["s1"], roles["s2"]
    bits = [8 * int(x.shape[1]) for x in b]
    try:
        for k, name in enumerate(names):
            _upload(roles, name, _shared([x[k * n : (k + 1) * n] for x in b]), rule)
        conversions = Conversions()
        found: dict[str, list[object]] = {"kept": [], "pairs": []}
        for path in ("kept", "pairs"):
            for q in range(args.queries):
                _upload(roles, NAMES[0], _shared([x[q : q + 1] for x in a]), rule)
                c0, w0 = time.process_time(), time.perf_counter()
                for name in names:
                    got = ask(roles, [1, n], bits, rule, conversions if path == "kept" else None,
                              [NAMES[0], name])  # fmt: skip
                    found[path].append(got[0])
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                made = [r.service.standing.conversions for r in (s1, s2)]
                print(f"  query {q} against {args.partners} partners, {path:5s}: CPU {cpu:.1f} s,"
                      f" wall {wall:.1f} s; conversions so far C {conversions.converted}, S1/S2 "
                      f"{made[0]}/{made[1]}, parts declined (by pairs) "
                      f"{getattr(conversions, 'declined', '-')}", flush=True)  # fmt: skip
        same = found["kept"] == found["pairs"]
        print(f"{args.partners} partners of {n:,} records, --standing-bytes {most:,}: "
              f"conversions {conversions.converted} over {args.queries} queries; kept S1 "
              f"{s1.service.standing.bytes_kept():,} B; the same links as by pairs: {same}; "
              f"peak RSS {_peak():,.0f} MiB", flush=True)  # fmt: skip
    finally:
        _stop(roles)
    return same


class _Stopping(Conversions):
    """C's conversions, the background one held after its piece `k` (`pause`) until
    `close`."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.pieces, self.reached, self.go = k, 0, threading.Event(), threading.Event()

    def pause(self) -> None:
        self.pieces += 1
        if self.pieces == self.k:
            self.reached.set()
            self.go.wait()
        super().pause()

    def close(self, timeout: float | None = None) -> bool:
        self.go.set()
        return super().close(timeout)


def stopped(n: int, a: list[np.ndarray], b: list[np.ndarray], rule: Rule,  # type: ignore[type-arg]
            args: argparse.Namespace, work: Path) -> bool:  # fmt: skip
    """The first query's conversion of a partner of `n` records stopped after its piece K, as
    the matcher's stop does now (given up at S1 and S2), then as before (no word to them)."""
    roles = _roles(work, f"s{n}", None)
    bits = [8 * int(x.shape[1]) for x in b]
    quiet, k = standdeal.give_up, args.stop_after_pieces
    try:
        _upload(roles, NAMES[1], _shared([x[:n] for x in b]), rule)
        for how in ("now", "before"):
            standdeal.give_up = quiet if how == "now" else (lambda *_: None)  # type: ignore[assignment]
            _upload(roles, NAMES[0], _shared([x[:1] for x in a]), rule)
            conversions = _Stopping(k)
            ask(roles, [1, n], bits, rule, conversions)
            assert conversions.reached.wait(7200)
            held = [r.service.standing.bytes_kept() for r in roles.values()]
            w0 = time.perf_counter()
            ended = conversions.close()
            wall = time.perf_counter() - w0
            after = [r.service.standing.bytes_kept() for r in roles.values()]
            print(f"  {how:6s}: the conversion of {n:,} records stopped after {k} pieces "
                  f"(S1/S2 held {held[0]:,}/{held[1]:,} B of it); C's stop "
                  f"{1e3 * wall:.1f} ms wall, ended {ended}; S1/S2 hold "
                  f"{after[0]:,}/{after[1]:,} B after", flush=True)  # fmt: skip
            roles["s1"].service.standing.forget({NAMES[1]}, "the benchmark's next case")
            roles["s2"].service.standing.forget({NAMES[1]}, "the benchmark's next case")
    finally:
        standdeal.give_up = quiet
        _stop(roles)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partner-records", default="16000,64000",
                        help="the partner's records, comma-separated")  # fmt: skip
    parser.add_argument("--queries", type=int, default=3, help="one-record queries each")
    parser.add_argument("--population", choices=["households", "messy"], default="households")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partners", type=int, default=1,
                        help="over 1: that many partners of each size, every query against all "
                             "(`thrash`), S1 and S2 keeping --standing-bytes")  # fmt: skip
    parser.add_argument(
        "--standing-bytes",
        type=int,
        default=None,
        help="S1's and S2's bound on partners kept converted (with --partners; alone: a "
        "partner that fits it only without [M_B] is kept so, standmask)",
    )
    parser.add_argument(
        "--inline-records",
        type=int,
        default=None,
        help="a partner of at most N records is converted within the query (it waits, as "
        "before standbg with 100000); default 0: in the background "
        "(rpc/twoserver_standdeal.py INLINE_RECORDS)",
    )
    parser.add_argument("--stop-after-pieces", type=int, default=0,
                        help="K: the first conversion stopped after K pieces, given up "
                             "(now) and not (before): the bytes S1 and S2 keep")  # fmt: skip
    parser.add_argument("--regenerate", action="store_true",
                        help="then S1 and S2 forget [M_B] and the queries are asked again "
                             "standing: CPU a pair kept vs regenerated (standmask)")  # fmt: skip
    parser.add_argument("--no-trim", action="store_true",
                        help="S1 and S2 do not malloc_trim after each piece (as before "
                             "standmask): the RSS it leaves, then trimmed")  # fmt: skip
    parser.add_argument(
        "--show-links",
        action="store_true",
        help="print each query's links (its record, the partner's, similarity)",
    )
    parser.add_argument("--trim-every", type=int, default=standing_rpc.TRIM_EVERY,
                        help="S1 and S2 trim their heap every K conversion pieces and after the "
                             "last (the servers' TRIM_EVERY; 1: after each)")  # fmt: skip
    parser.add_argument("--bands", type=int, default=PLAN.bands,
                        help="the band plan's bands (S1 compares every pair: their keys go "
                             "unread, but S1's upload holds them, ~214 MB a band a CLK at "
                             "1,000,000 records)")  # fmt: skip
    parser.add_argument(
        "--no-pairs",
        action="store_true",
        help="the queries asked standing only, not again by pairs",
    )
    add_keep(parser)
    args = parser.parse_args()
    _plan(args.bands)
    standcache.TRIM = not args.no_trim
    standing_rpc.TRIM_EVERY = args.trim_every
    if args.inline_records is not None:
        standdeal.INLINE_RECORDS = args.inline_records
    sizes = [int(x) for x in args.partner_records.split(",")]
    load = argparse.Namespace(records=args.queries, partner_records=max(sizes) * args.partners,
                              population=args.population, seed=args.seed)  # fmt: skip
    rows, rule = bench.members(load)
    a = [np.ascontiguousarray(r[: args.queries]) for r in rows]
    b = [np.ascontiguousarray(r[args.queries :]) for r in rows]
    del rows
    memory.release_free_memory()  # the people generated (~2 GB of freed heap at 500,000)
    print(f"{args.population}, seed {args.seed}: one-record queries over gRPC against partners "
          f"of {', '.join(f'{n:,}' for n in sizes)} records, rule {rule.text()}; load "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; RSS {_rss():,.0f} MiB "
          f"(peak {_peak():,.0f})", flush=True)  # fmt: skip
    ok = True
    with work_dir("twoserver-standing-rpc", args.keep) as work:
        for n in sizes:
            go = stopped if args.stop_after_pieces else thrash if args.partners > 1 else run
            ok = go(n, a, b, rule, args, work) and ok
    print(f"\nevery query's links those in the clear: {ok}; peak RSS {_peak():,.0f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
