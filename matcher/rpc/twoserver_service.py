"""The two-server run's three roles as gRPC services, each on its own address
(docs/privacy-design.md, docs/protocol.md "Two servers and a combiner").

- S1 (`TwoServerBlocking`): every member's sealed band keys (each band's distinct keys, each
  with its rows as tokens for S2), first shares (of the CLKs and their popcounts) and who
  lacks the fallback's fields; `Propose` joins the keys across members (core/twoserver.py
  `BlockingServer.join`), has S2 open the matched keys' tokens over S2's `Expand`, splits the
  pairs by the fallback's rule, fixes the run's proposal and cut-offs (core/proposal.py) and
  tells C each part's size; `Evaluate` checks a batch against the proposal, runs S1's
  `linkbit.Party` on it, exchanging each round's masked inputs with S2 over S2's `Exchange`
  (the first message carrying the batch's rows, digest and output pad seed), and gives C
  S1's output shares.
- S2 (`TwoServerShares`, rpc/twoserver_shares.py): the second shares and each upload's seal
  key; `Expand` opens the tokens of the keys S1 matched into the pairs sharing a key
  (`ShareServer.expand`); `Prepare` checks and holds C's batch, `Exchange` builds S2's
  `Party` once S1's first message shows S1 checked that batch and runs its rounds, `Collect`
  gives C the output shares.
- C (`TwoServerCombiner`): how many records; `Run` drives the run (core/tworun.py `drive`)
  over S1 and S2 reached by gRPC (rpc/twoserver_client.py `RemoteServers`).

Each role refuses the fields of an upload that are not its own (C never receives a share, a
band key or a popcount), so what a party holds is what the design gives it. S1 and S2
evaluate only what S1 proposed (plus bounded extras inside C's groups), at the run's
cut-offs, each pair once an upload (core/pairbudget.py). With a data dir each role audits
uploads, runs, refusals and extras (storage/twoserver_audit.py) and keeps its uploads and
pair budget on disk, restored when it starts again (storage/role_store.py).
The RPC layer carries only the bytes the core objects produce. Each RPC admits only the
caller the protocol has call it, by its key (`authorization: Bearer <key>`;
rpc/twoserver_keys.py): the members' key `Upload` and nothing else; the combiner's S1's
`Propose`/`Evaluate` and S2's `Prepare`/`Collect`, and both's `Forget` (a project member's
uploads dropped: it erased its data, or the project expired); S1's S2's `Expand` and `Exchange`; the
operator's `Run`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core import denseblock, linkbit, triplecheck, tworun
from blindmatch.matcher.core import exhaustive as exhaustive_
from blindmatch.matcher.core.circuitwarm import Shape, warm
from blindmatch.matcher.core.proposal import Checked, Proposal, Refused, run_cutoffs
from blindmatch.matcher.core.querylimit import QueryLimits
from blindmatch.matcher.core.twoserver import (
    BlockingServer,
    Combiner,
    PairBatch,
)
from blindmatch.matcher.domain import MIN_THRESHOLD, NO_RULE, THRESHOLD_RANGE, counted
from blindmatch.matcher.rpc import twoserver_holds as holds
from blindmatch.matcher.rpc.listen import EXCLUSIVE_PORT, add_port, cannot_listen
from blindmatch.matcher.rpc.twoserver_blockcalls import batch_party, dense_inputs, s1_prepare
from blindmatch.matcher.rpc.twoserver_blocks import kept_parts
from blindmatch.matcher.rpc.twoserver_channel import MAX_MESSAGE_BYTES, channel_options
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_peers import (
    ShareExchange,
    from_rows,
    read_expanded,
    to_rows,
)
from blindmatch.matcher.rpc.twoserver_resume import (
    acknowledge,
    keep_batch,
    keep_inputs,
    leave_out_counted,
    rerun,
    resume,
    resume_pairs,
    reused,
)
from blindmatch.matcher.rpc.twoserver_role import NAMES as NAMES
from blindmatch.matcher.rpc.twoserver_role import Bools, Rows, _from, _outputs, _Role
from blindmatch.matcher.rpc.twoserver_role import batch_digest as batch_digest
from blindmatch.matcher.rpc.twoserver_shares import MAX_PENDING as MAX_PENDING
from blindmatch.matcher.rpc.twoserver_shares import STALE_SECONDS as STALE_SECONDS
from blindmatch.matcher.rpc.twoserver_shares import SharesService
from blindmatch.matcher.rpc.twoserver_trim import trimmed
from blindmatch.matcher.rpc.twoserver_uploadguard import close_guard, guarded_upload
from blindmatch.matcher.rpc.twoserver_uploads import Held, only_pairs, part_rule, run_lacking
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from blindmatch.protos.wire import BAND_KEYS_NEEDED, BAND_KEYS_REFUSED

log = logging.getLogger("blindmatch.matcher.twoserver")

ROLES = ("s1", "s2", "combiner")
THREADS = 16


class BlockingService(_Role, pb_grpc.TwoServerBlockingServicer):
    """S1."""

    def __init__(
        self,
        key: str,
        member_key: str,
        s2: ShareExchange,
        keys: Mapping[str, str] | None = None,
        threshold: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        exhaustive: int | None = None,
        small_member: int | None = None,
        query_whole: int | None = None,
        query_band_keys: str | None = None,
    ) -> None:
        super().__init__("s1", key, member_key, keys, clock)
        self.s2 = s2
        self.threshold = threshold  # the only threshold S1 runs at; None: the combiner's
        # A pair of members of at most this many pairs: every pair proposed, no join, nothing
        # for S2 to expand (core/exhaustive.py).
        self.exhaustive = exhaustive_.or_default(exhaustive)
        # Over it, a pair whose smaller member is small, up to this many pairs (`admits`).
        self.small_member = exhaustive_.small_or_default(small_member)
        # And a query whose records times its partners' are at most this (`run_cap`).
        self.query_whole = exhaustive_.query_whole_or_default(query_whole)
        # A query over those: refused ("refuse"), or its band keys asked for ("allow").
        self.query_band_keys = exhaustive_.band_keys_or_default(query_band_keys)

    @_from("member")
    def Upload(self, request: Iterator[pb.SharedPart], context: Any) -> pb.SharedReceipt:
        return guarded_upload(self, request, context)

    @_from("combiner")
    @trimmed  # the join's and expansion's temporaries given back (rpc/twoserver_trim.py)
    def Propose(self, request: pb.ProposeRequest, context: Any) -> Iterator[pb.CandidatePairs]:
        members, held = self.run_held(request, self.keys_check)
        only = only_pairs(request)
        resumed = resume_pairs(request, only)
        lacking = run_lacking(request, held)
        try:
            cutoffs = run_cutoffs(request.threshold, request.buckets)
        except Refused as exc:
            raise errors.InvalidArgument(str(exc)) from None
        if self.threshold is not None and cutoffs[0] != self.threshold:
            raise errors.PermissionDenied(
                f"threshold: {cutoffs[0]}, but S1 runs at {self.threshold} (its --threshold)"
            )
        rule = part_rule(request, "run")
        with self.lock:  # room for it, or refused before the join (Busy)
            self.proposals.room(members)
        for name, h in zip(members, held, strict=True):
            if rule.active and h.rule != rule:
                raise errors.InvalidArgument(
                    f"rule: {rule.text()}, but {name!r}'s upload says {h.rule.text() or 'none'}"
                )
        s1 = BlockingServer([h.sealed for h in held], [h.shares for h in held], b"",
                            lacking=lacking)  # fmt: skip
        run = pb.ProposeRequest(members=members, records=request.records,
                                fallback=request.fallback)  # fmt: skip

        # A query's run: whole against a small partner, blocked against a larger one.
        sizes = [h.records for h in held]
        cap = exhaustive_.run_cap(members, self.exhaustive, sizes, self.small_member,
                                  self.query_whole)  # fmt: skip

        def blocked(pairs: set[tuple[int, int]] | None) -> list[PairBatch]:
            """S1's join of `pairs` of members (None: every pair), expanded by S2."""
            matched = s1.join(2 if request.fallback else 1, pairs)
            return s1.propose(read_expanded(self.s2.expand(run, matched), self.s2.name))

        def block(pairs: set[tuple[int, int]] | None) -> list[exhaustive_.Part]:
            """`pairs` of members' pairs: every pair of the small ones (core/exhaustive.py),
            the others blocked."""
            return exhaustive_.propose(sizes, cap, pairs, lacking, blocked,
                                      self.small_member)  # fmt: skip

        # The pairs of members C reuses: blocked only for an extra or reach pair of their members.
        proposal = Proposal(members, [h.records for h in held], block(only), cutoffs, lacking,
                            rule=rule, only=only, later=block)  # fmt: skip
        with self.lock:
            left_out = leave_out_counted(self, proposal, resumed)
            self.proposals.hold(proposal)
        detail: dict[str, object] = {
            "run": proposal.id, "members": members, "cutoffs": list(cutoffs),
            "rule": rule.text() or "none", "pairs": sum(len(p) for p in proposal.parts),
            "unblocked": [[members[x], members[y]] for x, y in sorted(exhaustive_.small_pairs(
                sizes, cap, only, self.small_member))],
            "only": "every pair" if only is None else sorted(only),
        }  # fmt: skip
        if resumed:  # parts without the pairs counted (rpc/twoserver_resume.py)
            detail.update(resumed=sorted(resumed), left_out=left_out)
        self.log("combiner", "twoserver.run", "", **detail)
        for part, whole in zip(proposal.described(), proposal.parts, strict=True):
            blocks = denseblock.part_blocks(whole)  # an unblocked part's (C deals for them)
            yield pb.CandidatePairs(member_a=part.member_a, member_b=part.member_b,
                                    clk=part.clk, pairs=part.pairs, last=True,
                                    block_rows_a=[a for a, _ in blocks],
                                    block_rows_b=[b for _, b in blocks])  # fmt: skip

    def keys_check(self, members: list[str], held: list[Held]) -> None:
        """A run with a member sent without band keys (a query's, `band_keys_withheld`)
        refused where S1 would join keys (core/exhaustive.py `keys_needed`): the client sends
        the records again with them (BAND_KEYS_NEEDED, docs/protocol.md "A query without band
        keys"); under `query_band_keys` "refuse" (the default) refused `band_keys_refused`,
        no keys asked for. Before the query is counted (`run_held`)."""
        keyless = [m for m, h in zip(members, held, strict=True) if not h.sealed]
        if keyless and exhaustive_.keys_needed(members, self.exhaustive,
                                               [h.records for h in held],
                                               self.small_member, self.query_whole):  # fmt: skip
            if self.query_band_keys == "refuse":  # no keys asked for (exhaustive.py)
                reason = f"{BAND_KEYS_REFUSED}: " + exhaustive_.keys_refused(
                    sum(h.records for h in held if not h.sealed),
                    max((h.records for h in held if h.sealed), default=0), self.query_whole,
                    self.exhaustive, self.small_member)  # fmt: skip
                self.log("combiner", "twoserver.refused", members=members, reason=reason)
                raise errors.FailedPrecondition(reason)
            reason = (f"{BAND_KEYS_NEEDED}: {keyless[0]!r} came without band keys, but S1 "
                      f"blocks this run (its records times an upload's are over S1's "
                      f"unblocked bound: the {self.exhaustive:,}-pair caps', and "
                      f"--query-whole-pairs {self.query_whole:,}): send the records again "
                      "with their band keys")  # fmt: skip
            self.log("combiner", "twoserver.refused", members=members, reason=reason)
            raise errors.FailedPrecondition(reason)

    def _checked(
        self, m: pb.CircuitBatch, proposal: Proposal
    ) -> tuple[Rows, Rows, Bools, Checked | None]:
        """The batch's pairs (a part of the proposal, C's extras or reach pairs checked)."""
        proposal.check_rule(part_rule(m, "batch"))
        if m.proposed:
            part = proposal.part(m.part, m.offset, m.count, m.cutoffs)
            names = (proposal.members[part.member_a], proposal.members[part.member_b])
            if names != (m.member_a, m.member_b) or part.clk != m.clk:
                raise Refused(f"part: {m.part} is {names[0]!r} x {names[1]!r} on clk {part.clk}, "
                              f"not {m.member_a!r} x {m.member_b!r} on clk {m.clk}")  # fmt: skip
            return part.rows_a, part.rows_b, np.zeros(len(part), bool), None
        rows_a, rows_b = to_rows(m.rows_a, "rows_a"), to_rows(m.rows_b, "rows_b")
        check = proposal.check_reach if m.reach else proposal.check
        checked = check(m.member_a, m.member_b, m.clk, rows_a, rows_b, m.cutoffs)
        return rows_a, rows_b, checked.proposed, checked

    @_from("combiner")
    @trimmed
    def Evaluate(self, request: pb.CircuitBatch, context: Any) -> pb.OutputShares:
        held, circuit, _ = self.batch(request)
        members = [request.member_a, request.member_b]
        reused(self, request.batch)
        acknowledge(self, request)  # the batches C journaled since its last (`acknowledged`)
        with self.lock:
            proposal = self.proposals.of(request.member_a, request.member_b)
            if proposal is None:
                ended = self.proposals.ended(request.member_a, request.member_b)
                raise errors.FailedPrecondition(
                    f"batch: {ended}"
                    if ended
                    else "batch: S1 has proposed no run over these uploads (Propose first)"
                )
            try:
                rows_a, rows_b, drop, checked = self._checked(request, proposal)
            except Refused as exc:
                self.log("combiner", "twoserver.refused", members=members, reason=str(exc))
                raise errors.PermissionDenied(str(exc)) from None
            # its part's blocks held (a batch naming blocks), before its pairs are counted
            dense = dense_inputs(self, request, rows_a, rows_b, proposal.id)
            reach = request.reach  # a reach batch: its own budget, bounds and audit entry
            self.spend(request.member_a, request.member_b, rows_a[~drop], rows_b[~drop], reach)
            if checked is not None:
                (proposal.commit_reach if reach else proposal.commit)(checked)
        if checked is not None:  # every extras or reach batch, whatever S1 answered
            self._log_asked(proposal, checked, members, request.clk, reach)
        party = batch_party(self, 0, held, circuit, request, rows_a, rows_b, dense)
        mask = secrets.token_bytes(linkbit.SEED_BYTES)
        first = pb.RoundMessage(batch=request.batch, checked=batch_digest(request),
                                rows_a=from_rows(rows_a), rows_b=from_rows(rows_b), mask=mask,
                                drop=np.packbits(drop, bitorder="little").tobytes(),
                                run=proposal.id, nonce=party.nonce())  # fmt: skip
        # What fixes the rounds, kept before them: a batch cut during them is run again
        # on the same (rpc/twoserver_resume.py `rerun`).
        keep_inputs(self, request, len(rows_a), request.SerializeToString(),
                    first.SerializeToString(), *kept_parts(dense))  # fmt: skip
        try:
            sent, received = self.s2.exchange(first, party)
        except triplecheck.DealRefused as exc:
            self.inputs.drop(request.batch, "refused: its deal failed the triples' check")
            self.log("combiner", "twoserver.deal", members=members, batch=request.batch,
                     run=proposal.id, reason=str(exc))  # fmt: skip
            raise triplecheck.refused(request.batch, exc) from None
        shares = _outputs(party, request.proposed, rows_a, rows_b, drop, mask)
        keep_batch(self, request, len(rows_a), shares, party.circuit.rounds, sent, received)
        self.inputs.drop(request.batch, "its output shares are kept")
        return pb.OutputShares(shares=shares, round_bytes_sent=sent,
                               round_bytes_received=received,
                               rounds=party.circuit.rounds)  # fmt: skip

    @_from("combiner")
    def Forget(self, request: pb.ForgetRequest, context: Any) -> pb.ForgetReply:
        return pb.ForgetReply(dropped=len(self.forget(request)))

    @_from("combiner")
    def Resume(self, request: pb.ResumeRequest, context: Any) -> pb.OutputShares:
        return resume(self, request, lambda inputs: rerun(self, self.s2, inputs))

    @_from("combiner")
    def Acknowledge(self, request: pb.AcknowledgeRequest, context: Any) -> pb.AcknowledgeReply:
        return acknowledge(self, request)

    @_from("combiner")
    @trimmed
    def PrepareBlocks(self, request: pb.BlockDeal, context: Any) -> pb.BlocksReply:
        return s1_prepare(self, self.s2, request)

    @_from("combiner")
    def Holds(self, request: pb.HoldsRequest, context: Any) -> pb.HoldsReply:
        return holds.answer(self, request)

    def _log_asked(self, proposal: Proposal, checked: Checked, members: list[str], clk: int,
                   reach: bool) -> None:  # fmt: skip
        """A batch's `twoserver.extras` or `twoserver.reach` entry: the pairs evaluated and,
        for S1's operator only, those answered 0 by the per-upload cap (`capped`) or beyond
        the reach quota (`over_quota`, with the `quota` and the pairs it counted so far):
        one entry a batch either way (an extras batch all of whose pairs S1 proposed or
        scores on the other CLK included), so C cannot tell such a batch by S1's timing (as the
        ledger's and the pair budget's rows: one each a batch, empty where S1 evaluated
        nothing, core/rowledger.py, core/pairbudget.py)."""
        kind = "reach" if reach else "extra"
        detail: dict[str, object] = {
            "run": proposal.id, "members": members, "clk": clk, "pairs": checked.extras,
            "run_total": proposal.reached if reach else proposal.extras,
            "capped": checked.capped,
        }  # fmt: skip
        if reach:
            ledger = proposal.ledger
            used = ledger.count(members[0], members[1], kind) if ledger is not None else 0
            detail.update(over_quota=checked.over_quota, quota=checked.quota, quota_used=used)
        self.log("combiner", "twoserver." + ("reach" if reach else "extras"), "", **detail)
        if checked.capped or checked.over_quota:
            log.info("S1 answered 0, unevaluated, %s of %s x %s in run %s: %d past "
                     "its per-upload cap, %d beyond the reach quota (audited)",
                     counted(checked.capped + checked.over_quota, f"{kind} pair"), *members,
                     proposal.id,
                     checked.capped, checked.over_quota)  # fmt: skip


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
        return guarded_upload(self, request, context)

    @_from("operator")
    def Run(self, request: pb.TwoServerRunRequest, context: Any) -> pb.TwoServerRunReply:
        members = list(request.members) or sorted(self.held)
        if len(members) < 2 or len(set(members)) != len(members):
            raise errors.InvalidArgument("members: two or more, each named once")
        held = [self.member(m, "members") for m in members]
        if not MIN_THRESHOLD <= request.threshold <= 1:
            raise errors.InvalidArgument(
                f"threshold: {request.threshold} is not in {THRESHOLD_RANGE}"
            )
        rules = {h.rule for h in held}  # the schema's, as each member's upload says
        rule = rules.pop() if len(rules) == 1 else NO_RULE
        try:
            combiner = Combiner(None, request.threshold, buckets=list(request.buckets) or None,
                                clks=len(held[0].bits), rule=rule)  # fmt: skip
        except ValueError as exc:
            raise errors.InvalidArgument(f"buckets: {exc}") from None
        if not self.running.acquire(blocking=False):
            raise errors.FailedPrecondition("a run is in progress on this combiner")
        servers = self.servers(members, held)
        try:
            result = tworun.drive(servers, combiner)
        finally:
            servers.close()  # (the last batch acknowledged)
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
        close_guard(self.service)
        self.service.close()


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
    threshold: float | None = None,
    query_limits: QueryLimits | None = None,
    exhaustive: int | None = None,
    small_member: int | None = None,
    query_whole: int | None = None,
    standing_bytes: int | None = None,
    query_band_keys: str | None = None,
) -> RunningRole:
    """Listen on `address` (port 0: a free one) as `role` ("s1": needs S2's address `s2`;
    "s2"; "combiner": needs both). `key`: this role's (peers are called with it, over TLS
    with `peer_credentials`); `member_key`: the members' (uploads only; or its digest);
    `keys`: by caller ("s1", "s2", "combiner", "operator"), the key (or `sha256:` digest)
    of each party this role answers (rpc/twoserver_keys.py; None: every party's is `key`);
    `clock` (seconds) ages S2's batches and S1's proposals; `data_dir`: where the role keeps
    its audit log (storage/twoserver_audit.py) and what it holds, restored at start
    (storage/role_store.py; None: memory only, no log); `threshold`: S1 runs at this one
    only (None: the combiner's); `exhaustive`: S1 compares a pair of members of at most this
    many pairs without blocking (core/exhaustive.py; None: `DEFAULT_PAIRS`, 0: blocks every
    pair); `small_member`: and a pair whose smaller member has under `SMALL_MEMBER` records
    of up to this many (None: `DEFAULT_SMALL_PAIRS`, 0: none); `query_whole`: and a query
    whose records times its partners' are at most this many (`run_cap`; None:
    `DEFAULT_QUERY_WHOLE`, 0: none); `query_band_keys`: S1's "refuse" (a query over those
    refused, its band keys never asked for) or "allow" (asked for, the query blocked; None:
    `DEFAULT_QUERY_BAND_KEYS`);
    `query_limits`: S1's and S2's own limit on queries (core/querylimit.py; None: defaults);
    `standing_bytes`: S1's and S2's bound on the partners they keep converted
    (rpc/twoserver_standcache.py; None: `MOST_BYTES`)."""
    service: _Role
    if role == "s1":
        if not s2:
            raise ValueError("S1 needs S2's address")
        service = BlockingService(key, member_key, ShareExchange(s2, key, peer_credentials), keys,
                                  threshold, clock, exhaustive, small_member,
                                  query_whole, query_band_keys)  # fmt: skip
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
    service.start(data_dir, query_limits)
    service.standing.most = standing_bytes
    # The circuits its first run or query would build, built now (core/circuitwarm.py).
    shapes = [Shape(h.bits, h.rule) for h in getattr(service, "held", {}).values()]
    warm(NAMES[role], shapes, [threshold] if threshold else ())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=f"bm-{role}"),
        options=[*channel_options(), EXCLUSIVE_PORT],
    )
    adders = {"s1": pb_grpc.add_TwoServerBlockingServicer_to_server,
              "s2": pb_grpc.add_TwoServerSharesServicer_to_server,
              "combiner": pb_grpc.add_TwoServerCombinerServicer_to_server}  # fmt: skip
    adders[role](service, server)  # type: ignore[operator]
    port = add_port(server, address, credentials)
    if not port:
        service.close()
        raise cannot_listen(address)
    server.start()
    log.info("%s listening on port %d (message limit %d bytes)", NAMES[role], port,
             MAX_MESSAGE_BYTES)  # fmt: skip
    return RunningRole(role, server, port, service)
