"""The audit log's rules: events, the keyed hash chain, verification, member views.

Pure functions and dataclasses. storage/audit_log.py keeps the entries in SQLite, each
appended in the same transaction as the change it records, so a change and its entry are
stored together or not at all (a standing-index change, kept in the other database, is
announced first and voided if it was never stored); a disclosure is durable in the log
before a single result leaves the matcher.

The chain: entry n carries `prev_hash` (entry n-1's hash; `GENESIS` for the first) and
`hash = HMAC-SHA256(key, canonical(entry n))`, where the canonical form covers every field
including `seq` and `prev_hash`. Editing an entry breaks its own hash; deleting or moving
one breaks the `seq` run and the next entry's `prev_hash`; forging a replacement needs the
key, which lives in a file beside (or away from) the database. Cutting entries off the
*end* leaves a valid shorter chain, which only an anchor recorded elsewhere can expose (see
`verify`). docs/security.md explains the choice.
"""

from __future__ import annotations

import contextvars
import datetime
import hmac
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from blindmatch.matcher.core.runwords import detail_as_read
from blindmatch.matcher.domain import MAX_PURPOSE
from blindmatch.matcher.errors import InvalidArgument

GENESIS = "0" * 64
OPERATOR = "operator"
MATCHER = "matcher"

# Every action the matcher records, and when. docs/security.md repeats this list.
ACTIONS = {
    "project.create": "the operator created a project",
    "project.describe": "a member read the project's state (partners' upload status)",
    "project.expire": "the retention sweep deleted an expired project's encodings and results "
    "(or the operator ended the project before its date, with a reason)",
    "token.rotate": "the operator issued a member a new token (the old one stopped working)",
    "token.revoke": "the operator revoked a member's token",
    "consent.set": "a member changed the most it lets partners learn about it",
    "upload": "a member's upload was stored (replacing its earlier one)",
    "run.start": "a member started a matching run",
    "run.done": "a run finished and its links were stored",
    "run.failed": "a run failed",
    "results.disclose": "results were disclosed to a member (who learnt what about whom)",
    "request.issue": "a member was issued request references for one of its hits",
    "request.resolve": "a partner resolved a request reference addressed to it to its own rows",
    "request.withdraw": "a member withdrew a request reference it was issued (no longer resolves)",
    "erase": "a member erased its uploads and the results involving them",
    "erase.complete": "start-up deleted what an erasure or expiry cut short had left (counts)",
    "index.change": "a member added, replaced or removed records of its standing index (counts)",
    "index.change.void": "an announced index change was never stored (the matcher stopped first)",
    "query": "a member queried partners' standing indexes (records asked, what was disclosed)",
    "query.refused": "a query or watch was refused by a quota or rate limit",
    "watch": "a member opened a watch on some records",
    "watch.notify": "a watching member was told that a partner now holds one of its records",
    "query.limits": "the operator changed query limits or whether watching is allowed",
    "audit.export": "someone exported (part of) the audit log",
    "audit.verify": "the operator verified the audit log",
    "user.add": "a member's administrator issued a named user a token",
    "user.revoke": "a member's administrator (or the operator, revoking the member) revoked a user",
    "twoserver.upload": "a two-server role holds a member's upload (records, SHA-256 of its part)",
    "twoserver.run": "a two-server role took part in a run (who asked, members, pairs, links)",
    "twoserver.expand": "S2 opened the band keys S1 matched into a run's candidate pairs",
    "twoserver.refused": "a two-server server refused a batch evaluating a pair again",
    "twoserver.deal": "S1 or S2 refused a batch: the combiner's triples failed their check",
    "twoserver.blocks": "S1 and S2 converted and checked an unblocked part's blocks' deal",
    "twoserver.standing": "S1 and S2 converted a partner's upload once for the queries against it",
    "twoserver.standing_dropped": "S1 or S2 dropped a half-made standing conversion (it failed, "
    "the combiner gave it up, or no piece came), or one a new conversion of the partner "
    "replaced, or one whose upload was replaced or forgotten",
    "twoserver.standing_started": "S1 or S2 started converting a partner's upload (at a query, "
    "or ahead of any: standahead)",
    "twoserver.resume": "the combiner asked S1 or S2 for a batch's output shares again",
    "twoserver.rerun": "S2 ran a batch's rounds again with S1 on the inputs both kept",
    "twoserver.extras": "S1 let the combiner evaluate pairs inside its groups it had not proposed",
    "twoserver.reach": "S1 let the combiner ask pairs between two of its groups at the reach",
    "twoserver.forget": "S1 or S2 dropped a project member's uploads (erasure, expiry)",
    "twoserver.restored": "a two-server role started holding what its data dir kept",
    "twoserver.restore": "a two-server role's data dir made from its backup (admin restore)",
    "restore": "the matcher's data dir made from its backup (admin restore), the erasures, "
    "expiries, token and consent changes since replayed from the replaced dir's log",
    "twoserver.query": "S1 or S2 counted a query against its own query limit",
    "twoserver.query.refused": "S1 or S2 refused a query beyond its own query limit",
}

