"""Named users under a member: its administrator (the holder of the member's own token)
issues and revokes them; each user's token acts for the member, and every audit entry made
with it names the user (DPA 2018 s.62: the log identifies the person who consulted or
disclosed). Storage: storage/user_store.py; who may call: rpc/auth.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from blindmatch.matcher.domain import User
from blindmatch.matcher.errors import InvalidArgument
from blindmatch.matcher.storage.store import Store

log = logging.getLogger("blindmatch.matcher")


def add_user(store: Store, project: str, member: str, name: str) -> str:
    """A new user's token (the only time it exists)."""
    store.project(project)  # expired: NotFound, like every member call
    if not name:
        raise InvalidArgument("user: required")
    token = store.add_user(project, member, name)
    log.info("%s/%s: user %s added", project, member, name)
    return token


def revoke_user(
    store: Store,
    project: str,
    member: str,
    name: str,
    *,
    replay_of: Mapping[str, object] | None = None,
) -> None:
    """`replay_of`: the replaced data dir's entry this one makes again (usecases/restore.py)."""
    store.project(project)
    if not name:
        raise InvalidArgument("user: required")
    store.revoke_user(project, member, name, replay_of)
    log.info("%s/%s: user %s revoked", project, member, name)


def list_users(store: Store, project: str, member: str) -> list[User]:
    store.project(project)
    return store.users(project, member)
