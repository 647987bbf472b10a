"""Record-level CLKs with a fallback CLK (the default schema): a missing date of birth is not
held against a match, and the two CLKs of a record cannot be compared bit by bit."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.messy import ORGS, write_exports
from blindmatch.client import MatcherClient
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import InputError
from blindmatch.client.tools.evaluate import quality, read_truth
from blindmatch.matcher.core import blocking, fallback, fallbackpass, kernel, segment
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.fallbackindex import (
    AnySnapshot,
    FallbackIndex,
    search_batch,
    search_indexes,
    searchable,
)
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.realtime.lookups import Lookups
from blindmatch.matcher.server import create_server
from blindmatch.matcher.usecases.runs import match
from tests.support import FALLBACK_SCHEMA, PERSON_SCHEMA, Org

SCHEMA = load_schema(FALLBACK_SCHEMA)
DOB = SCHEMA.field_names.index("dob")


def test_the_default_schema_is_record_level_with_a_fallback_without_dob() -> None:
    assert not SCHEMA.field_level
    assert SCHEMA.fallback == ("dob",)


def test_each_record_gets_a_first_and_a_fallback_clk_under_unrelated_keys(
    orgs: dict[str, Org],
) -> None:
    result = encode_csv(
        orgs["north"].csv, SCHEMA, load_mapping(orgs["north"].mapping, SCHEMA), b"k"
    )
    assert result.fallback_bits == SCHEMA.clk_bits and result.clk_bits == 2 * SCHEMA.clk_bits
    clks = np.frombuffer(result.clks, dtype=np.uint8).reshape(len(result.ids), -1)
    split = fallback.Split.of([clks], result.fallback_bits)
    first, second = split.first[0], split.second[0]
    # N3 Aoife Byrne has an impossible date (encoded as missing): both CLKs hold the same
    # values, yet under other keys, so they share no more bits than chance.
    assert split.lacking[0].tolist() == [False, False, True, False, False]
    together = int(np.bitwise_count(first[2] & second[2]).sum())
    p1, p2 = int(np.bitwise_count(first[2]).sum()), int(np.bitwise_count(second[2]).sum())
    assert together < 1.3 * p1 * p2 / SCHEMA.clk_bits  # chance overlap, nowhere near p1


def test_a_fallback_naming_no_field_or_on_a_field_level_schema_is_refused(
    tmp_path: Path,
) -> None:
    raw = json.loads(PERSON_SCHEMA.read_text())
    for bad, message in (
        ({"without": []}, "blindmatch.fallback must be"),
        ({"without": ["nickname"]}, "not hashed fields"),
        (
            {"without": ["given_name", "surname", "dob", "sex", "postcode", "names"]},
            "leave some field",
        ),
    ):
        raw["blindmatch"]["fallback"] = bad
        path = tmp_path / "schema.json"
        path.write_text(json.dumps(raw))
        with pytest.raises(InputError, match=message):
            load_schema(path)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[npt.NDArray[np.uint8]], Path]:
    folder = tmp_path_factory.mktemp("messy")
    exports = write_exports(folder, seed=7, size=3000)
    datasets = []
    for style in ORGS:
        exp = exports[style.name]
        result = encode_csv(exp.csv, SCHEMA, load_mapping(exp.mapping, SCHEMA), b"secret")
        datasets.append(
            np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, result.clk_bits // 8)
        )
    return datasets, folder


def _rows(folder: Path) -> list[list[dict[str, str]]]:
    out = []
    for style in ORGS:
        with open(folder / f"{style.name}.csv", newline="", encoding="utf-8") as fh:
            out.append(list(csv.DictReader(fh)))
    return out


def test_the_matcher_tells_from_popcounts_which_records_lack_a_date_of_birth(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
) -> None:
    datasets, folder = messy
    split = fallback.Split.of(datasets, SCHEMA.clk_bits)
    for style, rows, lacking in zip(ORGS, _rows(folder), split.lacking, strict=True):
        truly = np.array([not row[style.columns["dob"]].strip() for row in rows])
        assert np.array_equal(lacking, truly), style.name


def test_the_fallback_recovers_matches_without_a_date_of_birth_and_stays_precise(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
) -> None:
    datasets, folder = messy
    truth = read_truth(folder / "truth.csv")
    ids = [[row[s.id_column] for row in rows] for s, rows in zip(ORGS, _rows(folder), strict=True)]

    def scored(**kwargs: int) -> tuple[float, float, npt.NDArray[np.float64]]:
        links = match(datasets if kwargs else first, 0.8, workers=1, **kwargs).links
        found = {
            (ORGS[d].name, ids[d][r], ORGS[p].name)
            for d, r, p in zip(links.dset, links.row, links.partner, strict=True)
        }
        q = quality(found, truth)
        return q.precision, q.f1, links.score

    first = fallback.Split.of(datasets, SCHEMA.clk_bits).first
    _, plain_f1, _ = scored()  # the first CLKs alone: plain record-level Dice
    precision, f1, scores = scored(fallback_bits=SCHEMA.clk_bits)
    assert precision >= 0.98 and f1 >= 0.98, (precision, f1)
    assert f1 > plain_f1 + 0.005, (f1, plain_f1)
    assert np.all(scores >= 0.8)  # links carry the score they were matched on


def test_a_standing_index_answers_a_query_as_a_batch_run_scores_the_pair(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
) -> None:
    # Retail (a third without a date of birth) queried against the south force's index, before
    # and after a change that strips the date from some records and removes others.
    datasets, _folder = messy
    south, retail = datasets[1], datasets[2].copy()
    bits = 8 * south.shape[1]
    refs = [f"s{i}" for i in range(len(south))]
    index = FallbackIndex.load(bits, SCHEMA.clk_bits, refs, as_words(south, bits), threshold=0.8)
    queries = retail
    query_lacks = fallback.Split.of([queries], SCHEMA.clk_bits).lacking[0]

    def expected(held: npt.NDArray[np.uint8], alive: list[int]) -> list[set[str]]:
        split = fallback.Split.of([queries, held], SCHEMA.clk_bits)
        out = []
        for q in range(len(queries)):
            cols = np.array(alive, dtype=np.uint32)
            scores = fallback.pair_scores(
                split,
                np.zeros(len(cols), np.uint32),
                np.full(len(cols), q, np.uint32),
                np.ones(len(cols), np.uint32),
                cols,
            )
            out.append({refs[c] for c, sc in zip(cols, scores, strict=True) if sc >= 0.8})
        return out

    def answered() -> list[set[str]]:
        snap = index.snapshot
        return [{r for r, _ in snap.search(q, 0.8)} for q in as_words(queries, bits)]

    want = expected(south, list(range(len(south))))
    # Enough pairs of both kinds to mean something: queries with and without a date of birth.
    assert sum(len(w) for w, lacks in zip(want, query_lacks, strict=True) if lacks) > 30
    assert sum(len(w) for w, lacks in zip(want, query_lacks, strict=True) if not lacks) > 30
    assert answered() == want
    # Twenty records lose their date of birth (their first CLK becomes their fallback
    # CLK's values under the first keys: here, simply the records of partners that lack one).
    changed = south.copy()
    lacking = np.flatnonzero(fallback.Split.of([retail], SCHEMA.clk_bits).lacking[0])[:20]
    changed[:20] = retail[lacking]
    index.apply(refs[:20], as_words(changed[:20], bits), refs[20:40])
    alive = [i for i in range(len(south)) if not 20 <= i < 40]
    assert answered() == expected(changed, alive)
    # Ten of them get it back: their fallback CLKs move back to the part of the records
    # that have one (a query with a date of birth never looks there).
    changed[:10] = south[:10]
    index.apply(refs[:10], as_words(changed[:10], bits), [])
    assert answered() == expected(changed, alive)
    lacks = fallback.Split.of([changed], SCHEMA.clk_bits).lacking[0]
    lacking = {refs[i] for i in alive if lacks[i]}
    assert {refs[i] for i in range(10, 20)} <= lacking and not lacking & set(refs[:10])
    assert set(index.lacks.refs()) == index.lacking == lacking
    assert set(index.second.refs()) == {refs[i] for i in alive} - lacking
    assert all(np.array_equal(index.clk(refs[i]), as_words(changed[i : i + 1], bits)[0])
               for i in (0, 15, 50))  # fmt: skip


@pytest.mark.skipif(not kernel.NATIVE, reason="the look-up pass is the native kernel's")
def test_queries_against_a_fallback_index_are_looked_up_half_by_half_in_one_pass(
    messy: tuple[list[npt.NDArray[np.uint8]], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Large enough (here) for LSH tables: each half plans its own from its own rows.
    monkeypatch.setattr(segment, "MIN_ROWS", 1000)
    datasets, _folder = messy
    south, retail = datasets[1], datasets[2]
    bits = 8 * south.shape[1]
    refs = [f"s{i}" for i in range(len(south))]
    words = as_words(south, bits)
    snap = FallbackIndex.load(bits, SCHEMA.clk_bits, refs, words, threshold=0.8).snapshot
    first, second = snap.first.main.lsh, snap.second.main.lsh
    assert first is not None and second is not None
    assert not np.array_equal(first.plan.positions, second.plan.positions)
    passes: list[int] = []
    native = kernel._kernel.lsh_query_batch

    def counted(items):  # type: ignore[no-untyped-def]
        passes.append(sum(len(clks) // (bits // 16) for _, clks, _, _ in items))  # half-CLKs
        return native(items)

    monkeypatch.setattr(kernel._kernel, "lsh_query_batch", counted)
    queries = as_words(retail, bits)
    found = Lookups().search({"south": snap}, queries, 0.8)
    # One pass: the first half for the queries with a birth date, the fallback halves of
    # the records with one for the queries without, and the few records without one
    # (too few here for tables) scanned for every query, in the same native call.
    having = int((~fallback.Split.of([retail], SCHEMA.clk_bits).lacking[0]).sum())
    assert 0 < having < len(queries)
    assert snap.lacks.main.lsh is None and 0 < len(snap.lacks.main) < 1000
    assert passes == [having + len(queries) + (len(queries) - having)]
    # The same answers as a scan of the whole index (no tables) under the rule.
    scanned = FallbackIndex.load(bits, SCHEMA.clk_bits, refs, words).snapshot
    assert scanned.first.main.lsh is None
    want = [{"south": scanned.search(q, 0.8)} for q in queries]
    assert sum(len(w["south"]) for w in want) > 30
    assert found == want


def test_queries_batched_together_each_get_their_own_answer(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
) -> None:
    # Several queries in one pass (lookups.py batches those that arrive together), against a
    # fallback index and a plain one (an index an older client wrote, no fallback_bits),
    # some with a date of birth and some without: each gets what it gets on its own.
    datasets, _folder = messy
    south, retail = datasets[1], datasets[2]
    bits = 8 * south.shape[1]
    refs = [f"s{i}" for i in range(len(south))]
    snapshots: dict[str, AnySnapshot] = {
        "south": searchable(as_words(south, bits), refs, SCHEMA.clk_bits),
        "older": searchable(as_words(south, bits), refs, 0),
    }
    lacks = fallback.Split.of([retail], SCHEMA.clk_bits).lacking[0]
    rows = [int(i) for i in np.flatnonzero(lacks)[:3]] + [
        int(i) for i in np.flatnonzero(~lacks)[:3]
    ]
    rows = [rows[i] for i in (3, 0, 4, 1, 5, 2)]  # with and without, interleaved
    queries = as_words(retail[rows], bits)
    alone = [search_indexes(snapshots, q, 0.8) for q in queries]
    assert sum(len(hits) for answer in alone for hits in answer.values()) > 6
    together = search_batch([(snapshots, q[None, :], 0.8) for q in queries])
    assert [answer[0] for answer in together] == alone


@pytest.mark.server
def test_a_restarted_matcher_warms_the_fallback_halves_tables_too(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Large enough (here) for LSH tables on each half; both halves' tables are warmed
    # before the restarted matcher listens, not only the first halves'.
    monkeypatch.setattr(segment, "MIN_ROWS", 1000)
    datasets, _folder = messy
    south, retail = datasets[1], datasets[2]
    bits, fingerprint = 8 * south.shape[1], bytes(range(32))
    data_dir = tmp_path / "data"
    server = create_server("127.0.0.1:0", data_dir, "admin")
    with MatcherClient(f"127.0.0.1:{server.port}", "admin") as op:
        project = op.create_project("warm", ["south", "retail"], threshold=0.8)
    with MatcherClient(f"127.0.0.1:{server.port}", project.tokens["south"]) as client:
        puts = [(f"s{i}", clk.tobytes()) for i, clk in enumerate(south)]
        client.change_index("warm", clk_bits=bits, fingerprint=fingerprint, puts=puts,
                            fallback_bits=SCHEMA.clk_bits)  # fmt: skip
    server.stop(grace=None)

    caplog.set_level("INFO", logger="blindmatch.matcher.realtime")
    server = create_server("127.0.0.1:0", data_dir, "admin")
    try:
        assert (
            "look-up tables with 4000 look-ups" in caplog.text
            and "(2000 of them on fallback CLKs' tables)" in caplog.text
        ), caplog.text
        # A query without a date of birth, matched by the fallback CLKs only.
        lacks = fallback.Split.of([retail], SCHEMA.clk_bits).lacking[0]
        scanned = FallbackIndex.load(
            bits, SCHEMA.clk_bits, [f"s{i}" for i in range(len(south))], as_words(south, bits)
        ).snapshot
        query = next(
            q for q, lacking in zip(retail, lacks, strict=True)
            if lacking and scanned.search(as_words(q, bits)[0], 0.8)
        )  # fmt: skip
        with MatcherClient(f"127.0.0.1:{server.port}", project.tokens["retail"]) as client:
            answer = client.query("warm", query.tobytes(), clk_bits=bits,
                                  fingerprint=fingerprint, purpose="t")  # fmt: skip
        assert [m.partner for m in answer.results[0]] == ["south"]
    finally:
        server.stop(grace=None)


def test_salting_by_a_field_the_fallback_leaves_out_is_refused(
    orgs: dict[str, Org], tmp_path: Path
) -> None:
    # Salted by year of birth, the DOB-free fallback CLK would be salted with "" for every
    # record: unsalted. Refused with the reason, before anything is encoded.
    from blindmatch.client.encoding.harden import Hardening, with_hardening

    raw = with_hardening(SCHEMA.raw, Hardening(salt_field="dob"))
    salted = dataclasses.replace(SCHEMA, raw=raw)
    org = orgs["north"]
    with pytest.raises(InputError, match="salts with dob, which the fallback CLK"):
        encode_csv(org.csv, salted, load_mapping(org.mapping, salted), b"k")


def test_the_encode_report_warns_that_a_fallback_clk_is_a_second_similarity_graph(
    orgs: dict[str, Org],
) -> None:
    org = orgs["north"]
    result = encode_csv(org.csv, SCHEMA, load_mapping(org.mapping, SCHEMA), b"k")
    said = " ".join(result.report.warnings)
    assert "weaker privacy: the fallback CLK" in said and "graph matching" in said


def test_a_run_reports_the_fallback_pass_step_by_step_and_its_steps_find_the_same_pairs(
    messy: tuple[list[npt.NDArray[np.uint8]], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback CLKs of records lacking a date of birth are compared with every record of
    the other members after the first CLKs' pass: a stage of its own ("fallback"), reported
    from 0 to its comparisons. Before, nothing was reported while it ran: at 1,000,000 x
    171,600 records `blindmatch run`'s bar stood at 100% for 97 s."""
    datasets, _ = messy
    seen: list[tuple[str, int, int]] = []
    match(datasets, 0.8, workers=1, fallback_bits=SCHEMA.clk_bits,
          progress=lambda stage, done, total: seen.append((stage, done, total)))  # fmt: skip
    stages = [stage for stage, _, _ in seen]
    assert stages.index("compare") < stages.index("fallback") < stages.index("solve")
    # and the candidates' scoring on both CLKs after it, a stage of its own (freshwalk)
    assert stages.index("fallback") < stages.index("score") < stages.index("solve")
    scored = [(done, total) for stage, done, total in seen if stage == "score"]
    assert scored[0][0] == 0 and scored[-1][0] == scored[-1][1] > 0
    reported = [(done, total) for stage, done, total in seen if stage == "fallback"]
    assert reported[0][0] == 0 and reported[-1][0] == reported[-1][1] > 0
    split = fallback.Split.of(datasets, SCHEMA.clk_bits)

    def pairs(parts: list[Candidates]) -> set[tuple[int, int, int, int, float]]:
        return {
            (int(d0), int(d1), int(r0), int(r1), round(float(s), 9))
            for p in parts
            for s, d0, d1, r0, r1 in zip(p.sims, p.dset0, p.dset1, p.rec0, p.rec1, strict=True)
        }

    whole = pairs(fallback._fallback_pairs(split, 0.8, 1))
    monkeypatch.setattr(fallbackpass, "MIN_STEP", 1)  # as many steps as a large run takes
    steps: list[int] = []
    stepped = fallback._fallback_pairs(split, 0.8, 2, lambda done, total: steps.append(done))
    assert len(steps) > 50 and steps == sorted(steps)
    assert whole and pairs(stepped) == whole


