"""An unblocked part's blocks by arithmetic sharing over gRPC (docs/privacy-design.md "A whole
block by arithmetic sharing", docs/protocol.md): what S1 and S2 hold of them and the checks
of C's `BlockDeal` they share; the parts messages are cut into; C's side (`prepare_blocks`).

C tells S2 its deal first (S2's `PrepareBlocks`, a stream: S2's setups are ~100 MB a CLK at
6,000 x 1,600 rows), then S1 (`PrepareBlocks`); S1 checks the part against its proposal and
opens `BlockExchange` with S2 (rpc/twoserver_blockcalls.py): the rows of each block, the
nonces, then each block's two messages each way (core/denseblock.py `exchange`) in parts.
Both then hold every pair's H shares (`HeldBlocks`, by C's id) for the part's batches
(`CircuitBatch.blocks`), until C says the part's batches are done (`Acknowledge`'s `blocks`,
sent once a part's last batch is answered: `release_blocks`), the same part's blocks are dealt
again, the uploads go, STALE_SECONDS pass unused (a combiner gone mid-part), or newer parts'
need the room (MAX_BLOCKS, MAX_PAIRS).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import densearith, denseblock, linkbit, ring64, triplecheck
from blindmatch.matcher.core.proposal import Refused, run_cutoffs
from blindmatch.matcher.domain import Rule, counted
from blindmatch.matcher.rpc.twoserver_margin import Dense
from blindmatch.matcher.rpc.twoserver_peers import (
    CALL_SECONDS,
    ShareExchange,
    call_party,
    peer_error,
    wire_rule,
)
from blindmatch.protos import blindmatch_pb2 as pb

if TYPE_CHECKING:
    from blindmatch.matcher.core.proposal import Proposal
    from blindmatch.matcher.rpc.twoserver_client import RemoteServers
    from blindmatch.matcher.rpc.twoserver_role import _Role

log = logging.getLogger("blindmatch.matcher.twoserver")

PART_BYTES = 1 << 22  # a BlockDeal's or BlockMessage's `setup`/`data` part (4 MiB)
MAX_BLOCKS = 64  # parts' blocks S1 or S2 holds at once (prepared or exchanged)
MAX_PAIRS = 1 << 24  # and their pairs (H shares: 4 bytes a pair with the rule's two CLKs)
STALE_SECONDS = 1200.0  # blocks unused this long are dropped (twice a call's limit)


def digest(m: pb.BlockDeal) -> bytes:
    """SHA-256 of C's deal less its setup: equal on S1 and S2 exactly when C told both the
    same part, members, sizes, cut-offs and rule."""
    bare = pb.BlockDeal()
    bare.CopyFrom(m)
    bare.setup = b""
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).digest()


def widths(bits: Sequence[int], clk: int, rule: Rule) -> tuple[int, ...]:
    """The CLKs a part's blocks read: both with the gap rule on clk 0, else `clk`'s."""
    return (bits[0], bits[1]) if rule.active and clk == 0 else (bits[clk],)


def shapes(m: pb.BlockDeal, bits: Sequence[int], rule: Rule) -> list[densearith.Shape]:
    """The deal's blocks, checked: sizes of as many rows of A as of B, each within the
    records, the run's cut-offs."""
    if not m.blocks or len(m.blocks) > 64:
        raise errors.InvalidArgument("blocks: an id of 1 to 64 characters")
    if not m.rows_a or len(m.rows_a) != len(m.rows_b):
        raise errors.InvalidArgument(
            f"rows_a/rows_b: {len(m.rows_a)} and {len(m.rows_b)} block sizes; as many, at least one"
        )
    for name, sizes, records in (("rows_a", m.rows_a, m.records_a),
                                 ("rows_b", m.rows_b, m.records_b)):  # fmt: skip
        if min(sizes) < 1 or max(sizes) > records:
            raise errors.InvalidArgument(
                f"{name}: blocks of {min(sizes)} to {max(sizes)} rows of {records} records; "
                "each at least 1"
            )
    try:
        run_cutoffs(m.cutoffs[0] if m.cutoffs else 0.0, m.cutoffs[1:])
    except Refused as exc:
        raise errors.InvalidArgument(f"cutoffs: {exc}") from None
    if m.clk >= len(bits):
        raise errors.InvalidArgument(f"clk: {m.clk}, but the uploads have {len(bits)}")
    w = widths(bits, m.clk, rule)
    return [densearith.Shape(a, b, w) for a, b in zip(m.rows_a, m.rows_b, strict=True)]


