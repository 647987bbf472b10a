"""Projects: the operator creates them (under the rules below) and manages members' tokens;
members describe their project and set their consent.

A project's rules, checked in this order (each failure names the request field):
a valid name; at most MAX_MEMBERS members, each with a valid name, none repeated, at
least two; a threshold in (0, 1]; an expiry between now and MAX_RETENTION from now.
Unset fields take the defaults: disclosure HITS, threshold DEFAULT_THRESHOLD, blocking
auto, expiry DEFAULT_RETENTION after creation, the matcher's default mode. A two-server
project needs a matcher started with S1 and S2, and never discloses scores (its run learns
only score buckets, never a Dice value).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from blindmatch.matcher.core import audit
from blindmatch.matcher.domain import (
    CLK_MODE,
    DEFAULT_THRESHOLD,
    MAX_MEMBERS,
    MAX_RETENTION,
    MIN_THRESHOLD,
    MODES,
    NAME_RULE,
    THRESHOLD_RANGE,
    TWO_MEMBERS_RULE,
    TWO_SERVER,
    Level,
    Project,
    Run,
    Upload,
    valid_name,
)
from blindmatch.matcher.errors import FailedPrecondition, InvalidArgument, NotFound
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.run_requests import as_seen_by
from blindmatch.protos.wire import fingerprint_id

log = logging.getLogger("blindmatch.matcher")

# Said where scores (or a blocking method) were refused in a project two-server only by the
# matcher's default.
_CLK_BY_ASKING = (
    "; no mode was asked for, and this matcher makes two-server projects by default (it has "
    'S1 and S2): `project create --mode clk` (CreateProject mode "clk") makes a CLK '
    "project, which {}, and whose CLKs the matcher holds"
)
SCORES_NEED_CLK = _CLK_BY_ASKING.format("discloses scores")
BLOCKING_NEEDS_CLK = _CLK_BY_ASKING.format("blocks as asked")


@dataclass(frozen=True)
class ProjectRequest:
    """A CreateProject request; None (or 0) where the operator left a field unset."""

    name: str
    members: list[str]
    disclosure: Level | None = None
    threshold: float = 0.0
    blocking: str = "auto"
    require_purpose: bool = False
    expires: float | None = None
    require_users: bool = False
    mode: str = ""  # "": the matcher's default


def create_project(
    store: Store,
    request: ProjectRequest,
    *,
    default_mode: str = CLK_MODE,
    two_server_ready: bool = False,
) -> tuple[Project, dict[str, str]]:
    """The new project and each member's token (the only time the tokens exist).
    `two_server_ready`: the matcher was started with S1 and S2."""
    name, members = request.name, request.members
    if not valid_name(name):
        raise InvalidArgument(f"name: {name!r} is not a valid project name ({NAME_RULE})")
    if len(members) > MAX_MEMBERS:
        raise InvalidArgument(
            f"members: {len(members)} members; a project has at most {MAX_MEMBERS}"
        )
    bad = [m for m in members if not valid_name(m)]
    if bad:
        raise InvalidArgument(
            f"members: invalid member {'name' if len(bad) == 1 else 'names'} "
            f"{', '.join(map(repr, bad))} ({NAME_RULE}; "
            "e.g. north-police)"
        )
    if len(set(members)) != len(members):
        again = sorted({m for m in members if members.count(m) > 1})
        raise InvalidArgument(
            f"members: names repeat ({', '.join(map(repr, again))}): {TWO_MEMBERS_RULE}"
        )
    if len(members) < 2:
        raise InvalidArgument(f"members: {TWO_MEMBERS_RULE}")
    disclosure = request.disclosure or Level.HITS
    mode = request.mode or default_mode
    if mode not in MODES:
        raise InvalidArgument(f"mode: {mode!r}; one of {', '.join(MODES)}")
    if mode == TWO_SERVER and not two_server_ready:
        raise FailedPrecondition(
            "mode: two-server, but this matcher was started without two-server servers; "
            "start it with `serve --two-server-s1 HOST:PORT --two-server-s2 HOST:PORT`"
        )
    if mode == TWO_SERVER and disclosure == Level.SCORES:
        # Not asked for: the matcher's default since S1 and S2 (issue 18) says how to get one.
        defaulted = "" if request.mode else SCORES_NEED_CLK
        raise InvalidArgument(
            "disclosure: scores, but a two-server project's run learns only whether a pair "
            f"links and its score bucket, never its Dice: count, hits or mapping{defaulted}"
        )
    if mode == TWO_SERVER and request.blocking != "auto":
        # S1 blocks a two-server run (its --exhaustive-pairs and --small-member-pairs caps
        # decide which pairs of members it compares whole): a project's method would be
        # recorded and shown but never used (walk2s, 2026-12-06).
        defaulted = "" if request.mode else BLOCKING_NEEDS_CLK
        raise InvalidArgument(
            f"blocking: {request.blocking}, but a two-server project's pairs are proposed by "
            "S1, which compares small pairs of members whole and blocks larger ones by its "
            "own caps (`two-server role --exhaustive-pairs`, `--small-member-pairs`): leave "
            f"blocking at auto{defaulted}"
        )
    threshold = request.threshold or DEFAULT_THRESHOLD
    if not MIN_THRESHOLD <= threshold <= 1.0:
        raise InvalidArgument(f"threshold: {threshold} is not in {THRESHOLD_RANGE}")
    now = store.clock()
    expires = request.expires
    if expires is not None and not now < expires <= now + MAX_RETENTION:
        raise InvalidArgument(
            f"expires_unix: {int(expires)} is not between now and ten years from now"
        )
    tokens = store.create_project(
        name,
        members,
        disclosure,
        threshold,
        request.blocking,
        require_purpose=request.require_purpose,
        expires=expires,
        require_users=request.require_users,
        mode=mode,
    )
    log.info("project %s (%s) created with members %s", name, mode, ", ".join(members))
    return store.project(name), tokens


def rotate_token(store: Store, project: str, member: str) -> str:
    """A new token for `member`; the old one stops working at once."""
    token = store.rotate_token(*_token_request(project, member))
    log.info("%s/%s: token rotated", project, member)
    return token


def revoke_token(
    store: Store,
    project: str,
    member: str,
    *,
    replay_of: Mapping[str, object] | None = None,
    users: bool = True,
) -> None:
    """`replay_of`: the replaced data dir's entry this revocation makes again (usecases/
    restore.py: a `token.revoke`, or a `token.rotate` whose new token the backup lacks, its
    named users kept: `users` False)."""
    store.revoke_token(*_token_request(project, member), replay_of, users=users)
    log.info("%s/%s: token revoked", project, member)


def _token_request(project: str, member: str) -> tuple[str, str]:
    if not project:
        raise InvalidArgument("project: required")
    if not member:
        raise InvalidArgument("member: required")
    return project, member


def set_consent(
    store: Store,
    project: str,
    member: str,
    level: Level,
    *,
    replay_of: Mapping[str, object] | None = None,
) -> None:
    """The most `member` lets its partners learn about it from now on. `replay_of`: the
    replaced data dir's entry this one makes again (usecases/restore.py)."""
    store.project(project)
    store.set_consent(project, member, level, replay_of)
    log.info("%s/%s: consent set to %s", project, member, level.label)