# Not an entry of the chain: what a member's view shows instead of a partner's entries that
# disclosed something about the member's records to that partner (`member_entries`).
PARTNER_DISCLOSURES = "partner.disclosures"

# The named user acting for a member in the current call (set by the gRPC edge, rpc/auth.py,
# for each call's thread; empty for the member's administrator token, the operator and the
# matcher's own threads). An Event takes it when it is made, on the caller's thread.
_CURRENT_USER: contextvars.ContextVar[str] = contextvars.ContextVar("audit_user", default="")


def current_user() -> str:
    return _CURRENT_USER.get()


def set_current_user(user: str) -> contextvars.Token[str]:
    return _CURRENT_USER.set(user)


def reset_current_user(token: contextvars.Token[str]) -> None:
    _CURRENT_USER.reset(token)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Besides those: C1 controls (U+0080-U+009F: U+009B is a terminal's CSI, an escape sequence
# in the operator's `audit export`), format characters that reorder or hide text (bidi
# overrides and isolates, zero-width space, word joiner, BOM, tag characters) and line and
# paragraph separators. Joiners (ZWNJ, ZWJ) stay: scripts need them. Before attackwalk
# (2026-12-07) a member's purpose could carry any of these into the log.
_JOINERS = frozenset("\u200c\u200d")
_UNSHOWN = frozenset(("Cc", "Cf", "Zl", "Zp"))


def unshown(text: str) -> str:
    """The first character of `text` that a purpose may not hold, as `U+202E (RIGHT-TO-LEFT
    OVERRIDE)`; empty when there is none."""
    for char in text:
        if char not in _JOINERS and unicodedata.category(char) in _UNSHOWN:
            name = unicodedata.name(char, "a control character")
            return f"U+{ord(char):04X} ({name})"
    return ""


@dataclass(frozen=True)
class Event:
    """What happened; the store adds seq, time and the chain."""

    actor: str
    action: str
    project: str = ""
    member: str = ""  # the member acted on or disclosed to
    purpose: str = ""
    disclosed: Mapping[str, str] = field(default_factory=dict)  # partner -> what of it
    detail: Mapping[str, object] = field(default_factory=dict)
    user: str = field(default_factory=current_user)  # the named user acting for `actor`

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}")


def maybe_replayed(
    actor: str,
    action: str,
    project: str,
    member: str,
    detail: Mapping[str, object],
    replay_of: Mapping[str, object] | None,
) -> Event:
    """The event of a change made live by `actor`, or made again by `admin restore` from the
    replaced data dir's entry `replay_of` (usecases/restore.py): then the operator's, its
    detail naming that entry."""
    if replay_of is None:
        return Event(actor, action, project, member, detail=detail)
    return Event(OPERATOR, action, project, member, detail={**detail, "replay_of": dict(replay_of)})


@dataclass(frozen=True)
class Entry:
    seq: int
    time: float
    actor: str
    action: str
    project: str
    member: str
    purpose: str
    disclosed: dict[str, str]
    detail: dict[str, object]
    prev_hash: str
    hash: str
    user: str = ""  # the named user acting for `actor`; empty: its administrator token

    def to_dict(self) -> dict[str, object]:
        """Every field; `user` only when there is one (entries made before users existed
        hash without it, so the canonical form leaves an empty user out)."""
        body: dict[str, object] = {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "project": self.project,
            "member": self.member,
            "purpose": self.purpose,
            "disclosed": self.disclosed,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }
        if self.user:
            body["user"] = self.user
        return body


