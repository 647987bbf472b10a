"""`blindmatch report`: one self-contained HTML page per member that never shows more than
the member's disclosure level allows, checked against a real matcher on loopback and
rendered in a real headless browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.tools import charts
from blindmatch.matcher.server import RunningServer, create_server
from tests.support import (
    ADMIN_TOKEN,
    NORTH_CSV,
    NORTH_MAP,
    SOUTH_CSV,
    SOUTH_MAP,
    Matcher,
    Org,
    encode_all,
    uploaded_and_run,
)

# The people of SOUTH_CSV again, under other ids, and one more: east shares 3 people with
# north and 4 with south, so "4" is a figure north must never learn about south and east.
EAST_CSV = """PersonID,FIRST_NAME,LAST_NAME,BIRTH_DATE,GENDER,POST_CODE
E-1,ELODIE,OBRIEN,1985-03-02,Female,sw1a1aa
E-2,ZOLTAN,KOVACS,1965-05-05,Male,cf101aa
E-3,PETER,NOWAK,1979-08-14,Male,b338tt
E-4,GRACE,HUGHES,2001-12-12,Female,eh19zz
E-5,OLUWASEUN,ADEYEMI,1992-06-30,Male,n17 6pa
"""
NORTH_IDS = {"N1", "N2", "N3", "N4", "N5"}
NORTH_HITS = {"N1", "N4", "N5"}  # held by south and by east
TRUTH = """member,record_id,entity_id
north,N1,elodie
north,N2,james
north,N3,aoife
north,N4,zoltan
north,N5,grace
south,S-10,elodie
south,S-11,zoltan
south,S-12,peter
south,S-13,grace
east,E-1,elodie
east,E-2,zoltan
east,E-3,peter
east,E-4,grace
east,E-5,oluwaseun
"""


@dataclass
class World:
    server: RunningServer
    tmp: Path
    encoded: dict[str, Encoded]
    projects: dict[str, ProjectTokens]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def project(self, name: str, level: str) -> ProjectTokens:
        """A new three-member project at `level`, uploaded and run."""
        matcher = Matcher(self.server, self.tmp / "data", ADMIN_TOKEN)
        with matcher.operator() as op:
            project = op.create_project(name, ["north", "south", "east"], disclosure=level)
        uploaded_and_run(matcher, project, self.encoded)
        return project

    def member(self, project: ProjectTokens, name: str) -> MatcherClient:
        return MatcherClient(self.target, project.tokens[name])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A matcher with one finished run per disclosure level (north, south and east)."""
    tmp = tmp_path_factory.mktemp("report")
    orgs = {}
    for name, data, mapping in (
        ("north", NORTH_CSV, NORTH_MAP),
        ("south", SOUTH_CSV, SOUTH_MAP),
        ("east", EAST_CSV, SOUTH_MAP),
    ):
        (tmp / f"{name}.csv").write_text(data, encoding="utf-8")
        (tmp / f"{name}.toml").write_text(mapping, encoding="utf-8")
        orgs[name] = Org(tmp / f"{name}.csv", tmp / f"{name}.toml")
    (tmp / "truth.csv").write_text(TRUTH, encoding="utf-8")
    server = create_server("127.0.0.1:0", tmp / "data", ADMIN_TOKEN, workers=1)
    try:
        world = World(server, tmp, encode_all(orgs, tmp), {})
        for level in ("count", "hits", "mapping", "scores"):
            world.projects[level] = world.project(f"at-{level}", level)
        yield world
    finally:
        server.stop(grace=None)


def report(world: World, project: ProjectTokens, out: Path, *extra: str) -> int:
    """`blindmatch report` for north, as a user runs it."""
    return main(
        ["report", "--project", project.project, "--token", project.tokens["north"],
         "--encoded", str(world.encoded["north"].path), "--out", str(out),
         "--server", world.target, "--quiet", *extra]
    )  # fmt: skip


