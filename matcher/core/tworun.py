"""The two-server run driven from the combiner's side (docs/privacy-design.md): blocking (S1
joins the sealed band keys, S2 expands the matches into pairs), the link-bit circuit on the
shares (S1 and S2), deciding, solving, completing the groups (core/twocomplete.py: reach
batches, `Servers.evaluate_reach`) and links (C).

`drive` runs it over any `Servers`: what C sees of S1 and S2, how many pairs each part of S1's
proposal holds (never which: C evaluates a part by reference and learns a pair's rows only
where it links, `proposed_links`) and, for a batch, the two servers' output shares of the
circuit C dealt for it; the pairs inside C's groups it does not know as links go through
`link_bits` by name, on both CLKs where C cannot tell which (S1 answers 0 on the other).
`InProcess` (core/twoinprocess.py) is S1 and S2 as plain objects in this process
(core/twoserver.py; `run` drives them, what the tests and benchmarks use);
matcher/rpc/twoserver_client.py is the same two servers over gRPC, each on its own address, so
the run's decisions and links are the same code either way."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import (
    densearith,
    denseblock,
    densemargin,
    linkbit,
    margincircuit,
    partpath,
)
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.exhaustive import Part
from blindmatch.matcher.core.margincircuit import Plan
from blindmatch.matcher.core.outcomes import (
    Earlier,
    Journal,
    Ledger,
    Outcome,
    keys_of,
    sorted_known,
)
from blindmatch.matcher.core.runjournal import Watched
from blindmatch.matcher.core.solve import Links, links_from_groups, solve
from blindmatch.matcher.core.twocomplete import (
    Pair,
    add_clock,
    clks_named,
    complete_groups,
    fallback_width,
    reach_bits,
)
from blindmatch.matcher.core.twoinprocess import InProcess
from blindmatch.matcher.core.twoserver import (
    BATCH_PAIRS,
    FALLBACK,
    RECORD,
    BlockingServer,
    Combiner,
    PairBatch,
    Proposed,
    Rows,
    Shares,
    ShareServer,
)
from blindmatch.matcher.domain import NO_RULE, Rule


class Servers(Protocol):
    """S1 and S2 as C sees them."""

    def block(
        self, lacking: list[npt.NDArray[np.bool_]] | None, cutoffs: tuple[float, ...] = ()
    ) -> Sequence[Part]:
        """The proposed pairs: S1's join of the sealed band keys (`BlockingServer.join`),
        expanded by S2 (`ShareServer.expand`) and split by the fallback's rule; `cutoffs`,
        the run's (the threshold, then the buckets), fix the circuit's for the run."""
        ...

    def bits(self, clk: int) -> int:
        """The width of CLK `clk` in bits (the schema's; public)."""
        ...

    def propose(
        self,
        lacking: list[npt.NDArray[np.bool_]] | None,
        cutoffs: tuple[float, ...],
        rule: Rule = NO_RULE,
        only: Sequence[tuple[int, int]] | None = None,
    ) -> list[Proposed]:
        """S1 proposes the run at `cutoffs` (under the gap `rule` on the first CLKs' pairs,
        which S1 fixes as it fixes the cut-offs): what C learns of each part (never its
        pairs); parts only for the pairs of members in `only` where given."""
        ...

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
        """The circuit on pairs offset..offset + count of the proposal's part `index`, which
        only S1 and S2 know: the output shares, the pairs' rows gated by their link bit (a
        margin's deal, core/densemargin.py: `circuit` its second, the outputs')."""
        ...

    def evaluate(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        """The link-bit circuit on `part` (at most linkbit.BATCH pairs C names: the extras
        inside its groups) from C's deal: S1's and S2's output shares, for C, 0 at the pairs S1
        proposed; what crossed counted in `transcript`."""
        ...

    def evaluate_reach(
        self,
        part: PairBatch,
        circuit: linkbit.Circuit,
        dealt: linkbit.Deal,
        transcript: linkbit.Transcript,
        clock: dict[str, float],
    ) -> tuple[bytes, bytes]:
        """`evaluate` for a reach batch (core/twocomplete.py): `circuit` at the run's reach
        cut-off, the pairs checked by S1's `check_reach`, 0 on the other CLK."""
        ...

    def messages(self, batch: PairBatch) -> tuple[Shares, Shares]:
        """The Dice oracle's permuted share differences (the tests' oracle only)."""
        ...


def link_bits(
    servers: Servers,
    combiner: Combiner,
    batch: PairBatch,
    transcript: linkbit.Transcript,
    seconds: dict[str, float],
) -> npt.NDArray[np.bool_]:
    """(cut-offs, pairs): the link-bit step on a batch C names (the extras inside its
    groups), in circuits of linkbit.BATCH pairs: C deals, S1 and S2 run the rounds, C reveals;
    CPU seconds by role into `seconds`."""
    out = np.zeros((len(combiner.cutoffs), len(batch)), dtype=bool)
    clock = {"S1": 0.0, "S2": 0.0, "C": 0.0}
    for k, part in enumerate(batch.split(linkbit.BATCH)):
        at = k * linkbit.BATCH
        t0 = time.process_time()
        circuit, dealt = combiner.deal(
            part, servers.bits(part.clk), fallback_width(servers, combiner)
        )
        clock["C"] += time.process_time() - t0
        o1, o2 = servers.evaluate(part, circuit, dealt, transcript, clock)
        t1 = time.process_time()
        out[:, at : at + len(part)] = linkbit.reveal(circuit, o1, o2, len(part))
        transcript.pairs += len(part)
        clock["C"] += time.process_time() - t1
    add_clock(seconds, clock)
    return out


def _dense(
    servers: Servers,
    combiner: Combiner,
    index: int,
    part: Proposed,
    transcript: linkbit.Transcript,
    clock: dict[str, float],
) -> linkbit.Circuit | Plan | None:
    """Where S1 and S2 run unblocked part `index` by arithmetic sharing (its `blocks` told, in
    process: core/twoinprocess.py `prepare_part`), C's deal of each block, their conversion
    and checks, and what its batches then run on the H shares: the rule's margin by
    arithmetic (core/densemargin.py's `Plan`) where the servers take it (`margin`) and the
    part reads both CLKs under the gap rule, else core/gmwsum.py's circuit
    (core/denseblock.py); None otherwise (by pairs)."""
    prepare = getattr(servers, "prepare_part", None)
    stand = getattr(servers, "prepare_standing", None)
    if part.standing and stand is not None:  # against its partner converted once
        margin = _margin(
            servers, combiner, (servers.bits(RECORD), fallback_width(servers, combiner))
        )
        if margin is None or not stand(index, margin, transcript, clock):
            return None  # not converted (no room, too large): by pairs, as its shape takes it
        if part.clk == FALLBACK:  # the kernel's test on the query's fallback-CLK H shares
            return denseblock.circuit((servers.bits(FALLBACK),), combiner.cutoffs, None)
        return margin
    if not part.blocks or prepare is None:
        return None
    t0 = time.process_time()
    width2 = fallback_width(servers, combiner) if part.clk == RECORD else 0
    widths = (servers.bits(part.clk), width2) if width2 else (servers.bits(part.clk),)
    # Each block's deal made as the servers read it (over gRPC, as it streams to S2: C holds
    # one block's at a time), its CPU C's.
    shapes = [densearith.Shape(a, b, widths) for a, b in part.blocks]
    deals = densearith.Lazy(len(shapes), lambda k, seeds: densearith.deal(shapes[k], seeds))
    margin = _margin(servers, combiner, widths)
    if margin is not None:  # and each block's records' popcounts to convert, once a block
        pops = densearith.Lazy(len(shapes), lambda k, seeds: densemargin.pops_deal(
            margin, shapes[k].records, seeds))  # fmt: skip
        clock["C"] += time.process_time() - t0
        prepare(index, deals, transcript, clock, pops=pops)
        return margin
    circuit = denseblock.circuit(widths, combiner.cutoffs, combiner.rule)
    clock["C"] += time.process_time() - t0
    prepare(index, deals, transcript, clock)
    return circuit


def _margin(servers: Servers, combiner: Combiner, widths: tuple[int, ...]) -> Plan | None:
    """The rule's margin by arithmetic for a part's blocks on `widths`, where the servers
    take it and it fits 2^64 (a rule of many decimals may not: core/margincircuit.py)."""
    if len(widths) != 2 or not getattr(servers, "margin", False):
        return None
    try:
        return margincircuit.plan(widths[0], widths[1], combiner.cutoffs, combiner.rule)
    except ValueError:
        return None


def proposed_links(
    servers: Servers,
    combiner: Combiner,
    index: int,
    part: Proposed,
    transcript: linkbit.Transcript,
    seconds: dict[str, float],
) -> Candidates:
    """The links among part `index` of S1's proposal, in circuits of linkbit.BATCH pairs (on
    its blocks, as many as `servers.batch_pairs` says, where it has it): C
    deals for a number of pairs it cannot name, and learns each pair's link bit, its bucket
    and, where it links, its rows (gated by the link bit in the circuit's output)."""
    found: list[Candidates] = []
    clock = {"S1": 0.0, "S2": 0.0, "C": 0.0}
    n_bits = servers.bits(part.clk)
    dense = _dense(servers, combiner, index, part, transcript, clock)
    # On its blocks' H shares larger batches where both servers take them (rpc/twoserver_
    # blocks.py `largest_batch`): fewer batches' rounds, budget commits and kept inputs.
    larger = getattr(servers, "batch_pairs", None)
    most = larger(index) if dense is not None and larger is not None else linkbit.BATCH
    for offset in range(0, part.pairs, most):
        count = min(most, part.pairs - offset)
        t0 = time.process_time()
        dealt: linkbit.Deal
        if isinstance(dense, Plan):  # the margin's deal: both circuits, the arithmetic
            circuit, dealt = dense.second, densemargin.deal(dense, count)
        elif dense is not None:
            circuit, dealt = dense, combiner.triples(dense, count)
        else:
            circuit, dealt = combiner.deal_count(count, n_bits, part.clk,
                                                 fallback_width(servers, combiner))  # fmt: skip
        clock["C"] += time.process_time() - t0
        o1, o2 = servers.evaluate_part(index, offset, count, circuit, dealt, transcript, clock)
        t1 = time.process_time()
        bits = linkbit.reveal(circuit, o1, o2, count, tagged=True)
        rows_a, rows_b = linkbit.untag(bits)
        keep = bits[0]
        n = int(keep.sum())
        found.append(Candidates(
            combiner.bucket_scores(bits[: circuit.n_outputs, keep]),
            np.full(n, part.member_a, dtype=np.uint32), np.full(n, part.member_b, dtype=np.uint32),
            rows_a[keep], rows_b[keep],
        ))  # fmt: skip
        transcript.pairs += count
        clock["C"] += time.process_time() - t1
    done = getattr(servers, "part_done", None)
    if dense is not None and done is not None:  # S1 and S2 let its blocks go now
        done(index)
    add_clock(seconds, clock)
    return merge(found) if found else Candidates.empty()


@dataclass
class TwoServerResult:
    """What a two-server run gives: the links (as a normal run's), the groups, the pairs
    blocking proposed (per pair of members and CLK), and CPU seconds per stage."""

    links: Links
    groups: int
    proposed: list[Proposed]  # what C learns of S1's proposal: members, CLK, how many pairs
    method: str
    seconds: dict[str, float] = field(default_factory=dict)
    transcript: linkbit.Transcript = field(default_factory=linkbit.Transcript)
    pairs: list[Part] = field(default_factory=list)  # the Dice oracle's only: C sees them
    completion: dict[str, int] = field(default_factory=dict)  # core/twocomplete.py's cost
    # Each pair of members' outcome (core/outcomes.py), where `drive` was given `earlier`.
    outcomes: dict[tuple[int, int], Outcome] = field(default_factory=dict)

    @property
    def comparisons(self) -> int:
        return sum(p.pairs for p in self.proposed)


def run(
    s1: BlockingServer,
    s2: ShareServer,
    combiner: Combiner,
    *,
    batch_pairs: int = BATCH_PAIRS,
    transcript: linkbit.Transcript | None = None,
) -> TwoServerResult:
    """The whole run on S1 and S2 in this process (`drive` over `InProcess`)."""
    return drive(InProcess(s1, s2), combiner, batch_pairs=batch_pairs, transcript=transcript)


def drive(
    servers: Servers,
    combiner: Combiner,
    *,
    batch_pairs: int = BATCH_PAIRS,
    transcript: linkbit.Transcript | None = None,
    earlier: Earlier | None = None,
    journal: Journal | None = None,
) -> TwoServerResult:
    """The whole run: blocking (S1's join, S2's expansion), messages (S1, S2: the link-bit
    circuit, or with a Dice combiner the permuted differences), deciding (C), solving and
    links (C); what crossed between the parties counted in `transcript` (the result's).
    `earlier`: the outcomes to reuse (core/outcomes.py), S1 proposing parts for the other
    pairs of members only; given, the result holds every pair of members' outcome, kept in
    `journal` as soon as the run holds it (core/outcomes.py `Ledger`, core/runjournal.py)."""
    seconds = {"blocking (S1, S2)": 0.0, "messages (S1)": 0.0, "messages (S2)": 0.0,
               "combining (C)": 0.0, "solving (C)": 0.0}  # fmt: skip
    started = time.process_time()
    lacking = combiner.lacking()
    transcript = transcript if transcript is not None else linkbit.Transcript()
    if earlier is not None and combiner.reveal != "link-bit":
        raise ValueError("a run reuses link bits only")
    ledger = Ledger(earlier, journal)  # what the run learns of each pair of members
    if ledger.journal is not None:  # each batch told to the ledger (core/runjournal.py)
        servers = Watched(servers, ledger)
    if combiner.reveal == "link-bit":
        only = earlier.only() if earlier is not None else None
        described = servers.propose(lacking, combiner.cutoffs, combiner.rule, only=only)
        # Each unblocked part by blocks or by pairs, whichever its shape makes cheaper (a
        # small pair of members by pairs: no block dealt or converted; core/partpath.py).
        described = partpath.by_shape(described, combiner.rule)
        proposed: Sequence[Part] = []
    else:
        proposed = servers.block(lacking, combiner.cutoffs)
        described = [Proposed(p.member_a, p.member_b, p.clk, len(p)) for p in proposed]
    seconds["blocking (S1, S2)"] += time.process_time() - started

    def dice_messages(batch: PairBatch) -> tuple[Shares, Shares]:
        t0 = time.process_time()
        m1, m2 = servers.messages(batch)
        seconds["messages (S1)"] += time.process_time() - t0
        transcript.count("S1", "C", m1.nbytes)
        transcript.count("S2", "C", m2.nbytes)
        transcript.pairs += len(batch)
        return m1, m2

    # Each decided pair's score, by pair of members (keys sorted): a link's pair blocking
    # proposed is scored from its decision, never through the circuit again, so that S1 and
    # S2 evaluate each pair once (core/pairbudget.py); the reused pairs of members' too.
    parts, decided = ledger.parts(), ledger.decided()
    if combiner.reveal == "link-bit":
        # C learns the links of each part, with their buckets and rows, and of the rest only
        # how many pairs there were: a pair inside a group C does not know as a link is an
        # extra (answered 0 where S1 proposed it: it did not link).
        for index, part in enumerate(described):
            found = proposed_links(servers, combiner, index, part, transcript, seconds)
            parts.append(found)
            ledger.found(part.member_a, part.member_b, found)
            decided.setdefault((part.member_a, part.member_b), []).append(
                (keys_of(found.rec0, found.rec1), found.sims)
            )
    for pairs in proposed:
        for batch in pairs.split(batch_pairs):
            m1, m2 = dice_messages(batch)
            t2 = time.process_time()
            parts.append(combiner.decide(batch, m1, m2))
            seconds["combining (C)"] += time.process_time() - t2
    known = {ends: sorted_known(got) for ends, got in decided.items()}
    started = time.process_time()
    candidates = merge(parts)
    groups = solve(candidates)
    completion: dict[str, int] = {}
    if combiner.bridge is not None:  # completing the groups (core/twocomplete.py)
        t0 = time.process_time()
        roles = ("messages (S1)", "messages (S2)", "combining (C)")
        before = sum(seconds[r] for r in roles)

        def ask(pairs: list[Pair]) -> npt.NDArray[np.bool_]:
            return ledger.reach(pairs, lambda new: reach_bits(servers, combiner, new, lacking,
                                                              transcript, seconds))  # fmt: skip

        groups, completion = complete_groups(groups, candidates, combiner, ask)
        spent = sum(seconds[r] for r in roles) - before
        seconds["completing (C)"] = time.process_time() - t0 - spent
        started += time.process_time() - t0  # not counted as solving

    def scorer(d0: Rows, r0: Rows, d1: Rows, r1: Rows) -> npt.NDArray[np.float64]:
        """The links' scores: each pair inside a group (once, whichever way round it is
        listed) from its decision where blocking proposed it, otherwise through S1, S2 and
        C (once: S1 and S2 evaluate a pair once an upload, core/pairbudget.py)."""
        forward = d0 < d1
        ends = np.stack(
            [np.where(forward, d0, d1), np.where(forward, r0, r1),
             np.where(forward, d1, d0), np.where(forward, r1, r0)], axis=1,
        ).astype(np.int64)  # fmt: skip
        pairs, back = np.unique(ends, axis=0, return_inverse=True)
        scores = np.empty(len(pairs), dtype=np.float64)
        for lo, hi in {(int(a), int(b)) for a, b in pairs[:, [0, 2]].tolist()}:
            sel = np.flatnonzero((pairs[:, 0] == lo) & (pairs[:, 2] == hi))
            rows_lo, rows_hi = pairs[sel, 1].astype(np.uint32), pairs[sel, 3].astype(np.uint32)
            if len(known.get((lo, hi), ((), ()))[0]):  # a completed group: maybe no link
                keys, got = known[lo, hi]
                at = np.minimum(np.searchsorted(keys, keys_of(rows_lo, rows_hi)), len(keys) - 1)
                found = keys[at] == keys_of(rows_lo, rows_hi)
                scores[sel[found]] = got[at[found]]
                sel, rows_lo, rows_hi = sel[~found], rows_lo[~found], rows_hi[~found]
                if not len(sel):
                    continue
            scores[sel] = 0.0
            on = clks_named(combiner, lacking, lo, hi, rows_lo, rows_hi)
            for c in (RECORD, FALLBACK):
                pick = np.flatnonzero(on[c])
                if not len(pick):
                    continue
                batch = PairBatch(lo, hi, c, rows_lo[pick], rows_hi[pick])
                if combiner.reveal == "link-bit":
                    bits = link_bits(servers, combiner, batch, transcript, seconds)
                    got = combiner.bucket_scores(bits)
                    scores[sel[pick]] = np.maximum(scores[sel[pick]], got)
                else:
                    scores[sel[pick]] = combiner.scores(batch, *dice_messages(batch))
            ledger.scored(lo, hi, keys_of(rows_lo, rows_hi), scores[sel])
        out: npt.NDArray[np.float64] = scores[back.ravel()]
        return out

    roles = ("messages (S1)", "messages (S2)", "combining (C)")
    before = sum(seconds[r] for r in roles)
    links = links_from_groups(groups, [], scorer)
    # The links' pairs through the link-bit circuit are counted by role, not as solving.
    seconds["solving (C)"] += (
        time.process_time() - started - (sum(seconds[r] for r in roles) - before)
    )
    method = "two-server" + ("+fallback" if combiner.has_fallback else "")
    return TwoServerResult(links, len(groups), described, method, seconds, transcript,
                           list(proposed), completion, ledger.outcomes())  # fmt: skip


__all__ = [
    "InProcess",
    "Servers",
    "TwoServerResult",
    "drive",
    "link_bits",
    "proposed_links",
    "run",
]
