"""S2 of the two-server run as a gRPC service (`SharesService`; rpc/twoserver_service.py
serves it beside S1 and the combiner, docs/privacy-design.md, docs/protocol.md "Two servers
and a combiner"): the second shares and each upload's seal key; `Expand` opens the tokens of
the keys S1 matched into the pairs sharing a key (`ShareServer.expand`); `Prepare` checks and
holds C's batch (at most MAX_PENDING, each forgotten STALE_SECONDS after it was prepared),
`Exchange` builds S2's `Party` once S1's first message shows S1 checked that batch, answers
S1's nonce with its own (the two order C's triple rows: `linkbit.Party.agree`), checks C's
triples with S1 (core/triplecheck.py: a batch whose triples fail is refused and audited,
`twoserver.deal`) and runs its rounds, `Collect` gives C the output shares.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, triplecheck
from blindmatch.matcher.core.batchkeep import Gone, unpack
from blindmatch.matcher.core.twoserver import TOKEN_BYTES, Matched, ShareServer
from blindmatch.matcher.rpc import twoserver_holds as holds
from blindmatch.matcher.rpc.twoserver_blockcalls import (
    batch_party,
    dense_inputs,
    s2_exchange,
    s2_prepare,
)
from blindmatch.matcher.rpc.twoserver_blocks import from_kept, kept_parts
from blindmatch.matcher.rpc.twoserver_margin import Runner
from blindmatch.matcher.rpc.twoserver_peers import (
    CALL_SECONDS,
    expanded_parts,
    to_rows,
)
from blindmatch.matcher.rpc.twoserver_resume import (
    acknowledge,
    drop_bits,
    keep_batch,
    keep_inputs,
    resume,
    reused,
)
from blindmatch.matcher.rpc.twoserver_role import (
    Bools,
    _from,
    _outputs,
    _Role,
    batch_digest,
)
from blindmatch.matcher.rpc.twoserver_trim import trimmed
from blindmatch.matcher.rpc.twoserver_uploadguard import guarded_upload
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

MAX_PENDING = 64  # batches S2 holds between Prepare and Collect
STALE_SECONDS = 2 * CALL_SECONDS  # a batch not collected by then is forgotten


class SharesService(_Role, pb_grpc.TwoServerSharesServicer):
    """S2."""

    def __init__(
        self,
        key: str,
        member_key: str,
        clock: Callable[[], float] = time.monotonic,
        keys: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("s2", key, member_key, keys)
        self.pending: dict[str, pb.CircuitBatch] = {}  # prepared: C's batch, until S1's rounds
        self.outputs: dict[str, bytes] = {}
        self.since: dict[str, float] = {}  # batch -> when it was prepared
        self.clock = clock

    def _expire(self) -> None:
        """Forget batches prepared longer ago than a call may last (a run that failed
        between Prepare and Collect), so that they never fill S2 (under the lock)."""
        cutoff = self.clock() - STALE_SECONDS
        for batch in [b for b, t in self.since.items() if t < cutoff]:
            self.pending.pop(batch, None)
            self.outputs.pop(batch, None)
            del self.since[batch]

    @_from("member")
    def Upload(self, request: Iterator[pb.SharedPart], context: Any) -> pb.SharedReceipt:
        return guarded_upload(self, request, context)

    @_from("s1")
    @trimmed
    def Expand(
        self, request: Iterator[pb.SealedMatches], context: Any
    ) -> Iterator[pb.ExpandedPairs]:
        first = next(request, None)
        if first is None or not first.HasField("run"):
            raise errors.InvalidArgument("run: the first message names the run")
        members, held = self.run_held(first.run)
        if first.run.fallback and any(len(h.bits) != 2 for h in held):
            raise errors.InvalidArgument("run.fallback: an upload without a fallback CLK")
        s2 = ShareServer([h.shares for h in held], b"", seal_keys=[h.seal_key for h in held])
        try:  # each message checked and its tokens opened as it comes, then let go
            expanded = s2.expand(_checked(request, len(members), len(held[0].bits)),
                                 2 if first.run.fallback else 1)  # fmt: skip
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        self.log("s1", "twoserver.expand", members=members,
                 pairs=sum(len(p) for p in expanded))  # fmt: skip
        yield from expanded_parts(expanded)

    @_from("combiner")
    def Prepare(self, request: pb.CircuitBatch, context: Any) -> pb.PrepareReply:
        self.batch(request)
        reused(self, request.batch)
        acknowledge(self, request)  # the batches C journaled since its last (`acknowledged`)
        with self.lock:
            self._expire()
            if request.batch in self.pending or request.batch in self.outputs:
                raise errors.InvalidArgument(f"batch: {request.batch!r} is prepared already")
            if len(self.pending) + len(self.outputs) >= MAX_PENDING:
                raise errors.ResourceExhausted(f"S2 holds {MAX_PENDING} batches not collected")
            self.pending[request.batch] = request
            self.since[request.batch] = self.clock()
        return pb.PrepareReply()

    def _again(self, first: pb.RoundMessage) -> tuple[pb.CircuitBatch, bytes, list[bytes]]:
        """A batch S1 runs again (`replay`): C's batch and S2's nonce as S2 kept them before
        its rounds (and a batch by blocks its H shares), where S1's first message is the one
        S2 kept (rpc/twoserver_resume.py)."""
        try:
            raw_m, raw_first, nonce, *dense = unpack(self.inputs.get(first.batch).shares)
        except Gone as exc:
            raise errors.FailedPrecondition(
                f"replay: {exc}; S2 kept no inputs of it to run its rounds again"
            ) from None
        asked = pb.RoundMessage()
        asked.CopyFrom(first)
        asked.replay = False
        if asked != pb.RoundMessage.FromString(raw_first):
            raise errors.PermissionDenied(
                f"replay: batch {first.batch!r} asked again with a first message other "
                "than the one S1 sent the first time (other rows, pad, drops or nonce)"
            )
        return pb.CircuitBatch.FromString(raw_m), nonce, dense

    def _start(self, first: pb.RoundMessage) -> tuple[pb.CircuitBatch, Runner, Bools]:
        """The batch S1's first message opens: C's prepared batch, checked to be the one S1
        checked, with S1's rows (a part of the proposal) or its own; S2's party. A `replay`:
        the batch and nonce S2 kept, nothing counted again."""
        nonce: bytes | None = None
        m: pb.CircuitBatch | None
        kept: list[bytes] = []
        if first.replay:
            m, nonce, kept = self._again(first)
        else:
            with self.lock:
                m = self.pending.pop(first.batch, None)
        if m is None:
            raise errors.FailedPrecondition(f"batch: {first.batch!r} is not prepared on S2")
        if first.checked != batch_digest(m):
            raise errors.PermissionDenied(
                f"checked: batch {first.batch!r} as S1 checked it is not the batch the "
                "combiner prepared on S2 (other pairs, members, CLK or cut-offs)"
            )
        held, circuit, count = self.batch(m)
        rows_a, rows_b = to_rows(first.rows_a, "rows_a"), to_rows(first.rows_b, "rows_b")
        if len(rows_a) != count or len(rows_b) != count or len(first.mask) != linkbit.SEED_BYTES:
            raise errors.InvalidArgument(f"rows_a/rows_b/mask: not {count} pairs and a seed")
        if not m.proposed and (first.rows_a, first.rows_b) != (m.rows_a, m.rows_b):
            raise errors.PermissionDenied("rows_a/rows_b: not the pairs the combiner named")
        for name, rows, h in (("rows_a", rows_a, held[0]), ("rows_b", rows_b, held[1])):
            if count and int(rows.max()) >= h.records:
                raise errors.InvalidArgument(f"{name}: row {int(rows.max())} of {h.records}")
        drop = drop_bits(first.drop, count)
        if first.replay:
            dense = from_kept(kept, count)
            party = batch_party(self, 1, held, circuit, m, rows_a, rows_b, dense, nonce)
            self.log("s1", "twoserver.rerun", batch=first.batch, run=first.run,
                     members=[m.member_a, m.member_b], pairs=count)  # fmt: skip
            return m, party, drop
        # its part's blocks held (a batch naming blocks), before its pairs are counted
        dense = dense_inputs(self, m, rows_a, rows_b, first.run)
        self.spend(m.member_a, m.member_b, rows_a[~drop], rows_b[~drop], m.reach)
        seen = (first.run, m.member_a, m.member_b)
        with self.lock:
            new = seen not in self.runs
            self.runs.add(seen)
        if new:  # S2's record of a run: each pair of members S1 opens batches of, once
            self.log("s1", "twoserver.run", run=first.run, members=[m.member_a, m.member_b],
                     cutoffs=list(m.cutoffs))  # fmt: skip
        party = batch_party(self, 1, held, circuit, m, rows_a, rows_b, dense)
        # What fixes the rounds, kept before them (durably with a data dir): a batch cut
        # during them is run again on the same when S1 asks (`replay`).
        keep_inputs(self, m, count, m.SerializeToString(), first.SerializeToString(),
                    party.nonce(), *kept_parts(dense))  # fmt: skip
        return m, party, drop

    @_from("s1")
    @trimmed
    def Exchange(
        self, request: Iterator[pb.RoundMessage], context: Any
    ) -> Iterator[pb.RoundMessage]:
        first = next(request, None)
        if first is None:
            raise errors.InvalidArgument("an exchange of no messages")
        m, party, drop = self._start(first)
        rows_a, rows_b = to_rows(first.rows_a, "rows_a"), to_rows(first.rows_b, "rows_b")
        try:
            party.agree(first.nonce)
        except ValueError as exc:
            raise errors.InvalidArgument(f"nonce: {exc}") from None
        yield pb.RoundMessage(nonce=party.nonce(), check=party.check())
        rounds, digest = party.circuit.rounds, b""
        for r in range(rounds):
            message = next(request, None)
            if message is None:
                raise errors.InvalidArgument(f"masked: the exchange ended at round {r} of "
                                             f"{rounds}")  # fmt: skip
            if not r:  # S1's half of the triples' check: S2's verdict before any output
                try:
                    digest = party.verify(message.check)
                    party.confirm(message.digest)
                except ValueError as exc:
                    raise errors.InvalidArgument(f"check: {exc}") from None
                except triplecheck.DealRefused as exc:
                    self.inputs.drop(first.batch, "refused: its deal failed the triples' check")
                    self.log("combiner", "twoserver.deal", members=[m.member_a, m.member_b],
                             batch=first.batch, run=first.run, reason=str(exc))  # fmt: skip
                    yield pb.RoundMessage(digest=digest)  # S1 sees it for itself
                    raise triplecheck.refused(first.batch, exc) from None
            mine = party.open()
            try:
                party.close(message.masked)
            except ValueError as exc:
                raise errors.InvalidArgument(f"masked (round {r}): {exc}") from None
            except triplecheck.DealRefused as exc:  # a margin's checks between its circuits
                self.inputs.drop(first.batch, "refused: its deal failed the margin's check")
                self.log("combiner", "twoserver.deal", members=[m.member_a, m.member_b],
                         batch=first.batch, run=first.run, reason=str(exc))  # fmt: skip
                yield pb.RoundMessage(masked=mine)  # S1 sees it for itself
                raise triplecheck.refused(first.batch, exc) from None
            if r == rounds - 1:
                out = _outputs(party, m.proposed, rows_a, rows_b, drop, first.mask)
                keep_batch(self, m, len(rows_a), out)  # durably before S1 sees the round
                if not first.replay:  # a replay's shares C asks again by `Resume`
                    with self.lock:
                        self.outputs[first.batch] = out
            yield pb.RoundMessage(masked=mine, digest=b"" if r else digest)

    @_from("combiner")
    def Collect(self, request: pb.CollectRequest, context: Any) -> pb.OutputShares:
        with self.lock:
            out = self.outputs.pop(request.batch, None)
            self.since.pop(request.batch, None)
        if out is None:
            raise errors.FailedPrecondition(
                f"batch: {request.batch!r} has no outputs on S2 (not prepared, not exchanged, "
                "or collected)"
            )
        return pb.OutputShares(shares=out)

    @_from("combiner")
    def Holds(self, request: pb.HoldsRequest, context: Any) -> pb.HoldsReply:
        return holds.answer(self, request)

    @_from("combiner")
    def Forget(self, request: pb.ForgetRequest, context: Any) -> pb.ForgetReply:
        dropped = set(self.forget(request))
        with self.lock:  # batches prepared over the uploads dropped go with them
            for b in [b for b, m in self.pending.items() if {m.member_a, m.member_b} & dropped]:
                del self.pending[b], self.since[b]
        return pb.ForgetReply(dropped=len(dropped))

    @_from("combiner")
    def Resume(self, request: pb.ResumeRequest, context: Any) -> pb.OutputShares:
        return resume(self, request)

    @_from("combiner")
    def Acknowledge(self, request: pb.AcknowledgeRequest, context: Any) -> pb.AcknowledgeReply:
        return acknowledge(self, request)

    @_from("combiner")
    def PrepareBlocks(self, request: Iterator[pb.BlockDeal], context: Any) -> pb.PrepareReply:
        return s2_prepare(self, request)

    @_from("s1")
    @trimmed
    def BlockExchange(
        self, request: Iterator[pb.BlockMessage], context: Any
    ) -> Iterator[pb.BlockMessage]:
        yield from s2_exchange(self, request)


def _checked(request: Iterator[pb.SealedMatches], members: int, clks: int) -> Iterator[Matched]:
    """Expand's messages after the run's, each checked and yielded as it comes: S2 opens its
    tokens (core/twoblocking.py `expand`) before it reads the next, so it holds 8 bytes a
    pair of rows opened, not every message's 32 bytes a pair of tokens to the stream's end
    (docs/performance.md "S2's Expand opens each message as it comes (2026-12-06)")."""
    for n, m in enumerate(request, start=1):
        where = f"message {n}"
        if m.HasField("run"):
            raise errors.InvalidArgument(f"run ({where}): the first message's only")
        if not m.member_a < m.member_b < members:
            raise errors.InvalidArgument(
                f"member_a/member_b ({where}): {m.member_a} and {m.member_b}; two of the "
                f"run's {members}, the first lower"
            )
        if m.clk >= clks:
            raise errors.InvalidArgument(f"clk ({where}): {m.clk} of {clks}")
        if len(m.tokens_a) % TOKEN_BYTES or len(m.tokens_a) != len(m.tokens_b):
            raise errors.InvalidArgument(
                f"tokens_a/tokens_b ({where}): {len(m.tokens_a)} and {len(m.tokens_b)} "
                f"bytes; as many, {TOKEN_BYTES} a token"
            )
        yield Matched(
            m.member_a, m.member_b, m.clk,
            np.frombuffer(m.tokens_a, np.uint8).reshape(-1, TOKEN_BYTES),
            np.frombuffer(m.tokens_b, np.uint8).reshape(-1, TOKEN_BYTES),
        )  # fmt: skip
        del m


__all__ = ["MAX_PENDING", "STALE_SECONDS", "SharesService"]
