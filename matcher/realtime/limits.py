"""The real-time engine's query limits, the operator's setting of them and of watching, and
the volume report: part of `Realtime` (engine.py), which holds the stores they read."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from blindmatch.matcher import errors
from blindmatch.matcher.core import audit
from blindmatch.matcher.core.volume import QueryVolume, volume_report
from blindmatch.matcher.domain import DEFAULT_QUOTA, QUERY, REFUSED_REQUEST, WATCH, QueryQuota
from blindmatch.matcher.realtime.querylog import QueryLog
from blindmatch.matcher.storage.index_store import IndexStore
from blindmatch.matcher.storage.store import Store
from blindmatch.protos.wire import limits_conflict

# The most a query limit may be set to (records a minute or a day): far beyond any real
# quota, and well inside SQLite's 64-bit INTEGER (a uint64 on the wire may not be).
MAX_QUERY_LIMIT = 10**12


class LimitCalls:
    """Mixed into `Realtime`, which provides the attributes below."""

    store: Store
    index_store: IndexStore
    query_log: QueryLog

    clock: Callable[[], float]

    def limits_for(self, project: str, member: str) -> QueryQuota:
        table = self.index_store.limits()
        default = table.get((project, ""), (0, 0))
        own = table.get((project, member), (0, 0))
        return QueryQuota(
            per_minute=own[0] or default[0] or DEFAULT_QUOTA.per_minute,
            per_day=own[1] or default[1] or DEFAULT_QUOTA.per_day,
        )

    def set_limits(
        self,
        project: str,
        member: str,
        per_minute: int,
        per_day: int,
        allow_watch: bool | None,
        replay_of: Mapping[str, object] | None = None,
    ) -> QueryQuota:
        """`replay_of`: the replaced data dir's `query.limits` entry this one makes again
        (`admin restore`, usecases/restore.py)."""
        self.store.project(project)  # NotFound for an unknown project
        if member and member not in self.store.members(project):
            raise errors.NotFound(f"no member {member!r} in project {project!r}")
        for field, value in (("records_per_minute", per_minute), ("records_per_day", per_day)):
            if value > MAX_QUERY_LIMIT:  # refused before its audit entry: nothing written
                raise errors.InvalidArgument(
                    f"{field}: {value}; at most {MAX_QUERY_LIMIT:,} (0 keeps the current value)"
                )
        # Refused before its entry: nothing written (srvleft; before, set as given). Not a
        # replay's: its entry holds the limits then in force, both, as they were set.
        problem = limits_conflict(per_minute, per_day, member, allow_watch is not None)
        if problem and replay_of is None:
            raise errors.InvalidArgument(problem)
        current = self.index_store.limits().get((project, member), (0, 0))
        per_minute, per_day = per_minute or current[0], per_day or current[1]
        # Recorded first: no change without its entry (a crash between the two leaves an
        # entry for limits the operator was never told were set, and retries).
        detail = {"per_minute": per_minute, "per_day": per_day, "allow_watch": allow_watch}
        self.store.audit.append(
            audit.maybe_replayed(audit.OPERATOR, "query.limits", project, member, detail, replay_of)
        )
        self.index_store.set_limits(project, member, per_minute, per_day)
        if allow_watch is not None:
            self.index_store.set_allow_watch(project, allow_watch)
        return self.limits_for(project, member)

    def watching_allowed(self, project: str) -> bool:
        return project in self.index_store.allow_watch()

    def report(self, project: str, hours: int) -> list[QueryVolume]:
        self.store.project(project)
        self.query_log.flush()
        entries = [
            e
            for e in self.index_store.logged_queries(self.clock() - hours * 3600, project)
            if e.kind in (QUERY, WATCH, REFUSED_REQUEST)
        ]
        members = self.store.members(project)
        limits = {m: self.limits_for(project, m) for m in members}
        return volume_report(entries, members, limits, hours)
