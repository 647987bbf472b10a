"""S1's and S2's side of a query compared whole against a standing partner over gRPC
(core/standing.py, core/standingquery.py, core/standingsteps.py): the partners they hold
converted (`Standings`, rpc/twoserver_standcache.py, a cache in memory), and the
`PrepareBlocks` / `BlockExchange` of a `BlockDeal` naming `standing` (rpc/twoserver_blockcalls.py
hands them here): a query's standing deal, a conversion's piece 0 (with a query, or without one:
rpc/twoserver_standstart.py), its later pieces (`_continued`), a conversion given up
(`_given_up`).

The standing path's rules, C's and S1's and S2's, are stated here once (the path's other
modules point here; the wire, for users: docs/protocol.md "A query against a standing partner
over gRPC" and "A conversion started ahead of its queries"):

- Which parts: a query's part compared whole against a partner goes standing where
  core/partpath.py `by_standing` takes it (two CLKs under the rule, a partner of at least
  `STANDING_RECORDS` records; S1 alone knows whether a part is compared whole), its fallback
  part where `fallback_standing` does (fallstand); any other goes by pairs.
- A conversion: C converts a partner's upload once, `standing.CHUNK` records a deal (pieces 0
  to `standing_pieces` - 1), under C's id of the conversion (`standing`). C keeps its mask
  seeds (rpc/twoserver_conversions.py `Conversions`: in memory, by the partner's upload at S1
  and S2, its records, CLK widths, the run's cut-offs and rule) for the matcher's life; the
  matcher's stop stops its conversions, and a matcher started again holds none.
- What S1 and S2 keep: core/standing.py's `Partner` (~12 kB a record of two 1,024-bit CLKs;
  4 kB without [M_B]) in memory under the conversion's id, for that version of the upload only
  (the upload held when piece 0 came: one replaced or forgotten drops it), the least recently
  used dropped past their bound (`--standing-bytes`, `MOST_BYTES` by default), nothing kept
  across a restart. C
  decides whether they keep a partner with [M_B], for all its partners together
  (`Conversions.without_mask`), and says so in piece 0 (standq); unsaid, the server's own
  rule: without it where the partner fits its bound only so (standmask,
  rpc/twoserver_standcache.py `keeps_mask`).
- A query against a conversion deals its own records alone; S1 and S2 hold its H shares as the
  part's one block (every query record x every partner record), and the part's margin batches
  run on them as on any part's blocks.
- C's admission: C converts only what S1's and S2's room holds (`Conversions.admit`, by the
  least bound they said, asked before C's first deal: capsfirst, `Conversions.learn`), beside
  the conversions used within `RECENT_SECONDS`, and one conversion at a time (a query's or
  one ahead of the queries; standfix); a part not admitted goes by pairs, so no query pushes
  out a conversion the next needs. A partner whose conversion ended whole after C looked and
  before it admitted another is not converted again (`HELD`: it is used; flaky).
- A query never waits for a conversion (standbg): one that finds none deals piece 0 (S1
  checks it against the query's proposal) and goes by pairs; C deals the later pieces on a
  background thread, pausing while a query is being answered (`PAUSE_SECONDS` at most), and
  the next query goes standing (rpc/twoserver_standdeal.py `INLINE_RECORDS`, a knob, converts
  a partner that small within its query; none by default). A query that comes while another
  conversion is being made goes by pairs, neither waiting on nor starting one.
- Ahead of the queries (standahead): C starts a partner's conversion as its upload completes
  at the matcher, and at the matcher's start for the uploads S1 and S2 hold (their seeds died
  with the earlier matcher; realtime/twoahead.py), where a query's part against it would go
  standing (above) and another member may query it (not in a project of one member): queued
  and converted one at a time within the same admission, its piece 0 naming the partner alone,
  its later pieces in the background as a query's conversion's; so the queries after it go
  standing. C deals none for a partner S1 would refuse under its caps, or one over their
  room even without [M_B] (`Conversions.unfit`): logged once, at info. One S1 refuses or that
  fails is logged and left to its first query: the query path stays the fallback, as for
  every partner where the operator's `serve --no-two-server-convert-ahead` turns this off
  (aheadflag: nothing converted ahead, each partner's first query starts its conversion and
  goes by pairs).
- A watch's comparison of an upload converted ahead (watchstand): unlike a query, it waits
  for that conversion (off the comparing thread: realtime/twowatch.py `_deferred`, told by
  rpc/twoserver_standahead.py `Ahead.when_made`) and then deals as a query's (S1 cannot tell
  a watch's records from a query's and checks it as one); by pairs where the conversion
  failed or was not started, or where the partner asks for its next upload's ticket first.
- The checks: S2 checks a deal's shape; S1 checks it too and S2 follows S1's check (S1 opens
  the exchange only past it, naming the deal's digest). S1 checks every query's standing deal,
  and each conversion's piece 0 that comes with a query, against its proposal: an unblocked
  part on clk 0 under the rule, or its fallback part on clk 1 (fallstand), with the run's
  cut-offs.
- A piece 0 without a query names the partner alone, as a later piece does (`member_b`,
  `records_b`, the cut-offs and rule, `standing`, `standing_piece` 0, `standing_pieces`; no
  `member_a`, `records_a`, `part`, `clk` or rows), and S1 checks it against what S1 itself
  knows (rpc/twoserver_standstart.py): the partner's upload held, of these records (this
  version of it), no query's or watch's records; the cut-offs a run's (`run_cutoffs`: the
  threshold, none or the default buckets) at S1's `--threshold` where set; the rule the
  upload's (a standing part is the record CLK's under the rule); a one-record query against it
  compared whole under S1's caps (core/exhaustive.py `run_cap`: a partner over
  `--query-whole-pairs` is never compared whole, so never converted); and at most one such
  start of this version of the upload in `AHEAD_SECONDS` (rpc/twoserver_standcache.py
  `Standings.ahead`), so that a C cannot make S1 and S2 convert an upload over and over with
  no query counted. Anything else is refused PERMISSION_DENIED, audited `twoserver.refused`.
- A conversion's later pieces name the partner alone and are taken by the conversion's id
  alone, without a proposal (`_continued`).
- A deal that fails a check is refused by both servers, naming the dealer, and audited
  (`twoserver.deal`), before any output share.
- A query naming a conversion a server does not hold (restarted, dropped, another version of
  the upload) is refused FAILED_PRECONDITION with `STANDING_NEEDED` and the conversion's id:
  C drops its own, the part goes by pairs, and C converts the partner again.
- A piece that fails at a server (refused, its setup wrong, its exchange cut) drops the
  half-made conversion there; a conversion that fails at C, or that C stops (the matcher
  stopping: `Conversions.close`), C gives up at S1 and S2 by `standing_drop`
  (rpc/twoserver_standgive.py; `_given_up` here), off the query's thread, so that neither
  keeps its half-made arrays (standfix2, standq).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TypeVar

from blindmatch.matcher import errors
from blindmatch.matcher.core import denseblock, linkbit, standing, standingsteps, triplecheck
from blindmatch.matcher.core.margincircuit import Plan
from blindmatch.matcher.core.standingsteps import Steps
from blindmatch.matcher.rpc import twoserver_standcache as standcache
from blindmatch.matcher.rpc import twoserver_standstart as standstart
from blindmatch.matcher.rpc.twoserver_blocks import (
    MAX_PAIRS,
    Held,
    Stream,
    cut,
    joined,
    later_setup,
    proposed_part,
    s1_exchange,
)
from blindmatch.matcher.rpc.twoserver_margin import margin_plan
from blindmatch.matcher.rpc.twoserver_peers import ShareExchange
from blindmatch.matcher.rpc.twoserver_role import NAMES, _Role
from blindmatch.matcher.rpc.twoserver_standcache import Entry
from blindmatch.matcher.rpc.twoserver_uploads import Held as Upload
from blindmatch.matcher.rpc.twoserver_uploads import part_rule
from blindmatch.protos import blindmatch_pb2 as pb

log = logging.getLogger("blindmatch.matcher.twoserver")
T = TypeVar("T")
# A conversion's freed temporaries are given back (`standcache.trim`) after every TRIM_EVERY
# pieces and after its last (1 was after each, standmask): between trims glibc reuses one
# piece's freed heap for the next instead of the kernel mapping and zeroing it afresh (half the
# conversion's CPU was system time; 16 cut it ~28%, the RSS after it about the same). The
# "wrong link" seen with 16 was a link in the clear of that run's members (standfault:
# docs/performance.md "The 128,000-record query's extra link").
TRIM_EVERY = 16


def _checked(role: _Role, m: pb.BlockDeal) -> tuple[list[Upload], Plan, str]:
    """A standing deal's uploads (member_a's records, the partner member_b), its margin plan
    and, at S1, the run it belongs to: S1 checks it against its proposal (an unblocked part
    of the two uploads on its clk, 0 or 1, the run's cut-offs and rule), refusing it
    PERMISSION_DENIED
    (audited) otherwise. Both check its shape."""
    if not m.standing or len(m.standing) > 64 or not m.blocks or len(m.blocks) > 64:
        raise errors.InvalidArgument("standing/blocks: ids of 1 to 64 characters")
    if m.HasField("standing_without_mask") and (m.standing_piece or not m.standing_pieces):
        raise errors.InvalidArgument(
            "standing_without_mask: a conversion's piece 0 only (how the partner is kept)"
        )
    if m.standing_pieces and m.standing_piece:
        return _continued(role, m)
    if m.standing_pieces and not m.member_a:  # piece 0 ahead of any query (standahead)
        return (*standstart.ahead(role, m), "")
    held = role.pair_held(m)
    if m.standing_pieces:
        if m.standing_pieces != len(standing.chunks(held[1].records)) or (
            m.standing_piece >= m.standing_pieces or m.rows_a or m.rows_b
        ):  # fmt: skip
            raise errors.InvalidArgument(
                f"standing_piece/standing_pieces: {m.standing_piece} of {m.standing_pieces}; a "
                f"partner of {held[1].records} records converts in "
                f"{len(standing.chunks(held[1].records))} pieces, without rows_a/rows_b"
            )
        role.standing.keeps(m, held[1].records, tuple(held[1].bits))  # or refused: no room
    elif list(m.rows_a) != [held[0].records] or list(m.rows_b) != [held[1].records]:
        raise errors.InvalidArgument(
            "rows_a/rows_b: a standing query is one block, every record of both uploads"
        )
    elif held[0].records * held[1].records > MAX_PAIRS:
        raise errors.InvalidArgument(
            f"rows_a/rows_b: {held[0].records} x {held[1].records} pairs; at most {MAX_PAIRS:,}"
        )
    else:  # a query: the conversion it names held here, of this version of the upload
        role.standing.partner(m, held[1])
    if m.clk not in (0, 1):
        raise errors.InvalidArgument(
            f"clk: {m.clk}; a standing deal's part is on clk 0 (under the rule) or 1 (the "
            "fallback CLK's part)"
        )
    rule = part_rule(m, "standing")  # (the conversion's plan: the rule's, on both CLKs)
    p = margin_plan(held[0].bits, 0, m.cutoffs, rule, "standing")
    if role.role != "s1":
        return held, p, ""
    with role.lock:
        proposal, _ = proposed_part(role, m, rule, "standing", m.clk)
        return held, p, proposal.id


def _continued(role: _Role, m: pb.BlockDeal) -> tuple[list[Upload], Plan, str]:
    """A conversion's later piece (C's background conversion, standbg): accepted by the
    conversion's id alone, not by a query's proposal (the query that started it with piece 0,
    checked against S1's proposal, may be answered and its records gone). It names the
    partner only (no member_a, part or rows) at the records of the upload held; the
    conversion must be held here, started by piece 0 of this version of that upload under
    the same cut-offs and rule, of as many pieces as its records make, and this piece the
    next (`piece_steps`): so C makes S1 and S2 convert no other upload and no more than
    the pieces one checked piece 0 started, each once. (The partner upload is returned
    twice: a piece reads member_b's alone.)"""
    b = standstart.partner_alone(role, m, "a conversion's later piece")
    p = margin_plan(b.bits, 0, m.cutoffs, part_rule(m, "standing"), "standing")
    entry = role.standing.piece(m, b, p, b.bits, 0 if role.role == "s1" else 1)  # or refused
    return [b, b], p, entry.run if role.role == "s1" else ""


def _read(m: pb.BlockDeal, bits: Sequence[int]) -> tuple[int, ...]:
    """The CLKs a query's standing deal converts and multiplies: both (the record part's,
    for the rule's margin), or the fallback CLK's alone (a fallback part's, clk 1)."""
    return (bits[m.clk],) if m.clk else tuple(bits)


def _steps(role: _Role, m: pb.BlockDeal, held: list[Upload], p: Plan, setup: bytes,
           out: list[denseblock.Blocks]) -> tuple[Steps, Entry | None]:  # fmt: skip
    """This server's steps on deal `m`: a conversion piece's (and its entry) or a query's
    (its blocks into `out`); `InvalidArgument` for a setup that does not fit."""
    who = 0 if role.role == "s1" else 1
    b = held[1]
    try:
        if m.standing_pieces:
            entry = role.standing.piece(m, b, p, b.bits, who)
            start, stop = standing.chunks(b.records)[m.standing_piece]
            sizes = standingsteps.piece_setup(stop - start, b.bits, p, who)
            standingsteps.split(setup, sizes, "setup", True)
            shares = [s[start:stop] for s in b.shares]
            pops = [q[start:stop] for q in b.popshares]
            return standingsteps.piece_steps(entry.conv, m.standing_piece, setup, shares,
                                             pops, start), entry  # fmt: skip
        partner = role.standing.partner(m, b)
        a = held[0]
        sizes = standingsteps.query_setup(a.records, b.records, _read(m, b.bits), p, who)
        standingsteps.split(setup, sizes, "setup", True)
        return standingsteps.query_steps(partner, p, setup, a.shares, a.popshares, out,
                                         m.clk), None  # fmt: skip
    except ValueError as exc:
        raise errors.InvalidArgument(f"setup: {exc}") from None


def _done(role: _Role, m: pb.BlockDeal, entry: Entry | None, held: list[Upload], run: str,
          actor: str) -> None:  # fmt: skip
    """After a piece: the heap trimmed every TRIM_EVERY pieces and after the last
    (`standcache.trim`), the cache bounded (room made for a conversion as it starts); the
    partner whole once its last piece is, logged with its records and time."""
    if entry is None:
        return
    if entry.conv.done % max(TRIM_EVERY, 1) == 0 or entry.conv.done >= entry.conv.pieces:
        standcache.trim()  # the pieces' freed temporaries given back (glibc), not kept in the RSS
    if entry.conv.done < entry.conv.pieces:
        role.standing.bound()
        return
    partner = entry.conv.finish(held[1].popshares)
    seconds = round(time.monotonic() - entry.started, 3)
    role.log(actor, "twoserver.standing", members=[entry.asker, m.member_b], run=run,
             standing=m.standing, records=partner.records, seconds=seconds,
             bytes=partner.bytes_kept())  # fmt: skip
    role.standing.conversions += 1  # counted once audited: what is counted is in the log
    log.info("%s converted %s's upload as a standing partner (%d records) in %.1f s, keeping "
             "%.0f MB (conversion %s)", NAMES[role.role], m.member_b, partner.records, seconds,
             partner.bytes_kept() / 1e6, m.standing)  # fmt: skip
    role.standing.bound()


def _refused(role: _Role, m: pb.BlockDeal, run: str, exc: triplecheck.DealRefused,
             ) -> errors.PermissionDenied:  # fmt: skip
    what = f"piece {m.standing_piece} of" if m.standing_pieces else "a query against"
    role.log("combiner", "twoserver.deal", members=[m.member_a, m.member_b], blocks=m.blocks,
             run=run, part=m.part, standing=m.standing, reason=str(exc))  # fmt: skip
    return triplecheck.refused(f"{m.blocks} ({what} standing partner {m.standing})", exc)


def _given_up(role: _Role, m: pb.BlockDeal) -> None:
    """C's `standing_drop`: conversion `m.standing` of `member_b`'s upload dropped here (half-
    made or whole; none held: nothing to drop), audited `twoserver.standing_dropped`."""
    bare = pb.BlockDeal(blocks=m.blocks, member_b=m.member_b, standing=m.standing,
                        standing_drop=True)  # fmt: skip
    if m != bare or not m.member_b or not m.standing or len(m.standing) > 64:
        raise errors.InvalidArgument(
            "standing_drop: names the conversion (standing, 1 to 64 characters) and its partner "
            "(member_b) alone"
        )
    role.standing.drop(m.standing, m.member_b, "the combiner gave it up", half_made=False)


def _failed(role: _Role, m: pb.BlockDeal, exc: BaseException) -> None:
    """A conversion's piece failed here: the half-made conversion dropped (no later piece
    can be added to it; its bytes no longer count against the bound)."""
    if m.standing_pieces:
        why = f"piece {m.standing_piece} of {m.standing_pieces} failed: {exc}"
        role.standing.drop(m.standing, m.member_b, why[:500])


def _dropping(role: _Role, m: pb.BlockDeal, call: Callable[[], T]) -> T:
    """`call`, a standing deal's (`_failed` where it fails)."""
    try:
        return call()
    except BaseException as exc:
        _failed(role, m, exc)
        raise


def s1_prepare(role: _Role, s2: ShareExchange, m: pb.BlockDeal) -> pb.BlocksReply:
    """S1's `PrepareBlocks` of a standing deal (or C's `standing_drop`); a piece that fails
    drops its conversion here (`_dropping`)."""
    if m.standing_drop:
        _given_up(role, m)
        return pb.BlocksReply(standing_bytes=role.standing.most_bytes())
    return _dropping(role, m, lambda: _s1_prepare(role, s2, m))


def _s1_prepare(role: _Role, s2: ShareExchange, m: pb.BlockDeal) -> pb.BlocksReply:
    """S1's `PrepareBlocks` of a standing deal: checked against its proposal, then the steps
    with S2 over BlockExchange; a query's blocks held for the part's batches."""
    held, p, run = _checked(role, m)
    kept = role.dense.put(m)
    out: list[denseblock.Blocks] = []
    try:
        steps, entry = _steps(role, m, held, p, m.setup, out)
        if entry is not None and m.standing_piece == 0:
            entry.run = run  # the run its later pieces name (`_continued`)
        first = pb.BlockMessage(blocks=m.blocks, checked=kept.checked, run=run)
        try:
            sent, received = _swaps(s2, first, steps)
        except triplecheck.DealRefused as exc:
            raise _refused(role, m, run, exc) from None
    except BaseException:
        role.dense.drop(m.blocks)
        raise
    if out:
        kept.side, kept.run = out[0], run
    else:
        role.dense.drop(m.blocks)
        _done(role, m, entry, held, run, "combiner")
    return pb.BlocksReply(round_bytes_sent=sent, round_bytes_received=received,
                          largest_batch=linkbit.BLOCK_BATCH,
                          standing_bytes=role.standing.most_bytes())  # fmt: skip


def _swaps(s2: ShareExchange, first: pb.BlockMessage, steps: Steps) -> tuple[int, int]:
    """S1's side of the exchange: its first message, then each step's message each way
    (S1's sent, then S2's read); bytes sent and received."""

    def body(stream: Stream) -> None:
        mine = next(steps)
        while True:
            stream.send(mine)
            try:
                mine = steps.send(stream.read("a standing step"))
            except StopIteration:
                return

    return s1_exchange(s2, first, body, "standing exchange")


def s2_prepare(role: _Role, first: pb.BlockDeal, request: Iterator[pb.BlockDeal],
               ) -> pb.PrepareReply:  # fmt: skip
    """S2's `PrepareBlocks` of a standing deal (or C's `standing_drop`, alone on the
    stream); a piece that fails drops its conversion here (`_dropping`)."""
    if first.standing_drop:
        if next(request, None) is not None:
            raise errors.InvalidArgument("standing_drop: one message, no setup after it")
        _given_up(role, first)
        return pb.PrepareReply(standing_bytes=role.standing.most_bytes())
    return _dropping(role, first, lambda: _s2_prepare(role, first, request))


def _s2_prepare(role: _Role, first: pb.BlockDeal, request: Iterator[pb.BlockDeal],
                ) -> pb.PrepareReply:  # fmt: skip
    """S2's `PrepareBlocks` of a standing deal: checked (a query's conversion held here, or
    refused `STANDING_NEEDED`), its setup in parts held until S1 opens the exchange."""
    held, p, _ = _checked(role, first)
    setup = later_setup(request)
    b, who = held[1], 1
    if first.standing_pieces:
        start, stop = standing.chunks(b.records)[first.standing_piece]
        sizes = standingsteps.piece_setup(stop - start, b.bits, p, who)
    else:
        sizes = standingsteps.query_setup(held[0].records, b.records, _read(first, b.bits), p,
                                          who)  # fmt: skip
    try:
        standingsteps.split(setup, sizes, "setup", True)
    except ValueError as exc:
        raise errors.InvalidArgument(f"setup: {exc}") from None
    role.dense.put(first, setup)
    return pb.PrepareReply(largest_batch=linkbit.BLOCK_BATCH,
                           standing_bytes=role.standing.most_bytes())  # fmt: skip


def s2_exchange(role: _Role, kept: Held, first: pb.BlockMessage,
                request: Iterator[pb.BlockMessage]) -> Iterator[pb.BlockMessage]:  # fmt: skip
    """S2's side of the exchange S1 opened with `first` on the standing deal `kept`."""
    try:
        entry, held = yield from _s2_steps(role, kept, first, request)
    except BaseException as exc:
        role.dense.drop(first.blocks)
        _failed(role, kept.deal, exc)
        raise
    if kept.side is None:  # a conversion's piece
        role.dense.drop(first.blocks)
        _done(role, kept.deal, entry, held, first.run, "s1")
    yield pb.BlockMessage(last=True)  # held: S1 may send the part's batches


def _s2_steps(role: _Role, kept: Held, first: pb.BlockMessage,
              request: Iterator[pb.BlockMessage],
              ) -> Generator[pb.BlockMessage, None, tuple[Entry | None, list[Upload]]]:  # fmt: skip
    """S2's steps (a query's blocks held in `kept`); the conversion's entry, for a piece,
    and the deal's uploads."""
    m = kept.deal
    if first.checked != kept.checked:
        raise errors.PermissionDenied(
            f"checked: the standing deal {first.blocks!r} as S1 checked it is not the one the "
            "combiner prepared on S2 (another part, members, piece or cut-offs)"
        )
    held, p, _ = _checked(role, m)
    out: list[denseblock.Blocks] = []
    steps, entry = _steps(role, m, held, p, kept.setup, out)
    kept.setup = b""

    def nxt() -> pb.BlockMessage | None:
        return next(request, None)

    mine = next(steps)
    while True:
        for data, last in cut(mine):
            yield pb.BlockMessage(data=data, last=last)
        try:
            mine = steps.send(joined(nxt, "a standing step"))
        except StopIteration:
            break
        except ValueError as exc:
            raise errors.InvalidArgument(f"data: {exc}") from None
        except triplecheck.DealRefused as exc:
            raise _refused(role, m, first.run, exc) from None
    if out:
        kept.side, kept.run = out[0], first.run
    return entry, held


__all__ = ["s1_prepare", "s2_exchange", "s2_prepare"]
