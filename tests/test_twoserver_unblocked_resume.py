"""A run cut between the batches of an unblocked pair of members (S1's cap over the members,
core/exhaustive.py), resumed by a plain rerun over real gRPC servers: S1 cuts the part down in
slices (core/crosspart.py `Cross.leaving_out`, rpc/twoserver_resume.py `leave_out_counted`),
no member uploads again, the hits are an uncut run's and every pair is evaluated once.
tests/test_crosspart_resume.py compares the part cut down with the one made whole before."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.matcher.core import crosspart, exhaustive, linkbit
from blindmatch.matcher.core.crosspart import Cross
from tests.test_twoserver_project_rerun import last_run, run_hits
from tests.test_twoserver_project_resume import (
    Cut,
    Resumable,
    _hits,
    create,
    encoded,  # noqa: F401
    failed_run,
    rows,
    world,  # noqa: F401
)

pytestmark = pytest.mark.server


@pytest.fixture
def cut_down(monkeypatch: pytest.MonkeyPatch) -> list[Cross]:
    """S1 compares every pair of members without blocking, in circuits of 2,048 pairs (so a
    pair of members takes several batches); the parts S1 cuts down, as it cuts them."""
    monkeypatch.setattr(exhaustive, "DEFAULT_PAIRS", 10**9)
    monkeypatch.setattr(linkbit, "BATCH", 2048)
    made: list[Cross] = []
    leaving_out = crosspart.Cross.leaving_out

    def kept(self: Cross, counted: object) -> Cross:
        made.append(leaving_out(self, counted))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(crosspart.Cross, "leaving_out", kept)
    return made


def test_an_unblocked_pair_of_members_cut_between_its_batches_is_resumed_in_slices(
    cut_down: list[Cross],
    world: Resumable,  # noqa: F811
    encoded: dict[str, Path],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    s1 = world.roles["s1"].service.budget
    whole = _hits(world, create(world, "whole", "two-server"), encoded)
    whole_spent = s1.pairs()
    project = create(world, "shares", "two-server")
    # S2 goes down before the first pair of members' third batch: two of its record part's
    # batches evaluated and journaled, the rest of it (and its fallback part) not.
    err = failed_run(world, project, encoded, Cut(pair=0, batch=2), capsys)
    assert "is unreachable" in err and not cut_down
    assert len([r for r in rows(world, "shares") if r[2]]) == 1
    before = s1.pairs()
    assert before - whole_spent == 2 * 2048
    assert run_hits(world, project, encoded) == whole
    # S1 cut the pair of members' parts down in slices, leaving out the 4,096 pairs counted;
    # each pair evaluated once over the two runs, as many as the uncut run evaluated.
    assert cut_down and all(p.left is not None for p in cut_down)
    assert sum(sum(len(a) * len(b) for a, b in p.blocks) - len(p) for p in cut_down) == 2 * 2048
    assert last_run(world, "shares")["resumed"]["pairs_of_members"] == 1  # type: ignore[index]
    assert world.roles["s1"].service.budget.pairs() - whole_spent == whole_spent
    assert [r[2] for r in rows(world, "shares")] == [0, 0, 0]
