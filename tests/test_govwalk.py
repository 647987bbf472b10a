"""The governance pack's promises about what the matcher keeps, checked against a real matcher
on loopback and its real SQLite files (govwalk, 2026-12-07).

docs/governance/processing.md: a query's purpose (a case reference; in an integrated system
the custody and collar numbers) is kept in the audit log and the query log, the query log's
blanked when the member erases its data. The server log, which goes to the operator's log
collection under its own retention, out of the agreement's reach, held it too: every refused
query's WARNING line quoted the purpose (and, at DEBUG, every answered query's line).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.errors import RejectedError
from tests.support import GRACE, Matcher, Org, db_rows, encode, index_all, person

CASE = "custody 24/118 PC 1234 govwalk-case"  # as sharing-models.md suggests an integrator sends


def test_no_query_purpose_reaches_the_server_log(
    matcher: Matcher, project: ProjectTokens, orgs: dict[str, Org], secret_file: Path,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="blindmatch.matcher")
    south_encoded = encode(orgs["south"], tmp_path / "south.encoded", read_secret(secret_file))
    with matcher.operator() as op:
        op.set_query_limits("trial", member="north", per_day=1)
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", south_encoded)
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["north"]) as north:
        user = north.add_user("trial", "pc-1")
    with matcher.member(user) as pc1:
        answer = pc1.query("trial", grace[0], clk_bits=grace[1], fingerprint=grace[2],
                           purpose=CASE + " answered")  # fmt: skip
        assert [m.partner for m in answer.results[0]] == ["south"]
        with pytest.raises(RejectedError, match="RESOURCE_EXHAUSTED"):
            pc1.query("trial", grace[0], clk_bits=grace[1], fingerprint=grace[2],
                      purpose=CASE + " refused")  # fmt: skip
    lines = [r.getMessage() for r in caplog.records]
    # No line holds either purpose (the old code quoted both, the answered one at DEBUG) ...
    assert not [line for line in lines if "govwalk-case" in line], lines
    # ... and the refusal is still there, with who was refused and why.
    assert any(line.startswith("query refused: trial/north (user pc-1), 1 record: query quota")
               for line in lines), lines  # fmt: skip
    # The audit log keeps both, as the pack says (s.62: the justification of a consultation).
    audited = {(row[3], row[6]) for row in db_rows(matcher.data_dir, "audit")}
    assert ("query", CASE + " answered") in audited
    assert ("query.refused", CASE + " refused") in audited


def test_an_erasure_leaves_no_user_name_in_the_query_logs_refusal_counts(
    matcher: Matcher, project: ProjectTokens, secret_file: Path
) -> None:
    """processing.md: a member's erasure blanks the named users of its queries logged until
    then. A named user's refused request (bad input) is counted in memory and written to the
    query log up to ten seconds later, stamped with the time it is written: one refused just
    before the erasure was written after it, its user's name kept until the project expired."""
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["north"]) as north:
        user = north.add_user("trial", "pc-1")
    with matcher.member(user) as pc1, pytest.raises(RejectedError, match="INVALID_ARGUMENT"):
        pc1.query("trial", grace[0], clk_bits=grace[1], fingerprint=grace[2], purpose="")
    with matcher.member(project.tokens["north"]) as north:
        north.erase("trial")
    with matcher.operator() as op:
        op.query_report("trial")  # writes the refusals counted so far (else within 10 s)
    rows = db_rows(matcher.data_dir, "query_log", "index.sqlite")
    assert rows, "the refused request is counted in the query log"
    # (time, project, member, kind, purpose, records, records_with_hits, refused, user)
    assert [r for r in rows if r[8] == "pc-1"] == []
    assert {(r[2], r[7], r[8]) for r in rows} == {("north", "INVALID_ARGUMENT", "(erased)")}
