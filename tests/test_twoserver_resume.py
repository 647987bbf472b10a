"""A two-server run keeps each pair of members' outcome in its journal as soon as it holds it
(core/outcomes.py `Ledger`, core/runjournal.py): after a failure part-way, the finished pairs
of members' outcomes are there, a pair of members whose batch S1 and S2 may have evaluated is
pending, and a run reusing the kept outcomes gives the links of a run that never failed
without S1 and S2 evaluating a pair twice (their budget, as tests/test_twoserver_rerun.py
keeps it, would refuse). S1 and S2 in this process; a batch fails as a party's does over
gRPC: before S1 was asked (S2 refused the batch: nothing evaluated) or after both evaluated it.
The same over real gRPC servers: tests/test_twoserver_project_resume.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from benchmarks.twoserver_rerun import THRESHOLD, Budgeted, Budgets, links_of
from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import tworun, twoserver
from blindmatch.matcher.core.outcomes import Earlier, Outcome
from blindmatch.matcher.errors import Unavailable
from tests.support import MESSY_SECRET
from tests.test_twocomplete import subjects

PLAN = client.BandPlan(bits=4, bands=40)
NAMES = ["A", "B", "C"]
T = TypeVar("T")


@pytest.fixture(scope="module")
def members() -> dict[str, client.SharedUpload]:
    """tests/test_twocomplete.py's subjects (A-B 0.90, A-C 0.86, B-C 0.76): the run asks
    extras inside its groups, then completion a B-C pair at the reach cut-off."""
    return {n: client.shared_upload(d, MESSY_SECRET, PLAN)
            for n, d in zip(NAMES, subjects(), strict=True)}  # fmt: skip


class Kept:
    """A journal (core/outcomes.py `Journal`) in memory: what the matcher's SQLite holds."""

    def __init__(self) -> None:
        self.outcomes: dict[tuple[int, int], Outcome] = {}
        self.open: set[tuple[int, int]] = set()
        self.log: list[tuple[str, tuple[int, int]]] = []

    def pending(self, ends: tuple[int, int]) -> None:
        self.open.add(ends)
        self.log.append(("pending", ends))

    def keep(self, ends: tuple[int, int], outcome: Outcome) -> None:
        self.outcomes[ends] = outcome
        self.open.discard(ends)
        self.log.append(("keep", ends))

    def drop(self, ends: tuple[int, int]) -> None:
        self.outcomes.pop(ends, None)
        self.open.discard(ends)
        self.log.append(("drop", ends))

    def reusable(self) -> dict[tuple[int, int], Outcome]:
        return {e: o for e, o in self.outcomes.items() if e not in self.open}


class Failing(Budgeted):
    """S1 and S2 in this process whose `fail`-th batch of `method` (`evaluate_part`: the
    proposal's, `evaluate`: the extras', `evaluate_reach`) fails as a party's over gRPC:
    before S1 is asked (`evaluated` False: S2 refused it), or after both evaluated it."""

    def __init__(self, uploads: list[client.SharedUpload], budget: Budgets, method: str,
                 fail: int = 1, evaluated: bool = False) -> None:  # fmt: skip
        super().__init__(uploads, NAMES, budget)
        self.method, self.fail, self.spends, self.calls = method, fail, evaluated, 0

    def _call(self, method: str, call: Callable[[], T]) -> T:
        self.calls += method == self.method
        if method != self.method or self.calls != self.fail:
            return call()
        if self.spends:
            call()  # S1 and S2 evaluated the batch; its answer is lost
        exc = Unavailable("S2 (127.0.0.1:1) is unreachable")
        exc.evaluated = self.spends
        raise exc

    def evaluate_part(self, *args: Any) -> tuple[bytes, bytes]:
        return self._call("evaluate_part", lambda: super(Failing, self).evaluate_part(*args))

    def evaluate(self, *args: Any) -> tuple[bytes, bytes]:
        return self._call("evaluate", lambda: super(Failing, self).evaluate(*args))

    def evaluate_reach(self, *args: Any) -> tuple[bytes, bytes]:
        return self._call("evaluate_reach", lambda: super(Failing, self).evaluate_reach(*args))


def drive(
    servers: Budgeted, reuse: dict[tuple[int, int], Outcome], journal: Kept | None = None
) -> tworun.TwoServerResult:
    combiner = twoserver.Combiner(None, THRESHOLD, clks=1)
    return tworun.drive(servers, combiner, earlier=Earlier(len(NAMES), reuse), journal=journal)


def servers(members: dict[str, client.SharedUpload], budget: Budgets) -> Budgeted:
    return Budgeted([members[n] for n in NAMES], NAMES, budget)


def failing(members: dict[str, client.SharedUpload], budget: Budgets, method: str,
            evaluated: bool = False) -> Failing:  # fmt: skip
    return Failing([members[n] for n in NAMES], budget, method, evaluated=evaluated)


@pytest.mark.parametrize("method", ["evaluate", "evaluate_reach"])
def test_a_run_failing_at_its_extras_or_reach_before_s1_is_asked_is_resumed_whole(
    members: dict[str, client.SharedUpload], method: str
) -> None:
    everyone = servers(members, Budgets())
    want = drive(everyone, {})
    assert want.completion["joins made"] > 0 and everyone.reached > 0
    budget, kept = Budgets(), Kept()
    first = failing(members, budget, method)
    with pytest.raises(Unavailable):
        drive(first, {}, kept)
    # Every pair of members' proposal was evaluated and kept (and, failing at the extras,
    # which come after completion, the reach bits); none is pending (the failed batch
    # reached neither server).
    assert len(kept.outcomes) == 3 and not kept.open
    again = servers(members, budget)  # the same budget: a pair asked twice raises
    got = drive(again, kept.reusable(), kept)
    assert links_of(got, NAMES) == links_of(want, NAMES)
    assert got.completion == want.completion and got.groups == want.groups
    assert got.comparisons == 0 and first.reached + again.reached == everyone.reached
    assert not kept.open and len(kept.reusable()) == 3


def test_a_reach_batch_s1_and_s2_evaluated_leaves_its_pair_of_members_pending(
    members: dict[str, client.SharedUpload],
) -> None:
    budget, kept = Budgets(), Kept()
    with pytest.raises(Unavailable):
        drive(failing(members, budget, "evaluate_reach", evaluated=True), {}, kept)
    assert kept.open == {(1, 2)}  # B x C: S1 and S2 gave its reach bit, C did not get it
    # Reusing every kept outcome, B x C's reach pair would be asked again: refused.
    with pytest.raises(ValueError, match="evaluated twice"):
        drive(servers(members, budget), kept.outcomes, Kept())


def test_a_first_proposal_batch_that_reached_no_server_is_not_pending(
    members: dict[str, client.SharedUpload],
) -> None:
    want = drive(servers(members, Budgets()), {})
    budget, kept = Budgets(), Kept()
    with pytest.raises(Unavailable):
        drive(failing(members, budget, "evaluate_part"), {}, kept)
    assert not kept.open and not kept.outcomes and kept.log[-1][0] == "drop"
    # The same failure after S1 and S2 evaluated the batch: its pair of members pending.
    kept = Kept()
    with pytest.raises(Unavailable):
        drive(failing(members, Budgets(), "evaluate_part", evaluated=True), {}, kept)
    assert len(kept.open) == 1 and not kept.reusable()
    # The first run's budget spent nothing: a rerun asks everything and gives the links.
    got = drive(servers(members, budget), {}, Kept())
    assert links_of(got, NAMES) == links_of(want, NAMES)