def setups(m: pb.BlockDeal, blocks: Sequence[densearith.Shape], role: int,
           setup: bytes, pops: Sequence[int] = ()) -> list[bytes]:  # fmt: skip
    """C's setup for server `role` cut into the blocks' (`InvalidArgument` where it does not
    fit them); with `margin`, each block's followed by its popcounts' (`pops` bytes each,
    rpc/twoserver_margin.py `pops_bytes`)."""
    sizes = [densearith.setup_bytes(s, role) + (pops[k] if pops else 0)
             for k, s in enumerate(blocks)]  # fmt: skip
    if len(setup) != sum(sizes):
        raise errors.InvalidArgument(
            f"setup: {len(setup):,} bytes for {counted(len(blocks), 'block')} of {m.blocks!r}; "
            f"their deal to {('S1', 'S2')[role]} is {sum(sizes):,}"
        )
    out, at = [], 0
    for n in sizes:
        out.append(setup[at : at + n])
        at += n
    return out


def proposed_part(role: _Role, m: pb.BlockDeal, rule: Rule, what: str, clk: int,
                  more: Callable[[tuple[tuple[int, int], ...]], None] | None = None,
                  ) -> tuple[Proposal, object]:  # fmt: skip
    """S1 (`role.lock` held): part `m.part` of its proposal over the deal's members, checked
    to be an unblocked part of them on `clk` at the run's cut-offs and rule, and by `more`
    (given its blocks' sizes; raising `Refused`): `PERMISSION_DENIED`, audited
    `twoserver.refused`, otherwise. The proposal and the part."""
    proposal = role.proposals.of(m.member_a, m.member_b)
    if proposal is None:
        raise errors.FailedPrecondition(
            f"{what}: S1 has proposed no run over these uploads (Propose first)"
        )
    if m.part >= len(proposal.parts):
        raise errors.InvalidArgument(f"part: {m.part} of {len(proposal.parts)}")
    part = proposal.parts[m.part]
    names = (proposal.members[part.member_a], proposal.members[part.member_b])
    sizes = denseblock.part_blocks(part)
    try:
        proposal.check_rule(rule)
        if tuple(m.cutoffs) != proposal.cutoffs:
            raise Refused(f"cutoffs: {list(m.cutoffs)}, not the run's {list(proposal.cutoffs)}")
        if names != (m.member_a, m.member_b) or part.clk != clk or not sizes:
            raise Refused(
                f"part: {m.part} is {names[0]!r} x {names[1]!r} on clk {part.clk}"
                f"{'' if sizes else ', blocked'}, not an unblocked part of {m.member_a!r} "
                f"x {m.member_b!r} on clk {clk}"
            )
        if more is not None:
            more(sizes)
    except Refused as exc:
        role.log("combiner", "twoserver.refused", members=[m.member_a, m.member_b],
                 reason=str(exc))  # fmt: skip
        raise errors.PermissionDenied(str(exc)) from None
    return proposal, part


