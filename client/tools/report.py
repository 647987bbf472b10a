"""`blindmatch report`: one self-contained HTML page of what a member learnt from a run.

The page holds, for one member of one project:

- the project's settings and the run the results come from;
- overlap per partner: counts and a chart, each partner at the level this member
  learns about it (the lesser of the project's level and that partner's consent);
- the per-record results (record id, partner, and `partner_row` / `score` only where
  that partner's level allows), unless left out, and never at `count`;
- given a truth file (at `hits` and above), precision, recall and F1 overall and per
  partner, as `blindmatch evaluate` prints them;
- at `scores`, the scores of the hits and, given a truth file, the threshold sweep and
  the evaluation plots;
- the encode report of the ENCODED folder (counts and row numbers; no value from the
  export is copied into the page);
- a summary of the member's own audit export.

It never shows more than the matcher disclosed to the member: per-partner facts
come from `Results`, which the matcher has already reduced to each partner's level,
and the rows from `join_results`, which leaves out what a partner's level does not
allow. From audit entries other members made, only the part about this member is
shown (an export entry also names what *other* partners learnt).

The page needs nothing else: inline CSS, charts as inline SVG (`client.tools.charts`),
plots as PNG data URIs, no scripts; a Content-Security-Policy forbids fetching
anything. Gathering (here) talks to the matcher; rendering (`client.tools.report_html`)
is a pure function of what was gathered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.errors import InputError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import LEVELS, ProjectInfo, ResultHit, Results
from blindmatch.client.remote.twoserver import folder_sha256
from blindmatch.client.results import HEADERS, result_rows
from blindmatch.client.tools.evaluate import (
    Quality,
    Scored,
    SweepPoint,
    assess,
    check_scored,
    per_partner,
    read_truth,
    thin_evidence,
)

MAX_ROWS = 2000  # per-record rows on the page (`results` writes them all)


@dataclass(frozen=True)
class Partner:
    """What this member knows about one partner."""

    name: str
    level: str  # the most this member learns about it
    shared: int  # how many of this member's records it also holds
    uploaded: bool
    records: int  # how many records it uploaded (every member sees this)
    consent: str  # "" when it set none


@dataclass(frozen=True)
class EvaluationSummary:
    """The member's results scored against a truth file."""

    truth: str
    quality: Quality
    sweep: list[SweepPoint]
    recommended: SweepPoint | None
    plots: list[tuple[str, bytes]]  # (title, PNG)
    warning: str = ""  # the recommended threshold rests on too little (`thin_evidence`)
    partners: dict[str, Quality] = field(default_factory=dict)  # as `evaluate` prints them
    # The truth file's rows of members not in the project, left out of the overall figures
    # (before 2026-12-07 their records counted as true hits missed), by member.
    left_out: dict[str, int] = field(default_factory=dict)


@dataclass
class MemberReport:
    """Everything the page shows, gathered; `render_html` turns it into the page."""

    project: str
    member: str
    disclosure: str  # the project's level
    learnt: str  # the most this member learns about any partner
    threshold: float
    blocking: str
    require_purpose: bool
    expires_unix: int
    run_id: str
    run_started: float | None
    run_finished: float | None
    latest_run: str  # "id: state" of the project's newest run
    generated: float
    record_count: int
    partners: list[Partner]
    header: list[str] = field(default_factory=list)  # per-record columns; empty at count
    rows: list[list[str]] = field(default_factory=list)
    records_left_out: bool = False
    scores: list[float] = field(default_factory=list)
    encode: dict[str, Any] | None = None
    encode_folder: str = ""
    audit: list[dict[str, Any]] = field(default_factory=list)
    evaluation: EvaluationSummary | None = None
    purpose: str = ""
    mode: str = "clk"  # the project's: clk or two-server
    # The per-record rows the results joined to; `rows` holds the first `MAX_ROWS` of them
    # only, unless a truth file needs them all (None: `len(rows)`, a report made by hand).
    rows_total: int | None = None

    @property
    def row_count(self) -> int:
        return len(self.rows) if self.rows_total is None else self.rows_total


# -- gathering ---------------------------------------------------------------------------


