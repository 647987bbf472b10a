"""A project in two-server mode (docs/operations.md "A project in two-server mode"): the
matcher as the combiner C of core/tworun.py, its members' shares at S1 and S2.

The matcher holds of each member's upload only how many records it has (a header alone,
usecases/uploads.py: as the stand-alone combiner, never a popcount), and names, with an
upload ticket it signs (core/tickets.py), what the member's shares are called at S1 and S2.
A run drives `tworun.drive` over S1 and S2 (the `Servers` the edge builds:
rpc/twoserver_client.py `RemoteServers`): S1 proposes the pairs, the circuit decides each
on the shares, and the matcher learns the link bits only. It shows its progress as a CLK run
does, and stores its links as a CLK run's, so results, disclosure levels and request
references are the same; the audit log records the run's parties and what crossed. A run
reuses what the matcher learned of each pair of unchanged uploads in earlier runs, kept as
soon as a run held it, even a run that failed part-way (core/outcomes.py,
storage/outcome_store.py, usecases/twojournal.py), so that only a new or changed upload's
pairs and the pairs of members a failed run did not finish go through the circuit; at other
cut-offs it is refused (`_earlier`), and where a failed run left a pair of members' batch
out, naming the members who upload again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import audit, linkbit, tickets, tworun
from blindmatch.matcher.core.circuitwarm import Shape, warm
from blindmatch.matcher.core.outcomes import Earlier
from blindmatch.matcher.core.runjournal import Forwarding
from blindmatch.matcher.core.runwords import for_members
from blindmatch.matcher.core.twoserver import Combiner, Proposed
from blindmatch.matcher.domain import NO_RULE, TWO_SERVER, WATCH_WAIT_SECONDS, Rule, Upload
from blindmatch.matcher.errors import FailedPrecondition, ServiceError, Unauthenticated
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.twobatches import (
    BatchJournal,
    Resumable,
    Resumed,
    resumable,
    resume,
)
from blindmatch.matcher.usecases.twojournal import StoreJournal, spent_at_s1, spent_refusal
from blindmatch.matcher.usecases.uploads import UploadHeader, check_planned_two_server

Report = Callable[[str, int, int], None]
# (names at S1 and S2, records, CLK widths) -> S1 and S2 as the combiner reaches them
ServersFactory = Callable[[list[str], list[int], list[int]], tworun.Servers]


@dataclass(frozen=True)
class Forgot:
    """One server's part of dropping a member's (or an expired project's) shares: how many
    uploads it dropped, or why it could not (`error`: unreachable, or a refusal); then its
    shares remain there (a server without `--data-dir` drops them when it restarts; one with
    it keeps them across a restart, and is asked again by the next `Erase`)."""

    server: str  # "S1" or "S2"
    dropped: int = 0
    error: str = ""


# (project, member or "" for every member) -> each server's part
Forget = Callable[[str, str], list[Forgot]]


def _unset(project: str, member: str) -> list[Forgot]:
    return [_unset_one(server, project, member) for server in ("S1", "S2")]


def _unset_one(server: str, project: str, member: str) -> Forgot:
    why = "this matcher was started without it (serve --two-server-s1/--two-server-s2)"
    return Forgot(server, error=why)


@dataclass(frozen=True)
class TwoServerSetup:
    """What `serve --two-server-s1/--two-server-s2` gives the matcher: where S1 and S2 are,
    the members' key (it signs upload tickets), how to reach them (`servers`), and a check
    that both answer (`reachable`: raises Unavailable naming the one that does not), and
    how to have both drop a project member's uploads (`forget`, both at once, never raising;
    `forget_one`: one of them, "S1" or "S2")."""

    s1: str
    s2: str
    member_key: str
    servers: ServersFactory
    reachable: Callable[[], None] = lambda: None
    forget: Forget = _unset
    forget_one: Callable[[str, str, str], Forgot] = _unset_one
    # Whether "S1" or "S2" holds each named upload (None and why, where it did not answer):
    # rpc/twoserver_holds.py, for `project show` of an upload started and not taken.
    holds: Callable[[str, list[str]], tuple[list[bool] | None, str]] | None = None
    # The matcher stops: its queries' background standing conversion stopped and given up at
    # S1 and S2 (rpc/twoserver_standdeal.py `Conversions.close`).
    close: Callable[[], object] = lambda: None
    # C's conversion of a standing partner started ahead of its queries (standahead: at its
    # upload, at the matcher's start; rpc/twoserver_standahead.py `Ahead`): (its name at S1
    # and S2, records, CLK widths, the project's threshold, the upload's rule), queued.
    convert_ahead: Callable[[str, int, tuple[int, ...], float, Rule], None] = lambda *_: None
    # Whether it does (`serve --two-server-convert-ahead`, the default; off, each partner's
    # first query starts its conversion).
    converts_ahead: bool = True
    # The matcher's channels to S1 and S2 (rpc/twoserver_channel.py `KeptChannels`): closed
    # last as it stops (after `close`, and the watches' Forget), their state's watchers
    # stopped and waited for; opened again as a matcher starts again on this set-up.
    disconnect: Callable[[], object] = lambda: None
    connect: Callable[[], object] = lambda: None
    # Whether the partner of that name at S1 and S2 is queued or being converted so; if so,
    # the callback is told, once, whether C holds its conversion as it ended, and if not why
    # (`Ahead.when_made`: as soon as C knows; realtime/twowatch.py's comparison of the upload
    # with the watches waits for it).
    when_converted: Callable[[str, Callable[[bool, str], None]], bool] = lambda *_: False
    # The longest that comparison waits before it goes by pairs (0: never waits).
    watch_wait: float = WATCH_WAIT_SECONDS


def not_set_up(what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{what}: this matcher was started without two-server servers; start it with "
        "`serve --two-server-s1 HOST:PORT --two-server-s2 HOST:PORT` (docs/operations.md)"
    )


@dataclass(frozen=True)
class Ticket:
    ticket: str
    name: str  # project/member/tag, the member's upload's name at S1 and S2
    s1: str
    s2: str
    expires: int


def issue_ticket(
    store: Store,
    setup: TwoServerSetup | None,
    project: str,
    member: str,
    planned: UploadHeader | None = None,
    query: bool = False,
) -> Ticket:
    """A ticket admitting `member`'s next upload at S1 and S2 (a fresh tag each time).
    `planned`: the header the upload will carry, refused here, before any share is sent,
    where Upload would refuse it for its encoding. `query`: a query ticket, for a query's
    records (realtime/twoquery.py), under a name that replaces none of the member's uploads."""
    found = store.project(project)
    if found.mode != TWO_SERVER:
        raise FailedPrecondition(
            f"project: {project!r} is not a two-server project (its members upload CLKs with "
            "`blindmatch upload`)"
        )
    if setup is None:
        raise not_set_up("project")
    if planned is not None:
        check_planned_two_server(store, replace(planned, project=project), member, query)
    tag = secrets.token_hex(12)
    name = tickets.query_name(project, member, tag) if query else f"{project}/{member}/{tag}"
    if not query:  # not whole until the matcher takes it (storage/ticket_store.py)
        store.note_started(project, member, name)
    expires = int(time.time() + (tickets.QUERY_TTL_SECONDS if query else tickets.TTL_SECONDS))
    return Ticket(tickets.issue(setup.member_key, name, expires), name, setup.s1, setup.s2,
                  expires)  # fmt: skip