def cut(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """`data` in PART_BYTES parts, the last marked."""
    ends = range(0, max(len(data), 1), PART_BYTES)
    for at in ends:
        yield data[at : at + PART_BYTES], at + PART_BYTES >= len(data)


def joined(messages: Callable[[], pb.BlockMessage | None], what: str) -> bytes:
    """A message of parts back whole (`InvalidArgument` where the stream ends first)."""
    parts = []
    while True:
        m = messages()
        if m is None:
            raise errors.InvalidArgument(f"data: the block exchange ended within {what}")
        parts.append(m.data)
        if m.last:
            return b"".join(parts)


class Stream:
    """S1's side of a BlockExchange as `s1_exchange`'s body sees it: `send` a message (in
    parts), `nxt` S2's next message, `read` S2's next message whole."""

    def __init__(self, outbox: queue.Queue[pb.BlockMessage | None], replies: Iterator[Any],
                 counts: list[int]) -> None:  # fmt: skip
        self._outbox, self._replies, self._counts = outbox, replies, counts

    def send(self, data: bytes) -> None:
        for part, last in cut(data):
            self._counts[0] += len(part) + 8
            self._outbox.put(pb.BlockMessage(data=part, last=last))

    def nxt(self) -> pb.BlockMessage | None:
        m = next(self._replies, None)
        self._counts[1] += 0 if m is None else m.ByteSize()
        return m

    def read(self, what: str) -> bytes:
        return joined(self.nxt, what)


def s1_exchange(s2: ShareExchange, first: pb.BlockMessage, body: Callable[[Stream], None],
                what: str) -> tuple[int, int]:  # fmt: skip
    """S1's side of BlockExchange: `first`, then `body`'s messages each way, then S2's last
    empty message (its checks passed, its side held); bytes sent and received. Where `body`
    finds C's deal refused (`DealRefused`), S1 ends its side and lets S2 find it for itself
    (its refusal, its audit entry); S2's refusal or silence, as `peer_error` says."""
    outbox: queue.Queue[pb.BlockMessage | None] = queue.Queue()
    counts = [first.ByteSize(), 0]

    def requests() -> Iterator[pb.BlockMessage]:
        while (m := outbox.get()) is not None:
            yield m

    outbox.put(first)
    try:
        replies = s2._stub.BlockExchange(requests(), metadata=s2._metadata,
                                         timeout=CALL_SECONDS)  # fmt: skip
        stream = Stream(outbox, replies, counts)
        try:
            try:
                body(stream)
            except triplecheck.DealRefused:
                outbox.put(None)
                with contextlib.suppress(grpc.RpcError):
                    stream.nxt()
                raise
            done = stream.nxt()
            if done is None or not done.last or done.data:
                raise errors.DataLoss(f"{s2.name}: the {what} ended unconfirmed")
        except (ValueError, errors.InvalidArgument) as exc:
            raise errors.DataLoss(f"{s2.name}: {exc}") from None
    except grpc.RpcError as exc:
        raise peer_error(s2.name, exc) from None
    finally:
        outbox.put(None)
    return counts[0], counts[1]


def later_setup(request: Iterator[pb.BlockDeal]) -> bytes:
    """S2's `PrepareBlocks` after its first message: the setup's parts joined, each message's
    only field (`InvalidArgument` otherwise)."""
    setup = bytearray()
    for n, m in enumerate(request, start=1):
        bare = pb.BlockDeal()
        bare.CopyFrom(m)
        bare.setup = b""
        if bare.ByteSize():
            raise errors.InvalidArgument(f"setup (message {n}): the later messages' only field")
        setup += m.setup
    return bytes(setup)


def _pairs(m: pb.BlockDeal) -> int:
    return sum(a * b for a, b in zip(m.rows_a, m.rows_b, strict=True))


def kept_parts(dense: Dense) -> tuple[bytes, ...]:
    """A batch's H and popcount shares (`_Role.dense_inputs`) as kept with its inputs (a
    batch cut during its rounds runs again on them, its part's blocks held or not): two
    arrays of 32-bit words, or a margin batch's three of 64-bit words."""
    if dense is None:
        return ()
    word = "<u8" if len(dense) == 3 else "<u4"
    return tuple(np.ascontiguousarray(a, dtype=word).tobytes() for a in dense)


def from_kept(parts: Sequence[bytes], pairs: int) -> Dense:
    """`kept_parts` back (None: a batch by pairs)."""
    if not parts:
        return None
    word = 8 if len(parts) == 3 else 4
    if len(parts) not in (2, 3) or any(len(p) % (word * pairs) for p in parts):
        raise errors.DataLoss(f"a batch's kept H shares do not fit its {pairs} pairs")
    kind = (np.uint64, "<u8") if word == 8 else (np.uint32, "<u4")
    return tuple(np.frombuffer(p, kind[1]).astype(kind[0]).reshape(-1, pairs) for p in parts)


@dataclass
class Held:
    """A part's blocks a server holds: C's deal (its `digest`, the members' names, the part),
    then its side of them once exchanged (`side`; None: prepared only, S2's `setup`)."""

    deal: pb.BlockDeal
    checked: bytes
    since: float
    setup: bytes = b""
    run: str = ""
    side: denseblock.Blocks | None = None


class HeldBlocks:
    """S1's or S2's parts' blocks, by C's id (`put` bounds them; each dropped STALE_SECONDS
    after its last use, or with its members' uploads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()

    def _expire(self) -> None:
        cutoff = self.clock() - STALE_SECONDS
        for k in [k for k, h in self._held.items() if h.since < cutoff]:
            del self._held[k]

    def put(self, m: pb.BlockDeal, setup: bytes = b"") -> Held:
        """Hold C's deal `m` (S2: its `setup`), in place of any of the same part over the same
        members; the least recently used dropped while MAX_BLOCKS parts or over MAX_PAIRS
        pairs are held."""
        with self._lock:
            self._expire()
            if m.blocks in self._held:
                raise errors.InvalidArgument(f"blocks: {m.blocks!r} are prepared already")
            part = (m.member_a, m.member_b, m.part)
            for k in [k for k, h in self._held.items()
                      if (h.deal.member_a, h.deal.member_b, h.deal.part) == part]:  # fmt: skip
                del self._held[k]
            pairs = _pairs(m)
            while self._held and (len(self._held) >= MAX_BLOCKS or pairs + sum(
                    _pairs(h.deal) for h in self._held.values()) > MAX_PAIRS):  # fmt: skip
                del self._held[min(self._held, key=lambda k: self._held[k].since)]
            bare = pb.BlockDeal()
            bare.CopyFrom(m)
            bare.setup = b""
            held = Held(bare, digest(m), self.clock(), setup)
            self._held[m.blocks] = held
            return held

    def take(self, blocks: str) -> Held:
        """S2: the deal C prepared for `blocks`, its setup handed over (held on, to keep the
        side exchanged)."""
        with self._lock:
            held = self._held.get(blocks)
            if held is None or held.side is not None or not held.setup:
                raise errors.FailedPrecondition(
                    f"blocks: {blocks!r} are not prepared on S2 (PrepareBlocks first)"
                )
            held.since = self.clock()
            return held

    def drop(self, blocks: str) -> bool:
        """Drop `blocks`; whether they were held."""
        with self._lock:
            return self._held.pop(blocks, None) is not None

    def held(self) -> int:
        """How many parts' blocks are held (the stale ones dropped first)."""
        with self._lock:
            self._expire()
            return len(self._held)

    def side(self, blocks: str, member_a: str, member_b: str, part: int,
             run: str) -> denseblock.Blocks:  # fmt: skip
        """The side of `blocks` for a batch of part `part` of run `run` over the members;
        `FailedPrecondition` where this server holds no such blocks exchanged."""
        with self._lock:
            self._expire()
            held = self._held.get(blocks)
            if held is None or held.side is None:
                raise errors.FailedPrecondition(
                    f"blocks: {blocks!r} are not held here (not prepared, not exchanged, "
                    f"expired after {STALE_SECONDS:.0f} s, replaced, or the server restarted): "
                    "the part's batches run by pairs, or its blocks are prepared again"
                )
            d = held.deal
            if (d.member_a, d.member_b, d.part, held.run) != (member_a, member_b, part, run):
                raise errors.PermissionDenied(
                    f"blocks: {blocks!r} are part {d.part} of run {held.run} over "
                    f"{d.member_a!r} x {d.member_b!r}, not this batch's"
                )
            held.since = self.clock()
            return held.side

    def forget(self, names: set[str]) -> None:
        """Drop the blocks over any of `names` (uploads replaced or dropped)."""
        with self._lock:
            for k in [k for k, h in self._held.items() if {h.deal.member_a, h.deal.member_b}
                      & names]:  # fmt: skip
                del self._held[k]


def prepare_blocks(
    remote: RemoteServers,
    index: int,
    deals: Sequence[densearith.BlockDeal],
    transcript: linkbit.Transcript,
    pops: Sequence[ring64.Deal] = (),
    clock: dict[str, float] | None = None,
) -> tuple[str, int]:
    """C: part `index`'s blocks dealt to S2 (a stream) then S1, which converts and checks
    them with S2 (with `pops`, each block's records' popcounts' daBits after its deal: the
    margin's, `BlockDeal.margin`); the blocks' id, for the part's batches. Each block's deal
    is read from `deals` (and `pops`) as its turn in the stream comes and let go once sent
    (core/densearith.py `Lazy`: C holds one block's at a time, its CPU into `clock`'s "C");
    bytes counted in `transcript`. With the id, the most pairs a batch on them may have
    (`largest_batch`)."""
    p = remote._parts[index]
    m = pb.BlockDeal(
        blocks=secrets.token_hex(12), member_a=remote.members[p.member_a],
        member_b=remote.members[p.member_b], records_a=remote.records[p.member_a],
        records_b=remote.records[p.member_b], clk=p.clk, part=index,
        rows_a=[a for a, _ in p.blocks], rows_b=[b for _, b in p.blocks],
        cutoffs=remote._cutoffs, rule=wire_rule(remote._rule), margin=bool(pops),
    )  # fmt: skip
    if len(deals) != len(p.blocks) or (pops and len(pops) != len(deals)):
        raise ValueError(f"part {index}: a deal a block, {len(p.blocks)}")
    counts, to_s1 = [m.ByteSize(), 0], bytearray()  # (C->S2 bytes, its parts), S1's seeds

    def s2_parts() -> Iterator[pb.BlockDeal]:
        yield m
        for k in range(len(deals)):  # each block's dealt, sent in parts, then let go
            t0 = time.process_time()
            d = deals[k]
            one, two = d.to_s1, d.to_s2
            if pops:  # its popcounts' daBits after its deal
                q = pops[k]
                one, two = one + q.to_s1, two + q.to_s2
            if clock is not None:
                clock["C"] = clock.get("C", 0.0) + time.process_time() - t0
            to_s1.extend(one)
            counts[0] += len(two)
            for data, _ in cut(two):
                counts[1] += 1
                yield pb.BlockDeal(setup=data)
            del d, two

    at_s2 = call_party(remote.names[1], remote._s2.PrepareBlocks, s2_parts(),
                       metadata=remote._metadata, timeout=CALL_SECONDS)  # fmt: skip
    to_s1_m = pb.BlockDeal()
    to_s1_m.CopyFrom(m)
    to_s1_m.setup = bytes(to_s1)
    reply = call_party(remote.names[0], remote._s1.PrepareBlocks, to_s1_m,
                       metadata=remote._metadata, timeout=CALL_SECONDS)  # fmt: skip
    transcript.count("C", "S2", counts[0] + 8 * counts[1])
    transcript.count("C", "S1", to_s1_m.ByteSize())
    transcript.count("S1", "S2", reply.round_bytes_sent)
    transcript.count("S2", "S1", reply.round_bytes_received)
    return m.blocks, largest_batch(reply.largest_batch, at_s2.largest_batch)


def release_blocks(remote: RemoteServers, index: int) -> None:
    """C: part `index`'s batches all answered, S1 and S2 told to drop its blocks' H shares
    now (`Acknowledge`'s `blocks`; up to MAX_PAIRS pairs' worth each, else held until
    STALE_SECONDS pass); a party not reached keeps them until then (logged). Nothing for a
    part by pairs."""
    blocks = remote._blocks.pop(index, None)
    if blocks is None:
        return
    request = pb.AcknowledgeRequest(blocks=[blocks])
    for who, stub in ((remote.names[0], remote._s1), (remote.names[1], remote._s2)):
        try:
            call_party(who, stub.Acknowledge, request, metadata=remote._metadata,
                       timeout=30.0)  # fmt: skip
        except errors.ServiceError as exc:
            log.info("%s keeps part %d's blocks until they expire: %s", who, index, exc)


def largest_batch(*said: int) -> int:
    """The most pairs C puts in a batch on a part's blocks: the least of its own limit and
    what S1 and S2 said (`largest_batch`, unset by a role older than it: linkbit.BATCH)."""
    return min(linkbit.BLOCK_BATCH, *(n or linkbit.BATCH for n in said))


__all__ = [
    "MAX_BLOCKS",
    "MAX_PAIRS",
    "PART_BYTES",
    "STALE_SECONDS",
    "HeldBlocks",
    "from_kept",
    "kept_parts",
    "largest_batch",
    "later_setup",
    "prepare_blocks",
    "proposed_part",
    "release_blocks",
    "s1_exchange",
]
