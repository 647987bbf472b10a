"""The schema's rule over both CLKs (`blindmatch.rule`) is never lost between `encode`,
`upload`, a run and a standing index: an ENCODED folder cannot be written without being
told the rule, one of a shipped schema is read with that schema's rule, and the matcher
refuses to compare encodings of one fingerprint that say otherwise of how a pair is scored
(uploads, retried uploads, index changes, runs over uploads stored before the check)."""

from __future__ import annotations

import copy
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import MatcherClient
from blindmatch.client.encoding.encoded import Encoded, read_encoded, write_encoded
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import InputError, RejectedError
from blindmatch.client.remote.index import sync_index
from blindmatch.matcher.server import create_server
from tests.support import ADMIN_TOKEN, NORTH_MAP, PERSON_SCHEMA, SOUTH_MAP, Matcher

RULE = (0.25, 0.03, 0.01)
HEADER = "URN,Forenames,Surname,DOB,Sex,Postcode\n"
SOUTH_HEADER = "PersonID,FIRST_NAME,LAST_NAME,BIRTH_DATE,GENDER,POST_CODE\n"
# Brothers (tests/test_rule.py): D1 0.809, so one CLK a pair links them; the rule's S is
# 0.761, so the default schema does not.
THOMAS = "N1,Thomas,Whitfield,14/06/1988,M,LS6 3DR\n"
TOBIAS = "S1,TOBIAS,WHITFIELD,1990-02-02,Male,ls63dr\n"


@pytest.fixture
def weak_secret(tmp_path: Path) -> Path:
    """test_rule.py's secret, under which the brothers' scores are as above (so encodes
    take --allow-weak-secret)."""
    path = tmp_path / "shared.secret"
    path.write_text("shared secret\n")
    return path


def cli(matcher: Matcher, *args: str) -> int:
    return main([*args, "--server", matcher.target, "--quiet"])


def custom_schema(tmp_path: Path) -> Path:
    """A member's own schema with a rule (the default's, reaching 0.03 under the threshold
    instead of 0.01): no shipped schema's digest, so only the matcher can tell."""
    raw = copy.deepcopy(load_schema(PERSON_SCHEMA).raw)
    raw["blindmatch"]["rule"]["reach"] = 0.03
    path = tmp_path / "ours.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def encode(tmp_path: Path, weak_secret: Path, name: str, rows: str, schema: Path) -> Path:
    """`blindmatch encode` of one member's rows (north's or south's conventions)."""
    south = name.startswith("south")
    data, mapping = tmp_path / f"{name}.csv", tmp_path / f"{name}.toml"
    data.write_text((SOUTH_HEADER if south else HEADER) + rows, encoding="utf-8")
    mapping.write_text(SOUTH_MAP if south else NORTH_MAP, encoding="utf-8")
    out = tmp_path / f"{name}.encoded"
    assert main(["encode", str(data), "--schema", str(schema), "--secret-file", str(weak_secret),
                 "--mapping", str(mapping), "--out", str(out), "--allow-weak-secret",
                 "--quiet"]) == 0  # fmt: skip
    return out


def without_rule_in_manifest(folder: Path) -> Path:
    """The folder as `write_encoded` left it when not told the rule (before it had to be),
    or as another tool writes one: the same CLKs and fingerprint, no `rule`."""
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["rule"]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def project(matcher: Matcher, name: str, disclose: str = "hits") -> dict[str, str]:
    with matcher.operator() as op:
        return op.create_project(name, ["north", "south"], disclosure=disclose).tokens


# -- the client: writing and reading ENCODED folders ---------------------------------------