def check_can_run(store: Store, setup: TwoServerSetup | None, project: str) -> None:
    """Before a two-server run is queued: the matcher knows S1 and S2, and both answer."""
    if store.project(project).mode != TWO_SERVER:
        return
    if setup is None:
        raise not_set_up("project")
    try:
        setup.reachable()
    except ServiceError as exc:  # read as a run's failure is (S1's and S2's addresses kept)
        exc.args = (for_members(str(exc)),)
        raise


def forget(
    store: Store, setup: TwoServerSetup | None, project: str, member: str = "", quiet: bool = False
) -> list[Forgot]:
    """Have S1 and S2 drop `member`'s uploads in `project` (every tag it uploaded under), or
    with no member every upload of the project (it expired): each server's part, a server
    that could not be reached or refused saying why. Recorded in the audit log (`quiet`:
    only where a server dropped something or failed)."""
    forgot = (setup.forget if setup is not None else _unset)(project, member)
    if not quiet or any(f.dropped or f.error for f in forgot):
        store.audit.append(
            audit.Event(
                audit.MATCHER, "twoserver.forget", project, member=member,
                detail={f.server: f.error or f"dropped {f.dropped}" for f in forgot},
            )
        )  # fmt: skip
    return forgot


class _Progress(Forwarding):
    """S1 and S2 as `drive` sees them, counting the proposed pairs through the circuit as
    the run's "compare" progress (the links' extras, after, are part of "solve")."""

    def __init__(self, servers: tworun.Servers, report: Report) -> None:
        self.servers, self.report = servers, report
        self.total = self.done = 0

    def propose(
        self,
        lacking: list[npt.NDArray[np.bool_]] | None,
        cutoffs: tuple[float, ...],
        rule: Rule = NO_RULE,
        only: Sequence[tuple[int, int]] | None = None,
    ) -> list[Proposed]:
        self.report("block", 0, 1)
        described = self.servers.propose(lacking, cutoffs, rule, only=only)
        self.total = sum(p.pairs for p in described)
        self.report("block", 1, 1)
        self.report("compare", 0, self.total)
        if not self.total:
            self.report("solve", 0, 1)
        return described

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
        out = self.servers.evaluate_part(index, offset, count, circuit, dealt, transcript,
                                         clock)  # fmt: skip
        self.done = min(self.total, self.done + count)
        self.report("compare", self.done, self.total)
        if self.done == self.total:
            self.report("solve", 0, 1)
        return out