# Built once: json.dumps with options builds a new encoder on every call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_PLAIN = (str, int, float, bool, type(None))


def _dumps(value: object) -> str:
    return _CANONICAL_JSON.encode(value)


def _plain(detail: Mapping[str, object]) -> dict[str, object]:
    """`detail` as JSON reads it back (tuples become lists, and so on)."""
    if all(type(k) is str and type(v) in _PLAIN for k, v in detail.items()):
        return dict(detail)  # already what a JSON round trip gives
    return json.loads(_dumps(dict(detail)))


def _canonical(fields: dict[str, object]) -> bytes:
    fields["time"] = repr(float(fields["time"]))  # type: ignore[arg-type]  # exact round trip
    return _dumps(fields).encode("utf-8")


def canonical(entry: Entry) -> bytes:
    """The bytes the hash covers: every field but `hash`, in a fixed order."""
    body = entry.to_dict()
    del body["hash"]
    return _canonical(body)


def entry_hash(key: bytes, entry: Entry) -> str:
    return hmac.digest(key, canonical(entry), "sha256").hex()


def seal(key: bytes, seq: int, time: float, event: Event, prev_hash: str) -> Entry:
    """The next entry of the chain, hash included."""
    disclosed = dict(sorted(event.disclosed.items()))
    detail = _plain(event.detail)
    body: dict[str, object] = {
        "seq": seq,
        "time": time,
        "actor": event.actor,
        "action": event.action,
        "project": event.project,
        "member": event.member,
        "purpose": event.purpose,
        "disclosed": disclosed,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    if event.user:
        body["user"] = event.user
    digest = hmac.digest(key, _canonical(body), "sha256").hex()
    return Entry(
        seq, time, event.actor, event.action, event.project, event.member, event.purpose,
        disclosed, detail, prev_hash, digest, event.user,
    )  # fmt: skip


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problems: list[str]


def verify(
    key: bytes, entries: Iterable[Entry], anchor: tuple[int, str] | None = None
) -> Verification:
    """Check the chain in storage order (by seq); name every entry that is wrong.

    `anchor` is (seq, hash) of an entry recorded outside the matcher earlier:
    it must still be there, unchanged. Without one, entries cut off the end of
    the log cannot be told from entries never written.
    """
    problems: list[str] = []
    expected_seq, prev, count = 1, GENESIS, 0
    anchor_seen = False
    head_seq, head_hash = 0, GENESIS
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                what = f"entries {expected_seq}..{entry.seq - 1} are missing"
            else:
                what = "it is out of order"
            problems.append(f"entry {entry.seq}: expected seq {expected_seq}; {what}")
        if entry.prev_hash != prev:
            problems.append(
                f"entry {entry.seq}: prev_hash does not match the hash of the entry before it "
                "(an entry was removed, moved or replaced)"
            )
        if not hmac.compare_digest(entry_hash(key, entry), entry.hash):
            problems.append(f"entry {entry.seq}: its hash does not match its content (edited)")
        if anchor and entry.seq == anchor[0]:
            anchor_seen = True
            if not hmac.compare_digest(entry.hash, anchor[1]):
                problems.append(f"entry {entry.seq}: hash differs from the anchor you recorded")
        prev, expected_seq = entry.hash, entry.seq + 1
        head_seq, head_hash = entry.seq, entry.hash
    if anchor and not anchor_seen:
        if anchor[0] > head_seq:  # the tail was cut off: from head_seq + 1 on, the anchor's too
            what = (f"the log ends at entry {head_seq}: the entries after it were removed, "
                    "or the anchor is another log's")  # fmt: skip
        else:
            what = "it was removed"
        problems.append(f"anchor entry {anchor[0]} is not in the log ({what})")
    return Verification(not problems, count, head_seq, head_hash, problems)


# -- what a member sees ----------------------------------------------------------------------

DAY = 86400  # seconds: the grain of a member's view of its partners' disclosures
# What a partner learnt about a member's records, least to most (for a day's summary).
_DISCLOSED_ORDER = ("upload status", "count", "hits", "mapping", "scores")
# Project-wide entries whose detail tells a member about overlaps between other members:
# the detail keys a member may see of each (the rest is the operator's).
_PROJECT_WIDE_DETAIL = {
    "run.done": ("run_id",),
    # Not who erased its data where an erasure cancelled the run (`erased_by`, privtests2).
    "run.failed": ("run_id", "message"),
    "project.expire": (),
    "twoserver.run": ("run_id", "s1", "s2", "members"),  # not its pairs, links or bytes
    # The operator's export: that it happened, not how many entries the project's log held
    # nor from which of the log's seqs (two exports counted what partners wrote between).
    "audit.export": (),
}
# A partner's action on a request the member made itself (its `detail["requester"]`): shown to
# that requester as it happens, with only these detail keys (not the partner's user, purpose or
# how many of its records the reference pointed at).
_ON_OWN_REQUEST_DETAIL = {"request.resolve": ("reference", "run_id", "requester")}
# Detail that names an earlier entry of the member's own by the log's seq: shown by that
# entry's number in the view, as every seq the view shows (the log's own told a member how
# many entries others wrote before it), or left out where the view does not hold it; and
# an entry replayed by `admin restore --previous` names the replaced log's entry without its seq.
_SEQ_DETAIL = {"index.change.void": "announced", "erase.complete": "erased"}


def member_entries(entries: Iterable[Entry], project: str, member: str, now: float) -> list[Entry]:
    """`member`'s view of `project`'s log, in seq order (docs/threat-model.md, "What each
    party's audit view shows"). A member learns nothing about records or overlaps that do
    not involve its own records, and no more about its own than its partners learnt:

    - its own actions (every user of its own, their purposes, what it learnt), and what the
      operator or the matcher did to it: as logged;
    - events about the whole project (created, a run started, finished or failed, limits):
      without what they say about other members' overlaps (a run's groups and links);
    - a partner's resolution of a request reference the member issued itself
      (`request.resolve`): as it happens, since it answers the member's own request, but
      without the partner's user, purpose or how many of its records the reference
      pointed at;
    - any other partner action that disclosed something about its records to that partner
      (a results fetch, a query or watch notification that hit its records, a look at its
      upload status): never the entry, but one `PARTNER_DISCLOSURES` line per partner per
      UTC day, once that day is over: how many such actions, of which kinds, and the most
      the partner learnt. Not when within the day, not which records, not the partner's
      users, purposes or its counts for other members;
    - nothing else: not partners' uploads, consent, erasure, index changes, queries that did
      not hit its records, or their other partners.

    A day's line has no hash (it is not an entry of the chain) and takes the seq of the
    first entry of this view after the day (the caller's own `audit.export` entry, written
    before the view is read, is always one): paging with `after` sees it once.

    The view numbers its entries 1, 2, 3... in order (`seq`: the entry's place in this
    view, the same at every export, since entries are only appended) and withholds
    `prev_hash`: the log's own seqs, and a prev_hash that is not the hash of the view's
    entry before, told a member how many entries others wrote between two of its own, so
    that an index change followed by a gap told it at once that a partner's watch matched
    the record it had put (attackwalk, 2026-12-07). `hash` stays (an anchor for the
    operator to find).
    """
    view: list[Entry] = []
    days: dict[tuple[int, str], list[Entry]] = {}
    for entry in entries:
        if entry.project != project:
            continue
        partner_actor = entry.actor not in (member, OPERATOR, MATCHER)
        if entry.actor == member or (entry.member == member and not partner_actor):
            view.append(entry)
        elif partner_actor and _on_own_request(entry, member):
            view.append(_as_requester_sees(entry))
        elif partner_actor and entry.disclosed:
            if member in entry.disclosed:
                days.setdefault((int(entry.time // DAY), entry.actor), []).append(entry)
        elif not entry.member:
            view.append(_project_wide(entry))
    places = {entry.seq: place for place, entry in enumerate(view, 1)}
    numbered = [_renumbered(entry, places) for entry in view]
    return _with_days(numbered, days, project, member, now)


def _renumbered(entry: Entry, places: dict[int, int]) -> Entry:
    """The entry as the view shows it (`places`: the log's seq -> the view's)."""
    detail, key = dict(entry.detail), _SEQ_DETAIL.get(entry.action, "")
    seq = detail.pop(key, None)
    if isinstance(seq, int) and seq in places:
        detail[key] = places[seq]
    if isinstance(origin := detail.get("replay_of"), dict):  # the replaced log's seq, likewise
        detail["replay_of"] = {k: v for k, v in origin.items() if k != "seq"}
    return Entry(**{**entry.__dict__, "seq": places[entry.seq], "prev_hash": "", "detail": detail})


def _on_own_request(entry: Entry, member: str) -> bool:
    return entry.action in _ON_OWN_REQUEST_DETAIL and entry.detail.get("requester") == member


def _as_requester_sees(entry: Entry) -> Entry:
    keep = _ON_OWN_REQUEST_DETAIL[entry.action]
    detail = {k: entry.detail[k] for k in keep if k in entry.detail}
    return Entry(**{**entry.__dict__, "detail": detail, "user": "", "purpose": ""})


def _project_wide(entry: Entry) -> Entry:
    keep = _PROJECT_WIDE_DETAIL.get(entry.action)
    detail = (
        entry.detail
        if keep is None
        else {k: detail_as_read(k, entry.detail[k]) for k in keep if k in entry.detail}
    )
    return Entry(**{**entry.__dict__, "detail": detail, "user": "", "purpose": ""})


def _with_days(
    view: list[Entry],
    days: dict[tuple[int, str], list[Entry]],
    project: str,
    member: str,
    now: float,
) -> list[Entry]:
    """`view` with each closed day's summary placed before the first entry after that day."""
    out: list[Entry] = []
    pending = sorted(days.items())
    i = 0
    for entry in view:
        while i < len(pending) and (pending[i][0][0] + 1) * DAY <= min(entry.time, now):
            out.append(_day_line(pending[i], project, member, entry.seq))
            i += 1
        out.append(entry)
    return out


def _day_line(
    day: tuple[tuple[int, str], list[Entry]], project: str, member: str, seq: int
) -> Entry:
    (number, partner), entries = day
    kinds: dict[str, int] = {}
    for e in entries:
        kinds[e.action] = kinds.get(e.action, 0) + 1
    most = max((e.disclosed[member] for e in entries), key=_disclosed_rank)
    return Entry(
        seq,
        float((number + 1) * DAY),
        partner,
        PARTNER_DISCLOSURES,
        project,
        partner,  # disclosed to the partner, as in the entries it stands for ...
        "",
        {member: most},  # ... and of this member's information, the most it learnt
        {
            "day": _iso_day(number),
            "actions": dict(sorted(kinds.items())),
            "entries": len(entries),
        },
        "",
        "",
    )


def _disclosed_rank(label: str) -> int:
    return _DISCLOSED_ORDER.index(label) if label in _DISCLOSED_ORDER else len(_DISCLOSED_ORDER)


def _iso_day(number: int) -> str:
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=number)).isoformat()


def check_purpose(purpose: str, *, required: bool, project: str) -> str:
    """A request's purpose, tidied; refused when missing where the project requires one."""
    purpose = purpose.strip()
    if len(purpose) > MAX_PURPOSE:
        raise InvalidArgument(f"purpose: {len(purpose)} characters; at most {MAX_PURPOSE}")
    if _CONTROL.search(purpose):
        raise InvalidArgument("purpose: control characters (newlines, tabs, ...) are not allowed")
    if hidden := unshown(purpose):
        raise InvalidArgument(
            f"purpose: {hidden} is not allowed: control characters and invisible format "
            "characters would change how the audit log reads where it is shown (a terminal, a "
            "report); write the purpose in plain text"
        )
    if required and not purpose:
        raise InvalidArgument(
            f"purpose: project {project!r} requires a purpose (a case reference, say) for "
            "every results request and every request reference issued or resolved; pass "
            '--purpose "..."'
        )
    return purpose
