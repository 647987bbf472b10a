"""Upload tickets: how S1 and S2 admit a project member's upload the matcher vouches for
(docs/operations.md "A project in two-server mode").

In a two-server project the members authenticate to the matcher only, with their project
tokens. The matcher, having checked a member's token, signs a ticket naming what the member
may upload as at S1 and S2 (`project/member/tag`, a fresh tag each upload) and until when,
with the members' key the roles were started with (`two-server role --member-key-file`),
which the matcher holds and members never see. S1 and S2 check the signature with the same
key and keep the upload under that name only. So the matcher vouches for who uploads what;
it can name uploads, but never reads the shares.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

PREFIX = "bmt1."
LABEL = b"blindmatch two-server upload ticket v1\x00"
TTL_SECONDS = 3600.0  # a ticket admits uploads for an hour
# A query ticket admits a query's or watch's records (at most MAX_QUERY_RECORDS, sent just
# before the query) for ten minutes: records no query or watch claimed by then are
# forgotten at S1 and S2 (realtime/twounclaimed.py).
QUERY_TTL_SECONDS = 600.0
NAME_RE = re.compile(
    r"[a-z0-9][a-z0-9_.-]{0,63}/[a-z0-9][a-z0-9_.-]{0,63}(@[0-9a-f]{8,64})?/[0-9a-f]{8,64}"
)
QUERY_MARK = "@"  # a query's records: project/member@tag/tag (no member name has an "@")


def _mac(key: str, payload: str) -> str:
    mac = hmac.new(key.encode(), LABEL + payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def issue(key: str, name: str, expires: float) -> str:
    """A ticket admitting uploads as `name` until `expires` (seconds since 1970)."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"a ticket's name is project/member/tag, not {name!r}")
    body = json.dumps({"name": name, "expires": int(expires)}, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{PREFIX}{payload}.{_mac(key, payload)}"


FORGED = "an upload ticket not signed with the members' key"


def is_ticket(token: str | None) -> bool:
    return bool(token) and str(token).startswith(PREFIX)


def verify(key: str, ticket: str, now: float) -> tuple[str, int]:
    """(name, expires) of a ticket signed with `key` that has not expired; ValueError,
    saying why, otherwise."""
    payload, _, mac = ticket.removeprefix(PREFIX).partition(".")
    if not ticket.startswith(PREFIX) or not payload or not mac:
        raise ValueError("not an upload ticket")
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise ValueError(FORGED)
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        name, expires = str(body["name"]), int(body["expires"])
    except (ValueError, KeyError, TypeError):
        raise ValueError("a damaged upload ticket") from None
    if not NAME_RE.fullmatch(name):
        raise ValueError("an upload ticket naming no project member")
    if expires <= now:
        raise ValueError("an upload ticket that has expired (ask the matcher for another)")
    return name, expires


def owner(name: str) -> tuple[str, str, str]:
    """(project, member, tag) of a ticket's name (a query's: the member less its mark)."""
    project, member, tag = name.split("/")
    return project, member.split(QUERY_MARK, 1)[0], tag


def query_name(project: str, member: str, tag: str) -> str:
    """The name at S1 and S2 of a query's records (docs/realtime.md "Queries in a two-server
    project"): under a member of its own, `member@tag`, so that its upload replaces none of
    the member's uploads (S1 and S2 replace a project member's earlier tags) and `Forget`
    of `member@tag` drops this query's alone."""
    return f"{project}/{member}{QUERY_MARK}{tag}/{tag}"


def is_query(name: str) -> bool:
    """Whether a ticket's name is a query's (`query_name`)."""
    return QUERY_MARK in name


__all__ = [
    "LABEL",
    "PREFIX",
    "QUERY_MARK",
    "QUERY_TTL_SECONDS",
    "TTL_SECONDS",
    "is_query",
    "is_ticket",
    "issue",
    "owner",
    "query_name",
    "verify",
]
