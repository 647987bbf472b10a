"""S1 and S2 as plain objects in this process (core/twoserver.py), behind the `Servers` a
two-server run is driven over (core/tworun.py `drive`; `run` drives these): what the tests,
benchmarks and `privacy-check --mode two-server` (core/twoviews.py) use. S1's proposal and
checks are core/proposal.py's, as over gRPC (matcher/rpc/twoserver_client.py), so the run's
decisions and links are the same code either way."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import (
    densearith,
    denseblock,
    densemargin,
    exhaustive,
    linkbit,
    ring64,
    triplecheck,
)
from blindmatch.matcher.core.crosspart import Cross
from blindmatch.matcher.core.margincircuit import Plan, plan
from blindmatch.matcher.core.proposal import Part, Proposal
from blindmatch.matcher.core.rowledger import RowLedger
from blindmatch.matcher.core.twoserver import (
    FALLBACK,
    RECORD,
    BlockingServer,
    Matched,
    PairBatch,
    Proposed,
    Shares,
    ShareServer,
    fallback_split,
)
from blindmatch.matcher.domain import NO_RULE, Rule

U64 = npt.NDArray[np.uint64]


def _with_blocks(described: Proposed, part: Part) -> Proposed:
    """An unblocked part as C is told of it in process: with its non-empty blocks' sizes."""
    return dataclasses.replace(described, blocks=denseblock.part_blocks(part))


