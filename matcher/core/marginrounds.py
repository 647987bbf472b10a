"""A batch by the rule's margin (core/densemargin.py `Side`) as rounds of one message each way,
the way S1 and S2 run a circuit's batch over gRPC (rpc/twoserver_peers.py `ShareExchange.
exchange`, rpc/twoserver_shares.py `Exchange`, rpc/twoserver_resume.py `rerun`): `Rounds`
answers what they ask of a core/linkbit.py `Party` (`nonce`, `agree`, `check`, `verify`,
`confirm`, `open`, `close`, `output`, `circuit.rounds`), so that a margin batch goes through the
same calls, kept inputs and replays as any other (docs/protocol.md "The rule's margin").

The nonces are the three parties' (the first circuit's, the arithmetic's, the second
circuit's), sent at once; `check`, `verify` and `confirm` are the first circuit's triples'
check (round 0, before any output). Then, a message each way a round:

- the first circuit's rounds;
- `convert`: each server's masked bits and pads (core/ring64.py `Party.first`);
- `multiply`: the digest of the daBits' and triples' checks and the products' openings; on
  the other's, `finish` checks them (`DealRefused`) and builds the second circuit;
- the second circuit's triples' check, then its digest (`DealRefused` on the other's);
- the second circuit's rounds; `output` its output shares, as a circuit's.
"""

from __future__ import annotations

from dataclasses import dataclass

from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.densemargin import NONCE_BYTES, Side

STEPS = 4  # rounds between the two circuits: convert, multiply, the second's check, its digest


@dataclass(frozen=True)
class Steps:
    """What the gRPC roles read of a batch's circuit: its rounds (and for C's reveal, the
    second circuit's outputs: core/margincircuit.py `Plan.second`)."""

    rounds: int


class Rounds:
    """Server `side.role`'s side of a margin batch, driven as a circuit's `Party` is."""

    def __init__(self, side: Side) -> None:
        self.side = side
        first, second = side.plan.first.rounds, side.plan.second.rounds
        self.circuit = Steps(first + STEPS + second)
        self._first, self._round = first, 0
        self._theirs = b""  # the other's nonce of the second circuit, then its `convert`
        self._digest = b""  # this server's digest of the second circuit's check

    def nonce(self) -> bytes:
        return self.side.nonce()

    def agree(self, theirs: bytes) -> None:
        if len(theirs) != NONCE_BYTES:
            raise ValueError(f"the margin: the other server's nonces are {NONCE_BYTES} bytes")
        self.side.first.agree(theirs[:32])
        self.side.arith.agree(theirs[32:64])
        self._nonce2 = theirs[64:]

    def check(self) -> bytes:
        return self.side.first.check()

    def verify(self, theirs: bytes) -> bytes:
        return self.side.first.verify(theirs)

    def confirm(self, their_digest: bytes) -> None:
        self.side.first.confirm(their_digest)

    def _second(self) -> linkbit.Party:
        if self.side.second is None:
            raise RuntimeError("the margin: the second circuit before the arithmetic")
        return self.side.second

    def open(self) -> bytes:
        """This round's message to the other server."""
        step = self._round - self._first
        if step < 0:
            return self.side.first.open()
        if step == 0:
            return self.side.convert()
        if step == 1:
            return self.side.multiply(self._theirs)
        if step == 2:
            return self._second().check()
        if step == 3:
            return self._digest
        return self._second().open()

    def close(self, other: bytes) -> None:
        """The other server's message of this round (`DealRefused` where C's deal fails
        the arithmetic's or the second circuit's check)."""
        step = self._round - self._first
        if self._round >= self.circuit.rounds:
            raise RuntimeError("the margin: a round past the last")
        if step < 0:
            self.side.first.close(other)
        elif step == 0:
            self._theirs = other
        elif step == 1:
            self.side.finish(other)
            self._second().agree(self._nonce2)
        elif step == 2:
            self._digest = self._second().verify(other)
        elif step == 3:
            self._second().confirm(other)
        else:
            self._second().close(other)
        self._round += 1

    def output(
        self,
        tags: linkbit.Words | None = None,
        keep: linkbit.Words | None = None,
        mask: bytes | None = None,
    ) -> bytes:
        return self.side.output(tags, keep, mask)


__all__ = ["STEPS", "Rounds", "Steps"]