class Page(HTMLParser):
    """The page's tables (header and rows of cell texts), images and visible text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, *header: str) -> list[list[str]]:
        """The rows (header first) of the table whose header starts with `header`."""
        found = [t for t in self.tables if t and t[0][: len(header)] == list(header)]
        assert len(found) <= 1
        return found[0] if found else []

    @property
    def cells(self) -> set[str]:
        return {cell for t in self.tables for row in t for cell in row}


def read_page(path: Path) -> tuple[str, Page]:
    html = path.read_text(encoding="utf-8")
    return html, Page(html)


# -- what each level shows, and nothing more ------------------------------------------------


@pytest.mark.parametrize("level", ["count", "hits", "mapping", "scores"])
def test_the_page_shows_what_the_level_allows_and_nothing_more(
    world: World, tmp_path: Path, level: str
) -> None:
    out = tmp_path / "north.html"
    assert report(world, world.projects[level], out, "--purpose", "OP-2291 review") == 0
    html, page = read_page(out)

    # Every level: the overlap per partner, with its chart, the settings and the run.
    assert page.table("partner")[1:] == [
        ["east", level, "3", "60.0%", "5", "(none set)"],
        ["south", level, "3", "60.0%", "4", "(none set)"],
    ]
    assert html.count(f'fill="{charts.OVERLAP}"') == 2  # one bar a partner
    settings = dict(row for row in page.table("setting")[1:])
    assert settings["project's disclosure level"] == level
    assert settings["run"] == f"at-{level}-run-1"
    assert settings["purpose given for this report"] == "OP-2291 review"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", settings["run finished"])
    # The encode report: counts and row numbers, never a value from the export.
    assert ["dob", "DOB", "4", "0", "1", "4", "4"] in page.table("field")
    assert "30/02/1970" not in html and "Kovács" not in html and "Hughes" not in html

    rows = page.table("record_id")
    ids = {cell for cell in page.cells if cell in NORTH_IDS}
    if level == "count":
        assert rows == [] and ids == set()  # no record ids at all
        assert "A hit is a lead" not in html
    else:
        assert "A hit is a lead, not an identification" in html
        assert ids == NORTH_HITS
        expected = {
            "hits": ["record_id", "partner"],
            "mapping": ["record_id", "partner", "partner_row"],
            "scores": ["record_id", "partner", "partner_row", "score"],
        }[level]
        assert rows[0] == expected
        assert {(r[0], r[1]) for r in rows[1:]} == {
            (i, p) for i in NORTH_HITS for p in ("south", "east")
        }
    assert ("partner_row" in html) == (level in ("mapping", "scores"))
    assert ("Scores of the" in html) == (level == "scores")
    if level == "scores":
        assert all(0.8 <= float(r[3]) <= 1.0 for r in rows[1:])
        assert html.count(f'fill="{charts.SCORES}"') >= 1


def test_the_page_needs_nothing_from_elsewhere(world: World, tmp_path: Path) -> None:
    out = tmp_path / "north.html"
    assert (
        report(world, world.projects["scores"], out, "--truth", str(world.tmp / "truth.csv")) == 0
    )
    html, page = read_page(out)
    assert "<script" not in html.lower()
    assert "http:" not in html and "https:" not in html and "url(" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)


def test_a_partners_consent_caps_what_the_page_shows(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = world.project("capped", "mapping")
    with world.member(project, "south") as south:
        south.set_consent("capped", "hits")
    out = tmp_path / "north.html"
    capsys.readouterr()
    assert report(world, project, out) == 0
    assert capsys.readouterr() == ("", "")  # -q: nothing (was "Wrote north.html: run ...")
    _, page = read_page(out)
    assert [r[:2] for r in page.table("partner")[1:]] == [["east", "mapping"], ["south", "hits"]]
    rows = page.table("record_id")
    assert rows[0] == ["record_id", "partner", "partner_row"]
    assert {r[2] for r in rows[1:] if r[1] == "south"} == {""}  # south's rows stay hidden
    assert {r[2] for r in rows[1:] if r[1] == "east"} == {"0", "1", "3"}


def test_from_partners_audit_entries_only_your_part_is_shown(world: World, tmp_path: Path) -> None:
    project = world.project("audited", "hits")
    with world.member(project, "south") as south:
        south.results("audited", purpose="SOUTH-CASE-77")  # south learns north 3, east 4
    # south answers north's request about N1: north's view has the resolution at once, but it
    # is north's own request answered, not a partner's day of look-ups.
    with world.member(project, "north") as north:
        sha = world.encoded["north"].sha256
        ref = north.issue_request_refs("audited", [0], sha, partner="south").refs["south"]
    with world.member(project, "south") as south:
        south.resolve_request_ref("audited", ref, world.encoded["south"].sha256, "SOUTH-CASE-78")
    out = tmp_path / "north.html"
    assert report(world, project, out, "--purpose", "NORTH-CASE-1") == 0
    html, page = read_page(out)
    # Your information disclosed to partners: south's look is listed as a line for its day
    # once that day is over (tests/test_audit_views.py), not today, and never its details.
    assert page.table("day", "partner") == []
    assert "once that UTC day is over" in html
    assert "4 shared" not in html and "SOUTH-CASE-7" not in html
    assert "south: hits, 3 shared; east: hits, 3 shared" not in html  # sorted: east first
    assert "east: hits, 3 shared; south: hits, 3 shared" in page.cells
    assert "NORTH-CASE-1" in page.cells


def test_no_records_leaves_every_record_id_out(world: World, tmp_path: Path) -> None:
    out = tmp_path / "north.html"
    assert report(world, world.projects["hits"], out, "--no-records") == 0
    html, page = read_page(out)
    assert page.table("record_id") == []
    assert not {cell for cell in page.cells if cell in NORTH_IDS}
    assert "Left out of this page" in html
    assert page.table("partner")[1][2] == "3"


def test_a_truth_file_adds_precision_recall_and_the_plots(world: World, tmp_path: Path) -> None:
    out = tmp_path / "north.html"
    assert (
        report(world, world.projects["scores"], out, "--truth", str(world.tmp / "truth.csv")) == 0
    )
    html, page = read_page(out)
    assert "precision 1.0000, recall 1.0000, F1 1.0000 (6 of 6 reported hits true" in html
    assert page.table("threshold")[0] == ["threshold", "precision", "recall", "F1", ""]
    # as `evaluate` warns: six labelled pairs are too few to trust the recommendation
    assert "Warning:" in html and "rests on few labelled pairs (6 scored results" in html
    assert len(page.images) == 2
    for src in page.images:
        png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert png.format == "PNG" and png.width > 300 and png.height > 300


def test_a_truth_file_at_hits_shows_precision_recall_overall_and_per_partner(
    world: World, tmp_path: Path
) -> None:
    """At `hits` the page shows what `blindmatch evaluate` prints for the results file: here
    N2 is truly east's E-5 too, a hit the run missed, so recall with east is 3 of 4."""
    out, truth = tmp_path / "north.html", tmp_path / "truth.csv"
    truth.write_text(TRUTH.replace("north,N2,james", "north,N2,oluwaseun"), encoding="utf-8")
    assert report(world, world.projects["hits"], out, "--truth", str(truth)) == 0
    html, page = read_page(out)
    assert "precision 1.0000, recall 0.8571, F1 0.9231 (6 of 6 reported hits true" in html
    assert page.table("against")[1:] == [
        ["all partners", "1.0000", "0.8571", "0.9231", "6", "6", "7", ""],
        ["with east", "1.0000", "0.7500", "0.8571", "3", "3", "4", ""],
        ["with south", "1.0000", "1.0000", "1.0000", "3", "3", "3", ""],
    ]
    assert "Scores of the" not in html and not page.table("threshold") and not page.images


