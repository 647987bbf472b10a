"""Results are read at one moment: a run finishing while a member fetches never yields an
older run's header with its links already replaced (an empty or partial answer that looks
like a right one)."""

from __future__ import annotations

import threading
from pathlib import Path

from benchmarks.knownclks import expected_hits, hits_of, population, write
from blindmatch.client import ProjectTokens
from tests.support import Matcher


def test_fetching_while_runs_finish_sees_only_complete_results(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path
) -> None:
    north, south = population(2, 400, 0.5, seed=17)
    truth = expected_hits({"north": north, "south": south})["north"]
    assert len(truth) > 100
    with matcher.member(project.tokens["south"]) as south_client:
        south_client.upload("trial", write(south, tmp_path / "south"))
    with matcher.member(project.tokens["north"]) as north_client:
        north_client.upload("trial", write(north, tmp_path / "north"))
        first = north_client.start_run("trial")
        assert list(north_client.watch_run("trial", first.run_id))[-1].state == "done"

    runs_finished = threading.Event()
    seen: list[tuple[str, int, bool]] = []  # (run, hits, equal to the truth)

    def fetch_continuously() -> None:
        with matcher.member(project.tokens["north"]) as client:
            while not runs_finished.is_set():
                results = client.results("trial")
                hits = hits_of(results.hits)
                seen.append((results.run_id, len(hits), hits == truth))

    fetchers = [threading.Thread(target=fetch_continuously) for _ in range(2)]
    for fetcher in fetchers:
        fetcher.start()
    try:
        with matcher.member(project.tokens["south"]) as client:
            for _ in range(25):  # each re-run over the same uploads replaces the links whole
                run = client.start_run("trial")
                assert list(client.watch_run("trial", run.run_id))[-1].state == "done"
    finally:
        runs_finished.set()
        for fetcher in fetchers:
            fetcher.join(timeout=60)
    runs_seen = {run for run, _, _ in seen}
    wrong = [(run, n) for run, n, right in seen if not right]
    assert len(runs_seen) > 5, "the fetches did not overlap the re-runs"
    assert wrong == [], f"{len(wrong)} of {len(seen)} fetches were incomplete: {wrong[:5]}"