def gather_report(
    client: MatcherClient,
    project: str,
    encoded_path: str | Path,
    *,
    purpose: str = "",
    truth: str | Path | None = None,
    include_records: bool = True,
) -> MemberReport:
    """Ask the matcher for the project, the results and the audit export, and read the
    ENCODED folder. Fetching results is a disclosure: it is audited with `purpose`.

    The results are streamed (`MatcherClient.results_to`, as `blindmatch results` writes
    them): of the joined rows the page keeps the first `MAX_ROWS` (those it shows), a count,
    and the scores for the histogram; all of them only for a truth file's evaluation.
    Before 2026-12-08 every hit was held, then every row, whatever the page showed."""
    encoded = read_encoded(encoded_path, verify=False)
    info = client.describe(project)

    def consume(
        results: Results, hits: Iterator[ResultHit]
    ) -> tuple[Results, list[list[str]], int, list[float]]:
        also = folder_sha256(encoded) if results.upload_sha256 != encoded.sha256 else ""
        joined = result_rows(results, encoded, also, hits)  # refuses another upload's
        if results.disclosure == "count":
            return results, [], 0, []
        keep = MAX_ROWS if truth is None else None
        scored = HEADERS[results.disclosure][-1] == "score"
        rows: list[list[str]] = []
        scores: list[float] = []
        count = 0
        for row in joined:
            if keep is None or count < keep:
                rows.append(row)
            if scored and row[-1]:
                scores.append(float(row[-1]))
            count += 1
        return results, rows, count, scores

    results, rows, count, scores = client.results_to(project, purpose, consume)
    audit = list(client.audit(project))  # after the results: their disclosure is in it
    member = info.member
    header = [] if results.disclosure == "count" else HEADERS[results.disclosure]
    partners = _partners(info, results)
    members = {member, *(p.name for p in partners)}
    evaluation = _evaluate(truth, member, header, rows, members) if truth else None
    started, finished = _run_times(audit, results.run_id)
    run = info.latest_run
    latest = f"{run.run_id}: {run.state}" if run is not None else ""
    return MemberReport(
        project=info.project,
        member=member,
        disclosure=info.disclosure,
        learnt=results.disclosure,
        threshold=info.threshold,
        blocking=info.blocking_said,
        mode=info.mode,
        require_purpose=info.require_purpose,
        expires_unix=info.expires_unix,
        run_id=results.run_id,
        run_started=started,
        run_finished=finished,
        latest_run=latest,
        generated=time.time(),
        record_count=results.record_count,
        partners=partners,
        header=header,
        rows=rows if include_records else [],
        rows_total=count,
        records_left_out=bool(header) and not include_records,
        scores=scores,
        encode=encoded.read_report(),
        encode_folder=str(encoded.path),
        audit=audit,
        evaluation=evaluation,
        purpose=purpose,
    )


def _partners(info: ProjectInfo, results: Results) -> list[Partner]:
    project_level = info.disclosure
    out = []
    for m in info.members:
        if m.name == info.member:
            continue
        consent = m.consent or ""
        level = results.levels.get(m.name) or min(
            project_level, consent or project_level, key=LEVELS.index
        )
        out.append(
            Partner(
                m.name, level, results.counts.get(m.name, 0), m.uploaded, m.record_count, consent
            )
        )
    return out


def _run_times(audit: Iterable[dict[str, Any]], run_id: str) -> tuple[float | None, float | None]:
    started = finished = None
    for e in audit:
        if (e.get("detail") or {}).get("run_id") != run_id:
            continue
        if e["action"] == "run.start":
            started = float(e["time"])
        elif e["action"] == "run.done":
            finished = float(e["time"])
    return started, finished


def _evaluate(
    truth_path: str | Path, member: str, header: list[str], rows: list[list[str]],
    members: set[str],
) -> EvaluationSummary:  # fmt: skip
    """`members`: the project's; the truth file's rows of others are left out of the overall
    figures (and the sweep), kept in the per-partner table, which says "not a member"."""
    if not header:
        raise InputError("--truth: at the count level there are no per-record results to evaluate")
    full = read_truth(truth_path)
    left_out = {m: len(full.records[m].ids) for m in sorted(full.members - members)}
    truth = full.only(members) if left_out else full
    has_score = header[-1] == "score"
    scored = [
        Scored((member, r[0], r[1]), float(r[-1]) if has_score and r[-1] else None) for r in rows
    ]
    check_scored(scored, truth, member, truth_path=truth_path, results="the results")
    quality, points, best = assess(scored, truth, member)
    plots: list[tuple[str, bytes]] = []
    if points:
        from blindmatch.client.tools.plots import (
            png_bytes,
            precision_recall_figure,
            score_histogram_figure,
        )

        cut = best.threshold if best else None
        plots.append(
            (
                "Scores of true and false hits",
                png_bytes(score_histogram_figure(scored, truth, recommended=cut)),
            )
        )
        plots.append(
            (
                "Precision and recall by threshold",
                png_bytes(precision_recall_figure(points, recommended=best)),
            )
        )
    partners = per_partner((s.hit for s in scored), full, member)
    return EvaluationSummary(
        str(truth_path), quality, points, best, plots, thin_evidence(points, best), partners,
        left_out,
    )  # fmt: skip
