"""Claims of the privacy pages (docs/privacy.md, docs/threat-model.md, docs/security.md) that
no other test would catch breaking, each checked against a real matcher on loopback: what the
matcher keeps of a token, of a member's export and of its CLKs, what its audit log holds, what
a member's view of the log shows of the operator's exports, and what the keyed fingerprint
costs a guesser. The other claims of those pages, and the tests that hold them, are listed in
the CHANGELOG's privclaims entry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path

import pytest

from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.encoding.fingerprint import canonical_json, fingerprint
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote.model import WatchEvent
from blindmatch.matcher.core.audit import Entry, member_entries
from blindmatch.matcher.core.tokens import token_hash
from tests.support import (
    GRACE,
    NORTH_CSV,
    NORTH_MAP,
    PERSON_SCHEMA,
    PURPOSE,
    SOUTH_CSV,
    SOUTH_MAP,
    STRONG_SECRET,
    Matcher,
    Org,
    ask,
    encode,
    files_of,
    first_notification,
    index_all,
    person,
    uploaded_and_run,
)

# Local ids no file of the matcher could hold by chance, so that finding one means it was sent.
NORTH_IDS = [f"URN-4471-N{i}" for i in range(1, 6)]
SOUTH_IDS = [f"PID-9302-S{i}" for i in range(10, 14)]
# Values of the exports' identifying columns, as exported and as normalised (lower case, no
# spaces or punctuation): none may reach the matcher in any form.
IDENTIFIERS = [
    "o'brien", "obrien", "elodie", "kovacs", "kovács", "zoltan", "hughes", "nowak", "byrne",
    "aoife", "sw1a 1aa", "sw1a1aa", "cf10 1aa", "cf101aa", "eh1 9zz", "eh19zz", "ls6 3dr",
    "1985-03-02", "02/03/1985", "2001-12-12", "12/12/2001", "1979-08-14",
]  # fmt: skip


@pytest.fixture
def marked(tmp_path: Path, secret_file: Path) -> dict[str, Encoded]:
    """The shared small exports with local ids that cannot occur by chance, encoded."""
    north_csv = NORTH_CSV
    for i, new in enumerate(NORTH_IDS, 1):
        north_csv = north_csv.replace(f"\nN{i},", f"\n{new},")
    south_csv = SOUTH_CSV
    for i, new in zip(range(10, 14), SOUTH_IDS, strict=True):
        south_csv = south_csv.replace(f"\nS-{i},", f"\n{new},")
    secret = read_secret(secret_file)
    encoded = {}
    for name, data, mapping in (("north", north_csv, NORTH_MAP), ("south", south_csv, SOUTH_MAP)):
        (tmp_path / f"{name}.csv").write_text(data, encoding="utf-8")
        (tmp_path / f"{name}.toml").write_text(mapping, encoding="utf-8")
        org = Org(tmp_path / f"{name}.csv", tmp_path / f"{name}.toml")
        encoded[name] = encode(org, tmp_path / f"{name}.encoded", secret)
    for ids, name in ((NORTH_IDS, "north"), (SOUTH_IDS, "south")):
        assert all(i in (encoded[name].path / "local" / "ids.csv").read_text() for i in ids)
    return encoded


def clks_of(encoded: Encoded) -> list[bytes]:
    whole = b"".join(encoded.iter_chunks(1000))
    size = encoded.clk_bytes
    return [whole[i : i + size] for i in range(0, len(whole), size)]


def full_log_text(matcher: Matcher) -> str:
    with matcher.operator() as op:
        return json.dumps(list(op.audit("")), ensure_ascii=False)


def everything_the_matcher_keeps(matcher: Matcher) -> bytes:
    """Every file of its data dir (databases, their write-ahead logs, CLK files, keys),
    one after another, in lower case."""
    return b"\0".join(files_of(matcher.data_dir).values()).lower()


def test_the_matcher_keeps_a_token_only_as_its_sha256_never_the_token(
    matcher: Matcher, project: ProjectTokens, marked: dict[str, Encoded]
) -> None:
    """security.md, "Roles and tokens": a member's token is "stored by the matcher only as a
    SHA-256 hash"; so are named users' tokens and a rotated member's new one."""
    uploaded_and_run(matcher, project, marked)
    with matcher.member(project.tokens["north"]) as north:
        user = north.add_user("trial", "pc-4471")
    with matcher.operator() as op:
        rotated = op.rotate_token("trial", "south")
    tokens = [project.tokens["north"], project.tokens["south"], user, rotated]
    with matcher.member(user) as pc:
        pc.results("trial", purpose=PURPOSE)  # a token the matcher has just checked
    kept = everything_the_matcher_keeps(matcher)
    for token in (*tokens, matcher.admin_token):
        assert token.lower().encode() not in kept, "a token is kept as it was issued"
    for token in tokens:
        assert token_hash(token) in b"\0".join(files_of(matcher.data_dir).values())


