"""A circuit batch's checks past its members (rpc/twoserver_role.py `_Role.batch` calls it
once the two uploads are held and the query counted): its rows or count, its cut-offs and
rule against the uploads', and C's setup of the size the batch's circuit needs; the
circuit it runs (the link bit's, the rule's, the blocks' or the margin's)."""

from __future__ import annotations

from blindmatch.matcher import errors
from blindmatch.matcher.core import denseblock, linkbit
from blindmatch.matcher.core.gmwrule import rule_circuit
from blindmatch.matcher.core.proposal import Refused, run_cutoffs
from blindmatch.matcher.core.twoserver import reach_cutoff
from blindmatch.matcher.rpc.twoserver_blocks import widths
from blindmatch.matcher.rpc.twoserver_margin import margin_batch
from blindmatch.matcher.rpc.twoserver_peers import to_rows
from blindmatch.matcher.rpc.twoserver_uploads import Held, part_rule
from blindmatch.protos import blindmatch_pb2 as pb


def batch_circuit(role: str, m: pb.CircuitBatch, held: list[Held]) -> tuple[linkbit.Circuit, int]:
    """Server `role`'s check of batch `m` over the members' uploads `held`: the circuit (its
    cut-offs the threshold and none or the default buckets) and the number of pairs; C's
    setup checked to fit them."""
    if m.clk >= len(held[0].bits):
        raise errors.InvalidArgument(f"clk: {m.clk}, but the uploads have {len(held[0].bits)}")
    if m.proposed:
        if m.rows_a or m.rows_b:
            raise errors.InvalidArgument(
                "rows_a/rows_b: none in a batch of S1's proposal (S1 holds its pairs)"
            )
        count, most = m.count, linkbit.BLOCK_BATCH if m.blocks else linkbit.BATCH
        if not 0 < count <= most:
            raise errors.InvalidArgument(f"count: {count}; 1 to {most}")
    else:
        rows_a, rows_b = to_rows(m.rows_a, "rows_a"), to_rows(m.rows_b, "rows_b")
        if len(rows_a) != len(rows_b) or not 0 < len(rows_a) <= linkbit.BATCH:
            raise errors.InvalidArgument(
                f"rows_a/rows_b: {len(rows_a)} and {len(rows_b)} rows; as many, 1 to "
                f"{linkbit.BATCH}"
            )
        for name, rows, h in (("rows_a", rows_a, held[0]), ("rows_b", rows_b, held[1])):
            if int(rows.max()) >= h.records:
                raise errors.InvalidArgument(f"{name}: row {int(rows.max())} of {h.records}")
        count = len(rows_a)
    if not m.cutoffs:
        raise errors.InvalidArgument("cutoffs: the threshold, then none or the default buckets")
    try:
        cutoffs = run_cutoffs(m.cutoffs[0], m.cutoffs[1:])
    except Refused as exc:
        raise errors.InvalidArgument(f"cutoffs: {exc}") from None
    rule = part_rule(m, "batch")
    for name, h in ((m.member_a, held[0]), (m.member_b, held[1])):
        if rule.active and h.rule != rule:
            raise errors.InvalidArgument(
                f"rule: {rule.text()}, but {name!r}'s upload says {h.rule.text() or 'none'} "
                "(a run applies the rule every member's upload carries, or none)"
            )
    if m.reach:  # completing groups: the circuit at the run's reach cut-off alone
        if m.proposed:
            raise errors.InvalidArgument("reach: a batch of C's pairs, not of the proposal")
        reach = reach_cutoff(cutoffs)
        if reach is None:
            raise errors.InvalidArgument(
                f"reach: the run at {list(cutoffs)} has no reach cut-off (no buckets)"
            )
        cutoffs = (reach,)
    if m.margin:  # the rule's margin on the blocks' shares (rpc/twoserver_margin.py)
        return margin_batch(role, m, held[0].bits, cutoffs, rule, count), count
    try:
        if m.blocks:  # on the H shares of the part's blocks (rpc/twoserver_blocks.py)
            if not m.proposed or m.reach:
                raise errors.InvalidArgument("blocks: a batch of the proposal's only")
            circuit = denseblock.circuit(widths(held[0].bits, m.clk, rule), cutoffs, rule)
        elif rule.active and m.clk == 0:
            circuit = rule_circuit(held[0].bits[0], held[0].bits[1], cutoffs, rule)
        else:
            circuit = linkbit.circuit(held[0].bits[m.clk], cutoffs)
    except ValueError as exc:  # a threshold with no integer form of the kernel's test
        raise errors.InvalidArgument(f"cutoffs: {exc}") from None
    # C's setup: S1's a seed; S2's a seed and a c share a dealt row (linkbit.dealt_rows:
    # two a gate and the opened ones) a word of pairs.
    if role == "s1" and len(m.setup) != linkbit.SEED_BYTES:
        raise errors.InvalidArgument(f"setup: link bits: a seed is {linkbit.SEED_BYTES} bytes")
    words = linkbit.words_for(count)
    dealt = linkbit.dealt_rows(circuit)
    if role == "s2" and len(m.setup) != linkbit.SEED_BYTES + 8 * dealt * words:
        raise errors.InvalidArgument("setup: link bits: S2's setup does not fit the batch")
    return circuit, count
