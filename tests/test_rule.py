"""The decision rule over both CLKs (`blindmatch.rule`, the default schema's): where both
records have a date of birth a pair is scored S = D1 + 0.25 * (D1 - D2) - 0.03 (D1, D2: Dice
of the record-level and of the DOB-free fallback CLKs) against the threshold, in batch runs
(exhaustive and LSH) and real-time queries alike; schemas without it keep one CLK a pair."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.synthclks import members
from blindmatch.cli.app import main
from blindmatch.client import MatcherClient
from blindmatch.client.encoding.encode import encode_csv, save_encoded
from blindmatch.client.encoding.encoded import Encoded, read_encoded
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.person import encode_person
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import InputError, RejectedError
from blindmatch.client.remote.index import sync_index
from blindmatch.matcher.core import fallback
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.fallbackindex import FallbackIndex
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.core.solve import dice
from blindmatch.matcher.usecases.runs import match
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import NORTH_MAP, PERSON_SCHEMA, ROOT, SOUTH_MAP, Matcher, Org

SCHEMA = load_schema(PERSON_SCHEMA)
RULE = fallback.Rule(0.25, 0.03, 0.01)
SECRET = b"shared secret"
HEADER = "URN,Forenames,Surname,DOB,Sex,Postcode\n"
SOUTH_HEADER = "PersonID,FIRST_NAME,LAST_NAME,BIRTH_DATE,GENDER,POST_CODE\n"

# Brothers: same surname, sex and postcode, another given name and date of birth. Dice of
# the record-level CLKs 0.809 (today's rule links them), S 0.761 (the rule does not).
THOMAS = "N1,Thomas,Whitfield,14/06/1988,M,LS6 3DR\n"
TOBIAS = "S1,TOBIAS,WHITFIELD,1990-02-02,Male,ls63dr\n"
# One man, typos in both names, moved: same date of birth. D1 0.799 (today's rule misses
# him), S 0.806 (the rule links him).
TOMAS = "N2,Tomas,Whitfeld,14/06/1988,M,LS6 3DR\n"
THOMAZ = "S2,THOMAZ,WHITFIELD,1988-06-14,Male,hx12pl\n"


def without_rule(tmp_path: Path) -> Path:
    """The default schema less its `blindmatch.rule`: today's rule."""
    raw = copy.deepcopy(SCHEMA.raw)
    del raw["blindmatch"]["rule"]
    path = tmp_path / "person-uk-without-rule.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def encoded(tmp_path: Path, name: str, rows: str, schema: Path, south: bool = False) -> Encoded:
    folder = tmp_path / f"{name}-{schema.stem}"
    folder.mkdir(exist_ok=True)
    (folder / "x.csv").write_text((SOUTH_HEADER if south else HEADER) + rows, encoding="utf-8")
    (folder / "x.toml").write_text(SOUTH_MAP if south else NORTH_MAP, encoding="utf-8")
    loaded = load_schema(schema)
    result = encode_csv(folder / "x.csv", loaded, load_mapping(folder / "x.toml", loaded), SECRET)
    return save_encoded(folder / "encoded", result, loaded, SECRET)


def linked(matcher: Matcher, name: str, north: Encoded, south: Encoded) -> list[tuple[int, float]]:
    """A real run between the two uploads: north's (row, score) hits (scores disclosure)."""
    with matcher.operator() as op:
        project = op.create_project(name, ["north", "south"], disclosure="scores")
    for member, enc in (("north", north), ("south", south)):
        with matcher.member(project.tokens[member]) as client:
            client.upload(name, enc)
    with matcher.member(project.tokens["north"]) as client:
        run = client.start_run(name)
        assert [s.state for s in client.watch_run(name, run.run_id)][-1] == "done"
        return [(h.row, round(h.score, 3)) for h in client.results(name).hits]


# -- the schema ------------------------------------------------------------------------------