def test_no_local_id_or_identifier_reaches_the_matcher_or_its_audit_log(
    matcher: Matcher, project: ProjectTokens, marked: dict[str, Encoded]
) -> None:
    """DESIGN.md and threat-model.md, "What each party learns": the matcher "never sees raw
    identifiers, the secret or local ids"; uploads carry CLKs and row positions only. After
    uploads, a run, results and a look at the log, nothing the matcher keeps, and nothing its
    log says, holds a local id, an identifying value of the exports or the secret."""
    uploaded_and_run(matcher, project, marked)
    for name in ("north", "south"):
        with matcher.member(project.tokens[name]) as member:
            assert member.results("trial", purpose=PURPOSE).hits  # the run found people
    kept, log = everything_the_matcher_keeps(matcher), full_log_text(matcher).lower()
    for value in (*NORTH_IDS, *SOUTH_IDS, *IDENTIFIERS):
        assert value.lower().encode() not in kept, value
        assert value.lower() not in log, value
    assert STRONG_SECRET.encode() not in kept and STRONG_SECRET not in log
    assert bytes.fromhex(STRONG_SECRET) not in b"\0".join(files_of(matcher.data_dir).values())


def test_the_audit_log_holds_no_clk_token_or_row_position(
    matcher: Matcher, secret_file: Path, marked: dict[str, Encoded]
) -> None:
    """security.md, "What is logged": an entry's `detail` holds "counts, run ids; never CLKs,
    tokens or row positions". Checked over the whole log after uploads, a run, results at
    `mapping` (which shows partners' rows), an index change, a query and an erasure."""
    with matcher.operator() as op:
        project = op.create_project("trial", ["north", "south"], disclosure="mapping")
    uploaded_and_run(matcher, project, marked)
    with matcher.member(project.tokens["north"]) as north:
        got = north.results("trial", purpose=PURPOSE)
    rows = {(h.row, h.partner_row) for h in got.hits}
    assert rows and any(partner_row for _, partner_row in rows)  # mapping shows them
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", marked["south"])
    with matcher.member(project.tokens["north"]) as north:
        assert ask(north, "trial", person(secret_file, **GRACE)) == ["south"]
    with matcher.member(project.tokens["south"]) as south:
        south.erase("trial")
    with matcher.operator() as op:
        entries = list(op.audit("trial"))
    text = json.dumps(entries)
    for token in (*project.tokens.values(), matcher.admin_token):
        assert token not in text
    for clk in (*clks_of(marked["north"]), *clks_of(marked["south"])):
        for shown in (clk.hex(), base64.b64encode(clk).decode(), clk[:16].hex()):
            assert shown not in text
    for entry in entries:
        detail = entry["detail"]
        assert isinstance(detail, dict)
        named = " ".join(str(k) for k in detail).lower()
        assert "row" not in named and "clk" not in named.replace("clk_bits", ""), entry
        if entry["action"] == "results.disclose":
            assert set(detail) == {"run_id", "counts"}, entry
            assert all(isinstance(n, int) for n in detail["counts"].values())


def test_a_members_view_shows_that_the_operator_exported_the_log_not_how_many_entries_it_holds(
    matcher: Matcher, project: ProjectTokens, marked: dict[str, Encoded]
) -> None:
    """threat-model.md, "What each party's audit view shows": a member sees the operator's
    exports as project-wide events, and its view is numbered by itself so that it cannot
    count what others wrote. The operator's `audit.export` entry counted the project's
    entries (and said from which of the log's seqs): shown in full to every member, two
    exports told a member how many entries its partners caused in between (their looks,
    queries, watch notifications), at once rather than in the day's line."""
    uploaded_and_run(matcher, project, marked)
    with matcher.operator() as op:
        list(op.audit("trial", after=2))
    with matcher.member(project.tokens["north"]) as north:
        north.results("trial", purpose=PURPOSE)  # an entry south's view must not count
    with matcher.operator() as op:
        logged = [e["detail"] for e in op.audit("trial") if e["action"] == "audit.export"]
    assert logged == [{"after_seq": 2, "entries": 3}]  # the operator's log says how many
    with matcher.member(project.tokens["south"]) as south:
        seen = [e for e in south.audit("trial") if e["actor"] == "operator"]
    exports = [e for e in seen if e["action"] == "audit.export"]
    assert len(exports) == 2
    assert all(e["detail"] == {} for e in exports), exports


def test_the_fingerprint_is_an_hmac_under_a_key_scrypt_stretched_at_the_documented_cost(
    marked: dict[str, Encoded], secret_file: Path
) -> None:
    """privacy.md, "The secret and the fingerprint": the fingerprint the matcher stores is
    HMAC-SHA256 of the schema's canonical JSON under a key stretched from the secret with
    scrypt, N = 2^17, r = 8, p = 1 (128 MiB and about a second a guess). Recomputed here
    from those words alone, it must be what an ENCODED folder carries: a cheaper
    stretch (or none) would make the stored fingerprint a cheap oracle for the secret."""
    secret = read_secret(secret_file)
    schema = load_schema(PERSON_SCHEMA).raw
    key = hashlib.scrypt(
        secret, salt=b"blindmatch fingerprint v2", n=2**17, r=8, p=1, maxmem=2**28, dklen=32
    )
    expected = hmac.new(key, canonical_json(schema), hashlib.sha256).digest()
    assert marked["north"].fingerprint == expected == marked["south"].fingerprint
    assert fingerprint(schema, secret) == expected
    other = secrets.token_hex(32).encode()
    assert fingerprint(schema, other) != expected