def run(
    store: Store,
    setup: TwoServerSetup | None,
    run_id: str,
    inputs: list[tuple[str, Upload]],
    report: Report,
) -> tworun.TwoServerResult:
    """A two-server project's run over its members' current uploads (`inputs`): the links
    as a CLK run's (dataset k = inputs[k]); refused, naming the member, where an upload is
    not whole at S1 or S2; a party down fails it naming the party."""
    threshold = store.run(run_id).threshold
    if setup is None:
        raise not_set_up("run")
    parts = []
    for member, upload in inputs:
        part = store.two_server_part(upload.id)
        if part is None:
            raise FailedPrecondition(f"{member}'s upload holds CLKs, not a two-server upload")
        parts.append(part)
    widths = {p[1] for p in parts}
    if len(widths) != 1:
        raise FailedPrecondition(
            "the members' CLKs differ in width or fallback ("
            + ", ".join(f"{m}: {list(p[1])}" for (m, _), p in zip(inputs, parts, strict=True))
            + "): every member encodes with the same schema"
        )
    bits = list(widths.pop())
    # C holds no popcount: S1 and S2 hold their shares, and S1 which records lack the
    # fallback's fields (core/proposal.py). The schema's rule over both CLKs where every
    # member's upload carries the same one (core/gmwrule.py: S1 and S2 check it against the
    # uploads they hold); none where they differ, as the run's audit says.
    rule = _run_rule(store, inputs)
    combiner = Combiner(None, threshold, clks=len(bits), rule=rule)
    names = [p[0] for p in parts]
    project = store.run(run_id).project
    earlier, resuming = _earlier(store, project, inputs, names, combiner.cutoffs, rule)
    members = [m for m, _ in inputs]
    journal = StoreJournal(store, project, run_id, combiner.cutoffs, rule.text(), members, names)
    servers = setup.servers(names, [u.record_count for _, u in inputs], bits)
    resumed = Resumed({})
    try:  # the pairs of members a failure cut mid-batch, resumed (usecases/twobatches.py)
        if hasattr(servers, "watch_batches"):
            batches = BatchJournal(store, project, names)
            resumed = _resume(batches, servers, resuming, combiner, bits, members)
            servers.watch_batches(batches, sorted(resumed.partial))
        elif resuming:  # S1 and S2 reached otherwise: nothing to resume with
            raise spent_refusal(
                resuming[0].run_id, [(members[r.ends[0]], members[r.ends[1]]) for r in resuming]
            )
    except BaseException:
        close = getattr(servers, "close", None)
        if close is not None:
            close()
        raise
    earlier = replace(earlier, partial=resumed.partial)
    try:
        result = tworun.drive(_Progress(servers, report), combiner, earlier=earlier,
                              journal=journal)  # fmt: skip
    except ServiceError as exc:
        message, again = spent_at_s1(str(exc), members, names), []
        for member, name in zip(members, names, strict=True):
            # (or holds as many records as the matcher does not: the member sent S1 and S2
            # halves of different sizes, twoattack; a rerun would fail the same way)
            if f"holds no upload of {name!r}" in message or (
                f"of {name!r} at the combiner, but" in message
            ):
                again.append(member)
                message = (
                    f"{member}'s upload is not whole: {message}. {member} must upload again "
                    "(`blindmatch upload` sends all three parts)"
                )
        refused = isinstance(exc, Unauthenticated)  # S1's or S2's of a key (its flags)
        raise type(exc)(journal.after_failure(message, again, refused)) from None
    finally:
        close = getattr(servers, "close", None)
        if close is not None:
            close()
    kept = {}
    for (i, j), outcome in result.outcomes.items():
        if names[i] > names[j]:  # kept by the names' order
            i, j, outcome = j, i, outcome.flipped()
        kept[names[i], names[j]] = (inputs[i][0], inputs[j][0], outcome)
    store.keep_two_server_outcomes(project, run_id, combiner.cutoffs, rule.text(), kept)
    t = result.transcript
    sent = {f"{a}->{b}": n for (a, b), n in t.sent.items()}
    asked = resumed.bytes  # the `Resume` calls', counted in the run's bytes too
    for way, n in asked.items():
        sent[way] = sent.get(way, 0) + n
    store.audit.append(
        audit.Event(
            audit.MATCHER, "twoserver.run", store.run(run_id).project,
            detail={"run_id": run_id, "s1": setup.s1, "s2": setup.s2,
                    "members": [m for m, _ in inputs], "pairs": result.comparisons,
                    "reused": len(earlier.outcomes),
                    **({"resumed": {"pairs_of_members": len(resumed.partial),
                                    "batches_asked_again": resumed.asked,
                                    "their_pairs": resumed.pairs,
                                    "bytes": asked}} if resumed.partial else {}),
                    "links": len(result.links), "groups": result.groups, "rounds": t.rounds,
                    "cutoffs": list(combiner.cutoffs), "rule": _rule(store, inputs),
                    "bytes": dict(sorted(sent.items()))},
        )
    )  # fmt: skip
    return result


