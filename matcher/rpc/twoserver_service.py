"""The two-server run's three roles as gRPC services, each on its own address
(docs/privacy-design.md, docs/protocol.md "Two servers and a combiner").

- S1 (`TwoServerBlocking`): every member's keyed band keys and first shares; `Propose`
  blocks (core/twoserver.py `BlockingServer.block`) and streams the pairs to C; `Evaluate`
  runs S1's `linkbit.Party` on a batch from C's setup, exchanging each round's masked
  inputs with S2 over S2's `Exchange`, and gives C S1's output shares.
- S2 (`TwoServerShares`): the second shares; `Prepare` builds S2's `Party` from C's setup
  and holds it, `Exchange` runs its rounds against S1's messages, `Collect` gives C the
  output shares.
- C (`TwoServerCombiner`): the popcounts; `Run` drives the run (core/tworun.py `drive`) over
  S1 and S2 reached by gRPC (rpc/twoserver_client.py `RemoteServers`).

Each role refuses the fields of an upload that are not its own (C never receives a share nor
a band key, S1 and S2 never a popcount), so what a party holds is what the design gives it.
The RPC layer carries only the bytes the core objects produce. Every call must carry the
deployment's key (`authorization: Bearer <key>`).
"""

from __future__ import annotations

import functools
import hmac
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, tworun
from blindmatch.matcher.core.encodings import check_clk_bits
from blindmatch.matcher.core.twoserver import BlockingServer, Combiner, PairBatch, ShareServer
from blindmatch.matcher.rpc.auth import bearer_token
from blindmatch.matcher.rpc.status import abort, rpc_errors
from blindmatch.matcher.rpc.twoserver_client import (
    CALL_SECONDS,
    MAX_MESSAGE_BYTES,
    RemoteServers,
    ShareExchange,
    channel_options,
    from_rows,
    to_rows,
)
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher.twoserver")

ROLES = ("s1", "s2", "combiner")
NAMES = {"s1": "S1", "s2": "S2", "combiner": "the combiner"}
MAX_BANDS = 65_536  # the schema's (client/encoding/schema.py)
MAX_BOUNDS = 16  # cut-offs a circuit: the threshold and the score buckets
MAX_PENDING = 64  # batches S2 holds between Prepare and Collect
STALE_SECONDS = 2 * CALL_SECONDS  # a batch not collected by then is forgotten
PROPOSE_PART = 1 << 20  # pairs a part of Propose's stream (8 MiB)
THREADS = 16
F = TypeVar("F", bound=Callable[..., Any])


def _keyed(method: F) -> F:
    """Refuse a call without the deployment's key, then map errors to statuses."""
    wrapped = rpc_errors(method)

    @functools.wraps(method)
    def call(self: _Role, request: Any, context: Any) -> Any:
        token = bearer_token(context.invocation_metadata()) or ""
        if not hmac.compare_digest(token.encode(), self.key.encode()):
            abort(context, errors.Unauthenticated(
                f"{NAMES[self.role]} answers only callers with the deployment's key"))  # fmt: skip
        return wrapped(self, request, context)

    return call  # type: ignore[return-value]


@dataclass(frozen=True)
class Held:
    """One member's upload to one role, per CLK: widths, and the role's own arrays."""

    bits: tuple[int, ...]
    bands: tuple[int, ...]
    keys: tuple[npt.NDArray[np.uint64], ...]
    shares: tuple[npt.NDArray[np.uint8], ...]
    popcounts: tuple[npt.NDArray[np.int64], ...]

    @property
    def records(self) -> int:
        for arrays in (self.shares, self.popcounts, self.keys):
            if arrays:
                return len(arrays[0])
        return 0


