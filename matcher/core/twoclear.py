"""The link-bit circuit's outputs computed in the clear, for `privacy-check --mode two-server`
(core/twoviews.py `role_views(clear=True)`).

What C learns of a batch is the circuit's output bits (core/linkbit.py `reveal`): each
cut-off's bit (the kernel's test, core/kernelrule.py `hamming_bounds`; on the first CLKs with
a gap rule, the rule's, core/ruleform.py `rule_bounds`) and, for a part of S1's proposal, the
pair's rows gated by its link bit; every output 0 on a pair S1's checks drop. Those are a
deterministic function of the members' CLKs and popcounts, which the check holds (it made the
uploads). `clear_outputs` computes them from the two servers' share differences (XOR: a ^ b)
and the popcounts, and returns them as two output shares (the bits, and zeros) that `reveal`
reads as it reads the servers': the run around it (S1's proposal and checks, C's solving,
completing, extras, the reach pairs a dishonest C asks) is the run's own code. The circuit's
rounds, triples and checks are skipped: they cost a sample of 2,000 records minutes of CPU
(4 million pairs of A x B compared without blocking, core/exhaustive.py) and change no output
(tests/test_linkbit.py and tests/test_gmwrule.py check the circuit against these same
references; tests/test_twoclear.py checks C's view both ways on the same uploads)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import linkbit, ruleform
from blindmatch.matcher.core.twoserver import FALLBACK, RECORD, PairBatch, ShareServer

Pops = list[list[npt.NDArray[np.int64]]]  # [member][clk]: each record's popcount


def _distances(
    s1: ShareServer, s2: ShareServer, part: PairBatch, clk: int
) -> npt.NDArray[np.int64]:
    """Each pair's Hamming distance on CLK `clk`: the popcount of a ^ b, the XOR of the two
    servers' share differences."""
    batch = PairBatch(part.member_a, part.member_b, clk, part.rows_a, part.rows_b)
    d = s1.differences(batch) ^ s2.differences(batch)
    return np.bitwise_count(d).sum(axis=1, dtype=np.int64)


def clear_bits(
    s1: ShareServer, s2: ShareServer, pops: Pops, part: PairBatch, circuit: linkbit.Circuit
) -> npt.NDArray[np.bool_]:
    """(cut-offs, pairs): the circuit's cut-off bits on `part`, in the clear."""

    def side(clk: int) -> tuple[npt.NDArray[np.int64], ...]:
        pa = pops[part.member_a][clk][part.rows_a]
        pb = pops[part.member_b][clk][part.rows_b]
        return pa, pb, _distances(s1, s2, part, clk)

    if circuit.n_bits2:  # the gap rule's circuit: a batch on the first CLKs, both read
        if circuit.rule is None or part.clk != RECORD:
            raise ValueError("the rule's circuit: a batch on the first of two CLKs")
        form = ruleform.integer_form(circuit.rule, circuit.cutoffs, circuit.n_bits,
                                     circuit.n_bits2)  # fmt: skip
        return ruleform.rule_bounds(form, circuit.n_bits, *side(RECORD), *side(FALLBACK))
    pa, pb, h = side(part.clk)
    bounds = linkbit.hamming_bounds(pa, pb, circuit.cutoffs, circuit.n_bits)
    out: npt.NDArray[np.bool_] = h[None, :] < bounds
    return out


def clear_outputs(
    s1: ShareServer,
    s2: ShareServer,
    pops: Pops,
    part: PairBatch,
    circuit: linkbit.Circuit,
    tagged: bool,
    drop: npt.NDArray[np.bool_] | None,
) -> tuple[bytes, bytes]:
    """What `InProcess._run` returns for `part` (the two servers' output shares, bit-sliced as
    `Party.output` lays them out), as the bits and zeros: the cut-offs' bits, with `tagged`
    each pair's 64 row bits AND its link bit, all 0 where `drop`."""
    bits = clear_bits(s1, s2, pops, part, circuit)
    if tagged:
        rows = np.stack([np.asarray(part.rows_a, np.int64), np.asarray(part.rows_b, np.int64)])
        half = linkbit.TAG_BITS // 2
        planes = ((rows[:, None, :] >> np.arange(half)[None, :, None]) & 1).astype(bool)
        bits = np.concatenate([bits, planes.reshape(linkbit.TAG_BITS, -1) & bits[0]])
    if drop is not None:
        bits = bits & ~np.asarray(drop, bool)
    words = linkbit.words_for(len(part))
    padded = np.zeros((len(bits), 64 * words), dtype=np.uint8)
    padded[:, : len(part)] = bits
    out = np.packbits(padded, axis=1, bitorder="little").view("<u8")
    one = np.ascontiguousarray(out).tobytes()
    return one, bytes(len(one))


__all__ = ["Pops", "clear_bits", "clear_outputs"]
