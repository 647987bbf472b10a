"""S1's and S2's own query limit, as a role applies it (core/querylimit.py says why): a
query's records (a query ticket's name, core/tickets.py QUERY_MARK) are counted the first
time the combiner has them compared with a partner's upload (S1's `Propose`, S2's `Expand`,
and S1's `Evaluate` and S2's `Prepare` for a batch over them), refused beyond the role's
`--query-limit`/`--project-query-limit`, audited in the role's audit log
(`twoserver.query`, `twoserver.query.refused`) and, with a data dir, kept on disk
(storage/role_store.py) and read back at start. A two-server watch's records are a query's
to the role (the same name form): counted at their first comparison with a new upload, the
later ones free while that count is in the window (core/querylimit.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from blindmatch.matcher import errors
from blindmatch.matcher.core import tickets
from blindmatch.matcher.core.querylimit import Counted, QueryCounter, QueryLimits
from blindmatch.matcher.storage.role_store import RoleStore

log = logging.getLogger("blindmatch.matcher.twoserver")

Audit = Callable[..., None]  # _Role.log(actor, action, member="", **detail)


class RoleQueries:
    """One role's count of the queries it took part in (S1's or S2's)."""

    def __init__(
        self, party: str, limits: QueryLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.party = party
        self.counter = QueryCounter(limits or QueryLimits(), party)
        self.clock = clock
        self.store: RoleStore | None = None

    @property
    def limits(self) -> QueryLimits:
        return self.counter.limits

    def keep(self, store: RoleStore) -> int:
        """Count the queries `store` kept (within the window) and keep new ones there; how
        many were read back."""
        self.store = store
        kept = [Counted(*row) for row in store.queries_since(self.clock() - self.counter.window)]
        self.counter.restore(kept)
        return len(kept)

    def check_upload(self, name: str) -> None:
        """A query's records sent again under a name already counted are refused: a query
        ticket admits one query's records (so records sent again are counted again, under a
        new ticket)."""
        if tickets.is_query(name) and self.counter.counted(name):
            raise errors.FailedPrecondition(
                f"member: {name!r} is a query {self.party} has counted already (a query ticket "
                "admits one query's records): ask the matcher for a new query ticket"
            )

    def admit(self, names: Sequence[str], records: Sequence[int], audit: Audit) -> None:
        """Count each query among `names` (with its `records`) not counted yet, or refuse
        the call (ResourceExhausted naming the limit), audited either way."""
        for name, n in zip(names, records, strict=True):
            if not tickets.is_query(name):
                continue
            project, member, _ = tickets.owner(name)
            # Its own project's uploads only: the project limit binds a C that makes up names.
            others = [o for o in names if o != name and not o.startswith(f"{project}/")]
            if others:
                raise errors.PermissionDenied(
                    f"members: query {name!r} compared with {others[0]!r}; {self.party} compares "
                    "a query with its own project's uploads only"
                )
            if self.counter.counted(name, self.clock()):
                continue
            try:
                counted = self.counter.admit(name, project, member, n, self.clock())
            except errors.ResourceExhausted as exc:
                audit("combiner", "twoserver.query.refused", f"{project}/{member}", query=name,
                      records=n, limits=self.limits.text(), reason=str(exc))  # fmt: skip
                log.warning("%s refused a query of %s/%s: %s", self.party, project, member, exc)
                raise
            if counted is None:
                continue
            if self.store is not None:
                self.store.count_query(counted.name, counted.project, counted.member,
                                       counted.records, counted.at)  # fmt: skip
            mine, everyone = self.counter.used(project, member, counted.at)
            audit("combiner", "twoserver.query", f"{project}/{member}", query=name, records=n,
                  member_used=mine, project_used=everyone,
                  limits=self.limits.text())  # fmt: skip


__all__ = ["RoleQueries"]