def test_write_encoded_must_be_told_the_rule_and_a_shipped_schemas_must_be_it(
    tmp_path: Path, weak_secret: Path
) -> None:
    made = read_encoded(encode(tmp_path, weak_secret, "north", THOMAS, PERSON_SCHEMA))
    base = {
        "clks": (made.path / "clks.bin").read_bytes(), "clk_bits": made.clk_bits,
        "fingerprint": made.fingerprint, "ids": ["N1"], "report": {},
        "fallback_bits": made.fallback_bits, "schema_digest": made.schema_digest,
    }  # fmt: skip
    with pytest.raises(TypeError, match="rule"):
        write_encoded(tmp_path / "a", **base)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"schemas/person-uk\.json.*blindmatch\.rule"):
        write_encoded(tmp_path / "b", **base, rule=None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert write_encoded(tmp_path / "c", **base, rule=RULE).rule == RULE


def test_a_folder_of_the_default_schema_written_without_its_rule_is_read_with_it(
    tmp_path: Path, weak_secret: Path
) -> None:
    folder = without_rule_in_manifest(encode(tmp_path, weak_secret, "north", THOMAS, PERSON_SCHEMA))
    assert read_encoded(folder).rule == RULE
    # A schema blindmatch does not ship: the manifest is all there is to go by.
    ours = without_rule_in_manifest(
        encode(tmp_path, weak_secret, "north-ours", THOMAS, custom_schema(tmp_path))
    )
    assert read_encoded(ours).rule is None


def test_a_folder_naming_another_rule_than_its_shipped_schemas_is_refused_by_upload(
    matcher: Matcher, tmp_path: Path, weak_secret: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = project(matcher, "edited")
    folder = encode(tmp_path, weak_secret, "north", THOMAS, PERSON_SCHEMA)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["rule"]["gap"] = 0.5
    (folder / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli(matcher, "upload", str(folder), "--project", "edited", "--token",
               tokens["north"]) != 0  # fmt: skip
    said = capsys.readouterr().err
    assert str(folder / "manifest.json") in said and "schemas/person-uk.json" in said, said
    assert "re-run `blindmatch encode`" in said
    with matcher.member(tokens["north"]) as client:
        assert not [m for m in client.describe("edited").members if m.uploaded]


# -- end to end through the CLI: encode -> upload -> run -> results -------------------------


def test_a_run_follows_the_rule_when_one_members_folder_was_written_without_it(
    matcher: Matcher, tmp_path: Path, weak_secret: Path
) -> None:
    # South's folder lost the default schema's rule on the way (written without it); the
    # upload carries it anyway, so the run scores the brothers by the rule and does not
    # link them (before: the run mixed a rule with none and fell back to one CLK a pair,
    # silently, and linked them at 0.809).
    tokens = project(matcher, "carried")
    north = encode(tmp_path, weak_secret, "north", THOMAS, PERSON_SCHEMA)
    south = without_rule_in_manifest(encode(tmp_path, weak_secret, "south", TOBIAS, PERSON_SCHEMA))
    for member, folder in (("north", north), ("south", south)):
        assert cli(matcher, "upload", str(folder), "--project", "carried", "--token",
                   tokens[member]) == 0  # fmt: skip
    assert cli(matcher, "run", "--project", "carried", "--token", tokens["north"]) == 0
    hits = tmp_path / "hits.csv"
    assert cli(matcher, "results", "--project", "carried", "--token", tokens["north"],
               "--encoded", str(north), "--out", str(hits)) == 0  # fmt: skip
    assert hits.read_text().splitlines() == ["record_id,partner"]


def test_uploading_again_with_the_rule_replaces_an_upload_that_lacked_it(
    matcher: Matcher, tmp_path: Path, weak_secret: Path
) -> None:
    # North first uploads a folder of its own schema that lost the rule (nothing on the
    # client can tell), then encodes again and uploads the same CLKs with the rule. That
    # upload is stored, not acknowledged as the first again (before: the same content id,
    # so the matcher kept the upload without the rule and the run linked the brothers).
    schema = custom_schema(tmp_path)
    tokens = project(matcher, "again")
    lost = without_rule_in_manifest(encode(tmp_path, weak_secret, "north-lost", THOMAS, schema))
    assert cli(matcher, "upload", str(lost), "--project", "again", "--token",
               tokens["north"]) == 0  # fmt: skip
    north = encode(tmp_path, weak_secret, "north", THOMAS, schema)
    south = encode(tmp_path, weak_secret, "south", TOBIAS, schema)
    for member, folder in (("north", north), ("south", south)):
        assert cli(matcher, "upload", str(folder), "--project", "again", "--token",
                   tokens[member]) == 0  # fmt: skip
    assert cli(matcher, "run", "--project", "again", "--token", tokens["north"]) == 0
    hits = tmp_path / "hits.csv"
    assert cli(matcher, "results", "--project", "again", "--token", tokens["north"],
               "--encoded", str(north), "--out", str(hits)) == 0  # fmt: skip
    assert hits.read_text().splitlines() == ["record_id,partner"]


# -- the matcher refuses to compare encodings scored otherwise ------------------------------


def test_an_upload_that_lost_the_rule_is_refused_beside_one_with_it(
    matcher: Matcher, tmp_path: Path, weak_secret: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = custom_schema(tmp_path)
    tokens = project(matcher, "mixed")
    north = encode(tmp_path, weak_secret, "north", THOMAS, schema)
    south = without_rule_in_manifest(encode(tmp_path, weak_secret, "south", TOBIAS, schema))
    assert cli(matcher, "upload", str(north), "--project", "mixed", "--token",
               tokens["north"]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli(matcher, "upload", str(south), "--project", "mixed", "--token",
               tokens["south"]) != 0  # fmt: skip
    said = capsys.readouterr().err
    assert "no blindmatch.rule" in said and "north's upload" in said, said
    assert "gap 0.25, offset 0.03, reach 0.03" in said and "blindmatch encode" in said
    with matcher.member(tokens["south"]) as client:
        assert [m.name for m in client.describe("mixed").members if m.uploaded] == ["north"]


def test_a_retried_upload_id_with_another_rule_is_refused(
    matcher: Matcher, tmp_path: Path, weak_secret: Path
) -> None:
    from blindmatch.client.remote.convert import upload_header

    tokens = project(matcher, "retry")
    with_rule = read_encoded(encode(tmp_path, weak_secret, "north", THOMAS, PERSON_SCHEMA))
    plain = Encoded(**{**with_rule.__dict__, "rule": None})
    import grpc

    from tests.support import auth, stub

    clks = (with_rule.path / "clks.bin").read_bytes()
    with grpc.insecure_channel(matcher.target) as channel:
        for enc, ok in ((plain, True), (with_rule, False)):
            messages = iter([upload_header("retry", enc, "same-id"), _clks(clks)])
            if ok:
                stub(channel).Upload(messages, metadata=auth(tokens["north"]))
                continue
            with pytest.raises(grpc.RpcError) as err:
                stub(channel).Upload(messages, metadata=auth(tokens["north"]))
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "header.client_upload_id" in str(err.value.details())


def _clks(clks: bytes) -> object:
    from blindmatch.protos import blindmatch_pb2 as pb

    return pb.UploadRequest(clks=clks)


def test_an_index_that_lost_the_rule_is_refused_beside_a_partners_with_it(
    matcher: Matcher, tmp_path: Path, weak_secret: Path
) -> None:
    schema = custom_schema(tmp_path)
    tokens = project(matcher, "live", disclose="scores")
    south = read_encoded(encode(tmp_path, weak_secret, "south", TOBIAS, schema))
    north = read_encoded(
        without_rule_in_manifest(encode(tmp_path, weak_secret, "north", THOMAS, schema))
    )
    with MatcherClient(matcher.target, tokens["south"]) as client:
        sync_index(client, "live", south, b"south's own ref key")
    with (
        MatcherClient(matcher.target, tokens["north"]) as client,
        pytest.raises(RejectedError) as err,
    ):
        sync_index(client, "live", north, b"north's own ref key")
    said = str(err.value)
    assert "FAILED_PRECONDITION" in said and "south's index" in said, said
    assert "no blindmatch.rule" in said and "gap 0.25" in said
    with MatcherClient(matcher.target, tokens["north"]) as client:
        assert client.list_index("live") == {}


def test_a_run_over_uploads_stored_with_different_rules_is_refused(
    tmp_path: Path, weak_secret: Path
) -> None:
    # Uploads stored before they were checked for it: the same fingerprint, one with the
    # rule and one without. A run is refused, naming both (before: it ran by neither rule).
    data_dir = tmp_path / "data"
    north = encode(tmp_path, weak_secret, "north", THOMAS, PERSON_SCHEMA)
    south = encode(tmp_path, weak_secret, "south", TOBIAS, PERSON_SCHEMA)
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("old", ["north", "south"]).tokens
        for member, folder in (("north", north), ("south", south)):
            with MatcherClient(target, tokens[member]) as client:
                client.upload("old", read_encoded(folder))
    finally:
        server.stop(grace=None)
    with closing(sqlite3.connect(data_dir / "blindmatch.sqlite")) as conn, conn:
        (upload_id,) = conn.execute(
            "SELECT id FROM uploads WHERE member='south' AND current=1"
        ).fetchone()
        conn.execute(
            "UPDATE upload_layouts SET field_bits=? WHERE upload_id=?",
            (f"fallback:{read_encoded(south).fallback_bits}", upload_id),
        )
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN)
    try:
        with (
            MatcherClient(f"127.0.0.1:{server.port}", tokens["north"]) as client,
            pytest.raises(RejectedError) as err,
        ):
            client.start_run("old")
    finally:
        server.stop(grace=None)
    said = str(err.value)
    assert "FAILED_PRECONDITION" in said and "south's upload" in said, said
    assert "north's with a 1024-bit fallback CLK and blindmatch.rule" in said


def test_an_input_error_names_the_manifest(tmp_path: Path, weak_secret: Path) -> None:
    folder = encode(tmp_path, weak_secret, "north", THOMAS, PERSON_SCHEMA)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["rule"] = None
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"manifest\.json: rule None, but its schema"):
        read_encoded(folder)


# -- a query says how its schema scores a pair ---------------------------------------------


def query_args(matcher: Matcher, token: str, schema: Path, secret: Path) -> list[str]:
    """`blindmatch query` for Thomas (his brother Tobias is south's), as JSON."""
    return ["query", "--project", "asked", "--token", token, "--schema", str(schema),
            "--secret-file", str(secret), "--allow-weak-secret", "--purpose", "case 7",
            "--given-name", "Thomas", "--surname", "Whitfield", "--dob", "1988-06-14",
            "--sex", "M", "--postcode", "LS6 3DR", "--json"]  # fmt: skip


def test_a_query_finds_out_an_index_that_lost_its_schemas_rule(
    matcher: Matcher, tmp_path: Path, weak_secret: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # South's standing index is its schema's encodings less the rule (nothing on the client
    # tells, and no partner's index to differ from). North's query, encoded from the schema
    # itself, says the rule: refused, naming south's index (before: answered by one CLK a
    # pair, south's brother found at 0.809). A query that says nothing (an older client)
    # is answered as before.
    schema = custom_schema(tmp_path)
    tokens = project(matcher, "asked", disclose="scores")
    lost = without_rule_in_manifest(encode(tmp_path, weak_secret, "south", TOBIAS, schema))
    assert cli(matcher, "index", "sync", str(lost), "--project", "asked", "--token",
               tokens["south"], "--ref-key", str(tmp_path / "south.refkey")) == 0  # fmt: skip
    capsys.readouterr()
    assert cli(matcher, *query_args(matcher, tokens["north"], schema, weak_secret)) != 0
    said = capsys.readouterr().err
    assert "south's index" in said and "no blindmatch.rule" in said, said
    assert "gap 0.25, offset 0.03, reach 0.03" in said
    from blindmatch.client.encoding.person import encode_person

    person = encode_person(load_schema(schema), b"shared secret", {
        "given_name": "Thomas", "surname": "Whitfield", "dob": "1988-06-14", "sex": "M",
        "postcode": "LS6 3DR"})  # fmt: skip
    with MatcherClient(matcher.target, tokens["north"]) as client:
        answer = client.query("asked", person.clks, clk_bits=person.clk_bits,
                              fingerprint=person.fingerprint, purpose="case 8")  # fmt: skip
    assert [(m.partner, round(m.scores[0], 3)) for m in answer.results[0]] == [("south", 0.809)]
    # `index sync` from a fresh encode has no CLK to send (the same CLKs), so it is refused
    # saying so, not acknowledged as in sync; `index add` puts every record again with the
    # rule, and the query is answered by it: no brother.
    fresh = encode(tmp_path, weak_secret, "south-again", TOBIAS, schema)
    args = [str(fresh), "--project", "asked", "--token", tokens["south"], "--ref-key",
            str(tmp_path / "south.refkey")]  # fmt: skip
    capsys.readouterr()
    assert cli(matcher, "index", "sync", *args) != 0
    said = capsys.readouterr().err
    assert "nothing to sync" in said and "blindmatch index add ENCODED" in said, said
    assert "your index is scored with a 1024-bit fallback CLK and no blindmatch.rule" in said
    assert cli(matcher, "index", "add", *args) == 0
    capsys.readouterr()
    assert cli(matcher, *query_args(matcher, tokens["north"], schema, weak_secret)) == 0
    answer_json = json.loads(capsys.readouterr().out)
    assert answer_json["results"][0]["matches"] == []


def test_a_ref_key_made_for_an_index_change_the_matcher_refuses_is_removed(
    matcher: Matcher, tmp_path: Path, weak_secret: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """North's first `index add`/`sync`, refused by the matcher (another schema's fingerprint
    than south's index): the ref key made for it is gone, not said to be made
    (before 2026-12-06 it was kept, "Made a new ref key"); a key north had is kept."""
    tokens = project(matcher, "keyed")
    south = encode(tmp_path, weak_secret, "south", TOBIAS, custom_schema(tmp_path))
    assert cli(matcher, "index", "sync", str(south), "--project", "keyed", "--token",
               tokens["south"], "--ref-key", str(tmp_path / "south.refkey")) == 0  # fmt: skip
    north = encode(tmp_path, weak_secret, "north", THOMAS, PERSON_SCHEMA)
    key = tmp_path / "north.refkey"
    capsys.readouterr()
    for verb in ("add", "sync"):
        assert cli(matcher, "index", verb, str(north), "--project", "keyed", "--token",
                   tokens["north"], "--ref-key", str(key)) == 3  # fmt: skip
        err = capsys.readouterr().err
        assert "south's index" in err and "Made a new ref key" not in err, err
        assert not key.exists()
    key.write_text("an older key of north's, 0123456789abcdef\n")
    assert cli(matcher, "index", "add", str(north), "--project", "keyed", "--token",
               tokens["north"], "--ref-key", str(key)) == 3  # fmt: skip
    assert key.read_text() == "an older key of north's, 0123456789abcdef\n"