class InProcess:
    """S1 and S2 as objects in this process; CPU seconds by role into `evaluate`'s clock, and
    blocking's into `blocking` (S1's join, S2's expansion). S1's proposal and checks are
    core/proposal.py's, as over gRPC."""

    def __init__(self, s1: BlockingServer, s2: ShareServer) -> None:
        self.s1, self.s2 = s1, s2
        self.proposal: Proposal | None = None
        self.rows = RowLedger()  # S1's per-upload cap over its proposals (core/rowledger.py)
        self.blocking = {"join (S1)": 0.0, "expand (S2)": 0.0}
        # Unblocked parts by arithmetic sharing (core/densearith.py): C told their blocks
        # (`Proposed.blocks`), S1's and S2's sides of the part `prepare_part` ran last.
        self.dense = True
        # And a part's blocks on both CLKs under the gap rule by the rule's margin
        # (core/densemargin.py: C deals their records' popcounts' daBits too, `prepare_part`'s
        # `pops`, and each batch's margin deal); False: core/gmwsum.py's circuit.
        self.margin = True
        self._dense: dict[int, tuple[denseblock.Blocks, denseblock.Blocks]] = {}
        self._pops: dict[int, tuple[list[list[U64]], list[list[U64]]]] = {}
        self._part: int | None = None  # the part `evaluate_part` is running

    def block(
        self,
        lacking: list[npt.NDArray[np.bool_]] | None,
        cutoffs: tuple[float, ...] = (),
        pairs: set[tuple[int, int]] | None = None,
    ) -> list[exhaustive.Part]:
        lacking = self.s1.lacking or lacking  # the members' (S1's own), or C's in a test
        self._dense = {}  # a block's shares serve only the run that computed them
        clks = 1 if lacking is None else 2
        expanding = 0.0

        def blocked(some: set[tuple[int, int]] | None) -> list[PairBatch]:
            nonlocal expanding
            joining = [0.0]  # S1's join, made as S2 takes each (`BlockingServer.join`): S1's
            matched = _timed(self.s1.join(clks, some), joining)
            t1 = time.process_time()
            got = self.s2.expand(matched, clks)
            expanding += time.process_time() - t1 - joining[0]
            return fallback_split(got, lacking)

        # A pair of members of at most S1's cap of pairs: every pair, no join, no expansion
        # (core/exhaustive.py).
        t0 = time.process_time()
        out = exhaustive.propose(self.s1.records(), self.s1.exhaustive, pairs, lacking, blocked,
                                 self.s1.small_member)  # fmt: skip
        self.blocking["join (S1)"] += time.process_time() - t0 - expanding
        self.blocking["expand (S2)"] += expanding
        return out

    def bits(self, clk: int) -> int:
        return self.s1.bits(clk)

    def propose(
        self,
        lacking: list[npt.NDArray[np.bool_]] | None,
        cutoffs: tuple[float, ...],
        rule: Rule = NO_RULE,
        only: Sequence[tuple[int, int]] | None = None,
    ) -> list[Proposed]:
        lacking = self.s1.lacking or lacking  # the members' (S1's own), or C's in a test
        self._dense = {}  # a block's shares serve only the run that computed them
        pairs = None if only is None else set(only)
        proposed = self.block(lacking, pairs=pairs)
        records = self.s1.records()
        self.proposal = Proposal([str(m) for m in range(len(records))], records, proposed,
                                 cutoffs, lacking, rule=rule, only=pairs,
                                 later=lambda more: self.block(lacking, pairs=more))  # fmt: skip
        self.proposal.ledger = self.rows
        described = self.proposal.described()
        if not self.dense:
            return described
        return [_with_blocks(d, p) for d, p in zip(described, self.proposal.parts, strict=True)]

    @property
    def _proposed(self) -> Proposal:
        """S1's proposal of the run (none before `propose`: refused)."""
        if self.proposal is None:
            raise ValueError("S1 has proposed no run")
        return self.proposal

    def prepare_part(self, index: int, deals: Sequence[densearith.BlockDeal],
                     transcript: linkbit.Transcript, clock: dict[str, float],
                     pops: Sequence[ring64.Deal] = ()) -> None:  # fmt: skip
        """S1 and S2 on unblocked part `index`'s blocks (`Proposed.blocks`, C's deal a
        block): the daBits' conversion, D opened, C's deal checked (refused as a batch's
        triples are), every pair's H shares; its batches then take them
        (core/denseblock.py). With `pops` (C's deal a block, `margin`), the blocks' records'
        popcounts to additive shares (core/densemargin.py `convert_pops`), checked too."""
        part = self._proposed.parts[index]
        if not isinstance(part, Cross) or not deals:
            raise ValueError(f"part {index} is not unblocked")
        t0 = time.process_time()  # C's deals, made as they are read (core/densearith.py `Lazy`)
        deals, pops = list(deals), list(pops)
        clock["C"] = clock.get("C", 0.0) + time.process_time() - t0
        clks = (part.clk,) if len(deals[0].shape.widths) == 1 else (RECORD, FALLBACK)
        self._dense, self._pops = {}, {}
        sides = []
        for role, server in enumerate((self.s1, self.s2)):
            who = ("S1", "S2")[role]
            setups = [transcript.send("C", who, "setup", (d.to_s1, d.to_s2)[role]) for d in deals]
            t0 = time.process_time()
            sides.append(server.block_side(role, part, clks, setups))
            clock[who] = clock.get(who, 0.0) + time.process_time() - t0
        try:
            for b1, b2 in zip(sides[0].blocks, sides[1].blocks, strict=True):
                denseblock.exchange(b1, b2, transcript, clock)
            if pops:
                self._pops[index] = self._convert_pops(sides, pops, transcript, clock)
        except triplecheck.DealRefused as exc:
            raise triplecheck.refused(f"{part.member_a}/{part.member_b}", exc) from None
        self._dense[index] = (sides[0], sides[1])

    def _plan(self, circuit: linkbit.Circuit) -> Plan:
        """The margin's plan at `circuit`'s cut-offs and rule (S1 checked them: the run's)."""
        return plan(self.s1.bits(RECORD), self.s1.bits(FALLBACK), circuit.cutoffs,
                    circuit.rule or NO_RULE)  # fmt: skip

    def _convert_pops(self, sides: list[denseblock.Blocks], deals: Sequence[ring64.Deal],
                      transcript: linkbit.Transcript, clock: dict[str, float],
                      ) -> tuple[list[list[U64]], list[list[U64]]]:  # fmt: skip
        """Each block's records' popcounts as additive shares mod 2^64, S1's and S2's."""
        assert self.proposal is not None
        p = plan(self.s1.bits(RECORD), self.s1.bits(FALLBACK), self.proposal.cutoffs,
                 self.proposal.rule)  # fmt: skip
        if len(deals) != len(sides[0].blocks):
            raise ValueError("the margin: a popcount deal a block")
        out: tuple[list[list[U64]], list[list[U64]]] = ([], [])
        for k, d in enumerate(deals):
            records = len(sides[0].pops[k][0])
            parties = [ring64.Party(role, densemargin.pops_size(p, records),
                                    transcript.send("C", who, "setup", (d.to_s1, d.to_s2)[role]))
                       for role, who in enumerate(("S1", "S2"))]  # fmt: skip
            got = densemargin.convert_pops(p, parties[0], parties[1],
                                           (sides[0].pops[k], sides[1].pops[k]), transcript,
                                           clock)  # fmt: skip
            out[0].append(got[0])
            out[1].append(got[1])
        return out

    def _margin(self, part: PairBatch, circuit: linkbit.Circuit, dealt: densemargin.Deal,
                transcript: linkbit.Transcript, clock: dict[str, float],
                outputs: Callable[[densemargin.Side], bytes]) -> tuple[bytes, bytes]:  # fmt: skip
        """A batch of a part's blocks by the rule's margin (core/densemargin.py): each
        server's side on its H and popcount shares, their exchange, `outputs` of each."""
        index = self._part
        if index is None or index not in self._pops:
            raise ValueError("the margin: a batch of a part whose popcounts are not converted")
        p, sides = self._plan(circuit), []
        for role, who in enumerate(("S1", "S2")):
            setup = transcript.send("C", who, "setup", (dealt.to_s1, dealt.to_s2)[role])
            t0 = time.process_time()
            inputs = densemargin.gather(self._dense[index][role], self._pops[index][role], part)
            sides.append(densemargin.Side(role, p, *inputs, setup))
            clock[who] = clock.get(who, 0.0) + time.process_time() - t0
        densemargin.exchange(sides[0], sides[1], transcript, clock)
        got = []
        for side, who in zip(sides, ("S1", "S2"), strict=True):
            t0 = time.process_time()
            got.append(transcript.send(who, "C", "output", outputs(side)))
            clock[who] = clock.get(who, 0.0) + time.process_time() - t0
        return got[0], got[1]

    def _run(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
        tagged: bool,
        drop: npt.NDArray[np.bool_] | None,
    ) -> tuple[bytes, bytes]:
        dense = self._dense.get(self._part) if self._part is not None else None
        # S1's first message to S2 carries the batch's rows and the output pad's seed.
        mask = secrets.token_bytes(linkbit.SEED_BYTES)
        tags = linkbit.tags(part.rows_a, part.rows_b) if tagged else None
        keep = linkbit.keep_row(drop) if drop is not None else None
        if isinstance(dealt, densemargin.Deal):
            transcript.count("S1", "S2", 8 * len(part) + len(mask))
            try:
                return self._margin(part, circuit, dealt, transcript, clock,
                                    lambda side: side.output(tags, keep, mask))  # fmt: skip
            except triplecheck.DealRefused as exc:
                raise triplecheck.refused(f"{part.member_a}/{part.member_b}", exc) from None
        t1 = time.process_time()
        setup1 = transcript.send("C", "S1", "setup", dealt.to_s1)
        p1 = dense[0].party(part, circuit, setup1) if dense else self.s1.party(0, part, circuit,
                                                                               setup1)  # fmt: skip
        transcript.count("S1", "S2", 8 * len(part) + len(mask))
        t2 = time.process_time()
        setup2 = transcript.send("C", "S2", "setup", dealt.to_s2)
        p2 = dense[1].party(part, circuit, setup2) if dense else self.s2.party(1, part, circuit,
                                                                               setup2)  # fmt: skip
        t3 = time.process_time()
        try:
            linkbit.exchange(p1, p2, transcript, clock)
        except triplecheck.DealRefused as exc:  # as S1 and S2 over gRPC refuse it
            clk = f", CLK {part.clk}" if part.clk else ""
            raise triplecheck.refused(f"{part.member_a}/{part.member_b}{clk}", exc) from None
        t4 = time.process_time()
        o1 = transcript.send("S1", "C", "output", p1.output(tags, keep, mask))
        t5 = time.process_time()
        o2 = transcript.send("S2", "C", "output", p2.output(tags, keep, mask))
        clock["S1"] = clock.get("S1", 0.0) + t2 - t1 + t5 - t4
        clock["S2"] = clock.get("S2", 0.0) + t3 - t2 + time.process_time() - t5
        return o1, o2

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
        proposal = self._proposed
        part = proposal.part(index, offset, count, circuit.cutoffs)
        if part.clk == RECORD:  # the run's rule on the first CLKs' pairs (as S1 over gRPC)
            proposal.check_rule(circuit.rule or NO_RULE)
        self._part = index  # `_run` takes a part `prepare_part` ran on from its blocks
        try:
            return self._run(part, circuit, dealt, transcript, clock, True, None)
        finally:
            self._part = None

    def evaluate(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        drop = None
        if self.proposal is not None:
            a, b = str(part.member_a), str(part.member_b)
            checked = self.proposal.check(a, b, part.clk, part.rows_a, part.rows_b,
                                          circuit.cutoffs)  # fmt: skip
            self.proposal.commit(checked)
            drop = checked.proposed
        return self._run(part, circuit, dealt, transcript, clock, False, drop)

    def evaluate_reach(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        proposal = self._proposed
        run = proposal.cutoffs  # the run's cut-offs; the circuit is at its reach
        checked = proposal.check_reach(str(part.member_a), str(part.member_b), part.clk,
                                       part.rows_a, part.rows_b, run)  # fmt: skip
        proposal.commit_reach(checked)
        return self._run(part, circuit, dealt, transcript, clock, False, checked.proposed)

    def messages(self, batch: PairBatch) -> tuple[Shares, Shares]:
        return self.s1.messages(batch), self.s2.messages(batch)


def _timed(matched: Iterator[Matched], spent: list[float]) -> Iterator[Matched]:
    """`matched`, the CPU seconds making each (S1's join, made when taken) added to spent[0]."""
    while True:
        t0 = time.process_time()
        m = next(matched, None)
        spent[0] += time.process_time() - t0
        if m is None:
            return
        yield m
        del m


__all__ = ["InProcess"]