def _read_upload(parts: Iterator[pb.SharedPart], role: str) -> tuple[str, Held]:
    """One member's upload to `role`, checked whole."""
    member = ""
    got: dict[int, dict[str, Any]] = {}
    for n, p in enumerate(parts):
        where = f"part {n}"
        if not p.member:
            raise errors.InvalidArgument(f"member ({where}): required")
        if member and p.member != member:
            raise errors.InvalidArgument(
                f"member ({where}): {p.member!r}, but this upload is {member!r}'s (one member "
                "an upload)"
            )
        member = p.member
        if p.clk not in (0, 1):
            raise errors.InvalidArgument(f"clk ({where}): {p.clk}; 0 (record-level) or 1")
        check_clk_bits(p.clk_bits, f"clk_bits ({where})")
        if role != "s1" and (p.keys or p.bands):
            raise errors.InvalidArgument(f"keys ({where}): only S1 receives band keys")
        if role == "combiner" and p.shares:
            raise errors.InvalidArgument(f"shares ({where}): the combiner never receives a share")
        if role != "combiner" and p.popcounts:
            raise errors.InvalidArgument(f"popcounts ({where}): only the combiner receives them")
        if role == "s1":
            if not 1 <= p.bands <= MAX_BANDS:
                raise errors.InvalidArgument(f"bands ({where}): {p.bands}; 1 to {MAX_BANDS}")
            if len(p.keys) != 8 * p.bands * p.rows:
                raise errors.InvalidArgument(
                    f"keys ({where}): {len(p.keys)} bytes for {p.rows} records of {p.bands} "
                    "band keys"
                )
        if role != "combiner" and len(p.shares) != p.rows * p.clk_bits // 8:
            raise errors.InvalidArgument(
                f"shares ({where}): {len(p.shares)} bytes for {p.rows} records of "
                f"{p.clk_bits}-bit CLKs"
            )
        if role == "combiner":
            if len(p.popcounts) != p.rows:
                raise errors.InvalidArgument(
                    f"popcounts ({where}): {len(p.popcounts)} for {p.rows} records"
                )
            if p.rows and max(p.popcounts) > p.clk_bits:
                raise errors.InvalidArgument(
                    f"popcounts ({where}): {max(p.popcounts)} above the CLK's {p.clk_bits} bits"
                )
        clk = got.setdefault(p.clk, dict(bits=p.clk_bits, bands=p.bands, keys=[], shares=[],
                                         popcounts=[], rows=0))  # fmt: skip
        if (clk["bits"], clk["bands"]) != (p.clk_bits, p.bands):
            raise errors.InvalidArgument(
                f"clk_bits/bands ({where}): CLK {p.clk} came with another layout in an earlier part"
            )
        clk["rows"] += p.rows
        clk["keys"].append(p.keys)
        clk["shares"].append(p.shares)
        clk["popcounts"].extend(p.popcounts)
    if not member:
        raise errors.InvalidArgument("an upload of no parts")
    if sorted(got) not in ([0], [0, 1]):
        raise errors.InvalidArgument(f"clk: CLK 0 (and 1, the fallback), not {sorted(got)}")
    rows = [got[c]["rows"] for c in sorted(got)]
    if len(set(rows)) > 1 or not rows[0]:
        raise errors.InvalidArgument(f"rows: {rows} records by CLK (equal, and not 0)")
    clks = [got[c] for c in sorted(got)]
    keys: tuple[npt.NDArray[np.uint64], ...] = ()
    shares: tuple[npt.NDArray[np.uint8], ...] = ()
    pops: tuple[npt.NDArray[np.int64], ...] = ()
    if role == "s1":
        keys = tuple(np.frombuffer(b"".join(c["keys"]), "<u8").astype(np.uint64)
                     .reshape(c["rows"], c["bands"]) for c in clks)  # fmt: skip
    if role != "combiner":
        shares = tuple(np.frombuffer(b"".join(c["shares"]), np.uint8)
                       .reshape(c["rows"], c["bits"] // 8) for c in clks)  # fmt: skip
    else:
        pops = tuple(np.asarray(c["popcounts"], dtype=np.int64) for c in clks)
    held = Held(tuple(c["bits"] for c in clks), tuple(c["bands"] for c in clks), keys, shares,
                pops)  # fmt: skip
    return member, held


class _Role:
    """What the three roles share: the uploads held, the key."""

    def __init__(self, role: str, key: str) -> None:
        self.role, self.key = role, key
        self.held: dict[str, Held] = {}
        self.lock = threading.Lock()

    def upload(self, parts: Iterator[pb.SharedPart]) -> pb.SharedReceipt:
        member, held = _read_upload(parts, self.role)
        with self.lock:
            for other, h in self.held.items():
                if other != member and (h.bits, h.bands) != (held.bits, held.bands):
                    raise errors.InvalidArgument(
                        f"clk_bits/bands: {member}'s CLKs are {list(held.bits)} bits "
                        f"({list(held.bands)} bands), {other}'s {list(h.bits)} "
                        f"({list(h.bands)}): every member uploads the same layout"
                    )
            self.held[member] = held
        log.info("%s holds %s's upload (%d records)", NAMES[self.role], member, held.records)
        return pb.SharedReceipt(member=member, records=held.records, clks=len(held.bits))

    def member(self, name: str, field: str) -> Held:
        held = self.held.get(name)
        if held is None:
            raise errors.FailedPrecondition(
                f"{field}: {NAMES[self.role]} holds no upload of {name!r}"
            )
        return held

    def batch(self, m: pb.CircuitBatch) -> tuple[ShareServer, PairBatch, linkbit.Circuit]:
        """A batch of the circuit, checked: the two members' shares, the pairs, the circuit."""
        if not m.batch or len(m.batch) > 64:
            raise errors.InvalidArgument("batch: an id of 1 to 64 characters")
        if m.member_a == m.member_b:
            raise errors.InvalidArgument("member_a/member_b: two members")
        held = [self.member(m.member_a, "member_a"), self.member(m.member_b, "member_b")]
        for name, h, records in (("a", held[0], m.records_a), ("b", held[1], m.records_b)):
            if h.records != records:
                raise errors.InvalidArgument(
                    f"records_{name}: {records} at the combiner, but {NAMES[self.role]} holds "
                    f"{h.records} of {getattr(m, 'member_' + name)!r} (the uploads differ)"
                )
        if m.clk >= len(held[0].bits):
            raise errors.InvalidArgument(f"clk: {m.clk}, but the uploads have {len(held[0].bits)}")
        rows_a, rows_b = to_rows(m.rows_a, "rows_a"), to_rows(m.rows_b, "rows_b")
        if len(rows_a) != len(rows_b) or not 0 < len(rows_a) <= linkbit.BATCH:
            raise errors.InvalidArgument(
                f"rows_a/rows_b: {len(rows_a)} and {len(rows_b)} rows; as many, 1 to "
                f"{linkbit.BATCH}"
            )
        for name, rows, h in (("rows_a", rows_a, held[0]), ("rows_b", rows_b, held[1])):
            if int(rows.max()) >= h.records:
                raise errors.InvalidArgument(f"{name}: row {int(rows.max())} of {h.records}")
        if not 1 <= m.bounds <= MAX_BOUNDS:
            raise errors.InvalidArgument(f"bounds: {m.bounds}; 1 to {MAX_BOUNDS}")
        shares = ShareServer([held[0].shares, held[1].shares], b"")
        circuit = linkbit.circuit(held[0].bits[m.clk], m.bounds)
        return shares, PairBatch(0, 1, m.clk, rows_a, rows_b), circuit

    def party(self, m: pb.CircuitBatch, who: int) -> linkbit.Party:
        shares, pairs, circuit = self.batch(m)
        try:
            return shares.party(who, pairs, circuit, m.setup)
        except ValueError as exc:
            raise errors.InvalidArgument(f"setup: {exc}") from None


class BlockingService(_Role, pb_grpc.TwoServerBlockingServicer):
    """S1."""

    def __init__(self, key: str, s2: ShareExchange) -> None:
        super().__init__("s1", key)
        self.s2 = s2

    @_keyed
    def Upload(self, request: Iterator[pb.SharedPart], context: Any) -> pb.SharedReceipt:
        return self.upload(request)

    @_keyed
    def Propose(self, request: pb.ProposeRequest, context: Any) -> Iterator[pb.CandidatePairs]:
        members = list(request.members)
        if len(members) < 2 or len(set(members)) != len(members):
            raise errors.InvalidArgument("members: two or more, each named once")
        if len(request.records) != len(members):
            raise errors.InvalidArgument("records: one count a member")
        held = [self.member(m, "members") for m in members]
        for name, h, records in zip(members, held, request.records, strict=True):
            if h.records != records:
                raise errors.InvalidArgument(
                    f"records: {records} of {name!r} at the combiner, but S1 holds {h.records} "
                    "(the uploads differ)"
                )
        lacking = None
        if request.fallback:
            if any(len(h.bits) != 2 for h in held):
                raise errors.InvalidArgument("fallback: an upload without a fallback CLK")
            total = sum(h.records for h in held)
            bits = np.unpackbits(np.frombuffer(request.lacking, np.uint8), bitorder="little")
            if len(request.lacking) != (total + 7) // 8:
                raise errors.InvalidArgument(f"lacking: {len(request.lacking)} bytes for "
                                             f"{total} records")  # fmt: skip
            ends = np.cumsum([0, *(h.records for h in held)])
            lacking = [bits[lo:hi].astype(bool) for lo, hi in itertools.pairwise(ends)]
        elif request.lacking:
            raise errors.InvalidArgument("lacking: only with a fallback CLK")
        s1 = BlockingServer([h.keys for h in held], [h.shares for h in held], b"")
        for pairs in s1.block(lacking):
            chunks = list(pairs.split(PROPOSE_PART)) or [pairs]
            for k, part in enumerate(chunks):
                yield pb.CandidatePairs(
                    member_a=part.member_a, member_b=part.member_b, clk=part.clk,
                    rows_a=from_rows(part.rows_a), rows_b=from_rows(part.rows_b),
                    last=k == len(chunks) - 1,
                )  # fmt: skip

    @_keyed
    def Evaluate(self, request: pb.CircuitBatch, context: Any) -> pb.OutputShares:
        party = self.party(request, 0)
        sent, received = self.s2.exchange(request.batch, party)
        return pb.OutputShares(shares=party.output(), round_bytes_sent=sent,
                               round_bytes_received=received,
                               rounds=party.circuit.rounds)  # fmt: skip


class SharesService(_Role, pb_grpc.TwoServerSharesServicer):
    """S2."""

    def __init__(self, key: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("s2", key)
        self.pending: dict[str, linkbit.Party] = {}
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

    @_keyed
    def Upload(self, request: Iterator[pb.SharedPart], context: Any) -> pb.SharedReceipt:
        return self.upload(request)

    @_keyed
    def Prepare(self, request: pb.CircuitBatch, context: Any) -> pb.PrepareReply:
        party = self.party(request, 1)
        with self.lock:
            self._expire()
            if request.batch in self.pending or request.batch in self.outputs:
                raise errors.InvalidArgument(f"batch: {request.batch!r} is prepared already")
            if len(self.pending) + len(self.outputs) >= MAX_PENDING:
                raise errors.ResourceExhausted(f"S2 holds {MAX_PENDING} batches not collected")
            self.pending[request.batch] = party
            self.since[request.batch] = self.clock()
        return pb.PrepareReply()

    @_keyed
    def Exchange(
        self, request: Iterator[pb.RoundMessage], context: Any
    ) -> Iterator[pb.RoundMessage]:
        first = next(request, None)
        if first is None:
            raise errors.InvalidArgument("an exchange of no messages")
        with self.lock:
            party = self.pending.pop(first.batch, None)
        if party is None:
            raise errors.FailedPrecondition(f"batch: {first.batch!r} is not prepared on S2")
        rounds, message = party.circuit.rounds, first
        for r in range(rounds):
            if r:
                got = next(request, None)
                if got is None:
                    raise errors.InvalidArgument(f"masked: the exchange ended at round {r} of "
                                                 f"{rounds}")  # fmt: skip
                message = got
            mine = party.open()
            try:
                party.close(message.masked)
            except ValueError as exc:
                raise errors.InvalidArgument(f"masked (round {r}): {exc}") from None
            if r == rounds - 1:
                with self.lock:
                    self.outputs[first.batch] = party.output()
            yield pb.RoundMessage(masked=mine)

    @_keyed
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


class CombinerService(_Role, pb_grpc.TwoServerCombinerServicer):
    """C."""

    def __init__(self, key: str, servers: Callable[[list[str], list[Held]], RemoteServers]) -> None:
        super().__init__("combiner", key)
        self.servers = servers
        self.running = threading.Lock()

    @_keyed
    def Upload(self, request: Iterator[pb.SharedPart], context: Any) -> pb.SharedReceipt:
        return self.upload(request)

    @_keyed
    def Run(self, request: pb.TwoServerRunRequest, context: Any) -> pb.TwoServerRunReply:
        members = list(request.members) or sorted(self.held)
        if len(members) < 2 or len(set(members)) != len(members):
            raise errors.InvalidArgument("members: two or more, each named once")
        held = [self.member(m, "members") for m in members]
        if not 0 < request.threshold <= 1:
            raise errors.InvalidArgument(f"threshold: {request.threshold} is not in (0, 1]")
        try:
            combiner = Combiner([h.popcounts for h in held], request.threshold,
                                buckets=list(request.buckets) or None)  # fmt: skip
        except ValueError as exc:
            raise errors.InvalidArgument(f"buckets: {exc}") from None
        if not self.running.acquire(blocking=False):
            raise errors.FailedPrecondition("a run is in progress on this combiner")
        try:
            result = tworun.drive(self.servers(members, held), combiner)
        finally:
            self.running.release()
        links, t = result.links, result.transcript
        return pb.TwoServerRunReply(
            members=members, dset=links.dset.tolist(), row=links.row.tolist(),
            partner=links.partner.tolist(), partner_row=links.partner_row.tolist(),
            score=links.score.tolist(), groups=result.groups, comparisons=result.comparisons,
            method=result.method, bytes_sent={f"{a}->{b}": n for (a, b), n in t.sent.items()},
            rounds=t.rounds,
        )  # fmt: skip


@dataclass
class RunningRole:
    role: str
    server: grpc.Server
    port: int
    service: _Role

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()


def create_role(
    role: str,
    address: str,
    key: str,
    *,
    s1: str = "",
    s2: str = "",
    credentials: grpc.ServerCredentials | None = None,
    peer_credentials: grpc.ChannelCredentials | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunningRole:
    """Listen on `address` (port 0: a free one) as `role` ("s1": needs S2's address `s2`;
    "s2"; "combiner": needs both). Peers are reached with the same key, over TLS with
    `peer_credentials`; `clock` (seconds) ages S2's batches."""
    service: _Role
    if role == "s1":
        if not s2:
            raise ValueError("S1 needs S2's address")
        service = BlockingService(key, ShareExchange(s2, key, peer_credentials))
    elif role == "s2":
        service = SharesService(key, clock)
    elif role == "combiner":
        if not s1 or not s2:
            raise ValueError("the combiner needs S1's and S2's addresses")

        def servers(members: list[str], held: list[Held]) -> RemoteServers:
            return RemoteServers(s1, s2, key, members, [h.records for h in held],
                                 held[0].bits, peer_credentials)  # fmt: skip

        service = CombinerService(key, servers)
    else:
        raise ValueError(f"a role is one of {', '.join(ROLES)}, not {role!r}")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=f"bm-{role}"),
        options=channel_options(),
    )
    adders = {"s1": pb_grpc.add_TwoServerBlockingServicer_to_server,
              "s2": pb_grpc.add_TwoServerSharesServicer_to_server,
              "combiner": pb_grpc.add_TwoServerCombinerServicer_to_server}  # fmt: skip
    adders[role](service, server)  # type: ignore[operator]
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if not port:
        raise OSError(
            f"could not listen on {address} (is the port taken, or the address not this machine's?)"
        )
    server.start()
    log.info("%s listening on port %d (message limit %d bytes)", NAMES[role], port,
             MAX_MESSAGE_BYTES)  # fmt: skip
    return RunningRole(role, server, port, service)