def _earlier(
    store: Store,
    project: str,
    inputs: list[tuple[str, Upload]],
    names: list[str],
    cutoffs: tuple[float, ...],
    rule: Rule,
) -> tuple[Earlier, list[Resumable]]:
    """The outcomes the run reuses (core/outcomes.py): of each pair of members whose two
    uploads are unchanged since a run kept their outcome. Refused where that run was
    at other cut-offs or another rule: its outcomes are link bits at those, and S1 and S2
    evaluate each pair once an upload (core/pairbudget.py), so those members upload again;
    and where a run failed with a batch of a pair of members out (pending,
    usecases/twojournal.py), one of those members uploads again, unless the journal holds
    every batch of it S1 and S2 evaluated but the one that was out (usecases/twobatches.py):
    those are resumed."""
    stored = store.two_server_outcomes(project, names)
    outcomes, stale, spent, resuming = {}, [], [], []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            low, high = sorted((names[i], names[j]))
            got = stored.get((low, high))
            if got is None:
                continue
            if got.pending:  # S1 and S2 may have evaluated pairs no outcome holds
                can = resumable(store, project, names, i, j, got.run_id)
                if can is not None and got.cutoffs == cutoffs and got.rule == rule.text():
                    resuming.append(can)
                else:
                    spent.append((inputs[i][0], inputs[j][0], got.run_id))
            elif got.cutoffs != cutoffs or got.rule != rule.text():
                stale.append((inputs[i][0], inputs[j][0], got))
            else:
                outcomes[i, j] = got.outcome if names[i] == low else got.outcome.flipped()
    if spent:
        raise spent_refusal(spent[0][2], [(a, b) for a, b, _ in spent])
    if stale:
        got = stale[0][2]
        what = (f"threshold {cutoffs[0]} (cut-offs {list(cutoffs)})" if got.cutoffs != cutoffs
                else f"rule {rule.text() or 'none'}")  # fmt: skip
        hint = (f"run at threshold {got.cutoffs[0]} again" if got.cutoffs != cutoffs
                else "run with that rule again")  # fmt: skip
        was = (f"threshold {got.cutoffs[0]} (cut-offs {list(got.cutoffs)})"
               if got.cutoffs != cutoffs else f"rule {got.rule or 'none'}")  # fmt: skip
        members = sorted({m for a, b, _ in stale for m in (a, b)})
        raise FailedPrecondition(
            f"a run at {what}, but run {got.run_id} evaluated the same uploads of "
            + ", ".join(f"{a} and {b}" for a, b, _ in stale)
            + f" at {was}: the combiner's outcomes of those pairs are link bits at that "
            "run's cut-offs and cannot be reused at others, and S1 and S2 evaluate each pair "
            f"once an upload; {hint}, or have "
            + ", ".join(members)
            + ' upload again (docs/operations.md "One run an upload")'
        )
    return Earlier(len(names), outcomes), resuming


