"""What S1 and S2 let a combiner evaluate (docs/privacy-design.md "What a dishonest combiner can
still learn"): the pairs S1 proposed for the run, at the run's cut-offs, and a bounded set of
pairs inside matched groups.

S1 fixes a run's `Proposal` when it proposes: the members, the cut-offs (the threshold, then
none or the default three buckets, core/twoserver.py `default_buckets`: public constants of the
circuit), and every pair it proposed, by pair of members and CLK. Every batch C asks S1 to
evaluate is checked whole (`check`): a pair S1 proposed on the batch's CLK, or an *extra* pair,
one inside a matched group that blocking did not propose (core/tworun.py scores a link's pairs
inside groups of three or more members through the circuit). C alone knows the groups, so S1
bounds what an extra can be by what a group is (core/solve.py: at most one record a member):

- a run of three or more members (a group of two is one solved candidate, proposed);
- both records in some pair S1 proposed in the run (every record of a group is in a
  candidate pair);
- each record in at most one extra pair with each other member, over the whole run (its
  group holds one record of that member);
- on the CLK the run scores the pair by (core/fallback.py `on_fallback`, from what the members
  told S1): C, which does not hold it, names its extras on both CLKs, and S1 and S2 answer 0
  on the other.

So a combiner can ask at most (members - 2) extra pairs a record, each once (the pair budget,
core/pairbudget.py), and never a pair's bits at a cut-off of its choosing. S2 evaluates only
a batch S1 checked (twoserver_service.py: S1's first round message carries the batch's
digest).

A later run over partly the same uploads (core/outcomes.py) has S1 propose parts for the
pairs of members with a new or changed upload only (`only`): C reuses its outcome of the
others. S1 blocks one of those (`later`) only when C names an extra on it (a pair blocking
proposed answered 0, the rest bounded as above), and those around a member only when an
extra's or a reach pair's record (below) is in no pair proposed so far.

Completing C's groups (core/twocomplete.py, as core/solve.py `complete` does a CLK run's)
needs, for each pair between two groups to be joined, one more bit: whether it scores at least
the run's *reach* cut-off (`reach_cutoff`: threshold - solve.REACH, a constant of the
threshold, fixed with the buckets when S1 proposes; no reach without buckets, as C then knows
no bridge). A *reach* batch (`check_reach`) is refused unless:

- the run has three or more members and buckets;
- both records of every pair are in some pair S1 proposed (in a group);
- each record is in at most one reach pair with each other member, over the whole run (a join
  puts one record a member on each side; so a pair is asked at the reach cut-off at most once,
  a pair S1 proposed and C decided under the threshold included);
- as extras, on the CLK the run scores the pair by (the other answered 0).

S1 cannot check that the two records are in C's two groups (it does not learn link bits):
the bounds are what a group is. Over several runs on the same uploads the bounds hold per
upload, not per run (core/rowledger.py `RowLedger`, held by S1 across its proposals): a pair
whose record had another extra (or reach) partner with that member in an earlier run is
answered 0, not evaluated, and so is a reach pair beyond a pair of uploads' quota (1% of the
smaller's records, at least 16, over every run: `rowledger.reach_quota`; a pair named within
it holds its place on both CLKs, noted whichever evaluates it). A reach pair is
counted in a budget of its own (S1's and S2's, `PairBudget` per cut-off kind): each pair once
at the run's cut-offs, once at the reach.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core.crosspart import Cross
from blindmatch.matcher.core.rowledger import RowLedger, reach_quota
from blindmatch.matcher.core.twoserver import (
    RECORD,
    PairBatch,
    Proposed,
    default_buckets,
    reach_cutoff,
)
from blindmatch.matcher.domain import MIN_THRESHOLD, NO_RULE, THRESHOLD_RANGE, Rule

Rows = npt.NDArray[np.uint32]
Part = PairBatch | Cross  # a blocked part's explicit rows, or an unblocked one's slices


class Refused(ValueError):
    """A batch S1 and S2 will not evaluate (the message names the field)."""


def run_cutoffs(threshold: float, buckets: Sequence[float]) -> tuple[float, ...]:
    """The circuit's cut-offs for a run: the threshold, then no bucket or the default three;
    any other choice refused (C chooses no cut-off)."""
    if not MIN_THRESHOLD <= threshold <= 1:
        raise Refused(f"threshold: {threshold} is not in {THRESHOLD_RANGE}")
    default = default_buckets(threshold)
    got = tuple(float(b) for b in buckets)
    if got not in ((), default):
        raise Refused(
            f"buckets: {list(got)}; the circuit's cut-offs are fixed: none, or the default "
            f"{list(default)} at threshold {threshold}"
        )
    return (float(threshold), *got)


def _keys(rows_a: Rows, rows_b: Rows) -> npt.NDArray[np.uint64]:
    out: npt.NDArray[np.uint64] = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b.astype(
        np.uint64
    )
    return out


@dataclass
class Checked:
    """A checked batch of pairs C named: which of them are answered 0 (`proposed`: a pair S1
    proposed, never evaluated again: C learns its bits only through the proposal, gated by
    its link bit; or a pair on the other CLK), how many are extras, and their rows (for
    `commit`)."""

    extras: int
    member_a: int
    member_b: int
    rows_a: Rows
    rows_b: Rows
    proposed: npt.NDArray[np.bool_]
    # answered 0 by S1's per-upload cap (a record paired otherwise in an earlier run) and
    # beyond the reach quota (core/rowledger.py), of the pairs it would have evaluated; the
    # reach quota of the pair of uploads (0: an extras batch)
    capped: int = 0
    over_quota: int = 0
    quota: int = 0
    # the pairs S1's ledger notes at `commit` (None: `rows_a`/`rows_b`, those evaluated): of
    # a reach batch, every pair within the cap and the quota, on either CLK (a pair named
    # within the quota holds its place whichever CLK evaluates it; core/rowledger.py)
    noted_a: Rows | None = None
    noted_b: Rows | None = None


class Proposal:
    """S1's proposal for one run (`members` by name, index = the run's dataset)."""

    def __init__(
        self,
        members: Sequence[str],
        records: Sequence[int],
        proposed: Sequence[Part],
        cutoffs: tuple[float, ...],
        lacking: Sequence[npt.NDArray[np.bool_]] | None,
        rng: np.random.Generator | None = None,
        rule: Rule = NO_RULE,
        only: Collection[tuple[int, int]] | None = None,
        later: Callable[[set[tuple[int, int]]], Sequence[Part]] | None = None,
    ) -> None:
        """`only`: the pairs of members (indexes, the first lower) whose pairs C evaluates
        by reference (None: every pair). The others' are in no part: C holds their outcome
        from an earlier run over the same uploads (core/outcomes.py), and the pair budget
        keeps it from asking them again. S1 blocks one of them (`later`, on those pairs of
        members) only when C names an extra on it (its proposed pairs then answered 0), and
        those around a member only when a record of an extra or reach pair is in no proposed
        pair so far."""
        self.members = list(members)
        self.rule = rule  # the gap rule the run applies on the first CLKs (core/gmwrule.py)
        self.id = secrets.token_hex(8)  # the run's, in S1's and S2's audit logs
        # The parts C evaluates by reference, each in an order of S1's (a fresh permutation C
        # does not hold): a position in a part says nothing of its rows.
        rng = rng or np.random.default_rng(secrets.randbits(128))
        self.parts: list[Part] = []
        for p in proposed:
            if only is not None and (p.member_a, p.member_b) not in only:
                continue
            if isinstance(p, Cross):  # an unblocked pair's: its order keyed, made in slices
                self.parts.append(p.shuffled(rng))
                continue
            order = rng.permutation(len(p))
            self.parts.append(PairBatch(p.member_a, p.member_b, p.clk, p.rows_a[order],
                                        p.rows_b[order]))  # fmt: skip
        self.cutoffs = cutoffs
        self.lacking = None if lacking is None else [np.asarray(x, bool) for x in lacking]
        self._pairs: dict[tuple[int, int, int], npt.NDArray[np.uint64]] = {}
        self._cross: dict[tuple[int, int, int], list[Cross]] = {}  # unblocked: no keys held
        self._seen = [np.zeros(n, dtype=bool) for n in records]
        self._hold(proposed)
        n = len(self.members)
        every = {(a, b) for a in range(n) for b in range(a + 1, n)}
        self._later = later
        self._pending = every - set(only) if only is not None and later is not None else set()
        # Rows of each pair of members already in an extra pair, each side.
        self._extra_rows: dict[tuple[int, int], tuple[set[int], set[int]]] = {}
        self.extras = 0
        # Completion's reach pairs (`check_reach`): each pair of members' row -> the other's.
        self.reach = reach_cutoff(cutoffs)
        self._reach_rows: dict[tuple[int, int], tuple[dict[int, int], dict[int, int]]] = {}
        self.reached = 0
        # S1's per-upload cap across runs (core/rowledger.py), set by whoever holds the run
        # (rpc/twoserver_proposals.py `Proposals.hold`, core/twoinprocess.py); None: this run only.
        self.ledger: RowLedger | None = None
        self._lock = threading.Lock()

    def _hold(self, proposed: Sequence[Part]) -> None:
        """Hold `proposed` as pairs S1 proposed in the run (and their records)."""
        for p in proposed:
            if isinstance(p, Cross):  # its pairs are its blocks' (`Cross.contains`)
                self._cross.setdefault((p.member_a, p.member_b, p.clk), []).append(p)
                for rows_a, rows_b in p.sides():
                    if len(rows_a) and len(rows_b):
                        self._seen[p.member_a][rows_a] = True
                        self._seen[p.member_b][rows_b] = True
                continue
            keys = np.sort(_keys(p.rows_a, p.rows_b))
            at = (p.member_a, p.member_b, p.clk)
            self._pairs[at] = np.sort(np.concatenate([self._pairs[at], keys])) if (
                at in self._pairs) else keys  # fmt: skip
            self._seen[p.member_a][p.rows_a] = True
            self._seen[p.member_b][p.rows_b] = True

    def _block(self, pairs: set[tuple[int, int]]) -> None:
        """Block those of `pairs` of members not proposed for evaluation (once each)."""
        wanted = pairs & self._pending
        if wanted and self._later is not None:
            self._pending -= wanted
            self._hold(self._later(wanted))

    def _in_groups(self, a: int, b: int, rows_a: Rows, rows_b: Rows) -> bool:
        """Whether every record is in some pair S1 proposed, blocking the pairs of members
        around `a` and `b` not proposed for evaluation first where one is not yet."""
        if self._seen[a][rows_a].all() and self._seen[b][rows_b].all():
            return True
        self._block({p for p in self._pending if a in p or b in p})
        return bool(self._seen[a][rows_a].all() and self._seen[b][rows_b].all())

    def described(self) -> list[Proposed]:
        """What C receives of the proposal: each part's members, CLK and number of pairs."""
        return [Proposed(p.member_a, p.member_b, p.clk, len(p)) for p in self.parts]

    def part(self, index: int, offset: int, count: int, cutoffs: Sequence[float]) -> PairBatch:
        """Pairs offset..offset + count of part `index`, at the run's cut-offs (refused
        otherwise)."""
        self._cutoffs(cutoffs)
        if not 0 <= index < len(self.parts):
            raise Refused(f"part: {index}, but S1 proposed {len(self.parts)} parts")
        p = self.parts[index]
        if count < 1 or offset + count > len(p):
            raise Refused(f"offset/count: {offset}..{offset + count} of part {index}'s {len(p)}")
        if isinstance(p, Cross):
            return p.slice(offset, count)
        return PairBatch(p.member_a, p.member_b, p.clk, p.rows_a[offset : offset + count],
                         p.rows_b[offset : offset + count])  # fmt: skip

    def check_rule(self, rule: Rule) -> None:
        """A batch's rule: the run's (fixed when S1 proposed), or refused."""
        if rule != self.rule:
            raise Refused(
                f"rule: {rule.text() or 'none'}, but the run's is {self.rule.text() or 'none'} "
                "(fixed when S1 proposed)"
            )

    def _cutoffs(self, cutoffs: Sequence[float]) -> None:
        if tuple(float(c) for c in cutoffs) != self.cutoffs:
            raise Refused(
                f"cutoffs: {list(cutoffs)}, but the run's are {list(self.cutoffs)} (fixed when "
                "S1 proposed)"
            )

    def index(self, name: str, field: str) -> int:
        try:
            return self.members.index(name)
        except ValueError:
            raise Refused(f"{field}: {name!r} is not in the run S1 proposed for") from None

    def check(
        self,
        member_a: str,
        member_b: str,
        clk: int,
        rows_a: Rows,
        rows_b: Rows,
        cutoffs: Sequence[float],
    ) -> Checked:
        """A batch of pairs C names (the extras: pairs inside its groups it does not know as
        links) against the proposal, whole: the pairs S1 proposed on `clk` are marked (answered
        0), the rest must be extras within the bounds, or the batch is refused (`Refused`,
        naming the field)."""
        self._cutoffs(cutoffs)
        a, b = self.index(member_a, "member_a"), self.index(member_b, "member_b")
        if a > b:
            a, b, rows_a, rows_b = b, a, rows_b, rows_a
        self._block({(a, b)})  # its proposed pairs are answered 0
        proposed = self._pairs.get((a, b, clk), np.empty(0, np.uint64))
        keys = _keys(rows_a, rows_b)
        at = np.minimum(np.searchsorted(proposed, keys), max(len(proposed) - 1, 0))
        found = proposed[at] == keys if len(proposed) else np.zeros(len(keys), bool)
        for cross in self._cross.get((a, b, clk), []):
            found |= cross.contains(rows_a, rows_b)
        # On the other CLK than the run scores a pair by: answered 0 (C, which does not hold
        # who lacks the fallback's fields, names its extras on both CLKs).
        other = self._other(a, b, clk, rows_a, rows_b) & ~found
        paired, _, _ = self._capped(a, b, "extra", rows_a, rows_b)
        capped = paired & ~found & ~other
        other |= capped
        extra = np.flatnonzero(~found & ~other)
        ea, eb = rows_a[extra], rows_b[extra]
        if len(extra):
            where = (
                f"rows_a/rows_b: {len(extra)} of the batch's {len(keys)} pairs S1 did not propose"
            )
            if len(self.members) < 3:
                raise Refused(f"{where} (a run of two members has no pair beyond its proposal)")
            if not self._in_groups(a, b, ea, eb):
                raise Refused(f"{where}, with a record in no proposed pair (not in a group)")
            used = self._extra_rows.get((a, b), (set(), set()))
            ta, tb = ea.tolist(), eb.tolist()
            if (len(set(ta)) < len(ta) or len(set(tb)) < len(tb)
                    or used[0].intersection(ta) or used[1].intersection(tb)):  # fmt: skip
                raise Refused(
                    f"{where}, a record in two extra pairs with one member (a group holds one "
                    "record a member)"
                )
        return Checked(len(extra), a, b, ea, eb, found | other, int(capped.sum()))

    def _other(self, a: int, b: int, clk: int, rows_a: Rows, rows_b: Rows) -> npt.NDArray[np.bool_]:
        """The pairs on the other CLK than the run scores them by (answered 0)."""
        if self.lacking is not None:
            on = fallback_.on_fallback(self.lacking[a][rows_a], self.lacking[b][rows_b])
            return np.asarray(on != bool(clk))
        if clk != RECORD:
            raise Refused(f"clk: {clk}, but the uploads have one CLK")
        return np.zeros(len(rows_a), bool)

    def check_reach(
        self,
        member_a: str,
        member_b: str,
        clk: int,
        rows_a: Rows,
        rows_b: Rows,
        cutoffs: Sequence[float],
    ) -> Checked:
        """A reach batch C names (pairs between two of its groups it would join, each asked
        whether it scores at least `reach`), whole, within the bounds in the module's
        docstring, or refused (`Refused`, naming the field); the pairs on the other CLK are
        marked (answered 0). `cutoffs` are the run's (the batch's circuit is at `reach`)."""
        self._cutoffs(cutoffs)
        if self.reach is None:
            raise Refused(
                "reach: the run has no reach cut-off (no buckets: C knows no bridge, and a "
                "run without buckets does not complete groups)"
            )
        if len(self.members) < 3:
            raise Refused("reach: a run of two members has no groups to join")
        a, b = self.index(member_a, "member_a"), self.index(member_b, "member_b")
        if a > b:
            a, b, rows_a, rows_b = b, a, rows_b, rows_a
        other = self._other(a, b, clk, rows_a, rows_b)
        paired, over, quota = self._capped(a, b, "reach", rows_a, rows_b)
        held = ~paired & ~over  # within the cap and the quota, on this CLK or the other
        paired, over = paired & ~other, over & ~other
        other |= paired | over
        ask = np.flatnonzero(~other)
        ea, eb = rows_a[ask], rows_b[ask]
        where = f"rows_a/rows_b: {len(ask)} of the batch's {len(rows_a)} pairs at the reach cut-off"
        if not self._in_groups(a, b, ea, eb):
            raise Refused(f"{where}, with a record in no proposed pair (not in a group)")
        ta, tb = ea.tolist(), eb.tolist()
        by_a, by_b = self._reach_rows.get((a, b), ({}, {}))
        if any(by_a.get(x) == y for x, y in zip(ta, tb, strict=True)):
            raise Refused(f"{where}, a pair asked at the reach cut-off already (once a run)")
        if (len(set(ta)) < len(ta) or len(set(tb)) < len(tb)
                or any(x in by_a for x in ta) or any(y in by_b for y in tb)):  # fmt: skip
            raise Refused(
                f"{where}, a record in two reach pairs with one member (a join puts one record "
                "a member on each side)"
            )
        return Checked(len(ask), a, b, ea, eb, other, int(paired.sum()), int(over.sum()), quota,
                       rows_a[held], rows_b[held])  # fmt: skip

    def _capped(self, a: int, b: int, kind: str, rows_a: Rows, rows_b: Rows
                ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], int]:  # fmt: skip
        """The pairs S1's per-upload cap answers 0 (a record paired otherwise in an earlier
        run over these uploads), those beyond the reach quota, and the quota (0: none;
        core/rowledger.py)."""
        if self.ledger is None:
            return np.zeros(len(rows_a), bool), np.zeros(len(rows_a), bool), 0
        quota = None
        if kind == "reach":
            quota = reach_quota(len(self._seen[a]), len(self._seen[b]))
        paired, over = self.ledger.limits(self.members[a], self.members[b], kind, rows_a,
                                          rows_b, self.id, quota)  # fmt: skip
        return paired, over, quota or 0

    def _note(self, checked: Checked, kind: str) -> None:
        """The batch's pairs in S1's ledger: one write a batch, whatever S1 answered."""
        if self.ledger is not None:
            rows_a = checked.rows_a if checked.noted_a is None else checked.noted_a
            rows_b = checked.rows_b if checked.noted_b is None else checked.noted_b
            self.ledger.note(self.members[checked.member_a], self.members[checked.member_b],
                             kind, rows_a, rows_b, self.id)  # fmt: skip

    def commit_reach(self, checked: Checked) -> None:
        """Count a checked reach batch's pairs as asked (after the reach budget took it)."""
        self._note(checked, "reach")
        with self._lock:
            by_a, by_b = self._reach_rows.setdefault((checked.member_a, checked.member_b), ({}, {}))
            for x, y in zip(checked.rows_a.tolist(), checked.rows_b.tolist(), strict=True):
                by_a[x], by_b[y] = y, x
            self.reached += checked.extras

    def commit(self, checked: Checked) -> None:
        """Count a checked batch's extras as asked (after the pair budget took it); noted in
        S1's ledger, none included (the same write whatever S1 answered)."""
        self._note(checked, "extra")
        if not checked.extras:
            return
        with self._lock:
            used = self._extra_rows.setdefault((checked.member_a, checked.member_b), (set(), set()))
            used[0].update(checked.rows_a.tolist())
            used[1].update(checked.rows_b.tolist())
            self.extras += checked.extras


__all__ = ["Checked", "Proposal", "Refused", "run_cutoffs"]
