"""A two-server run's journal in the matcher's SQLite (core/outcomes.py `Journal`,
storage/outcome_store.py): each pair of members' outcome kept as soon as the run holds it, so
that a run that fails part-way (S1 or S2 unreachable, the matcher restarted, a pair of
members refused) loses nothing it learned, and the next run at the same cut-offs sends only
the unfinished pairs of members through S1's proposal and the circuit (docs/protocol.md "A
second run over the same uploads").

What the operator is told: after a failure, whether a plain rerun will do or which members
must upload again (`after_failure`); before a run, which pairs of members S1 and S2 may have
evaluated pairs of that no outcome holds (`spent_refusal`: S1 and S2 evaluate each pair once
an upload, so one member of each such pair uploads again)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from blindmatch.matcher.core.outcomes import Outcome
from blindmatch.matcher.domain import counted
from blindmatch.matcher.errors import FailedPrecondition
from blindmatch.matcher.storage.store import Store


class StoreJournal:
    """The run's journal: `members` and `names` (their uploads' names at S1 and S2) by the
    run's dataset index."""

    def __init__(
        self,
        store: Store,
        project: str,
        run_id: str,
        cutoffs: tuple[float, ...],
        rule: str,
        members: Sequence[str],
        names: Sequence[str],
    ) -> None:
        self.store, self.project, self.run_id = store, project, run_id
        self.cutoffs, self.rule = cutoffs, rule
        self.members, self.names = list(members), list(names)
        self.kept: set[tuple[int, int]] = set()  # this run's pairs of members kept whole
        self.open: set[tuple[int, int]] = set()  # pending: a batch out

    def _row(self, ends: tuple[int, int]) -> tuple[tuple[str, str, str, str], bool]:
        """The row's names (name_a < name_b, then their members) and whether they are the
        other way round from `ends`."""
        i, j = ends
        if self.names[i] > self.names[j]:
            return (self.names[j], self.names[i], self.members[j], self.members[i]), True
        return (self.names[i], self.names[j], self.members[i], self.members[j]), False

    def pending(self, ends: tuple[int, int]) -> None:
        self.kept.discard(ends)
        self.open.add(ends)
        names, _ = self._row(ends)
        self.store.keep_two_server_outcome(self.project, self.run_id, self.cutoffs, self.rule,
                                           names, None)  # fmt: skip

    def keep(self, ends: tuple[int, int], outcome: Outcome) -> None:
        names, flip = self._row(ends)
        outcome = outcome.flipped() if flip else outcome
        self.store.keep_two_server_outcome(self.project, self.run_id, self.cutoffs, self.rule,
                                           names, outcome)  # fmt: skip
        self.kept.add(ends)
        self.open.discard(ends)

    def drop(self, ends: tuple[int, int]) -> None:
        names, _ = self._row(ends)
        self.store.drop_two_server_outcome(self.project, names[0], names[1])
        self.open.discard(ends)

    def _resumable(self, ends: tuple[int, int]) -> bool:
        names, _ = self._row(ends)
        return _resumable_rows(self.store, self.project, names[0], names[1])

    def after_failure(
        self, message: str, again: Sequence[str] = (), refused_key: bool = False
    ) -> str:
        """A failed run's `message`, saying what the next run needs: where a pair of members
        had a batch out when it failed (pending), a plain rerun resumes it if the journal holds
        every batch of it but that one (usecases/twobatches.py), otherwise one of its members
        uploads again; `again`, the members the message tells to upload again already.
        `refused_key`: S1 or S2 refused a key (UNAUTHENTICATED, its message naming the flags
        that must agree, rpc/twoserver_keys.py): a rerun fails the same way until they do, so
        no rerun is advised (twoleft, 2026-12-07)."""
        if refused_key:
            message = f"{message}. A rerun fails the same way until those keys agree"
            if not self.open:
                return message + _kept(len(self.kept), "; ")
        if self.open and all(self._resumable(ends) for ends in self.open):
            pairs = sorted((self.members[i], self.members[j]) for i, j in self.open)
            return (
                f"{message}. The matcher journaled every batch of {_pairs(pairs)} that S1 "
                "and S2 evaluated but the one that was out, which they keep (its shares, or "
                "the inputs of its rounds) until the matcher acknowledges it: a plain rerun "
                "(`blindmatch run`, no upload needed) asks that batch again by its id and the "
                "rest of those pairs of members, or, where S1 and S2 hold neither (a party "
                "restarted without its data dir), names "
                f'who uploads again (docs/operations.md "A run cut mid-batch"'
                f"{_kept(len(self.kept), '; ')})"
            )
        if self.open:
            pairs = sorted((self.members[i], self.members[j]) for i, j in self.open)
            return (
                f"{message}. S1 and S2 may have evaluated pairs of {_pairs(pairs)} that the "
                "matcher holds no outcome of, and evaluate each pair once an upload: "
                f"{_who(pairs)} must upload again before the next run"
                f"{_kept(len(self.kept), ' (')}{')' if self.kept else ''}"
            )
        if not self.kept:  # (nothing finished: no outcome kept to speak of)
            if again:
                return f"{message}. Once {', '.join(again)} uploaded again, run again"
            return (f"{message}. S1 and S2 evaluated no pair of members whose outcome the "
                    "matcher lacks: a plain rerun (`blindmatch run`, no upload needed) "
                    "starts it again")  # fmt: skip
        kept = (f"{message}. Nothing this run learned is lost: the outcomes of the "
                f"{_count(len(self.kept))} it finished are kept")  # fmt: skip
        if again:
            return (f"{kept}, and once {', '.join(again)} uploaded again the next run sends "
                    "only the pairs of members not finished through S1 and S2")  # fmt: skip
        return (f"{kept}, and a plain rerun (`blindmatch run`, no upload needed) sends only "
                "the others through S1 and S2")  # fmt: skip


