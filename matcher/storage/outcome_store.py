"""What the combiner learned of each pair of two-server uploads (core/outcomes.py), so that
a later run over unchanged uploads reuses it instead of asking S1 and S2 for pairs they
evaluate once an upload (core/pairbudget.py).

One row a pair of current uploads (by their names at S1 and S2, project/member/tag), with
the cut-offs and rule of the run that learned it: a run at other cut-offs or another rule
cannot reuse it. A run keeps a pair's row as soon as it holds the pair's outcome (its parts
of S1's proposal evaluated, then once its reach pairs and once its extras are answered), `pending`
while a batch of the pair is out: a run that failed with a row pending may have had S1 and
S2 evaluate pairs the outcome does not hold, so a later run is refused until one of the two
members uploads again (usecases/tworuns.py). A member's new upload drops the rows of its
earlier one, its erasure its rows, a project's expiry all of them (upload_store.py
`_forget_uploads`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import numpy as np

from blindmatch.matcher.core.compare import Candidates
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
    pending INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project, name_a, name_b)
);
CREATE TABLE IF NOT EXISTS twoserver_batches (
    project TEXT NOT NULL,
    name_a TEXT NOT NULL,
    name_b TEXT NOT NULL,
    batch TEXT NOT NULL,
    clk INTEGER NOT NULL,
    pairs INTEGER NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    found BLOB NOT NULL,
    PRIMARY KEY (project, name_a, name_b, batch)
);
"""

_NONE = (np.empty(0, np.uint64), np.empty(0, np.float64))
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
    pending: bool = False  # a batch was out when run_id stopped: S1 and S2 may have spent it


def forget_outcomes(tx: sqlite3.Connection, project: str, member: str | None = None) -> None:
    """Delete a project's outcomes (or those of a pair involving `member`) inside `tx`."""
    if member is None:
        tx.execute("DELETE FROM twoserver_outcomes WHERE project=?", (project,))
        tx.execute("DELETE FROM twoserver_batches WHERE project=?", (project,))
    else:
        tx.execute(
            "DELETE FROM twoserver_outcomes WHERE project=? AND (member_a=? OR member_b=?)",
            (project, member, member),
        )
        prefix = f"{project}/{member}/"  # the batches name uploads (project/member/tag)
        tx.execute("DELETE FROM twoserver_batches WHERE project=? AND (substr(name_a, 1, ?)=? "
                   "OR substr(name_b, 1, ?)=?)",
                   (project, len(prefix), prefix, len(prefix), prefix))  # fmt: skip


@dataclass(frozen=True)
class StoredBatch:
    """A batch of S1's proposal journaled (usecases/twobatches.py): `found` its links (keys
    of name_a's row first) once answered."""

    batch: str
    clk: int
    pairs: int
    answered: bool
    found: Outcome
    refused: bool = False  # S1 or S2 refused it: no shares kept, the pair not resumable