def test_the_default_schema_declares_the_rule_and_encodings_carry_it(tmp_path: Path) -> None:
    assert SCHEMA.rule == (0.25, 0.03, 0.01) and SCHEMA.fallback == ("dob",)
    north = encoded(tmp_path, "north", THOMAS, PERSON_SCHEMA)
    assert read_encoded(north.path).rule == (0.25, 0.03, 0.01)
    plain = encoded(tmp_path, "north", THOMAS, without_rule(tmp_path))
    assert plain.rule is None and read_encoded(plain.path).rule is None
    assert "rule" not in json.loads((plain.path / "manifest.json").read_text())
    # The rule's numbers are no part of the CLKs: the same bits, another fingerprint.
    assert (north.path / "clks.bin").read_bytes() == (plain.path / "clks.bin").read_bytes()
    assert north.fingerprint != plain.fingerprint


R = {"gap": 0.25, "offset": 0.03, "reach": 0.02}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"gap": 0.25, "offset": 0.03}, 'must be {"gap": G, "offset": O, "reach": R}'),
        ({**R, "cut": 0.8}, "blindmatch.rule must be"),
        ([0.25, 0.03, 0.03], "blindmatch.rule must be"),
        ({**R, "gap": -1}, "blindmatch.rule.gap must be a number from 0 to 4, not -1"),
        ({**R, "gap": "0.25"}, "blindmatch.rule.gap must be a number"),
        (
            {**R, "offset": True},
            "blindmatch.rule.offset must be a number from -0.5 to 0.5, not True",
        ),
        ({**R, "reach": 0.9}, "blindmatch.rule.reach must be a number from 0 to 0.5, not 0.9"),
    ],
)
def test_bad_rule_values_are_refused_naming_the_key(
    tmp_path: Path, rule: object, message: str
) -> None:
    raw = copy.deepcopy(SCHEMA.raw)
    raw["blindmatch"]["rule"] = rule
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError) as err:
        load_schema(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_rule_without_a_fallback_clk_is_refused(tmp_path: Path) -> None:
    raw = copy.deepcopy(SCHEMA.raw)
    del raw["blindmatch"]["fallback"]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"blindmatch\.rule scores a pair by both of its CLKs"):
        load_schema(path)


# -- batch runs through a real matcher -------------------------------------------------------


@pytest.mark.server
def test_a_run_follows_the_rule_where_the_schema_has_it_and_todays_rule_where_not(
    matcher: Matcher, tmp_path: Path
) -> None:
    old = without_rule(tmp_path)
    runs = {}
    for schema in (PERSON_SCHEMA, old):
        for case, north, south in (("brothers", THOMAS, TOBIAS), ("moved", TOMAS, THOMAZ)):
            n = encoded(tmp_path, f"north-{case}", north, schema)
            s = encoded(tmp_path, f"south-{case}", south, schema, south=True)
            name = f"{case}-{'rule' if schema == PERSON_SCHEMA else 'old'}"
            runs[name] = linked(matcher, name, n, s)
    # Today's rule links the brothers at D1 0.809 and misses the man who moved at 0.799;
    # the rule rejects the brothers (S 0.761) and links him at S 0.806, its score disclosed.
    assert runs["brothers-old"] == [(0, 0.809)]
    assert runs["moved-old"] == []
    assert runs["brothers-rule"] == []
    assert runs["moved-rule"] == [(0, 0.806)]


@pytest.mark.server
def test_an_upload_with_the_rule_and_one_without_are_refused_as_another_schema(
    matcher: Matcher, tmp_path: Path
) -> None:
    with matcher.operator() as op:
        project = op.create_project("mixed", ["north", "south"])
    with matcher.member(project.tokens["north"]) as client:
        client.upload("mixed", encoded(tmp_path, "north", THOMAS, PERSON_SCHEMA))
    plain = encoded(tmp_path, "south", TOBIAS, without_rule(tmp_path), south=True)
    with matcher.member(project.tokens["south"]) as client, pytest.raises(RejectedError) as err:
        client.upload("mixed", plain)
    said = str(err.value)
    assert "FAILED_PRECONDITION" in said and "the schema differs" in said, said


