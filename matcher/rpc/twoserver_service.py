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
S1 and S2 evaluate each pair once an upload (core/pairbudget.py): a combiner cannot ask
again with new bounds. With a data dir each role audits uploads, runs and refusals
(storage/twoserver_audit.py).
The RPC layer carries only the bytes the core objects produce. Each RPC admits only the
caller the protocol has call it, by its key (`authorization: Bearer <key>`;
rpc/twoserver_keys.py): the members' key `Upload` and nothing else; the combiner's S1's
`Propose`/`Evaluate` and S2's `Prepare`/`Collect`; S1's S2's `Exchange`; the operator's `Run`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import audit, linkbit, tworun
from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.core.twoserver import BlockingServer, Combiner, PairBatch, ShareServer
from blindmatch.matcher.rpc.auth import bearer_token
from blindmatch.matcher.rpc.listen import add_port, cannot_listen
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
from blindmatch.matcher.rpc.twoserver_keys import Keys
from blindmatch.matcher.rpc.twoserver_uploads import Held, read_upload
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher.twoserver")

ROLES = ("s1", "s2", "combiner")
NAMES = {"s1": "S1", "s2": "S2", "combiner": "the combiner"}
MAX_BOUNDS = 16  # cut-offs a circuit: the threshold and the score buckets
MAX_PENDING = 64  # batches S2 holds between Prepare and Collect
STALE_SECONDS = 2 * CALL_SECONDS  # a batch not collected by then is forgotten
PROPOSE_PART = 1 << 20  # pairs a part of Propose's stream (8 MiB)
THREADS = 16
F = TypeVar("F", bound=Callable[..., Any])


def _from(caller: str) -> Callable[[F], F]:
    """An RPC `caller` makes (rpc/twoserver_keys.py): refused without its key; errors to
    statuses."""

    def decorate(method: F) -> F:
        wrapped = rpc_errors(method)

        @functools.wraps(method)
        def call(self: _Role, request: Any, context: Any) -> Any:
            token = bearer_token(context.invocation_metadata())
            try:
                self.keys.check(NAMES[self.role], method.__name__, caller, token)
            except errors.ServiceError as exc:
                abort(context, exc)
            return wrapped(self, request, context)

        return call  # type: ignore[return-value]

    return decorate