def test_a_non_members_truth_rows_are_left_out_of_the_overall_figures_and_counted(
    world: World, tmp_path: Path
) -> None:
    """Before 2026-12-07 west's rows (not a member of the project) counted its true hit with
    north's N2 as missed in the overall recall (0.8571, 6 of 7), though west's own row said
    "not a member". The overall figures now leave its rows out, and say how many."""
    out, truth = tmp_path / "north.html", tmp_path / "truth.csv"
    truth.write_text(TRUTH + "west,W-1,james\nwest,W-2,nobody\n", encoding="utf-8")
    assert report(world, world.projects["hits"], out, "--truth", str(truth)) == 0
    html, page = read_page(out)
    assert "precision 1.0000, recall 1.0000, F1 1.0000 (6 of 6 reported hits true" in html
    rows = {r[0]: r[1:] for r in page.table("against")[1:]}
    assert rows["all partners"] == [
        "1.0000", "1.0000", "1.0000", "6", "6", "6",
        "leaves out 2 rows of the truth file, of west: not a member of this project",
    ]  # fmt: skip
    assert rows["with west"][-1].startswith("not a member of this project"), rows


def test_a_partner_you_learn_only_counts_about_is_said_to_lower_recall(
    world: World, tmp_path: Path
) -> None:
    project = world.project("counted", "hits")
    with world.member(project, "south") as south:
        south.set_consent("counted", "count")
    out = tmp_path / "north.html"
    assert report(world, project, out, "--truth", str(world.tmp / "truth.csv")) == 0
    _, page = read_page(out)
    rows = {r[0]: r[1:] for r in page.table("against")[1:]}
    assert rows["with south"] == [  # no hit claimed: precision undefined (was 1.0000)
        "undefined", "0.0000", "0.0000", "0", "0", "3",
        "you learn only counts about it: its true hits count as missed",
    ]  # fmt: skip
    assert rows["all partners"][:3] == ["1.0000", "0.5000", "0.6667"]


