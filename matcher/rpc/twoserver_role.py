"""What the two-server run's three roles share (rpc/twoserver_service.py serves them): the
caller check of each RPC (`_from`), the uploads held and the checks of a circuit batch
(`_Role`), the batch digest S1 and S2 compare (`batch_digest`), and a server's output shares
(`_outputs`)."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.core import audit, linkbit
from blindmatch.matcher.core.batchkeep import MAX_INPUTS, BatchKeep
from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.core.proposal import Proposal
from blindmatch.matcher.core.querylimit import QueryLimits
from blindmatch.matcher.core.rowledger import KINDS, RowLedger
from blindmatch.matcher.core.tickets import QUERY_MARK
from blindmatch.matcher.core.twoserver import PairBatch, ShareServer
from blindmatch.matcher.domain import counted
from blindmatch.matcher.rpc.auth import bearer_token
from blindmatch.matcher.rpc.status import abort, rpc_errors
from blindmatch.matcher.rpc.twoserver_batch import batch_circuit
from blindmatch.matcher.rpc.twoserver_blocks import HeldBlocks
from blindmatch.matcher.rpc.twoserver_keys import Keys, one_project
from blindmatch.matcher.rpc.twoserver_margin import Dense, Runner
from blindmatch.matcher.rpc.twoserver_presort import Presorter
from blindmatch.matcher.rpc.twoserver_proposals import Proposals
from blindmatch.matcher.rpc.twoserver_queries import RoleQueries
from blindmatch.matcher.rpc.twoserver_standcache import Standings
from blindmatch.matcher.rpc.twoserver_uploads import Held, held_from, read_kept
from blindmatch.matcher.storage.dirowner import refuse_others
from blindmatch.matcher.storage.role_store import RoleStore
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from blindmatch.protos import blindmatch_pb2 as pb

log = logging.getLogger("blindmatch.matcher.twoserver")

NAMES = {"s1": "S1", "s2": "S2", "combiner": "the combiner"}
F = TypeVar("F", bound=Callable[..., Any])
Rows = npt.NDArray[np.uint32]
Bools = npt.NDArray[np.bool_]


def _from(caller: str) -> Callable[[F], F]:
    """An RPC `caller` makes (rpc/twoserver_keys.py): refused without its key; errors to
    statuses."""

    def decorate(method: F) -> F:
        wrapped = rpc_errors(method)

        @functools.wraps(method)
        def call(self: _Role, request: Any, context: Any) -> Any:
            try:  # two `authorization` entries: Unauthenticated (`bearer_token`)
                token = bearer_token(context.invocation_metadata())
                self.keys.check(NAMES[self.role], method.__name__, caller, token)
            except errors.ServiceError as exc:
                abort(context, exc)
            return wrapped(self, request, context)

        return call  # type: ignore[return-value]

    return decorate


def batch_digest(m: pb.CircuitBatch) -> bytes:
    """SHA-256 of a batch less C's setup: equal on S1 and S2 exactly when C sent both the
    same pairs, members, CLK and cut-offs."""
    bare = pb.CircuitBatch()
    bare.CopyFrom(m)
    bare.setup = b""
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).digest()


class _Role:
    """What the three roles share: the uploads held, the keys."""

    def __init__(
        self,
        role: str,
        key: str,
        member_key: str,
        keys: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role, self.keys = role, Keys(role, key, member_key, keys)
        self.audit: RoleAudit | None = None  # create_role's data_dir
        self.store: RoleStore | None = None  # the uploads and budget kept there
        self.held: dict[str, Held] = {}
        self.lock = threading.Lock()
        self.budget = PairBudget()  # each pair's evaluations (S1's and S2's)
        # S1, S2: each batch of the proposal's output shares until C acknowledges it
        # (core/batchkeep.py, rpc/twoserver_resume.py); on disk with a data dir
        self.batches = BatchKeep()
        # S1, S2: each batch's inputs from before its rounds until C acknowledges it (or, S1,
        # until its output is kept): a batch cut during its rounds is run again on them
        self.inputs = BatchKeep(max_batches=MAX_INPUTS)
        # S1: the runs it proposed (core/proposal.py), by their members; a pair of members
        # is in one at most, so a batch's two members name its proposal (at most
        # MAX_PROPOSALS in flight: rpc/twoserver_proposals.py).
        self.proposals = Proposals(clock)
        self.runs: set[tuple[str, str, str]] = set()  # S2: (run, member_a, member_b) logged
        # S1's and S2's own query limit (rpc/twoserver_queries.py); the combiner keeps none
        self.queries = RoleQueries(NAMES[role]) if role in ("s1", "s2") else None
        # S1, S2: unblocked parts' blocks, every pair's H shares (rpc/twoserver_blocks.py)
        self.dense = HeldBlocks(clock)
        # S1, S2: standing partners converted once for queries (rpc/twoserver_standcache.py)
        self.standing = Standings(clock=clock, audit=self.log)
        # S1: each upload's band keys sorted as it arrives (rpc/twoserver_presort.py)
        self.presorter = Presorter() if role == "s1" else None

    @property
    def proposal(self) -> Proposal | None:
        """S1's latest proposal (None: none)."""
        return self.proposals.latest()

    def end_proposals(self, names: set[str]) -> None:
        """End the proposals over any of `names` (an upload replaced or dropped)."""
        self.proposals.end(names)

    def start(self, data_dir: Path | None, query_limits: QueryLimits | None = None) -> None:
        """S1's and S2's query limits (None: the defaults), then `keep` with a data dir."""
        if self.queries is not None:
            self.queries = RoleQueries(NAMES[self.role], query_limits)
        if data_dir is not None:
            self.keep(data_dir)

    def admit_queries(self, names: list[str], held: list[Held]) -> None:
        """S1, S2: count the queries among `names` (uploads compared), or refuse beyond the
        role's query limit (rpc/twoserver_queries.py)."""
        if self.queries is not None:
            self.queries.admit(names, [h.records for h in held], self.log)

    def keep(self, data_dir: Path) -> None:
        """Audit to `data_dir` and keep the uploads and the pair budget there
        (storage/role_store.py), holding what it kept before: a `twoserver.restored` entry
        names it. `StartupRefused` (nothing held) on a store that cannot be read whole, or
        on a dir that is the matcher's or another role's (storage/dirowner.py)."""
        refuse_others(data_dir, self.role)
        self.audit = RoleAudit(data_dir, self.role)
        start = time.perf_counter()
        log.info("%s reading what it holds in %s (uploads, pairs evaluated) before it listens",
                 NAMES[self.role], data_dir)  # fmt: skip
        self.batches = BatchKeep(data_dir / "batches")
        # (the inputs on disk only: S2's are 5.2 MB a batch, read back only for a rerun)
        self.inputs = BatchKeep(data_dir / "batch-inputs", max_batches=MAX_INPUTS, memory=False)
        try:
            self.store = RoleStore(data_dir, self.role)
            restored = self.store.load(held_from)
        except BaseException:
            self.close()
            raise
        self.held = restored.held
        for name, h in sorted(self.held.items()):
            self.presort(name, h)
        self.budget = PairBudget(self.store.spend)
        queries = self.queries.keep(self.store) if self.queries is not None else 0
        for (a, b, reach), keys in restored.spent.items():
            self.budget.restore(a, b, keys, reach=reach)
        for name in restored.sealed:  # restored from a backup (storage/role_backup.py)
            self.budget.seal(name)
        ledger = dict.fromkeys(KINDS, 0)  # S1's ledger entries restored, by kind
        if self.role == "s1":  # S1's per-upload cap and reach quota (core/rowledger.py)
            self.proposals.rows = RowLedger(self.store.note_rows)
            for a, b, kind, rows_a, rows_b, run in restored.ledger:
                self.proposals.rows.restore(a, b, kind, rows_a, rows_b, run)
                ledger[kind] += len(rows_a)
        seconds = round(time.perf_counter() - start, 3)
        if self.held or restored.discarded or queries:  # not on a first start
            self.log(self.role, "twoserver.restored", "", uploads=sorted(self.held),
                     records={n: h.records for n, h in sorted(self.held.items())},
                     pairs=self.budget.pairs(), discarded=restored.discarded,
                     queries=queries, sealed=len(restored.sealed),
                     backup_taken=restored.backup_taken, seconds=seconds,
                     **({"ledger": ledger} if self.role == "s1" else {}))  # fmt: skip
            log.info("%s restored %s, %d pairs evaluated and %d ledger entries from "
                     "%s in %.1f s", NAMES[self.role], counted(len(self.held), "upload"),
                     self.budget.pairs(),
                     sum(ledger.values()), self.store.path, seconds)  # fmt: skip
        if restored.sealed:
            log.warning(  # docs/operations.md "Backing up S1 and S2"
                "%s holds %s restored from a backup taken at %s: every pair of two "
                "of them counts as evaluated (the uploads it forgot and the queries it counted "
                "after that backup are in it only if `admin restore --previous` replayed "
                "them)", NAMES[self.role],
                counted(len(restored.sealed), "upload"), time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                    time.gmtime(restored.backup_taken or 0)),
            )  # fmt: skip

    def presort(self, name: str, held: Held) -> None:
        """S1: sort `name`'s upload's band keys on the presorter's thread (not a query's)."""
        if self.presorter is not None and held.sealed and QUERY_MARK not in name:
            self.presorter.submit(name, held.sealed, lambda: self.held.get(name) is held)

    def close(self) -> None:
        self.standing.close()
        if self.presorter is not None:
            self.presorter.close()
        for kept in (self.store, self.audit):
            if kept is not None:
                kept.close()

    def log(self, actor: str, action: str, member: str = "", **detail: object) -> None:
        """An audit entry (storage/twoserver_audit.py), durable before this returns; none
        without a data dir."""
        if self.audit is not None:
            detail = {"role": self.role, **detail}
            self.audit.log.append(audit.Event(actor, action, member=member, detail=detail))

    def upload(self, parts: Iterator[pb.SharedPart], vouched: str = "") -> pb.SharedReceipt:
        """`vouched`: the name an upload ticket admits (core/tickets.py), the upload's;
        it replaces that project member's upload under any earlier tag."""
        member, held, file, digest, apart = read_kept(
            parts, self.role, self.store, lambda member: self._admit(member, vouched)
        )
        try:
            self._hold(member, held, vouched, digest, file, apart)
        except BaseException:
            if self.store is not None and file:
                self.store.discard(file, apart)
            raise
        self.presort(member, held)  # the reply does not wait for it
        log.info("%s holds %s's upload (%s)", NAMES[self.role], member,
                 counted(held.records, "record"))  # fmt: skip
        return pb.SharedReceipt(member=member, records=held.records, clks=len(held.bits))

    def _admit(self, member: str, vouched: str) -> None:
        """Refuse an upload of `member` beyond the query limit, or not the ticket's."""
        if self.queries is not None:
            self.queries.check_upload(member)
        if (vouched and member != vouched) or (not vouched and "/" in member):
            raise errors.PermissionDenied(
                f"member: {member!r}, but the upload ticket admits {vouched!r} only"
                if vouched
                else f"member: {member!r} is a project's name (project/member/tag): only the "
                "matcher's upload ticket admits it"
            )

    def _hold(self, member: str, held: Held, vouched: str, digest: str, file: str,
              apart: dict[str, str] | None = None) -> None:  # fmt: skip
        """Hold `member`'s upload (its arrays written to the store's `file`, "" if not
        kept; `apart` as `RoleStore.write` had it), in place of its earlier ones; its layout
        checked against the others'."""
        with self.lock:
            old = []
            if vouched:  # the project member's earlier uploads, under other tags, go
                prefix = vouched.rsplit("/", 1)[0] + "/"
                old = [m for m in self.held if m.startswith(prefix) and m != member]
            for other, h in self.held.items():
                if vouched and not other.startswith(vouched.split("/", 1)[0] + "/"):
                    continue  # another project's uploads may have another layout
                if (
                    other != member
                    and other not in old
                    and (h.bits, h.bands) != (held.bits, held.bands)
                ):
                    raise errors.InvalidArgument(
                        f"clk_bits/bands: {member}'s CLKs are {list(held.bits)} bits "
                        f"({list(held.bands)} bands), {other}'s {list(h.bits)} "
                        f"({list(h.bands)}): every member uploads the same layout"
                    )  # fmt: skip
            self.log(member, "twoserver.upload", member, records=held.records,
                     clks=len(held.bits), sha256=digest)  # fmt: skip
            if self.store is not None and file:  # kept (not a query's)
                self.store.put(member, file, held.records, held.meta(), held.named(), digest,
                               old, apart)  # fmt: skip
            for name in old:
                del self.held[name]
                self.budget.forget(name)
            self.held[member] = held
            self.budget.forget(member)
            self.batches.forget({member, *old})
            self.inputs.forget({member, *old})
            self.dense.forget({member, *old})
            self.standing.forget({member, *old}, f"its upload replaced by a new upload of {member}")
            self.end_proposals({member, *old})  # a run proposed over an earlier upload ends

    def forget(self, request: pb.ForgetRequest) -> list[str]:
        """Drop the uploads of `request.member` in `request.project` (every tag), or with
        no member every upload of the project: the combiner's call when a member erases its
        data or a project expires; with member `@` (QUERY_MARK) every query's and watch's
        records in the project: a restarted combiner's (none is open then). A run proposed
        over one of them ends. The names dropped."""
        project, member = request.project, request.member
        for field, value in (("project", project), ("member", member)):
            if "/" in value or (field == "project" and not value):
                raise errors.InvalidArgument(
                    f"{field}: {value!r}; a name without '/'"
                    + (", not empty" if field == "project" else "")
                )
        prefix = f"{project}/{member}/" if member else f"{project}/"
        with self.lock:
            if member == QUERY_MARK:
                prefix = f"{project}/*{QUERY_MARK}*/"  # (as the audit entry names it)
                dropped = sorted(m for m in self.held if m.startswith(f"{project}/")
                                 and QUERY_MARK in m.split("/")[1])  # fmt: skip
            else:
                dropped = sorted(m for m in self.held if m.startswith(prefix))
            if self.store is not None:  # off the disk before the reply
                self.store.drop(dropped)
            for name in dropped:
                del self.held[name]
                self.budget.forget(name)
            self.batches.forget(dropped)
            self.inputs.forget(dropped)
            self.dense.forget(set(dropped))
            self.standing.forget(set(dropped), f"its upload forgotten (Forget of {prefix}: an "
                                 "erasure or expiry)")  # fmt: skip
            self.end_proposals(set(dropped))
            self.runs = {r for r in self.runs if not set(r[1:]) & set(dropped)}
            self.log("combiner", "twoserver.forget", prefix, dropped=len(dropped),
                     names=dropped)  # fmt: skip
        log.info(
            "%s dropped %s under %s", NAMES[self.role], counted(len(dropped), "upload"), prefix
        )
        return dropped

    def vouched(self, context: Any) -> str:
        """The name the caller's upload ticket admits ("" for the members' key)."""
        token = bearer_token(context.invocation_metadata())
        return self.keys.vouched(NAMES[self.role], token)

    def run_held(
        self,
        request: pb.ProposeRequest,
        check: Callable[[list[str], list[Held]], None] | None = None,
    ) -> tuple[list[str], list[Held]]:
        """A run's members, each held with as many records as C holds, checked (and by
        `check`, before a query is counted against the query limit)."""
        members = list(request.members)
        if len(members) < 2 or len(set(members)) != len(members):
            raise errors.InvalidArgument("members: two or more, each named once")
        if len(request.records) != len(members):
            raise errors.InvalidArgument("records: one count a member")
        one_project(members, NAMES[self.role])
        held = [self.member(m, "members") for m in members]
        for name, h, records in zip(members, held, request.records, strict=True):
            if h.records != records:
                raise errors.InvalidArgument(
                    f"records: {records} of {name!r} at the combiner, but "
                    f"{NAMES[self.role]} holds {h.records} (the uploads differ)"
                )
        if check is not None:
            check(members, held)
        self.admit_queries(members, held)
        return members, held

    def member(self, name: str, field: str) -> Held:
        held = self.held.get(name)
        if held is None:
            raise errors.FailedPrecondition(
                f"{field}: {NAMES[self.role]} holds no upload of {name!r}"
            )
        return held

    def pair_held(self, m: pb.CircuitBatch | pb.BlockDeal) -> list[Held]:
        """A batch's (or a block deal's) two members' uploads, as many records as C holds."""
        if m.member_a == m.member_b:
            raise errors.InvalidArgument("member_a/member_b: two members")
        one_project([m.member_a, m.member_b], NAMES[self.role])
        held = [self.member(m.member_a, "member_a"), self.member(m.member_b, "member_b")]
        for name, h, records in (("a", held[0], m.records_a), ("b", held[1], m.records_b)):
            if h.records != records:
                raise errors.InvalidArgument(
                    f"records_{name}: {records} at the combiner, but {NAMES[self.role]} holds "
                    f"{h.records} of {getattr(m, 'member_' + name)!r} (the uploads differ)"
                )
        return held

    def batch(self, m: pb.CircuitBatch) -> tuple[list[Held], linkbit.Circuit, int]:
        """A batch of the circuit, checked but for its pairs: the two members' uploads, the
        circuit (its cut-offs the threshold and none or the default buckets), the number of
        pairs; C's setup checked to fit them (rpc/twoserver_batch.py)."""
        if not m.batch or len(m.batch) > 64:
            raise errors.InvalidArgument("batch: an id of 1 to 64 characters")
        held = self.pair_held(m)
        self.admit_queries([m.member_a, m.member_b], held)
        circuit, count = batch_circuit(self.role, m, held)
        return held, circuit, count

    def spend(
        self, member_a: str, member_b: str, rows_a: Rows, rows_b: Rows, reach: bool = False
    ) -> None:
        """Count the (checked) batch's pairs evaluated (core/pairbudget.py; a reach batch's
        apart), or refuse it whole."""
        over = self.budget.spend(member_a, member_b, rows_a, rows_b, reach=reach)
        if over:
            self.log("combiner", "twoserver.refused", members=[member_a, member_b],
                     pairs=len(rows_a), over=over)  # fmt: skip
            n = self.budget.evaluations
            times = ("once" if n == 1 else f"{n} times") + (" at the reach cut-off" * reach)
            restored = self.budget.sealed(member_a, member_b) * (
                " (both uploads were restored from a backup, which cannot show the pairs "
                "evaluated after it was taken, so every pair of them counts as evaluated)"
            )
            raise errors.FailedPrecondition(
                f"rows_a/rows_b: {over} of the batch's {len(rows_a)} pairs would be evaluated "
                f"more than {times} since {member_a!r} and {member_b!r} uploaded{restored}; "
                f"{NAMES[self.role]} evaluates a pair at most {times} an upload (a run needs "
                "it once): the members upload again for another run"
            )

    def party(
        self, who: int, held: list[Held], circuit: linkbit.Circuit, clk: int, rows_a: Rows,
        rows_b: Rows, setup: bytes, nonce: bytes | None = None,
    ) -> linkbit.Party:  # fmt: skip
        shares = ShareServer([held[0].shares, held[1].shares], b"",
                             [held[0].popshares, held[1].popshares])  # fmt: skip
        try:
            party = shares.party(who, PairBatch(0, 1, clk, rows_a, rows_b), circuit, setup,
                                 nonce)  # fmt: skip
        except ValueError as exc:
            raise errors.InvalidArgument(f"setup: {exc}") from None
        return party


def _outputs(
    party: Runner, tagged: bool, rows_a: Rows, rows_b: Rows, drop: Bools, mask: bytes
) -> bytes:
    """A server's output shares: with `tagged` (a batch of the proposal) the rows gated by the
    link bit; 0 at `drop`; padded by `mask` (both servers the same pad)."""
    tags = linkbit.tags(rows_a, rows_b) if tagged else None
    keep = linkbit.keep_row(drop) if drop.any() else None
    return party.output(tags, keep, mask)


__all__ = ["NAMES", "Bools", "Dense", "Rows", "batch_digest"]