def _resumable_rows(store: Store, project: str, low: str, high: str) -> bool:
    """Whether the journal holds a pending pair of uploads' batches but at most one
    (usecases/twobatches.py `resumable`)."""
    batches = store.two_server_batches(project, low, high)
    return (bool(batches) and sum(not b.answered for b in batches) <= 1
            and not any(b.refused for b in batches))  # fmt: skip


def spent_refusal(run_id: str, pairs: list[tuple[str, str]]) -> FailedPrecondition:
    """A run refused over pairs of members (by member name) an earlier run left pending."""
    pairs = sorted(pairs)
    return FailedPrecondition(
        f"run {run_id} failed part-way while S1 and S2 evaluated pairs of {_pairs(pairs)}, "
        "and the matcher holds no outcome of them; S1 and S2 evaluate each pair once an "
        f"upload, so those pairs cannot be asked again: {_who(pairs)} must upload again, then "
        "run (the other pairs of members' outcomes are kept; docs/operations.md \"One run an "
        'upload")'
    )


def spent_at_s1(message: str, members: Sequence[str], names: Sequence[str]) -> str:
    """S1's or S2's refusal of a pair evaluated already (`... since 'P/a/t' and 'P/b/u'
    uploaded`: an earlier run's failure this matcher did not record), naming the members."""
    found = re.search(r"since '([^']+)' and '([^']+)' uploaded", message)
    if found is None:
        return message
    by_name = dict(zip(names, members, strict=True))
    pair = (by_name.get(found[1]), by_name.get(found[2]))
    if pair[0] is None or pair[1] is None:
        return message
    return f"{message}. {_who([(pair[0], pair[1])])} must upload again, then run"


def _count(n: int) -> str:
    return f"{counted(n, 'pair')} of members"


def _kept(n: int, before: str) -> str:
    """`before` and that the outcomes of the `n` pairs of members a failed run finished are
    kept; nothing where it finished none."""
    return f"{before}the outcomes of the {_count(n)} this run finished are kept" if n else ""


def _pairs(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{a} and {b}" for a, b in pairs)


def _who(pairs: list[tuple[str, str]]) -> str:
    """Who uploads again: one member of each pair (a new upload starts its pairs' budget
    afresh), the fewest found greedily."""
    left, chosen = list(pairs), []
    while left:
        counts: dict[str, int] = {}
        for a, b in left:
            counts[a], counts[b] = counts.get(a, 0) + 1, counts.get(b, 0) + 1
        best = max(sorted(counts), key=lambda m: counts[m])
        chosen.append(best)
        left = [p for p in left if best not in p]
    if len(pairs) == 1:
        a, b = pairs[0]
        return f"{a} or {b}"
    return (
        "one member of each of those pairs ("
        + ", ".join(sorted(chosen))
        + (" would do)" if len(chosen) > 1 else " alone would do)")
    )


__all__ = ["StoreJournal", "spent_at_s1", "spent_refusal"]