def entry(seq: int, actor: str, action: str, member: str, **detail: object) -> Entry:
    return Entry(seq, 1000.0 + seq, actor, action, "trial", member, "", {}, detail, "", "h")


def test_a_members_view_names_its_own_earlier_entries_by_the_views_numbers_not_the_logs() -> None:
    """security.md, "Export": a member's view is numbered by itself, so that it cannot count
    what others wrote between two of its entries. An index change voided at a start-up
    (`index.change.void`, `announced`) and an erasure completed at one (`erase.complete`,
    `erased`) named the member's own entry by the log's seq: the gap between that seq and
    the view's number counted its partners' entries before it. They name it by the view's
    number now, so a member can also find it in its own export; a replayed entry's
    `replay_of` leaves out the replaced log's seq."""
    log = [
        entry(1, "operator", "project.create", ""),
        entry(2, "south", "index.change", "south", change_id="c1"),
        entry(3, "north", "query", "north"),  # a partner's: outside south's view
        entry(4, "north", "upload", "north"),
        entry(5, "south", "index.change", "south", change_id="c2"),
        entry(6, "matcher", "index.change.void", "south", announced=5, change_id="c2"),
        entry(7, "north", "query", "north"),
        entry(8, "south", "erase", "south", uploads=0, links=0),
        entry(9, "matcher", "erase.complete", "south", erased=8, upload_files=0),
        entry(10, "matcher", "erase.complete", "north", erased=4, upload_files=0),
    ]
    view = member_entries(log, "trial", "south", now=2000.0)
    assert [(e.seq, e.action) for e in view] == [
        (1, "project.create"),
        (2, "index.change"),
        (3, "index.change"),
        (4, "index.change.void"),
        (5, "erase"),
        (6, "erase.complete"),
    ]
    assert view[3].detail == {"change_id": "c2", "announced": 3}
    assert view[5].detail == {"upload_files": 0, "erased": 5}
    # An entry named that the view does not hold is left out, not shown by the log's seq.
    stray = entry(11, "matcher", "erase.complete", "south", erased=4, upload_files=0)
    assert member_entries([*log, stray], "trial", "south", now=2000.0)[-1].detail == {
        "upload_files": 0
    }
    # An entry `admin restore --previous` replayed names the replaced log's entry without its
    # seq (that log's count of entries then); the operator's export shows the log as written.
    origin = {"seq": 8, "action": "consent.set", "hash": "ab" * 32, "time": 1008.0}
    replayed = entry(12, "operator", "consent.set", "south", level="count", replay_of=origin)
    seen = member_entries([*log, replayed], "trial", "south", now=2000.0)[-1]
    assert seen.detail == {"level": "count", "replay_of": {"action": "consent.set",
                           "hash": "ab" * 32, "time": 1008.0}}  # fmt: skip
    assert log[5].detail["announced"] == 5 and replayed.detail["replay_of"] == origin


@pytest.mark.parametrize("consent", ["count", "hits", "scores"])
def test_a_watch_is_told_no_more_than_the_indexing_partner_consented_to(
    matcher: Matcher, secret_file: Path, marked: dict[str, Encoded], consent: str
) -> None:
    """security.md, "Disclosure levels and per-member consent": the lesser of the project's
    level and the partner's consent is "the same for batch results, queries and watches".
    In a `scores` project, a watch on a person south then indexes is told at south's
    consent: at `count` only that a partner holds one watched record (not which record, nor
    south's reference), at `hits` the record and south, at `scores` south's reference and
    score too."""
    with matcher.operator() as op:
        project = op.create_project("trial", ["north", "south"], disclosure="scores")
        op.set_query_limits("trial", allow_watch=True)
    with matcher.member(project.tokens["south"]) as south:
        assert south.set_consent("trial", consent) == consent

    def south_indexes() -> None:
        with matcher.member(project.tokens["south"]) as south:
            index_all(south, "trial", marked["south"])

    grace = person(secret_file, **GRACE)
    [told] = first_notification(matcher, project.tokens["north"], "trial", grace, south_indexes)
    assert isinstance(told, WatchEvent) and told.partner == "south"
    if consent == "count":
        assert told.index is None and told.match is None
        return
    assert told.index == 0 and told.match is not None
    refs, scores = told.match.refs, told.match.scores
    if consent == "hits":
        assert (refs, scores) == ((), ())
    else:
        assert len(refs) == 1 and len(scores) == 1 and scores[0] >= 0.8