class OutcomeStore(StoreBase):
    def two_server_outcomes(
        self, project: str, names: list[str]
    ) -> dict[tuple[str, str], StoredOutcome]:
        """The outcomes kept of pairs among the uploads `names`, by (name_a, name_b), name_a
        the lower."""
        wanted = set(names)
        rows = self.db.query(
            "SELECT name_a, name_b, cutoffs, rule, run_id, outcome, pending "
            "FROM twoserver_outcomes WHERE project=?",
            (project,),
        )
        return {
            (a, b): StoredOutcome(
                tuple(json.loads(c)), rule, run_id, Outcome.from_bytes(blob), bool(pending)
            )
            for a, b, c, rule, run_id, blob, pending in rows
            if a in wanted and b in wanted
        }

    def keep_two_server_outcome(
        self,
        project: str,
        run_id: str,
        cutoffs: tuple[float, ...],
        rule: str,
        names: tuple[str, str, str, str],
        outcome: Outcome | None,
    ) -> bool:
        """One pair of uploads' row, as a run goes (`names`: name_a < name_b, then their
        members): its `outcome` (no longer pending), or with None pending (the outcome kept
        so far, none where there is none yet). Only while both uploads are current: whether
        it was kept."""
        a, b, ma, mb = names
        blob = (outcome or Outcome.of(Candidates.empty(), _NONE, _NONE)).to_bytes()
        set_ = ("outcome=excluded.outcome, pending=0, cutoffs=excluded.cutoffs, "
                "rule=excluded.rule" if outcome is not None else "pending=1")  # fmt: skip
        with self.db.tx() as tx:
            current = {r[0] for r in tx.execute(_CURRENT_NAMES, (project,))}
            if a not in current or b not in current:
                return False
            tx.execute(
                "INSERT INTO twoserver_outcomes VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT "
                f"(project, name_a, name_b) DO UPDATE SET run_id=excluded.run_id, {set_}",
                (project, a, b, ma, mb, json.dumps(list(cutoffs)), rule, run_id, blob,
                 int(outcome is None)),
            )  # fmt: skip
            if outcome is not None:  # the batches' answers are in it
                _drop_batches(tx, project, a, b)
        return True

    def two_server_batches(self, project: str, name_a: str, name_b: str) -> list[StoredBatch]:
        """The batches journaled of a pair of uploads (name_a the lower) since its outcome
        was last kept."""
        rows = self.db.query(
            "SELECT batch, clk, pairs, answered, found FROM twoserver_batches "
            "WHERE project=? AND name_a=? AND name_b=?",
            (project, name_a, name_b),
        )
        return [StoredBatch(b, clk, n, done == 1, Outcome.from_bytes(blob), done == 2)
                for b, clk, n, done, blob in rows]  # fmt: skip

    def journal_two_server_batch(
        self, project: str, name_a: str, name_b: str, batch: str, clk: int, pairs: int,
        found: Outcome | None = None, refused: bool = False,
    ) -> bool:  # fmt: skip
        """A batch of the pair of uploads out (`found` None), answered, or `refused` (the
        `answered` column: 0, 1, 2). Only while both uploads are current: whether it was
        journaled (before fuzzend a batch of a run whose project the operator ended, or one
        of whose members erased, while the batch was out was journaled after the deletion:
        the pair's link bits stayed in the data dir)."""
        blob = (found or Outcome.of(Candidates.empty(), _NONE, _NONE)).to_bytes()
        state = 2 if refused else int(found is not None)
        with self.db.tx() as tx:
            current = {r[0] for r in tx.execute(_CURRENT_NAMES, (project,))}
            if name_a not in current or name_b not in current:
                return False
            tx.execute(
                "INSERT INTO twoserver_batches VALUES (?,?,?,?,?,?,?,?) ON CONFLICT "
                "(project, name_a, name_b, batch) DO UPDATE SET answered=excluded.answered, "
                "found=excluded.found",
                (project, name_a, name_b, batch, clk, pairs, state, blob),
            )
        return True

    def drop_two_server_batch(self, project: str, name_a: str, name_b: str, batch: str) -> None:
        """A batch that failed before S1 had it (nothing of it evaluated)."""
        with self.db.tx() as tx:
            tx.execute("DELETE FROM twoserver_batches WHERE project=? AND name_a=? AND name_b=? "
                       "AND batch=?", (project, name_a, name_b, batch))  # fmt: skip

    def drop_two_server_outcome(self, project: str, name_a: str, name_b: str) -> None:
        """A pair of uploads' row gone (a pending pair none of whose pairs was evaluated)."""
        with self.db.tx() as tx:
            tx.execute(
                "DELETE FROM twoserver_outcomes WHERE project=? AND name_a=? AND name_b=?",
                (project, name_a, name_b),
            )
            _drop_batches(tx, project, name_a, name_b)

    def keep_two_server_outcomes(
        self,
        project: str,
        run_id: str,
        cutoffs: tuple[float, ...],
        rule: str,
        outcomes: dict[tuple[str, str], tuple[str, str, Outcome]],
    ) -> int:
        """A finished run's outcomes, `outcomes` by (name_a, name_b), name_a the lower, each
        with its two members, replacing those pairs' rows (none pending after it); only pairs
        of uploads still current are kept (a member that erased or uploaded again meanwhile:
        none of its). The rows of other pairs of current uploads stay (a run over fewer
        members). How many were kept."""
        with self.db.tx() as tx:
            current = {r[0] for r in tx.execute(_CURRENT_NAMES, (project,))}
            rows = [
                (project, a, b, ma, mb, json.dumps(list(cutoffs)), rule, run_id, o.to_bytes(),
                 0)
                for (a, b), (ma, mb, o) in outcomes.items()
                if a in current and b in current
            ]  # fmt: skip
            tx.executemany("INSERT OR REPLACE INTO twoserver_outcomes VALUES (?,?,?,?,?,?,?,?,?,?)",
                           rows)  # fmt: skip
            for row in rows:
                _drop_batches(tx, project, row[1], row[2])
        return len(rows)


def _drop_batches(tx: sqlite3.Connection, project: str, name_a: str, name_b: str) -> None:
    tx.execute("DELETE FROM twoserver_batches WHERE project=? AND name_a=? AND name_b=?",
               (project, name_a, name_b))  # fmt: skip


__all__ = ["SCHEMA", "OutcomeStore", "StoredBatch", "StoredOutcome", "forget_outcomes"]