def test_a_truth_file_without_a_partner_is_refused_not_scored_as_false_hits(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, truth = tmp_path / "north.html", tmp_path / "no-east.csv"
    truth.write_text("".join(r for r in TRUTH.splitlines(True) if not r.startswith("east")))
    assert report(world, world.projects["hits"], out, "--truth", str(truth)) == 2
    assert "partner 'east' is not in the truth file" in capsys.readouterr().err
    assert not out.exists()


def test_there_is_nothing_to_evaluate_at_count(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "north.html"
    truth = str(world.tmp / "truth.csv")
    assert report(world, world.projects["count"], out, "--truth", truth) == 2
    assert "no per-record results to evaluate" in capsys.readouterr().err
    assert not out.exists()


def test_bars_are_drawn_to_scale_and_labelled_with_their_values() -> None:
    svg = charts.stacked_bar_chart(
        [
            ("dob", [charts.Segment(4, charts.PRESENT, "present"),
                     charts.Segment(1, charts.INVALID, "invalid")]),
            ("sex", [charts.Segment(2, charts.PRESENT, "present"),
                     charts.Segment(0, charts.INVALID, "invalid")]),
        ],
        title="<values>",
    )  # fmt: skip
    bars = r'<rect x="[\d.]+" y="\d+" width="([\d.]+)" height="22"'
    widths = [float(w) for w in re.findall(bars, svg)]
    assert widths == [416.0, 104.0, 208.0]  # 520 px for the largest total; nothing for a 0
    assert ">4 / 1</text>" in svg and ">2 / 0</text>" in svg
    assert "&lt;values&gt;" in svg and "<values>" not in svg


# -- rendered by a real browser -------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def longest_runs(pixels: np.ndarray, colour: str) -> tuple[int, list[int]]:
    """The longest horizontal run of exactly `colour`, and the rows that hold it."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    mask = np.all(pixels == rgb, axis=2)
    best, rows = 0, []
    for y in np.flatnonzero(mask.any(axis=1)):
        padded = np.concatenate(([0], mask[y].astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(padded))
        run = int((edges[1::2] - edges[::2]).max())
        if run > best:
            best, rows = run, [int(y)]
        elif run == best:
            rows.append(int(y))
    return best, rows


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
)
def test_the_charts_render_in_a_headless_browser(world: World, tmp_path: Path) -> None:
    out = tmp_path / "north.html"
    assert report(world, world.projects["hits"], out) == 0
    shot = tmp_path / "north.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
         f"--screenshot={shot}", "--window-size=1200,2000", out.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (2000, 1200, 3)
    # Overlap: two partners with 3 shared subjects each, the largest value: two bars drawn
    # the full 520 px, each 22 px high.
    run, rows = longest_runs(pixels, charts.OVERLAP)
    assert 515 <= run <= 525
    assert 40 <= len(rows) <= 48
    # Data quality: every field of north's 5 rows; dob has 4 present and 1 invalid, so the
    # invalid segment is a fifth of the bar, and the fully present fields are full length.
    present, present_rows = longest_runs(pixels, charts.PRESENT)
    invalid, invalid_rows = longest_runs(pixels, charts.INVALID)
    assert 515 <= present <= 525
    assert 100 <= invalid <= 108
    # The sections are in order: the overlap chart above the data-quality chart.
    assert max(rows) < min(present_rows) <= min(invalid_rows)


def test_an_unwritable_out_is_refused_before_the_results_are_fetched(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out a folder, or a file under a file: refused before the results are asked for
    (before, the matcher disclosed them, audited as `results.disclose`, and then the page
    could not be written)."""
    project = world.projects["count"]
    operator = Matcher(world.server, world.tmp / "data", ADMIN_TOKEN).operator

    def disclosed() -> int:
        with operator() as op:
            return sum(e["action"] == "results.disclose" for e in op.audit(project.project))

    before = disclosed()
    (tmp_path / "a-file").write_text("")
    under_a_file = tmp_path / "a-file" / "north.html"
    for out, why in ((tmp_path, "is a folder"), (under_a_file, f"{under_a_file.parent} is not")):
        assert report(world, project, out) == 2
        assert f"{out}: {why}" in capsys.readouterr().err
    assert disclosed() == before


def test_the_page_keeps_only_the_rows_it_shows_counting_the_rest(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`report` streams the results, as `results` does: of a run's rows it keeps those the
    page shows (here 4 of 6), their count and the scores, not every hit and every row (before
    2026-12-08 it fetched them whole, its memory growing with the results)."""
    from blindmatch.client.tools import report as gathering
    from blindmatch.client.tools import report_html

    monkeypatch.setattr(gathering, "MAX_ROWS", 4, raising=False)
    monkeypatch.setattr(report_html, "MAX_ROWS", 4)
    project = world.projects["scores"]
    with world.member(project, "north") as north:
        gathered = gathering.gather_report(north, project.project, world.encoded["north"].path)
    assert len(gathered.rows) == 4 and gathered.row_count == 6
    assert len(gathered.scores) == 6  # the histogram's, every hit's
    html = report_html.render_html(gathered)
    assert "Per-record results (6)" in html and "The first 4 of 6 rows" in html
    assert "Scores of the 6 hits" in html
    # A truth file's evaluation needs every row: all are kept.
    with world.member(project, "north") as north:
        whole = gathering.gather_report(
            north, project.project, world.encoded["north"].path, truth=world.tmp / "truth.csv"
        )
    assert len(whole.rows) == 6 and whole.row_count == 6
