"""What members ask of batch runs: start one (or get the one already under way), and
follow its progress until it is done or has failed. A member sees a run as `as_seen_by`
shows it: not the run's groups (how many subjects all members share, which tells a member
about overlaps between others), but how many of its own records a partner holds, where its
disclosure level lets it count that."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator

from blindmatch.matcher.core.disclose import effective_levels
from blindmatch.matcher.core.encodings import same_scoring, scoring
from blindmatch.matcher.domain import DAY, DONE, FAILED, QUEUED, Level, Run
from blindmatch.matcher.errors import FailedPrecondition, NotFound
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases import tworuns
from blindmatch.matcher.usecases.runs import RunManager

log = logging.getLogger("blindmatch.matcher")

# How long a follower waits for progress before it looks again.
FOLLOW_POLL_SECONDS = 0.5


# The one stage a member sees of a running run (`as_seen_by`): never the run's own stages.
MEMBER_STAGE = "running"


def as_seen_by(store: Store, run: Run, member: str) -> Run:
    """`run` as `member` may see it: `groups` is the number of its own records some partner
    holds, when it can work that out from its results anyway (every partner at `hits` or
    above, or a single partner); otherwise 0. A running run is one stage, MEMBER_STAGE,
    with no progress (`_unstaged`): its stages' counts of pairs compared or solved were the
    run's, every pair of members', and told a member that shares nobody how many people two
    others share (attackwalk, 2026-12-07); their thousandths, which replaced them, still
    told it when each stage began and ended, and the solving stage's time grows with the
    pairs two others share (benchmarks/stagetimes.py, srvleft)."""
    run = _unstaged(run)
    if run.state != DONE or not run.groups:
        return dataclasses.replace(run, groups=0)
    project = store.project(run.project)
    levels = effective_levels(project.disclosure, store.consents(project.name), member)
    own = len(levels) <= 1 or all(level >= Level.HITS for level in levels.values())
    return dataclasses.replace(run, groups=store.linked_rows(run.id, member) if own else 0)


def _unstaged(run: Run) -> Run:
    """`run` with no stage of its own and no progress: "" while queued, MEMBER_STAGE from
    its start until it ends (failed too), "done" once done; no work or task counts."""
    stage = "" if run.state == QUEUED else "done" if run.state == DONE else MEMBER_STAGE
    return dataclasses.replace(
        run, stage=stage, work_done=0, work_total=0, tasks_done=0, tasks_total=0
    )


def follow_as_seen_by(
    store: Store,
    runs: RunManager,
    project: str,
    run_id: str,
    is_active: Callable[[], bool],
    member: str,
) -> Iterator[Run]:
    """`follow_run` as `member` sees it (`as_seen_by`): a status only when what it sees
    changes, so that neither the statuses' number nor their times tell the run's stages
    and progress (each of which the run writes as it goes)."""
    last: Run | None = None
    for run in follow_run(store, runs, project, run_id, is_active):
        seen = as_seen_by(store, run, member)
        if seen != last:
            yield seen
            last = seen


def start_run(store: Store, runs: RunManager, project: str, member: str) -> Run:
    """A new run over every member's current upload, queued; or the one already queued
    or running (so a retried start starts nothing twice). A two-server project's is
    refused unless S1 and S2 answer (UNAVAILABLE naming the one that does not); any run
    where the current uploads disagree on how a pair is scored (`check_one_scoring`)."""
    tworuns.check_can_run(store, runs.two_server, project)
    check_one_scoring(store, project)
    run, created = store.create_run(project, actor=member)
    if created:
        runs.submit(run.id)
        log.info("run %s queued", run.id)
    return run


def check_one_scoring(store: Store, project: str) -> None:
    """Refuse a run over uploads of one fingerprint whose fallback CLK or rule over both
    CLKs differ (stored before uploads were checked for it): it would score their pairs
    by neither rule, silently (core.encodings)."""
    uploads = list(store.current_uploads(project).items())
    if not uploads:
        return
    first, enc = uploads[0][0], store.upload_encoding(uploads[0][1])
    for other, upload in uploads[1:]:
        theirs = store.upload_encoding(upload)
        if theirs.fingerprint == enc.fingerprint and not same_scoring(theirs, enc):
            raise FailedPrecondition(
                f"{other}'s upload is scored with {scoring(theirs)}, but {first}'s with "
                f"{scoring(enc)}, under the same schema and secret: one of them lost the "
                "schema's blindmatch.rule; that member encodes again with `blindmatch encode` "
                "and the agreed schema and uploads again, then start the run"
            )


def follow_run(
    store: Store, runs: RunManager, project: str, run_id: str, is_active: Callable[[], bool]
) -> Iterator[Run]:
    """The run (the project's latest, without `run_id`) each time its progress changes,
    until it is done or failed, `is_active()` turns false, or a day has passed; the error
    `RunManager.end_followers` was given once it is called (the matcher stopping)."""
    store.project(project)  # expired: NotFound, like every member call
    if run_id:
        run = store.run(run_id)
        if run.project != project:
            raise NotFound(f"no run {run_id!r} in project {project!r}")
    else:
        latest = store.latest_run(project)
        if latest is None:
            raise FailedPrecondition("no run has started in this project")
        run = latest
    last: Run | None = None
    deadline = time.monotonic() + DAY
    with runs.following():  # ended at once when the matcher stops (`RunManager.end_followers`)
        while is_active() and time.monotonic() < deadline:
            current = store.run(run.id)
            if current != last:
                yield current
                last = current
            if current.state in (DONE, FAILED):
                return
            runs.still_following()
            runs.wait_for_change(FOLLOW_POLL_SECONDS)
