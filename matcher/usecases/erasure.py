"""Erasure: a member deletes everything the matcher holds of its data in a project, now.

Its uploads (rows and files), every result row that involves its records, in its own
results and its partners', and its standing index; the audit log keeps the fact and the
counts. Erasure wins over runs: a run of the project that is queued or running is
cancelled (`RetentionStore.erase_member`), and stores nothing when it ends.

An erasure spans two databases and the upload files: its rows go, with its `erase` entry
and an erasure intent, in one transaction of `blindmatch.sqlite`; then its files are
unlinked, its standing index deleted from `index.sqlite` (and from memory), both write-ahead
logs checkpointed, and only then its intent forgotten. A matcher stopped anywhere in between
(a crash, a kill -9) completes the erasure at its next start, before it serves anything
(`complete_cut_short`), and records what was left in an `erase.complete` entry; until then
`blindmatch admin check` reports the leftover data (storage/erasure_check.py). In a
two-server project S1's and S2's Forget is part of it: the intent is forgotten once both have
answered, and a restart asks them again. What fails after the transaction while the matcher
stays up (a full disk, S1 or S2 down) keeps the intent, is named in the reply (`pending`),
and is tried again in the background until done (usecases/erasure_retry.py). A matcher from
before erasure intents left none: the erasures it cut short are found from the audit log
(storage/erasure_log.py) and completed at start the same way. The purposes and named users
of the member's logged queries are blanked with its index (`forget_queries`; their counts,
its query limits and the audit log stay: docs/operations.md), and every start blanks any an
erasure left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from typing import cast

from blindmatch.matcher.core import audit
from blindmatch.matcher.domain import TWO_SERVER, Erasure, counted
from blindmatch.matcher.errors import NotFound
from blindmatch.matcher.realtime.engine import Realtime
from blindmatch.matcher.realtime.shards import RemoteLookups
from blindmatch.matcher.storage.erasure_log import FOUND_IN_LOG, LoggedErasure, found_in_log
from blindmatch.matcher.storage.retention_store import COMPLETED, CutShort
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases import tworuns
from blindmatch.matcher.usecases.erasure_retry import ErasureRetries, forget_queries
from blindmatch.matcher.usecases.tworuns import Forgot, TwoServerSetup

log = logging.getLogger("blindmatch.matcher")

FOUND_IN_LOG_RETRIED = (
    f"{FOUND_IN_LOG}; S1 or S2 did not forget the member's shares at that start, so an "
    "erasure intent was recorded and the matcher asked again in the background until it was done"
)
# A start asks S1 and S2 to forget the shares of every two-server erasure it completes all at
# once (up to START_FORGETS erasures; the rest go to the background retry straight away), and
# waits START_FORGET_SECONDS for all of them together (each Forget's own deadline is 5 s,
# rpc/twoserver_project.py FORGET_SECONDS): a server that does not answer holds the start up
# that long once, not once per erasure; what it has not answered by then is asked again in
# the background. (S1's and S2's forgetting of a killed matcher's query records runs
# meanwhile, realtime/twoforget.py: its own 2 s wait overlaps this one, server.py.)
START_FORGETS = 32
START_FORGET_SECONDS = 6.0
SERVERS = ("S1", "S2")
EXPIRED_INDEX = (
    "the project's standing indexes were still kept after it expired (the matcher stopped "
    "part-way through its expiry, or was down when it expired); start-up deleted them"
)


def lookups_pending(remote: RemoteLookups, project: str, member: str) -> list[str]:
    """What an erasure says of the look-up servers that may still hold the member's standing
    index (`holding`): one of an older blindmatch is said to be so, as a query refused for
    want of it says (rpc/older_peer.py `older_why`; before 2026-12-08 named alone)."""
    # (a server behind for another change took it too, unless it is down: usecases/erasure_retry)
    lookups = remote.holding(project, member)
    older = remote.older_of(lookups) if lookups else {}
    others = [name for name in lookups if name not in older]
    said = []
    if others:  # (it searches nothing until it has read its shards again: no query is
        # answered without it; what it holds in memory goes then)
        said.append(
            f"{', '.join(others)} may still hold its standing index in memory (it missed the "
            "erasure, or is being loaded again; no query is answered until it has read its "
            "shards again)"
        )
    said += [
        f"{name} may still hold its standing index in memory, since it {why}"
        for name, why in older.items()
    ]
    return said


def erase(
    store: Store,
    realtime: Realtime,
    project: str,
    member: str,
    then: Callable[[], object] | None = None,
    also: Callable[[], set[str]] | None = None,
    retries: ErasureRetries | None = None,
    replay_of: Mapping[str, object] | None = None,
) -> Erasure:
    """Erase `member`'s data in `project`; `then` runs inside the erasure's transaction once
    it goes ahead (the matcher ends the member's open streams there: none commits after);
    `also` once the matcher's own copies are deleted, before the erasure is recorded
    complete (in a two-server project, S1's and S2's Forget: `tworuns.forget`), returning
    the servers that did not forget. What fails after the transaction (a full disk, S1 or
    S2 down) keeps the erasure's intent and is named in `pending`, and `retries` finishes
    it in the background (usecases/erasure_retry.py); without `retries`, the next start.
    `replay_of`: the replaced data dir's `erase` entry this one replays (usecases/restore.py:
    its entry the operator's, naming that one)."""
    erased = store.erase_member(project, member, then, replay_of)
    pending = list(erased.pending)
    try:
        erased = replace(erased, index_records=realtime.erase_member(project, member))
    except Exception as exc:  # a full disk, say: its intent is kept
        log.exception("%s/%s: the erasure's standing index could not be deleted", project, member)
        pending.append(f"its standing index is not deleted yet ({exc})")
    try:
        forget_queries(store, realtime, project, member, erased.audit_seq)
    except Exception as exc:  # the same
        log.exception("%s/%s: the erasure's logged queries could not be blanked", project, member)
        pending.append(f"its logged queries' purposes are not blanked yet ({exc})")
    if realtime.remote is not None:
        pending += lookups_pending(realtime.remote, project, member)
    try:
        servers = also() if also is not None else set()
    except Exception:  # (its audit entry refused: a full disk) asked again, both
        log.exception("%s/%s: S1's and S2's Forget failed", project, member)
        servers = {"S1", "S2"}
    if servers:
        pending.append(
            f"{' and '.join(sorted(servers))} {'has' if len(servers) == 1 else 'have'} not "
            "forgotten its shares yet"
        )
    if pending:
        if retries is not None:
            retries.add(erased.audit_seq, project, member, servers)
            pending.append("the matcher tries again in the background until it is done")
        else:
            pending.append("the matcher completes it at its next start")
        erased = replace(erased, pending=tuple(pending))
        log.warning("%s/%s: the erasure logged as audit entry %d is not complete: %s",
                    project, member, erased.audit_seq, "; ".join(pending))  # fmt: skip
    else:
        store.erasure_done(project, member, erased.audit_seq)
    log.info(
        "%s/%s: erased %d uploads, %d result rows, %d named users",
        project,
        member,
        erased.uploads,
        erased.links,
        erased.users,
    )
    return erased


def _mode(store: Store, project: str) -> str:
    try:
        return store.mode_of(project)
    except NotFound:  # (a project's row is never deleted: not expected)
        return ""


def _shares(forgot: list[Forgot] | None) -> tuple[dict[str, object], set[str]]:
    """S1's and S2's answers for the `erase.complete` entry (none: not a two-server
    project), and the servers that did not forget."""
    if forgot is None:
        return {}, set()
    answers = {f.server: f.error or f"dropped {f.dropped}" for f in forgot}
    return {"twoserver": answers}, {f.server for f in forgot if f.error}


def _ask_at_start(
    store: Store, two_server: TwoServerSetup | None, cuts: list[CutShort]
) -> dict[int, list[Forgot]]:
    """S1 and S2 asked to forget the shares of each of `cuts` that is a two-server project's,
    all at once within one deadline (`START_FORGET_SECONDS`), each one's answers (and its
    `twoserver.forget` entry, as `tworuns.forget` writes it), by the erasure's seq. A server
    that has not answered by then, or was not asked (over `START_FORGETS`), is an error."""
    cuts = [c for c in cuts if _mode(store, c.project) == TWO_SERVER]
    if not cuts:
        return {}
    if two_server is None:  # (no set-up: each server's error, as tworuns.forget says it)
        return {c.seq: tworuns.forget(store, None, c.project, c.member) for c in cuts}
    asked = cuts[:START_FORGETS]
    pool = ThreadPoolExecutor(2 * len(asked), thread_name_prefix="bm-forget-start")
    calls = {(c.seq, s): pool.submit(two_server.forget_one, s, c.project, c.member)
             for c in asked for s in SERVERS}  # fmt: skip
    wait(calls.values(), timeout=START_FORGET_SECONDS)
    pool.shutdown(wait=False, cancel_futures=True)  # (one still waiting ends at its deadline)
    answers: dict[int, list[Forgot]] = {}
    for cut in cuts:
        forgot = []
        for server in SERVERS:
            call = calls.get((cut.seq, server))
            if call is None:
                error = f"not asked at start-up (over {START_FORGETS} erasures at once)"
            elif not call.done():
                error = f"did not answer within {START_FORGET_SECONDS:g} s at start-up"
            elif call.exception() is not None:
                error = str(call.exception())
            else:
                forgot.append(call.result())
                continue
            forgot.append(Forgot(server, error=error))
        store.audit.append(audit.Event(audit.MATCHER, "twoserver.forget", cut.project,
                                       member=cut.member, detail={f.server: f.error or
                                       f"dropped {f.dropped}" for f in forgot}))  # fmt: skip
        answers[cut.seq] = forgot
    return answers


def _found_in_log(store: Store, realtime: Realtime) -> list[LoggedErasure]:
    """The erasures a matcher from before erasure intents cut short, found from the audit
    log (storage/erasure_log.py; read while the intents are there: theirs are not these)."""
    with store.db.reading() as db, realtime.index_store.db.reading() as index:
        return found_in_log(db, index, set(store.unreferenced_at_start))


def _complete_found_in_log(
    store: Store,
    realtime: Realtime,
    found: list[LoggedErasure],
    retries: ErasureRetries | None = None,
    answers: dict[int, list[Forgot]] | None = None,
) -> list[dict[str, object]]:
    """Complete the erasures `_found_in_log`: the same `erase.complete` entry, saying so.
    One that S1 or S2 has not forgotten is given an intent (it had none) and handed to
    `retries` (without it, left to the next start): recorded complete only once done."""
    done: list[dict[str, object]] = []
    for erased in found:
        if erased.index_records is not None:
            realtime.erase_member(erased.project, erased.member)
        cut = CutShort(erased.seq, erased.project, erased.member, erased.upload_files)
        more, failed = _shares((answers or {}).get(cut.seq))
        if failed:
            store.keep_intent(cut)  # (its upload files go now; the intent until S1, S2 forget)
            if retries is not None:
                left = erased.index_records or 0
                retries.add(cut.seq, cut.project, cut.member, failed, left, FOUND_IN_LOG_RETRIED)
            log.warning(
                "%s/%s: the erasure logged as audit entry %d was cut short by a matcher from "
                "before erasure intents (found from the audit log); its data here is deleted "
                "now, but %s did not forget the member's shares: an intent is recorded, and "
                "%s", cut.project, cut.member, cut.seq, " and ".join(sorted(failed)),
                "they are asked again in the background" if retries is not None
                else "the next start asks again",
            )  # fmt: skip
            continue
        detail = store.complete_erasure(cut, erased.index_records or 0, more, FOUND_IN_LOG)
        done.append({"project": cut.project, "member": cut.member, **detail})
        log.warning(
            "%s/%s: the erasure logged as audit entry %d was cut short by a matcher from before "
            "erasure intents (found from the audit log); completed now: %d standing-index "
            "records and %s deleted",
            cut.project, cut.member, cut.seq, erased.index_records or 0,
            counted(len(erased.upload_files), "upload file"),
        )  # fmt: skip
    return done


def complete_cut_short(
    store: Store,
    realtime: Realtime,
    two_server: TwoServerSetup | None = None,
    retries: ErasureRetries | None = None,
) -> list[dict[str, object]]:
    """At start-up, before anything is served: complete every erasure a stopped matcher
    left part-way (its standing index deleted unless a change was stored after it, its
    upload files unlinked, both databases checkpointed; in a two-server project S1 and S2
    asked again to forget the member's shares, through `two_server`), and delete the
    standing indexes of projects no longer live (expired), each with an `erase.complete`
    entry saying what was left; likewise the erasures a matcher from before erasure intents
    cut short, found from the audit log; then both databases checkpointed. The entries' details,
    with `project` and `member`. An erasure with an intent that S1 or S2 still has not
    forgotten keeps its intent and is handed to `retries`, which asks them again while the
    matcher runs (not in the details)."""
    done: list[dict[str, object]] = []
    logged = _found_in_log(store, realtime)
    cuts = store.cut_short_erasures()
    lefts = {}
    for cut in cuts:
        lefts[cut.seq] = realtime.index_store.left_by_erasure(cut.project, cut.member, cut.seq)
        if lefts[cut.seq] is not None:
            realtime.erase_member(cut.project, cut.member)
    realtime.index_store.db.checkpoint()  # (its own may not have run)
    found = [CutShort(e.seq, e.project, e.member, e.upload_files) for e in logged]
    answers = _ask_at_start(store, two_server, [*cuts, *found])
    for cut in cuts:
        left = lefts[cut.seq]
        shares, failed = _shares(answers.get(cut.seq))
        if failed and retries is not None:
            retries.add(cut.seq, cut.project, cut.member, failed, index_records=left or 0)
            log.warning(
                "%s/%s: the erasure logged as audit entry %d was cut short (the matcher stopped "
                "part-way); its data here is deleted now, but %s did not forget the member's "
                "shares: asked again in the background", cut.project, cut.member, cut.seq,
                " and ".join(sorted(failed)),
            )  # fmt: skip
            continue
        detail = store.complete_erasure(cut, left or 0, shares)
        done.append({"project": cut.project, "member": cut.member, **detail})
        log.warning(
            "%s/%s: the erasure logged as audit entry %d was cut short (the matcher stopped "
            "part-way); completed now: %d standing-index records and %s deleted",
            cut.project, cut.member, cut.seq, left or 0,
            counted(cast(int, detail["upload_files"]), "upload file"),
        )  # fmt: skip
    done += _complete_found_in_log(store, realtime, logged, retries, answers)
    for name in realtime.index_store.projects():
        if store.is_live(name):
            continue
        records = realtime.index_store.project_records(name)
        realtime.erase_project(name)
        detail = {"index_records": records, "why": EXPIRED_INDEX}
        store.audit.append(audit.Event(audit.MATCHER, COMPLETED, name, detail=detail))
        done.append({"project": name, "member": "", **detail})
        log.warning("project %s: %d standing-index records kept after it expired, deleted now",
                    name, records)  # fmt: skip
    # Every erased member's logged queries until its last erasure, their purposes and users
    # blanked: those cut short above, and those of a matcher from before this was done.
    if blanked := realtime.index_store.forget_queries_before(store.last_erasures()):
        log.warning("%d logged queries of erased members, from before their erasures, still "
                    "had their purposes and users; blanked now", blanked)  # fmt: skip
    # The old pages of any deletion whose checkpoint a stopped matcher never reached (an
    # expiry's: its rows went in one transaction) leave both write-ahead logs now.
    store.db.checkpoint()
    realtime.index_store.db.checkpoint()
    return done