def _pairs(parts: list[Candidates]) -> dict[tuple[int, int, int, int], float]:
    return {
        (int(d0), int(d1), int(r0), int(r1)): float(s)
        for p in parts
        for s, d0, d1, r0, r1 in zip(p.sims, p.dset0, p.dset1, p.rec0, p.rec1, strict=True)
    }


def test_a_run_blocked_by_lsh_finds_the_fallback_pairs_by_lsh_on_the_fallback_clks(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 19: the fallback pass compared every record lacking a date of birth with every
    record of the other members whatever the run's blocking (6.1·10^10 comparisons at
    1,001,000 x 171,600). A run blocked by LSH now plans LSH on the fallback CLKs too, block
    by block, at the same design recall, and finds the same pairs with fewer comparisons."""
    datasets, _ = messy
    # Every pair of these few rows is cheap: price it as at a million rows a side, so that
    # the planner plans LSH here (for the first CLKs too).
    monkeypatch.setattr(blocking, "COST_DENSE", 1e-6)
    caplog.set_level("INFO", logger="blindmatch.matcher")
    rule = fallback.Rule(0.25, 0.03, 0.01)  # the default schema's: its semantics unchanged
    seen: list[tuple[str, int, int]] = []
    banded = match(datasets, 0.8, workers=2, blocking="lsh", fallback_bits=SCHEMA.clk_bits,
                   rule=rule, progress=lambda *step: seen.append(step))  # fmt: skip
    every = match(datasets, 0.8, workers=1, blocking="exhaustive",
                  fallback_bits=SCHEMA.clk_bits, rule=rule)  # fmt: skip
    split = fallback.Split.of(datasets, SCHEMA.clk_bits)
    all_pairs = sum(b.pairs for b in fallbackpass.blocks(split.lacking))
    assert every.fallback_banded == 0 and every.fallback_comparisons == all_pairs
    assert banded.fallback_banded == 6  # two blocks for each of the three pairs of members
    assert banded.fallback_comparisons < all_pairs / 2, (banded.fallback_comparisons, all_pairs)
    assert "fallback pass: LSH: members 0 x 2, 8 x 180 rows" in caplog.text
    assert "design recall 0.999" in caplog.text
    reported = [(done, total) for stage, done, total in seen if stage == "fallback"]
    assert reported[0][0] == 0 and reported[-1][0] == reported[-1][1] > 0
    # The same pairs, with the same scores, and the same links.
    lsh = fallbackpass.find(split.second, split.lacking, 0.8, 2, lsh=True)
    assert lsh.banded == 6
    want = _pairs(fallbackpass.find(split.second, split.lacking, 0.8, 1).parts)
    assert len(want) > 30 and _pairs(lsh.parts) == want
    for name in ("dset", "row", "partner", "partner_row", "score"):
        assert np.array_equal(getattr(banded.links, name), getattr(every.links, name)), name


def test_a_fallback_block_no_plan_reaches_the_target_for_is_compared_exhaustively_saying_so(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plan below the target recall would lose pairs silently: a block no plan serves
    within the band limit is compared every pair, and the run's log says why."""
    datasets, _ = messy
    monkeypatch.setattr(blocking, "COST_DENSE", 1e-6)
    monkeypatch.setattr(blocking, "MAX_BANDS", 3)  # the target needs ~35 bands here
    caplog.set_level("INFO", logger="blindmatch.matcher")
    result = match(datasets, 0.8, workers=1, blocking="lsh", fallback_bits=SCHEMA.clk_bits)
    split = fallback.Split.of(datasets, SCHEMA.clk_bits)
    assert result.fallback_banded == 0
    assert result.fallback_comparisons == sum(b.pairs for b in fallbackpass.blocks(split.lacking))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        sum(
            m.startswith("fallback pass: exhaustive: members ")
            and "below target 0.999: comparing exhaustively" in m
            for m in said
        )
        == 6
    ), said
    passed = fallbackpass.find(split.second, split.lacking, 0.8, 1, lsh=True)
    assert _pairs(passed.parts) == _pairs(
        fallbackpass.find(split.second, split.lacking, 0.8, 1).parts
    )
