"""Thread placement: request handling on one core, real-time look-ups on the others,
batch runs everywhere; answers the same wherever the look-ups run."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cliflow import serve
from benchmarks.synthclks import CLK_BITS, Population
from blindmatch.cli.app import main
from blindmatch.client import MatcherClient
from blindmatch.matcher.core import kernel, segment
from blindmatch.matcher.core.index import MemberIndex, Segment, as_words, search_snapshots
from blindmatch.matcher.placement import (
    MAX_AUTO_THREADS,
    REQUEST_CPU_ENV,
    Placement,
    check_request_cpu,
    plan_placement,
    request_cpu_from_env,
    start_lookups,
)
from tests.support import Matcher, partner_indexes

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="thread placement needs Linux"
)


def cpus_of(thread_id: int, pid: int | str = "self") -> set[int]:
    """The CPUs a thread of this process (or of `pid`) may run on, from /proc."""
    status = Path(f"/proc/{pid}/task/{thread_id}/status").read_text()
    listed = next(line for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
    cpus: set[int] = set()
    for part in listed.split(":")[1].strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def test_the_plan_keeps_one_core_for_requests_and_gives_the_rest_to_look_ups() -> None:
    assert plan_placement({3}, None) is None  # one CPU: nothing to place
    assert plan_placement({0, 1, 2, 3}, 0) is None  # asked for no placement
    four = plan_placement({2, 3, 4, 5}, None)
    assert four == Placement(frozenset({2}), frozenset({3, 4, 5}), 3)
    many = plan_placement(set(range(32)), None)
    assert many is not None and many.lookup_threads == MAX_AUTO_THREADS
    assert many.lookup_cpus == frozenset(range(1, 32))
    assert plan_placement({0, 1}, 6) == Placement(frozenset({0}), frozenset({1}), 6)
    with pytest.raises(ValueError, match="lookup_threads"):
        plan_placement({0, 1}, -1)


def test_the_request_cpu_can_be_named_so_matchers_on_one_host_keep_apart() -> None:
    # Two matchers on a 2-core host (a suite's two workers) each keep their own core.
    assert plan_placement({0, 1}, None, 1) == Placement(frozenset({1}), frozenset({0}), 1)
    assert plan_placement({2, 3, 4, 5}, None, 4) == Placement(
        frozenset({4}), frozenset({2, 3, 5}), 3
    )
    with pytest.raises(ValueError, match=r"request CPU 7: .* may use CPU 0,1"):
        plan_placement({0, 1}, None, 7)


def test_one_check_says_whether_a_request_cpu_may_be_used_for_serve_and_the_plan() -> None:
    """`serve`'s check (cli/serve.py) and `plan_placement`'s are one function, each naming
    the CPU its own way."""
    check_request_cpu(1, {0, 1})
    with pytest.raises(ValueError, match=r"^request CPU 7: not a CPU this process may run on "
                       r"\(it may use CPU 0,1\)$"):  # fmt: skip
        check_request_cpu(7, {1, 0})
    with pytest.raises(ValueError, match=r"^--request-cpu 7: not a CPU"):
        check_request_cpu(7, {0}, "--request-cpu 7")


def test_serve_refuses_a_request_cpu_it_may_not_run_on_before_opening_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    outside = max(os.sched_getaffinity(0)) + 1
    argv = ["serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
    assert main([*argv, "--request-cpu", str(outside)]) == 2
    assert f"--request-cpu {outside}: not a CPU this process may run on" in capsys.readouterr().err
    monkeypatch.setenv(REQUEST_CPU_ENV, "first")
    assert main(argv) == 2
    assert f"{REQUEST_CPU_ENV}='first': a CPU number" in capsys.readouterr().err
    assert not data.exists()  # nothing opened, nothing made


def test_a_serve_keeps_its_request_threads_on_the_cpu_it_is_given(tmp_path: Path) -> None:
    # In a process of its own: the look-up pool is one per process (start_lookups).
    everywhere = sorted(os.sched_getaffinity(0))
    if len(everywhere) < 2 or not kernel.NATIVE:
        pytest.skip("placement needs two CPUs and the native kernel")
    named = everywhere[-1]  # not the lowest, the default
    with serve(tmp_path / "data", "--request-cpu", str(named)) as served:
        pid = served.process.pid
        threads = [cpus_of(int(t), pid) for t in os.listdir(f"/proc/{pid}/task")]
    assert {named} in threads  # the request threads
    assert set(everywhere) - {named} in threads  # the look-up pool, on the others
    assert all(c in ({named}, set(everywhere) - {named}, set(everywhere)) for c in threads)


@pytest.fixture
def placed(matcher: Matcher) -> Placement:
    placement = plan_placement(set(os.sched_getaffinity(0)), None, request_cpu_from_env())
    if placement is None or not kernel.NATIVE:
        pytest.skip("placement needs two CPUs and the native kernel")
    return placement


def test_a_placed_matcher_keeps_its_request_threads_on_one_core(
    matcher: Matcher, placed: Placement
) -> None:
    everywhere = set(os.sched_getaffinity(0))
    realtime, runs = matcher.server.realtime, matcher.server.runs
    # The query log writes on the request core; batch runs keep every core.
    assert cpus_of(realtime.query_log._thread.native_id or 0) == set(placed.request_cpus)
    assert cpus_of(runs._thread.native_id or 0) == everywhere
    # The thread that started the matcher (this test's) is back where it was.
    assert set(os.sched_getaffinity(0)) == everywhere
    # The look-up pool's threads run on the other cores only.
    tasks = [int(t) for t in os.listdir("/proc/self/task")]
    assert any(cpus_of(t) == set(placed.lookup_cpus) for t in tasks)


def test_an_index_merge_started_by_a_request_runs_on_every_core(
    matcher: Matcher, placed: Placement, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blindmatch.matcher.core.index.COMPACT_MIN", 50)
    seen: list[set[int]] = []
    build = Segment.build.__func__

    def noting(cls: type[Segment], *args: object, **kwargs: object) -> Segment:
        if threading.current_thread().name == "blindmatch-merge":
            seen.append(set(os.sched_getaffinity(0)))
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(Segment, "build", classmethod(noting))
    with matcher.operator() as op:
        tokens = op.create_project("m", ["north", "west"]).tokens
    clks = np.random.default_rng(3).integers(0, 256, (400, CLK_BITS // 8), dtype=np.uint8)
    with MatcherClient(matcher.target, tokens["north"]) as north:
        for rows in (range(300), range(300, 400)):  # the second change crosses the merge point
            puts = [(f"r{i}", clks[i].tobytes()) for i in rows]
            north.change_index("m", clk_bits=CLK_BITS, fingerprint=bytes(range(32)), puts=puts)
    assert matcher.server.realtime.indexes.get("m", "north").wait_merged(timeout=60)
    assert seen and all(cpus == set(os.sched_getaffinity(0)) for cpus in seen)
    assert set(os.sched_getaffinity(0)) != set(placed.request_cpus)


def test_look_ups_on_the_pool_answer_as_look_ups_in_the_caller(
    matcher: Matcher, placed: Placement, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert start_lookups(placed) > 0  # running (started by the matcher above)
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 500)
    rng = np.random.default_rng(5)
    pop = Population(8000, 5)
    clks = pop.encode(np.arange(6000), rng, np.zeros(6000, dtype=bool))
    indexes = partner_indexes(clks, {"east": 0, "north": 1500, "south": 3000}, 3000)
    snapshots = {name: index.snapshot for name, index in indexes.items()}
    queries = as_words(pop.encode(rng.integers(0, 4500, 60), rng, np.ones(60, bool)), CLK_BITS)
    found = 0
    for q in queries:
        together = search_snapshots(snapshots, q, 0.8)  # on the pool
        assert together == {n: s.search(q, 0.8) for n, s in snapshots.items()}  # here
        found += sum(map(len, together.values()))
    assert found >= 50


def test_passes_run_by_the_pool_and_their_callers_together_answer_as_look_ups_here(
    matcher: Matcher, placed: Placement, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass of many queries is shared by the pool and the thread that asked (which runs
    # queued look-ups while it waits, another pass's among them); a pass of one query runs
    # on its caller. Four threads ask at once, over and over: every answer is the same as
    # a search here, one query at a time.
    assert start_lookups(placed) > 0
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 500)
    rng = np.random.default_rng(8)
    pop = Population(8000, 8)
    clks = pop.encode(np.arange(6000), rng, np.zeros(6000, dtype=bool))
    indexes = partner_indexes(clks, {"east": 0, "north": 1500, "south": 3000}, 3000)
    snapshots = {name: index.snapshot for name, index in indexes.items()}
    queries = as_words(pop.encode(rng.integers(0, 4500, 60), rng, np.ones(60, bool)), CLK_BITS)
    want = [{n: s.search(q, 0.8) for n, s in snapshots.items()} for q in queries]
    wrong: list[int] = []

    def ask(k: int) -> None:
        for size in (15, 1, 7, 15, 1):
            mine = queries[k::4][:size]
            if segment.search_batch([(snapshots, mine, 0.8)])[0] != want[k::4][:size]:
                wrong.append(k)

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not wrong and not any(t.is_alive() for t in threads)
    assert sum(len(h) for answer in want for h in answer.values()) >= 50


def test_a_forked_child_looks_up_without_the_pool(
    matcher: Matcher, placed: Placement, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 500)
    rng = np.random.default_rng(6)
    clks = Population(3000, 6).encode(np.arange(2000), rng, np.zeros(2000, dtype=bool))
    snapshots = {
        name: MemberIndex.load(
            CLK_BITS, [f"r{i}" for i in range(2000)], as_words(clks, CLK_BITS), threshold=0.8
        ).snapshot
        for name in ("east", "north")
    }
    query = as_words(clks[7], CLK_BITS)[0]
    pid = os.fork()
    if pid == 0:  # the child: the pool's threads did not come along
        ok = search_snapshots(snapshots, query, 0.8) == {
            "east": [("r7", 1.0)],
            "north": [("r7", 1.0)],
        }
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's look-up hung (it waited for a pool it does not have)")


def test_a_benchmark_serve_on_cpus_of_its_own_ignores_a_request_cpu_outside_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # benchmarks/realtime.py --matcher-cpus 0 under an environment naming another core (as
    # the suite's second worker's does) places the matcher within the cores it was given.
    everywhere = sorted(os.sched_getaffinity(0))
    if len(everywhere) < 2:
        pytest.skip("needs two CPUs")
    monkeypatch.setenv(REQUEST_CPU_ENV, str(everywhere[-1]))
    with serve(tmp_path / "data", cpus={everywhere[0]}) as served:
        assert served.process.poll() is None