@pytest.mark.server
@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        (pb.ScoreRule(gap=9, offset=0.03, reach=0.03), "header.rule.gap", "a number from 0 to 4"),
        (pb.ScoreRule(gap=0.25, offset=0.03, reach=-1), "header.rule.reach", "from 0 to 0.5"),
        (pb.ScoreRule(gap=float("nan")), "header.rule.gap", "nan"),
    ],
)
def test_an_upload_header_with_a_bad_rule_is_refused_naming_the_field(
    matcher: Matcher, tmp_path: Path, rule: pb.ScoreRule, field: str, message: str
) -> None:
    import grpc

    from tests.support import auth, stub

    with matcher.operator() as op:
        project = op.create_project("bad", ["north", "south"])
    enc = encoded(tmp_path, "north", THOMAS, PERSON_SCHEMA)
    clks = (enc.path / "clks.bin").read_bytes()
    header = pb.UploadHeader(
        project="bad", clk_bits=enc.clk_bits, record_count=1, fingerprint=enc.fingerprint,
        sha256=enc.sha256, fallback_bits=enc.fallback_bits, rule=rule,
    )  # fmt: skip
    with grpc.insecure_channel(matcher.target) as channel, pytest.raises(grpc.RpcError) as err:
        messages = iter([pb.UploadRequest(header=header), pb.UploadRequest(clks=clks)])
        stub(channel).Upload(messages, metadata=auth(project.tokens["north"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(err.value.details()) and message in str(err.value.details())


# -- exhaustive and LSH runs keep exactly the rule's pairs ----------------------------------


def rule_pairs(datasets: list[npt.NDArray[np.uint8]], bits: int, threshold: float) -> set:
    """Every cross-member pair the rule accepts, scored pair by pair (no kernel, no LSH)."""
    split = fallback.Split.of(datasets, bits)
    out = set()
    for a in range(len(datasets)):
        for b in range(a + 1, len(datasets)):
            ra, rb = np.meshgrid(np.arange(len(datasets[a])), np.arange(len(datasets[b])))
            ra, rb = ra.ravel().astype(np.uint32), rb.ravel().astype(np.uint32)
            d0, d1 = np.full(len(ra), a, np.uint32), np.full(len(ra), b, np.uint32)
            scores = fallback.pair_scores(split, d0, ra, d1, rb, rule=RULE)
            first = dice(split.first[a][ra], split.first[b][rb])
            lacks = fallback.on_fallback(split.lacking[a][ra], split.lacking[b][rb])
            floor = RULE.candidate_floor(threshold)
            keep = (scores >= threshold) & (lacks | (first >= floor))
            out |= {(a, int(x), b, int(y)) for x, y in zip(ra[keep], rb[keep], strict=True)}
    return out


def test_the_exhaustive_candidates_are_exactly_the_rules_pairs(
    messy_members: tuple[list[npt.NDArray[np.uint8]], int],
) -> None:
    datasets, bits = messy_members
    small = [d[:400] for d in datasets]
    split = fallback.Split.of(small, bits)
    floor = RULE.candidate_floor(0.8)
    assert floor == pytest.approx(0.79)
    parts = []
    for a in range(3):
        for b in range(a + 1, 3):
            sims, ia, ib = dice_candidates(split.first[a], split.first[b], floor)
            k = len(sims)
            parts.append(
                Candidates(
                    sims.astype(np.float64), np.full(k, a, np.uint32), np.full(k, b, np.uint32),
                    ia.astype(np.uint32), ib.astype(np.uint32),
                )
            )  # fmt: skip
    found = merge(fallback.rescored(merge(parts), split, 0.8, rule=RULE))
    got = set(zip(found.dset0.tolist(), found.rec0.tolist(), found.dset1.tolist(),
                  found.rec1.tolist(), strict=True))  # fmt: skip
    want = rule_pairs(small, bits, 0.8)
    assert got == want and len(want) > 150
    assert np.all(found.sims >= 0.8)


def with_fallback(first: list[npt.NDArray[np.uint8]], seed: int) -> list[npt.NDArray[np.uint8]]:
    """Synthetic members given a second CLK, sparser than the first (so every record has
    the fallback's fields), of the same people (the shared block): first | second."""
    mask = np.random.default_rng(seed).random(first[0].shape[1] * 8) < 0.6
    keep = np.packbits(mask)
    second = members(len(first), len(first[0]), overlap=0.2, seed=seed)
    return [np.hstack([f, s & keep]) for f, s in zip(first, second, strict=True)]


def test_exhaustive_and_lsh_runs_under_the_rule_find_the_same_links() -> None:
    # Three members of 8,000 (was 20,000: 51 s of CPU, 233 s at load 18, near pytest-timeout's
    # 300 s; now 16 s). The claims are LSH's recall of the rule's links and that the rule
    # decides otherwise somewhere, not the size: with these seeds LSH finds all 8,122 of the
    # exhaustive run's links (all 20,216 at 20,000; 8 may be missed), 1,597 groups (4,000),
    # and the rule drops 1,298 of today's links (3,296). It still fails at this size when
    # LSH is planned for 0.89 rather than the floor (14 links missed, 2 not the exhaustive
    # run's) or the rule scores S = D1 (the same links as today's).
    datasets = with_fallback(members(3, 8_000, overlap=0.2, seed=9), seed=31)
    bits = datasets[0].shape[1] * 8 // 2
    assert not fallback.Split.of(datasets, bits).lacking[0].any()
    full = match(datasets, 0.8, blocking="exhaustive", fallback_bits=bits, rule=RULE)
    lsh = match(datasets, 0.8, blocking="lsh", fallback_bits=bits, rule=RULE)
    old = match(datasets, 0.8, blocking="exhaustive", fallback_bits=bits)
    assert (full.method, lsh.method) == ("exhaustive+fallback+rule", "lsh+fallback+rule")
    assert old.method == "exhaustive+fallback"

    def link(r):  # type: ignore[no-untyped-def]
        return set(
            zip(r.links.dset.tolist(), r.links.row.tolist(), r.links.partner.tolist(),
                r.links.partner_row.tolist(), strict=True)
        )  # fmt: skip

    # LSH is planned for the rule's candidate floor (0.79), at the planner's design recall.
    assert len(link(lsh) & link(full)) >= 0.999 * len(link(full)) and link(lsh) <= link(full)
    assert full.groups >= 1200  # three in four of the 1,600 shared people (was 3,000 of 4,000)
    assert link(full) != link(old)  # the rule decides differently from today's somewhere


# -- real-time queries ------------------------------------------------------------------------


def test_a_standing_index_with_the_rule_answers_as_a_batch_run_scores_the_pair(
    messy_members: tuple[list[npt.NDArray[np.uint8]], int],
) -> None:
    datasets, bits = messy_members
    south = datasets[1]
    retail = np.vstack([datasets[0], datasets[2]])  # queries with a date of birth and without
    clk_bits = 8 * south.shape[1]
    refs = [f"s{i}" for i in range(len(south))]
    index = FallbackIndex.load(clk_bits, bits, refs, as_words(south, clk_bits), rule=RULE)
    split = fallback.Split.of([retail, south], bits)
    snap = index.snapshot
    today = FallbackIndex.load(clk_bits, bits, refs, as_words(south, clk_bits)).snapshot
    differ = 0
    for q, words in enumerate(as_words(retail, clk_bits)):
        cols = np.arange(len(south), dtype=np.uint32)
        zeros, ones = np.zeros(len(cols), np.uint32), np.ones(len(cols), np.uint32)
        query_rows = np.full(len(cols), q, np.uint32)
        scores = fallback.pair_scores(split, zeros, query_rows, ones, cols, rule=RULE)
        first = dice(split.first[0][query_rows], split.first[1][cols])
        lacks = fallback.on_fallback(split.lacking[0][q], split.lacking[1])
        keep = (scores >= 0.8) & (lacks | (first >= RULE.candidate_floor(0.8)))
        want = sorted((refs[c], round(float(scores[c]), 9)) for c in np.flatnonzero(keep))
        got = sorted((r, round(s, 9)) for r, s in snap.search(words, 0.8))
        assert got == want, q
        differ += {r for r, _ in today.search(words, 0.8)} != {r for r, _ in got}
    assert differ  # the rule answers some queries otherwise than today's


@pytest.mark.server
def test_a_query_follows_the_rule_as_a_run_does(matcher: Matcher, tmp_path: Path) -> None:
    # South's standing index holds Tobias (Thomas's brother) in one project and Thomaz
    # (Tomas, moved) in another: a query for Thomas finds no one (today's rule would answer
    # south: D1 0.809), one for Tomas finds Thomaz (S 0.806; today's rule would not: D1 0.799).
    old = without_rule(tmp_path)

    def ask(
        held: str, values: dict[str, str], schema: Path = PERSON_SCHEMA
    ) -> list[tuple[object, ...]]:
        name = f"live-{values['given_name'].lower()}-{schema.stem}"
        with matcher.operator() as op:
            project = op.create_project(name, ["north", "south"], disclosure="scores")
        south = encoded(tmp_path, name, held, schema, south=True)
        with matcher.member(project.tokens["south"]) as client:
            sync_index(client, name, south, b"south's own ref key")
        person = encode_person(load_schema(schema), SECRET, values)
        with MatcherClient(matcher.target, project.tokens["north"]) as client:
            answer = client.query(name, person.clks, clk_bits=person.clk_bits,
                                  fingerprint=person.fingerprint, purpose="case 1")  # fmt: skip
        return [(m.partner, *(round(x, 3) for x in m.scores)) for m in answer.results[0]]

    thomas = {"given_name": "Thomas", "surname": "Whitfield", "dob": "1988-06-14", "sex": "M",
              "postcode": "LS6 3DR"}  # fmt: skip
    tomas = {**thomas, "given_name": "Tomas", "surname": "Whitfeld"}
    assert ask(TOBIAS, thomas) == []
    assert ask(THOMAZ, tomas) == [("south", 0.806)]
    assert ask(TOBIAS, thomas, old) == [("south", 0.809)]  # today's rule, where the schema
    assert ask(THOMAZ, tomas, old) == []  # has none


# -- two-server runs -------------------------------------------------------------------------


def test_encode_for_a_two_server_run_says_nothing_of_the_rule_which_the_run_applies(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    org = orgs["north"]
    said = {}
    for schema in (PERSON_SCHEMA, ROOT / "schemas" / "person-uk-no-rule.json"):
        out = tmp_path / f"{schema.stem}.encoded"
        assert main(["encode", str(org.csv), "--schema", str(schema), "--secret-file",
                     str(secret_file), "--mapping", str(org.mapping), "--out", str(out),
                     "--two-server", "--quiet"]) == 0  # fmt: skip
        assert (out / "twoserver").is_dir()
        said[schema.stem] = capsys.readouterr().err
    # A two-server run applies the rule on the shares (matcher/core/gmwrule.py): no warning.
    assert "blindmatch.rule" not in said["person-uk"]
    assert "blindmatch.rule" not in said["person-uk-no-rule"]


def test_the_no_rule_schema_is_the_default_less_its_rule() -> None:
    plain = load_schema(ROOT / "schemas" / "person-uk-no-rule.json")
    raw = copy.deepcopy(SCHEMA.raw)
    del raw["blindmatch"]["rule"]
    assert plain.raw == raw and plain.rule is None


@pytest.mark.server
def test_a_restarted_matcher_keeps_scoring_an_index_by_its_rule(tmp_path: Path) -> None:
    # The rule is stored with the index (index_meta.rule): after a restart a query for
    # Thomas still does not find his brother (today's rule would: D1 0.809).
    from blindmatch.matcher.server import create_server
    from tests.support import ADMIN_TOKEN

    data_dir = tmp_path / "data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN)
    try:
        with MatcherClient(f"127.0.0.1:{server.port}", ADMIN_TOKEN) as op:
            project = op.create_project("kept", ["north", "south"], disclosure="scores")
        south = encoded(tmp_path, "south", TOBIAS, PERSON_SCHEMA, south=True)
        with MatcherClient(f"127.0.0.1:{server.port}", project.tokens["south"]) as client:
            sync_index(client, "kept", south, b"south's own ref key")
    finally:
        server.stop(grace=None)
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN)
    try:
        thomas = {"given_name": "Thomas", "surname": "Whitfield", "dob": "1988-06-14",
                  "sex": "M", "postcode": "LS6 3DR"}  # fmt: skip
        brother = {**thomas, "given_name": "Tobias", "dob": "1990-02-02"}
        with MatcherClient(f"127.0.0.1:{server.port}", project.tokens["north"]) as client:
            for values, want in ((thomas, []), (brother, ["south"])):
                person = encode_person(SCHEMA, SECRET, values)
                answer = client.query("kept", person.clks, clk_bits=person.clk_bits,
                                      fingerprint=person.fingerprint, purpose="case 2")  # fmt: skip
                assert [m.partner for m in answer.results[0]] == want
    finally:
        server.stop(grace=None)