@dataclass(frozen=True)
class MemberStatus:
    name: str
    upload: Upload | None  # the member's current upload
    consent: Level | None
    started: float = 0.0  # a two-server upload started then and not taken (ticket_store.py)


@dataclass(frozen=True)
class ProjectView:
    """A project as a member (or, with `member` empty, the operator) sees it: settings,
    members' upload status, the encoding fingerprint id, the latest run."""

    project: Project
    member: str  # empty: the operator
    clk_bits: int  # of the project's uploads; 0 before the first
    members: list[MemberStatus]
    latest_run: Run | None
    fingerprint_id: str = ""  # of the earliest current upload; "" before any
    fingerprint_from: str = ""  # the member whose upload that is


def _view(store: Store, project: Project, member: str) -> ProjectView:
    """The latest run as `member` may see it (`run_requests.as_seen_by`); as it is for the
    operator (`member` empty)."""
    uploads = store.current_uploads(project.name)  # earliest first
    started = store.started_uploads(project.name)
    first = next(iter(uploads.values()), None)
    latest = store.latest_run(project.name)
    if latest is not None and member:
        latest = as_seen_by(store, latest, member)
    return ProjectView(
        project,
        member,
        first.clk_bits if first else 0,
        [
            MemberStatus(name, uploads.get(name), consent, started.get(name, 0.0))
            for name, consent in store.consents(project.name).items()
        ],
        latest,
        fingerprint_id(first.fingerprint) if first else "",
        first.member if first else "",
    )


def settings(store: Store, project_name: str, member: str) -> ProjectView:
    """The project's settings alone, as `member` asks before an upload (its mode): no
    member's status, no run, no fingerprint. Nothing of a partner, so nothing recorded."""
    return ProjectView(store.project(project_name), member, 0, [], None)


def describe(store: Store, project_name: str, member: str) -> ProjectView:
    """The project as `member` sees it; recorded (it discloses partners' upload status).
    The latest run as the member may see it (`run_requests.as_seen_by`)."""
    project = store.project(project_name)
    view = _view(store, project, member)
    store.audit.append(
        audit.Event(
            member,
            "project.describe",
            project.name,
            member,
            disclosed={
                m.name: "upload status"
                for m in view.members
                if (m.upload or m.started) and m.name != member
            },
        )
    )
    return view


def list_projects(store: Store, project_name: str = "") -> list[ProjectView]:
    """The operator's view of every live project, or of one (NotFound when it is not live).
    Nothing a member holds is disclosed to a member, so nothing is recorded."""
    names = [store.project(project_name).name] if project_name else store.live_projects()
    views = []
    for name in names:
        try:
            views.append(_view(store, store.project(name), ""))
        except NotFound:  # expired between the listing and now
            continue
    return views
