"""What the combiner learned of each pair of two-server uploads in a project's last finished
run (core/outcomes.py), so that a later run over unchanged uploads reuses it instead of
asking S1 and S2 for pairs they evaluate once an upload (core/pairbudget.py).

One row a pair of current uploads (by their names at S1 and S2, project/member/tag), with
the cut-offs and rule of the run that learned it: a run at other cut-offs or another rule
cannot reuse it. A finished run replaces the project's rows; a member's new upload drops the
rows of its earlier one, its erasure its rows, a project's expiry all of them
(upload_store.py `_forget_uploads`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from blindmatch.matcher.core.outcomes import Outcome
from blindmatch.matcher.storage.base import StoreBase

SCHEMA = """
CREATE TABLE IF NOT EXISTS twoserver_outcomes (
    project TEXT NOT NULL,
    name_a TEXT NOT NULL,
    name_b TEXT NOT NULL,
    member_a TEXT NOT NULL,
    member_b TEXT NOT NULL,
    cutoffs TEXT NOT NULL,
    rule TEXT NOT NULL,
    run_id TEXT NOT NULL,
    outcome BLOB NOT NULL,
    PRIMARY KEY (project, name_a, name_b)
);
"""

_CURRENT_NAMES = (
    "SELECT t.name FROM upload_twoserver t JOIN uploads u ON u.id = t.upload_id "
    "WHERE u.project=? AND u.current=1"
)


@dataclass(frozen=True)
class StoredOutcome:
    """A pair of uploads' outcome, members named in the stored order (name_a < name_b)."""

    cutoffs: tuple[float, ...]
    rule: str
    run_id: str
    outcome: Outcome


def forget_outcomes(tx: sqlite3.Connection, project: str, member: str | None = None) -> None:
    """Delete a project's outcomes (or those of a pair involving `member`) inside `tx`."""
    if member is None:
        tx.execute("DELETE FROM twoserver_outcomes WHERE project=?", (project,))
    else:
        tx.execute(
            "DELETE FROM twoserver_outcomes WHERE project=? AND (member_a=? OR member_b=?)",
            (project, member, member),
        )


class OutcomeStore(StoreBase):
    def two_server_outcomes(
        self, project: str, names: list[str]
    ) -> dict[tuple[str, str], StoredOutcome]:
        """The outcomes kept of pairs among the uploads `names`, by (name_a, name_b), name_a
        the lower."""
        wanted = set(names)
        rows = self.db.query(
            "SELECT name_a, name_b, cutoffs, rule, run_id, outcome FROM twoserver_outcomes "
            "WHERE project=?",
            (project,),
        )
        return {
            (a, b): StoredOutcome(tuple(json.loads(c)), rule, run_id, Outcome.from_bytes(blob))
            for a, b, c, rule, run_id, blob in rows
            if a in wanted and b in wanted
        }

    def keep_two_server_outcomes(
        self,
        project: str,
        run_id: str,
        cutoffs: tuple[float, ...],
        rule: str,
        outcomes: dict[tuple[str, str], tuple[str, str, Outcome]],
    ) -> int:
        """Replace the project's outcomes with a finished run's: `outcomes` by (name_a,
        name_b), name_a the lower, each with its two members; only pairs of uploads still
        current are kept (a member that erased or uploaded again meanwhile: none of its).
        How many were kept."""
        with self.db.tx() as tx:
            current = {r[0] for r in tx.execute(_CURRENT_NAMES, (project,))}
            forget_outcomes(tx, project)
            rows = [
                (project, a, b, ma, mb, json.dumps(list(cutoffs)), rule, run_id, o.to_bytes())
                for (a, b), (ma, mb, o) in outcomes.items()
                if a in current and b in current
            ]
            tx.executemany("INSERT INTO twoserver_outcomes VALUES (?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)


__all__ = ["SCHEMA", "OutcomeStore", "StoredOutcome", "forget_outcomes"]
