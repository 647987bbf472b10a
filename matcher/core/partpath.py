"""Which path an unblocked part of S1's proposal takes, C's choice from what `Propose` tells
it (its pairs and its blocks' sizes): by blocks (core/densearith.py, core/denseblock.py: every
row of both sides of each block dealt and converted, then the circuit on the pairs' H shares)
or by pairs (the boolean circuit on each pair's CLKs). One rule for a run's parts
(core/tworun.py `drive`) and a query's or watch's (realtime/twopartner.py); the outputs are
the same either way (link bits, buckets, the linking pairs' rows: docs/privacy-design.md
"By pairs or by blocks")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from blindmatch.matcher.core.twoserver import FALLBACK, RECORD, Proposed
from blindmatch.matcher.domain import NO_RULE, Rule

# A part by blocks only where its pairs amortise the blocks' own cost: the deal and
# conversion of every row of both sides of each block (each record a daBit a bit, its
# popcounts' too under the margin: a query's records again in each of the partner's blocks)
# and the block calls (PrepareBlocks at S1 and S2, the BlockExchange stream); what blocks
# save a pair is the circuit's AND gates a pair by pairs against on the blocks' H shares.
# Without the gap rule (no rule, or the fallback CLK's part) that is the kernel's test, 1,248
# against 259: over gRPC a query of 1 record against 5,950 took 2.3 s by blocks and 0.12 s by
# pairs; 200 records against 1,050 (145 pairs a row converted) about the same either way
# (docs/performance.md "A two-server query by pairs or by blocks (2026-12-06)"), and a run's
# 100 x 1,000 (91 a row) 1.9 s of CPU by blocks, 1.3 by pairs.
BLOCKS_MIN_PAIRS = 200_000  # at fewer pairs a part by pairs
BLOCKS_PAIRS_A_ROW = 200  # and at fewer pairs a row its blocks convert (a query of few: ~1)
# Under the rule (the record CLK's part) the rule's circuit, 3,945 AND gates a pair by pairs
# against 474 by the margin on the blocks: blocks win from fewer pairs a row. A run over gRPC,
# CPU by blocks against by pairs: 100 x 100 (50 a row) 0.47 s against 0.36, 150 x 150 (75 a
# row) 0.58 against 1.06, 100 x 1,000 (91 a row) 3.4 against 4.9 (docs/performance.md "A
# two-server run's parts by pairs or by blocks (2026-12-06)").
RULED_PAIRS_A_ROW = 64
# C's choice: by each part's shape ("shape"), or every unblocked part by "blocks" or by
# "pairs" (the benchmarks' side-by-side, and tests of blocks on parts this rule takes by pairs),
# or a query's whole part by "standing" whatever its partner's size.
PATH = "shape"
# A query's part compared whole against a partner (its record CLK's, under the gap rule)
# against the partner's bits converted once (core/standing.py; over gRPC
# rpc/twoserver_standing.py) where the partner has at least this many records: the query then
# pays its own records' conversion, two products and the margin a pair, not the rule's
# circuit a pair. Over gRPC, a one-record query against 16,000 records: 0.21 s of CPU (all
# roles) against 0.35 by pairs, 948 bytes a pair against 4,910; at 64,000, 0.76 s against
# 1.48. The conversion, once an upload (~600 us of CPU and 75 kB between S1 and S2 a
# record; 12,320 bytes a record kept by each), pays for itself after about 55 one-record
# queries (what each saves against by pairs); below 16,000 records a query by pairs costs
# under ~0.4 s and keeps nothing (docs/performance.md "A query against a standing partner
# over gRPC").
STANDING_RECORDS = 16_000
# And only a part its shape would take by pairs (a query of few records: what was measured;
# one of many records a partner record goes by blocks), of at most this many pairs: S1 and S2
# hold a standing query's H shares for every pair as one block (rpc/twoserver_blocks.py
# MAX_PAIRS).
STANDING_MOST_PAIRS = 1 << 24
# A query's fallback part (its pairs where a record lacks the fallback's fields, scored on the
# fallback CLK alone: n_lack(a) x all of B + n_have(a) x n_lack(B)) against the same converted
# partner (fallstand): the query's fallback-CLK products give every query record x partner
# record its H on that CLK, and the kernel's test runs on those shares as on a block's
# (core/gmwsum.py's circuit, 259 AND gates a pair against 1,248 by pairs). Over gRPC a
# one-record query without a date of birth cost 7.0 us of CPU a pair so against 11.2-11.9 by
# pairs at 32,000 and 64,000 records (docs/performance.md "A query without a date of birth
# against a standing partner"); of the 7.0, ~1.4 is the circuit a part's pair (in core) and the
# rest is paid a query record x partner record whatever the part's size: the two cost the same
# at about half of those pairs, so the part goes standing where it is at least this share of
# them (a query of records lacking a date of birth: all; one with it, against a partner of
# few lacking it: by pairs).
FALLBACK_SHARE = 0.5


def by_blocks(part: Proposed, ruled: bool = False) -> bool:
    """Whether an unblocked part (S1 told its blocks) runs by blocks: at least
    BLOCKS_MIN_PAIRS pairs, BLOCKS_PAIRS_A_ROW a row its blocks convert; `ruled` (the record
    CLK's part under the gap rule), RULED_PAIRS_A_ROW a row; or as `PATH` forces."""
    if PATH != "shape":
        return bool(part.blocks) and PATH == "blocks"
    rows = sum(a + b for a, b in part.blocks)
    if ruled:
        return bool(part.blocks) and part.pairs >= RULED_PAIRS_A_ROW * rows
    return bool(part.blocks) and part.pairs >= max(BLOCKS_MIN_PAIRS, BLOCKS_PAIRS_A_ROW * rows)


def by_shape(described: Sequence[Proposed], rule: Rule = NO_RULE) -> list[Proposed]:
    """The parts, each on the path cheaper for its shape (`by_blocks`, ruled where `rule` is
    active and the part is the record CLK's): a part by pairs is told to C without its
    blocks, so C deals no block and S1 and S2 convert none."""
    return [p if not p.blocks or by_blocks(p, rule.active and p.clk == RECORD)
            else replace(p, blocks=()) for p in described]  # fmt: skip


def by_standing(part: Proposed, partner_records: int, ruled: bool) -> bool:
    """Whether a query's part goes against its partner converted once: unblocked (compared
    whole), the record CLK's under the gap rule (`ruled`), a partner of at least
    STANDING_RECORDS records; every such part where `PATH` is "standing", none where it
    forces pairs or blocks."""
    if not ruled or not part.blocks or PATH in ("pairs", "blocks"):
        return False
    return PATH == "standing" or partner_records >= STANDING_RECORDS


def fallback_standing(part: Proposed, records: Sequence[int], rule: Rule) -> bool:
    """Whether a query's fallback part (the fallback CLK's, under the gap rule: a partner
    converted only so) goes against its partner converted once: as `by_standing` would take
    the record CLK's part, and its pairs at least FALLBACK_SHARE of every query record x
    every partner record (the products the servers pay for it)."""
    if not rule.active or part.clk != FALLBACK:
        return False
    whole = records[part.member_a] * records[part.member_b]
    return by_standing(part, records[part.member_b], True) and part.pairs >= FALLBACK_SHARE * whole


def for_query(described: Sequence[Proposed], records: Sequence[int], rule: Rule = NO_RULE,
              standing: bool = True) -> list[Proposed]:  # fmt: skip
    """A query's parts against partners converted once (a watch's too, once its partner's
    upload is converted ahead: realtime/twowait.py): those `by_standing` (or a fallback part
    `fallback_standing`) that `by_shape` takes by pairs, of at most STANDING_MOST_PAIRS
    pairs, marked so (member b of each the partner, `records[member]` each member's
    records), the others `by_shape`; not `standing`, every part `by_shape`."""
    out = list(by_shape(described, rule))
    for k, p in enumerate(described):
        ruled = rule.active and p.clk == RECORD
        if standing and not out[k].blocks and p.pairs <= STANDING_MOST_PAIRS and (
            by_standing(p, records[p.member_b], ruled) or fallback_standing(p, records, rule)
        ):  # fmt: skip
            out[k] = replace(p, standing=True)
    return out


__all__ = [
    "BLOCKS_MIN_PAIRS",
    "BLOCKS_PAIRS_A_ROW",
    "FALLBACK_SHARE",
    "PATH",
    "RULED_PAIRS_A_ROW",
    "STANDING_MOST_PAIRS",
    "STANDING_RECORDS",
    "by_blocks",
    "by_shape",
    "by_standing",
    "fallback_standing",
    "for_query",
]