def _resume(
    batches: BatchJournal,
    servers: object,
    resuming: list[Resumable],
    combiner: Combiner,
    bits: list[int],
    members: list[str],
) -> Resumed:
    """The pending pairs of members the journal can resume, resumed (usecases/twobatches.py);
    refused as an unresumable pending pair is where S1 or S2 holds no shares of the batch
    that was out, with their reason."""
    width2 = bits[1] if combiner.rule.active and len(bits) > 1 else 0

    def refused(r: Resumable, reason: str) -> Exception:
        exc = spent_refusal(r.run_id, [(members[r.ends[0]], members[r.ends[1]])])
        return type(exc)(f"{exc} (the batch that was out cannot be asked again: {reason})")

    return resume(batches, servers, resuming,
                  lambda clk: combiner.circuit(bits[clk], clk, width2), refused)  # fmt: skip


def _run_rule(store: Store, inputs: list[tuple[str, Upload]]) -> Rule:
    """The rule the run applies: the schema's `blindmatch.rule` where every member's upload
    records the same one (S1 and S2 hold it with the shares too), none otherwise."""
    rules = {store.score_rule(u.id) for _, u in inputs}
    return rules.pop() if len(rules) == 1 else NO_RULE


def _rule(store: Store, inputs: list[tuple[str, Upload]]) -> str:
    """The schema's rule over both CLKs the members encoded with, as the run's audit names
    it: "applied" (on the shares of both CLKs, core/gmwrule.py), "none", or "not applied"
    where the members' uploads record different rules."""
    rules = {store.score_rule(u.id) for _, u in inputs}
    if not any(r.active for r in rules):
        return "none"
    return "applied" if len(rules) == 1 else "not applied"


__all__ = ["Forgot", "Ticket", "TwoServerSetup", "check_can_run", "forget", "issue_ticket", "run"]


def warm_circuits(store: Store, projects: Iterable[str] | None = None) -> None:
    """Have the circuits of the live two-server projects' first runs and queries built
    ahead, on a thread of its own (core/circuitwarm.py): at each project's threshold, on the
    shapes of its current uploads (none yet: the recommended one). `projects`: those only
    (a project just created, one just uploaded to), else every live one (the start)."""
    thresholds: set[float] = set()
    shapes: set[Shape] = set()
    for name in store.live_projects() if projects is None else projects:
        if store.mode_of(name) != TWO_SERVER:
            continue
        thresholds.add(store.project(name).threshold)
        for upload in store.current_uploads(name).values():
            part = store.two_server_part(upload.id)
            if part is not None:
                shapes.add(Shape(tuple(part[1]), store.score_rule(upload.id)))
    if thresholds or projects is None:  # at the start, none: the default threshold's
        warm("the combiner", shapes, thresholds)