class _Role:
    """What the three roles share: the uploads held, the keys."""

    def __init__(
        self, role: str, key: str, member_key: str, keys: Mapping[str, str] | None = None
    ) -> None:
        self.role, self.keys = role, Keys(role, key, member_key, keys)
        self.audit: RoleAudit | None = None  # create_role's data_dir
        self.held: dict[str, Held] = {}
        self.lock = threading.Lock()
        self.budget = PairBudget()  # each pair's evaluations (S1's and S2's)

    def log(self, actor: str, action: str, member: str = "", **detail: object) -> None:
        """An audit entry (storage/twoserver_audit.py), durable before this returns; none
        without a data dir."""
        if self.audit is not None:
            detail = {"role": self.role, **detail}
            self.audit.log.append(audit.Event(actor, action, member=member, detail=detail))

    def upload(self, parts: Iterator[pb.SharedPart], vouched: str = "") -> pb.SharedReceipt:
        """`vouched`: the name an upload ticket admits (core/tickets.py), the upload's;
        it replaces that project member's upload under any earlier tag."""
        member, held = read_upload(parts, self.role)
        if (vouched and member != vouched) or (not vouched and "/" in member):
            raise errors.PermissionDenied(
                f"member: {member!r}, but the upload ticket admits {vouched!r} only"
                if vouched
                else f"member: {member!r} is a project's name (project/member/tag): only the "
                "matcher's upload ticket admits it"
            )
        with self.lock:
            if vouched:  # the project member's earlier uploads, under other tags, go
                prefix = vouched.rsplit("/", 1)[0] + "/"
                for old in [m for m in self.held if m.startswith(prefix) and m != member]:
                    del self.held[old]
                    self.budget.forget(old)
            for other, h in self.held.items():
                if vouched and not other.startswith(vouched.split("/", 1)[0] + "/"):
                    continue  # another project's uploads may have another layout
                if other != member and (h.bits, h.bands) != (held.bits, held.bands):
                    raise errors.InvalidArgument(
                        f"clk_bits/bands: {member}'s CLKs are {list(held.bits)} bits "
                        f"({list(held.bands)} bands), {other}'s {list(h.bits)} "
                        f"({list(h.bands)}): every member uploads the same layout"
                    )
            digest = hashlib.sha256()
            for arrays in (held.keys, held.shares, held.popcounts):
                for array in arrays:
                    digest.update(np.ascontiguousarray(array).tobytes())
            self.log(member, "twoserver.upload", member, records=held.records,
                     clks=len(held.bits), sha256=digest.hexdigest())  # fmt: skip
            self.held[member] = held
            self.budget.forget(member)
        log.info("%s holds %s's upload (%d records)", NAMES[self.role], member, held.records)
        return pb.SharedReceipt(member=member, records=held.records, clks=len(held.bits))

    def vouched(self, context: Any) -> str:
        """The name the caller's upload ticket admits ("" for the members' key)."""
        token = bearer_token(context.invocation_metadata())
        return self.keys.vouched(NAMES[self.role], token)

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

    def spend(self, m: pb.CircuitBatch) -> None:
        """Count the (checked) batch's pairs evaluated (core/pairbudget.py), or refuse it
        whole."""
        rows_a, rows_b = to_rows(m.rows_a, "rows_a"), to_rows(m.rows_b, "rows_b")
        over = self.budget.spend(m.member_a, m.member_b, rows_a, rows_b)
        if over:
            self.log("combiner", "twoserver.refused", members=[m.member_a, m.member_b],
                     pairs=len(rows_a), over=over)  # fmt: skip
            n = self.budget.evaluations
            times = "once" if n == 1 else f"{n} times"
            raise errors.FailedPrecondition(
                f"rows_a/rows_b: {over} of the batch's {len(rows_a)} pairs would be evaluated "
                f"more than {times} since {m.member_a!r} and {m.member_b!r} uploaded; "
                f"{NAMES[self.role]} evaluates a pair at most {times} an upload (a run needs "
                "it once), so that a combiner cannot search its distance with new bounds: the "
                "members upload again for another run"
            )

    def party(self, m: pb.CircuitBatch, who: int) -> linkbit.Party:
        shares, pairs, circuit = self.batch(m)
        try:
            party = shares.party(who, pairs, circuit, m.setup)
        except ValueError as exc:
            raise errors.InvalidArgument(f"setup: {exc}") from None
        return party


