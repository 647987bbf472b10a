"""S1 and S2 as a two-server run with a journal sees them (core/outcomes.py `Journal`): each
batch of the link-bit circuit told to the run's `Ledger` before it goes (its pair of members
pending), once answered, or when it failed (docs/protocol.md "A second run over the same
uploads").

S1 and S2 evaluate each pair once an upload (core/pairbudget.py), and a part of S1's proposal
is in an order of S1's that a later run's proposal does not repeat, so what a run can resume
is whole pairs of members: those whose outcome the journal holds. A pair of members with a
batch out when the run failed may have been evaluated (S1 counts a batch's pairs before its
rounds with S2) and cannot be asked again: it stays pending, and a later run is refused
naming its members (usecases/tworuns.py). A batch that failed before S1 had it (S2 refused
or missed `Prepare`, or S1 could not be connected to: the error's `evaluated` is False,
rpc/twoserver_client.py) with nothing else of its pair of members answered since its outcome
was kept spent nothing: the pair is no longer pending, and a later run asks it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.exhaustive import Part
from blindmatch.matcher.core.outcomes import Ledger
from blindmatch.matcher.core.twoserver import PairBatch, Proposed, Shares
from blindmatch.matcher.domain import NO_RULE, Rule

if TYPE_CHECKING:
    from blindmatch.matcher.core.tworun import Servers

T = TypeVar("T")


class Forwarding:
    """`servers` (core/tworun.py `Servers`) passed through: the calls a wrapper of them
    (`Watched` here, usecases/tworuns.py `_Progress`) leaves as they are."""

    servers: Servers

    def bits(self, clk: int) -> int:
        return self.servers.bits(clk)

    @property
    def prepare_part(self) -> Callable[..., None] | None:
        """The servers' (core/tworun.py `_dense`: an unblocked part by blocks); None: by pairs."""
        return getattr(self.servers, "prepare_part", None)

    @property
    def part_done(self) -> Callable[[int], None] | None:
        """The servers' (core/tworun.py `proposed_links`: a part's blocks let go once its
        batches are done); None: they hold none."""
        return getattr(self.servers, "part_done", None)

    @property
    def margin(self) -> bool:
        """Whether the servers take a part's blocks by the rule's margin (core/densemargin.py)."""
        return bool(getattr(self.servers, "margin", False))

    def block(
        self, lacking: list[npt.NDArray[np.bool_]] | None, cutoffs: tuple[float, ...] = ()
    ) -> Sequence[Part]:
        return self.servers.block(lacking, cutoffs)

    def messages(self, batch: PairBatch) -> tuple[Shares, Shares]:
        return self.servers.messages(batch)

    def evaluate(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        return self.servers.evaluate(part, circuit, dealt, transcript, clock)

    def evaluate_reach(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        return self.servers.evaluate_reach(part, circuit, dealt, transcript, clock)


class Watched(Forwarding):
    """`servers` telling `ledger` of each batch (core/tworun.py `Servers`)."""

    def __init__(self, servers: Servers, ledger: Ledger) -> None:
        self.servers, self.ledger = servers, ledger
        self._parts: list[Proposed] = []

    def _watch(self, ends: tuple[int, int], pairs: int, call: Callable[[], T]) -> T:
        if not pairs:  # S1 and S2 evaluate nothing of an empty batch
            return call()
        self.ledger.sending(ends)
        try:
            out = call()
        except BaseException as exc:
            self.ledger.failed(ends, getattr(exc, "evaluated", True))
            raise
        self.ledger.answered(ends)
        return out

    def propose(
        self,
        lacking: list[npt.NDArray[np.bool_]] | None,
        cutoffs: tuple[float, ...],
        rule: Rule = NO_RULE,
        only: Sequence[tuple[int, int]] | None = None,
    ) -> list[Proposed]:
        self._parts = self.servers.propose(lacking, cutoffs, rule, only=only)
        self.ledger.proposed([(p.member_a, p.member_b) for p in self._parts])
        return self._parts

    def evaluate_part(
        self,
        index: int,
        offset: int,
        count: int,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        p = self._parts[index]
        return self._watch((p.member_a, p.member_b), count, lambda: self.servers.evaluate_part(
            index, offset, count, circuit, dealt, transcript, clock))  # fmt: skip

    def evaluate(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        return self._watch((part.member_a, part.member_b), len(part), lambda: self.servers.evaluate(
            part, circuit, dealt, transcript, clock))  # fmt: skip

    def evaluate_reach(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        return self._watch((part.member_a, part.member_b), len(part),
                           lambda: self.servers.evaluate_reach(part, circuit, dealt, transcript,
                                                               clock))  # fmt: skip


__all__ = ["Forwarding", "Watched"]
