"""Real-time queries under the trust rules: consent, the audit log, erasure and expiry."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import NotFoundError
from blindmatch.matcher.core.audit import ACTIONS
from tests.support import (
    GRACE,
    HOUR,
    PURPOSE,
    Clock,
    Matcher,
    ask,
    db_rows,
    index_all,
    orgs_encoded,
    person,
    start,
)

encoded = orgs_encoded  # the fixture: each org encoded with the test secret


def audit_rows(data_dir: Path) -> list[tuple]:
    return db_rows(data_dir, "audit")


def index_rows(data_dir: Path, project: str) -> int:
    with sqlite3.connect(data_dir / "index.sqlite") as db:
        return db.execute(
            "SELECT COUNT(*) FROM index_records WHERE project=?", (project,)
        ).fetchone()[0]


def test_a_partners_consent_limits_what_a_query_reveals(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
        south.set_consent("trial", "count")
    with matcher.member(project.tokens["north"]) as north:
        answer = north.query(
            "trial", grace[0], clk_bits=grace[1], fingerprint=grace[2], purpose=PURPOSE
        )
    assert answer.results == [[]]  # no per-record hit from a count-only partner
    assert answer.counts == {"south": 1}
    assert answer.partner_levels == {"south": "count"}


def test_every_query_is_in_the_audit_log_with_its_purpose(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    with matcher.member(project.tokens["north"]) as north:
        assert ask(north, "trial", person(secret_file, **GRACE)) == ["south"]
    matcher.server.realtime.query_log.flush()
    rows = audit_rows(matcher.data_dir)
    actions = [r[3] for r in rows]
    assert "index.change" in actions
    query = next(r for r in rows if r[3] == "query")
    assert (query[2], query[4], query[6]) == ("north", "trial", PURPOSE)  # actor, project, purpose
    assert '"south"' in query[7]  # disclosed: which partner's information north learnt
    with matcher.operator() as op:
        assert op.verify_audit().ok
    assert {"query", "query.refused", "watch", "watch.notify", "index.change"} <= set(ACTIONS)


def test_erasure_drops_the_members_standing_index(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
        south.erase("trial")
    assert index_rows(matcher.data_dir, "trial") == 0
    with matcher.member(project.tokens["north"]) as north:
        assert ask(north, "trial", grace) == []


def test_an_expired_projects_indexes_are_deleted(
    tmp_path: Path, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    clock = Clock()
    matcher = start(tmp_path / "data", clock, sweep_interval=0.05)
    try:
        with matcher.operator() as op:
            project = op.create_project(
                "short", ["north", "south"], expires_unix=int(clock.now + 2 * HOUR)
            )
        with matcher.member(project.tokens["south"]) as south:
            index_all(south, "short", encoded["south"])
        assert index_rows(matcher.data_dir, "short") == 4
        clock.advance(3 * HOUR)
        deadline = time.monotonic() + 10
        while index_rows(matcher.data_dir, "short") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert index_rows(matcher.data_dir, "short") == 0
        with (
            matcher.member(project.tokens["north"]) as north,
            pytest.raises(NotFoundError, match="expired"),
        ):
            ask(north, "short", person(secret_file, **GRACE))
    finally:
        matcher.server.stop(grace=None)