class BlockingService(_Role, pb_grpc.TwoServerBlockingServicer):
    """S1."""

    def __init__(
        self,
        key: str,
        member_key: str,
        s2: ShareExchange,
        keys: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("s1", key, member_key, keys)
        self.s2 = s2

    @_from("member")
    def Upload(self, request: Iterator[pb.SharedPart], context: Any) -> pb.SharedReceipt:
        return self.upload(request, self.vouched(context))

    @_from("combiner")
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
        proposed = s1.block(lacking)
        self.log("combiner", "twoserver.run", members=members,
                 pairs=sum(len(p) for p in proposed))  # fmt: skip
        for pairs in proposed:
            chunks = list(pairs.split(PROPOSE_PART)) or [pairs]
            for k, part in enumerate(chunks):
                yield pb.CandidatePairs(
                    member_a=part.member_a, member_b=part.member_b, clk=part.clk,
                    rows_a=from_rows(part.rows_a), rows_b=from_rows(part.rows_b),
                    last=k == len(chunks) - 1,
                )  # fmt: skip

    @_from("combiner")
    def Evaluate(self, request: pb.CircuitBatch, context: Any) -> pb.OutputShares:
        party = self.party(request, 0)
        self.spend(request)
        sent, received = self.s2.exchange(request.batch, party)
        return pb.OutputShares(shares=party.output(), round_bytes_sent=sent,
                               round_bytes_received=received,
                               rounds=party.circuit.rounds)  # fmt: skip


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

    @_from("member")
    def Upload(self, request: Iterator[pb.SharedPart], context: Any) -> pb.SharedReceipt:
        return self.upload(request, self.vouched(context))

    @_from("combiner")
    def Prepare(self, request: pb.CircuitBatch, context: Any) -> pb.PrepareReply:
        party = self.party(request, 1)
        with self.lock:
            self._expire()
            if request.batch in self.pending or request.batch in self.outputs:
                raise errors.InvalidArgument(f"batch: {request.batch!r} is prepared already")
            if len(self.pending) + len(self.outputs) >= MAX_PENDING:
                raise errors.ResourceExhausted(f"S2 holds {MAX_PENDING} batches not collected")
            self.spend(request)
            self.pending[request.batch] = party
            self.since[request.batch] = self.clock()
        return pb.PrepareReply()

    @_from("s1")
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


class CombinerService(_Role, pb_grpc.TwoServerCombinerServicer):
    """C."""

    def __init__(
        self,
        key: str,
        member_key: str,
        servers: Callable[[list[str], list[Held]], RemoteServers],
        keys: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("combiner", key, member_key, keys)
        self.servers = servers
        self.running = threading.Lock()

    @_from("member")
    def Upload(self, request: Iterator[pb.SharedPart], context: Any) -> pb.SharedReceipt:
        return self.upload(request, self.vouched(context))

    @_from("operator")
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
        self.log("operator", "twoserver.run", members=members, threshold=request.threshold,
                 pairs=result.comparisons, links=len(links), groups=result.groups)  # fmt: skip
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
        if self.service.audit is not None:
            self.service.audit.close()


def create_role(
    role: str,
    address: str,
    key: str,
    member_key: str,
    *,
    s1: str = "",
    s2: str = "",
    credentials: grpc.ServerCredentials | None = None,
    peer_credentials: grpc.ChannelCredentials | None = None,
    clock: Callable[[], float] = time.monotonic,
    keys: Mapping[str, str] | None = None,
    data_dir: Path | None = None,
) -> RunningRole:
    """Listen on `address` (port 0: a free one) as `role` ("s1": needs S2's address `s2`;
    "s2"; "combiner": needs both). `key`: this role's (peers are called with it, over TLS
    with `peer_credentials`); `member_key`: the members' (uploads only; or its digest);
    `keys`: by caller ("s1", "s2", "combiner", "operator"), the key (or `sha256:` digest)
    of each party this role answers (rpc/twoserver_keys.py; None: every party's is `key`);
    `clock` (seconds) ages S2's batches; `data_dir`: where the role's audit log is kept
    (storage/twoserver_audit.py; None: none)."""
    service: _Role
    if role == "s1":
        if not s2:
            raise ValueError("S1 needs S2's address")
        service = BlockingService(key, member_key, ShareExchange(s2, key, peer_credentials), keys)
    elif role == "s2":
        service = SharesService(key, member_key, clock, keys)
    elif role == "combiner":
        if not s1 or not s2:
            raise ValueError("the combiner needs S1's and S2's addresses")

        def servers(members: list[str], held: list[Held]) -> RemoteServers:
            return RemoteServers(s1, s2, key, members, [h.records for h in held],
                                 held[0].bits, peer_credentials)  # fmt: skip

        service = CombinerService(key, member_key, servers, keys)
    else:
        raise ValueError(f"a role is one of {', '.join(ROLES)}, not {role!r}")
    if data_dir is not None:
        service.audit = RoleAudit(data_dir, role)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=f"bm-{role}"),
        options=channel_options(),
    )
    adders = {"s1": pb_grpc.add_TwoServerBlockingServicer_to_server,
              "s2": pb_grpc.add_TwoServerSharesServicer_to_server,
              "combiner": pb_grpc.add_TwoServerCombinerServicer_to_server}  # fmt: skip
    adders[role](service, server)  # type: ignore[operator]
    port = add_port(server, address, credentials)
    if not port:
        if service.audit is not None:
            service.audit.close()
        raise cannot_listen(address)
    server.start()
    log.info("%s listening on port %d (message limit %d bytes)", NAMES[role], port,
             MAX_MESSAGE_BYTES)  # fmt: skip
    return RunningRole(role, server, port, service)
