"""S1's proposals held at once (docs/operations.md "Two servers and a combiner", *S1's
proposals in flight*; docs/realtime.md "Queries in a two-server project").

S1 holds a run's proposal (core/proposal.py) from its `Propose` to its last batch, and a
query's likewise, each over its own members; a batch's two members name its proposal. S1
holds at most MAX_PROPOSALS at once. Beyond that, a new proposal needs room:

- a proposal used (proposed, or a batch of it evaluated) within IDLE_SECONDS is *in flight*
  and is never ended to make room: the new proposal is refused `Busy` (RESOURCE_EXHAUSTED,
  marked retryable), saying how many are in flight and to retry when one ends;
- one unused for longer is *abandoned* (its run failed or finished: C tells S1 neither, and a
  finished run's proposal is otherwise held until a run over its members replaces it) and is
  ended to make room, the least recently used first; a batch of it that comes later is
  refused FAILED_PRECONDITION saying that it was ended, when, and why (`ended`).

So neither an older run nor a query is broken by a newer one: before, the 65th proposal
ended the oldest silently, and that run's next batch failed as if it had never been
proposed. A query's proposal ends with the query (its records are forgotten: `end`).
IDLE_SECONDS is twice the longest a call may last (CALL_SECONDS): C calls S1 for a run's
batches one after the other, and pauses only to solve between its parts' batches and its
extras (seconds at the sizes measured, docs/performance.md).

Not thread-safe: every call is under the role's lock (rpc/twoserver_role.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from blindmatch.matcher import errors
from blindmatch.matcher.core.proposal import Proposal
from blindmatch.matcher.core.rowledger import RowLedger
from blindmatch.matcher.rpc.twoserver_peers import CALL_SECONDS

MAX_PROPOSALS = 64  # runs and queries S1 holds proposals for at once
IDLE_SECONDS = 2 * CALL_SECONDS  # a proposal unused this long may end to make room
ENDED_KEPT = 256  # why the last proposals ended to make room, for their late batches


@dataclass
class _Held:
    proposal: Proposal
    used: float  # when it was proposed, or a batch of it last checked (the clock's)
    order: int  # proposals held before it


class Proposals:
    """S1's proposals in flight, by their members (a tuple of names)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: OrderedDict[tuple[str, ...], _Held] = OrderedDict()  # least recent first
        self._ended: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._count = 0
        # each record's extra and reach partners over every run since the uploads, and each
        # pair of uploads' reach pairs (core/rowledger.py: S1's bounds hold an upload, not a run)
        self.rows = RowLedger()

    def __len__(self) -> int:
        return len(self._held)

    def latest(self) -> Proposal | None:
        """The proposal held last (None: none)."""
        last = max(self._held.values(), key=lambda h: h.order, default=None)
        return None if last is None else last.proposal

    def _replaced(self, members: Collection[str]) -> list[tuple[str, ...]]:
        """The proposals a new one over `members` replaces: those over two of its members
        (a second run over them)."""
        mine = set(members)
        return [k for k in self._held if len(mine & set(k)) >= 2]

    def room(self, members: Collection[str]) -> None:
        """Make room for a proposal over `members`: nothing to do where it replaces one or
        S1 holds fewer than MAX_PROPOSALS; else end the least recently used of those idle
        IDLE_SECONDS or more, or refuse (`Busy`) where every one is in flight."""
        if self._replaced(members) or len(self._held) < MAX_PROPOSALS:
            return
        now = self.clock()
        idle = [k for k, h in self._held.items() if now - h.used >= IDLE_SECONDS]
        if not idle:
            raise errors.Busy(
                f"S1 holds {len(self._held)} proposals in flight (runs and queries, each called "
                f"in the last {IDLE_SECONDS:.0f} s), its limit: retry when one ends (a query's "
                f"ends with it; a run's when it is replaced, or {IDLE_SECONDS:.0f} s after its "
                "last batch)"
            )
        key = min(idle, key=lambda k: self._held[k].used)
        gone = self._held.pop(key)
        self._ended[key] = (
            f"S1 ended run {gone.proposal.id}'s proposal over {list(key)}: unused for "
            f"{now - gone.used:.0f} s (over {IDLE_SECONDS:.0f} s) while S1 held its limit of "
            f"{MAX_PROPOSALS} proposals, it made room for a new one; run again (Propose first)"
        )
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def hold(self, proposal: Proposal) -> None:
        """Hold `proposal`: it ends any earlier one over two of its members (a second run
        over them); room made as `room` makes it, or `Busy`. It checks its extras and reach
        pairs against the partners of earlier runs (`rows`)."""
        self.room(proposal.members)
        proposal.ledger = self.rows
        for k in self._replaced(proposal.members):
            del self._held[k]
        key = tuple(proposal.members)
        self._ended.pop(key, None)
        self._held[key] = _Held(proposal, self.clock(), self._count)
        self._count += 1

    def of(self, member_a: str, member_b: str) -> Proposal | None:
        """The proposal over both members (now used), or None."""
        for k, h in self._held.items():
            if member_a in k and member_b in k:
                h.used = self.clock()
                self._held.move_to_end(k)
                return h.proposal
        return None

    def ended(self, member_a: str, member_b: str) -> str | None:
        """Why the proposal over both members ended to make room (None: it did not)."""
        return next((why for k, why in reversed(self._ended.items())
                     if member_a in k and member_b in k), None)  # fmt: skip

    def end(self, names: set[str]) -> None:
        """End the proposals over any of `names` (an upload replaced or dropped, a query's
        records forgotten), and their records' extra and reach partners."""
        self.rows.forget(names)
        for k in [k for k in self._held if names & set(k)]:
            del self._held[k]


__all__ = ["ENDED_KEPT", "IDLE_SECONDS", "MAX_PROPOSALS", "Proposals"]
