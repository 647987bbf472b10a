"""`blindmatch report`'s page: a `MemberReport` rendered as one self-contained HTML file.

Rendering is a pure function of the report (`render_html`); `client.tools.report` gathers
the report from the matcher and the ENCODED folder.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from blindmatch import __version__
from blindmatch.client.files import write_text
from blindmatch.client.tools import charts
from blindmatch.client.tools.evaluate import table_rows
from blindmatch.client.tools.report import MAX_ROWS, MemberReport
from blindmatch.client.tools.report_requests import request_tables
from blindmatch.client.words import counted, word

# Per-record rows shown on the page; the results CSV holds them all.
# Rows of each audit table, newest first.
MAX_AUDIT_ROWS = 50
# Invalid row numbers listed per field.
MAX_INVALID_ROWS = 10
# Actions in which a member learns about partners, or a partner learns about it.
DISCLOSURES = ("results.disclose", "query", "watch", "watch.notify")


def write_report(path: str | Path, report: MemberReport) -> None:
    """Write the page atomically: the old file or the whole new one."""
    write_text(path, render_html(report))


# -- rendering ---------------------------------------------------------------------------

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 0.9em; }
th { background: #f0f0f0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.5em 1em; }
.lead { background: #fdecee; border-left: 4px solid #a61e4d; padding: 0.5em 1em; }
.muted { color: #666; font-size: 0.9em; }
img { max-width: 100%; }
"""

# The page may load nothing: styles inline, images only as data URIs, no scripts.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _iso(unix: float | None) -> str:
    return "" if unix is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def _table(
    header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{escape(str(v))}</td>' if i in numeric else f"<td>{escape(str(v))}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(r: MemberReport) -> str:
    """The whole page, as one string."""
    title = f"blindmatch report: {r.member} in {r.project}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">Made {_iso(r.generated)} by blindmatch {escape(__version__)} '
        f"for {escape(r.member)}, from run {escape(r.run_id)}.</p>",
        _handling_note(r),
        _settings(r),
        _overlap(r),
        _records(r),
        _evaluation(r),
        _scores(r),
        _data_quality(r),
        _audit(r),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(s for s in sections if s)
        + "</body></html>\n"
    )


def _handling_note(r: MemberReport) -> str:
    if r.rows:
        what = (
            f"this page lists {escape(r.member)}'s own local record ids beside the partners "
            "that hold the same person: handle it as you handle the results file, and "
            "share it only as your information-sharing agreement allows"
        )
    elif r.header:
        what = "the per-record results were left out of this page (counts only)"
    else:
        what = "at the count level this page holds counts only: no record ids"
    lead = ""
    if r.header:
        lead = (
            '<p class="lead"><b>A hit is a lead, not an identification.</b> It says that a '
            "partner holds a record similar enough to yours, by encodings alone. Confirm it "
            "with the partner, on the records themselves, before anything is done about the "
            "person (docs/governance/acting-on-a-hit.md).</p>"
        )
    return f'<p class="note">What this page holds: {what}.</p>{lead}'


_MODES = {
    "clk": "clk (the matcher holds the members' CLKs)",
    "two-server": "two-server (S1 and S2 hold XOR shares; the matcher, how many records)",
}


def _settings(r: MemberReport) -> str:
    rows = [
        ("project", r.project),
        ("you are", r.member),
        ("project's disclosure level", r.disclosure),
        ("the most you learn about any partner", r.learnt),
        ("threshold", f"{r.threshold:g}"),
        ("mode", _MODES.get(r.mode, r.mode)),
        ("blocking", r.blocking),
        ("results need a purpose", "yes" if r.require_purpose else "no"),
        ("purpose given for this report", r.purpose or "(none)"),
        ("run", r.run_id),
        ("run started", _iso(r.run_started) or "(not in your audit export)"),
        ("run finished", _iso(r.run_finished) or "(not in your audit export)"),
        ("newest run in the project", r.latest_run or "(none)"),
        ("your records in the run", r.record_count),
        ("project data deleted at", _iso(r.expires_unix) if r.expires_unix else "(not set)"),
    ]
    return "<h2>Run and settings</h2>" + _table(("setting", "value"), rows)


def _overlap(r: MemberReport) -> str:
    chart = charts.bar_chart(
        [(p.name, p.shared) for p in r.partners],
        colour=charts.OVERLAP,
        title=f"Your records also held by each partner (of {r.record_count})",
    )
    rows = [
        (
            p.name,
            p.level,
            p.shared,
            f"{p.shared / r.record_count:.1%}" if r.record_count else "",
            p.records if p.uploaded else "not uploaded",
            p.consent or "(none set)",
        )
        for p in r.partners
    ]
    table = _table(
        (
            "partner",
            "you learn",
            "shared subjects",
            "of your records",
            "its records",
            "its consent",
        ),
        rows,
        numeric=(2, 3, 4),
    )
    return (
        "<h2>Overlap per partner</h2>"
        f"<figure>{chart}</figure>{table}"
        '<p class="muted">Shared subjects: how many of your records the partner also holds '
        '(at or above the threshold). "You learn" is the lesser of the project\'s level and '
        "the partner's consent.</p>"
    )


def _records(r: MemberReport) -> str:
    if not r.header:
        return ""
    if r.records_left_out:
        return (
            "<h2>Per-record results</h2><p>Left out of this page (<code>--no-records</code>); "
            "<code>blindmatch results</code> writes them to a CSV.</p>"
        )
    shown = r.rows[:MAX_ROWS]
    more = (
        f'<p class="muted">The first {MAX_ROWS} of {r.row_count} rows; '
        "<code>blindmatch results</code> writes them all to a CSV.</p>"
        if r.row_count > MAX_ROWS
        else ""
    )
    blank = (
        '<p class="muted">An empty cell: that partner\'s level does not disclose it.</p>'
        if len(r.header) > 2
        else ""
    )
    return f"<h2>Per-record results ({r.row_count})</h2>{_table(r.header, shown)}{more}{blank}"


def _evaluation(r: MemberReport) -> str:
    """With `--truth` (at `hits` and above): precision, recall and F1, overall and with each
    partner, as `blindmatch evaluate` prints them; the sweep and plots are under Scores."""
    ev = r.evaluation
    if ev is None:
        return ""
    levels = {p.name: p.level for p in r.partners}
    rows = [("all partners", ev.quality, _left_out(ev.left_out))]
    for name, q in ev.partners.items():
        note = ""
        if name not in levels:
            note = "not a member of this project: leave its rows out of the truth file"
        elif levels[name] == "count":
            note = "you learn only counts about it: its true hits count as missed"
        elif not q.predicted and q.actual:
            note = "in none of your results"
        rows.append((f"with {name}", q, note))
    table = _table(
        ("against", "precision", "recall", "F1", "true hits reported", "hits reported",
         "true hits", "note"),
        ((who, q.said("precision"), q.said("recall"), q.said("f1"), q.true_positives,
          q.predicted, q.actual, note) for who, q, note in rows),
        numeric=(1, 2, 3, 4, 5, 6),
    )  # fmt: skip
    return (
        "<h2>Precision and recall against known truth</h2>"
        f"<p>Against {escape(ev.truth)}: {escape(str(ev.quality))}.</p>{table}"
        '<p class="muted">A true hit: one of your records and a partner holding a record of '
        "the same person in the truth file. Judged on synthetic or consented data only.</p>"
    )


def _left_out(left_out: dict[str, int]) -> str:
    """The overall row's note: the truth file's rows of members not in the project, which
    it leaves out (a non-member's true hits are no one's to find here)."""
    if not left_out:
        return ""
    rows = counted(sum(left_out.values()), "row")
    return (f"leaves out {rows} of the truth file, of {', '.join(left_out)}: not "
            f"{'a member' if len(left_out) == 1 else 'members'} of this project")  # fmt: skip


def _scores(r: MemberReport) -> str:
    if r.learnt != "scores":
        return ""
    parts = ["<h2>Scores</h2>"]
    if r.scores:
        lo = min(min(r.scores), r.threshold)
        parts.append(
            "<figure>"
            + charts.histogram(
                r.scores,
                bins=20,
                lo=lo,
                hi=1.0,
                title=f"Scores of the {len(r.scores)} hits disclosed with a score",
            )
            + "</figure>"
        )
    else:
        parts.append("<p>No partner disclosed a score for any of your records.</p>")
    ev = r.evaluation
    if ev is None:
        parts.append(
            '<p class="muted">Give a truth file (<code>--truth</code>, as for '
            "<code>blindmatch evaluate</code>) to see precision, recall and the threshold "
            "sweep. Scores are for synthetic or consented data only.</p>"
        )
        return "".join(parts)
    if ev.sweep:
        shown = table_rows(ev.sweep, ev.recommended)
        parts.append(
            _table(
                ("threshold", "precision", "recall", "F1", ""),
                (
                    (
                        f"{p.threshold:.4f}",
                        p.quality.said("precision"),
                        p.quality.said("recall"),
                        p.quality.said("f1"),
                        "recommended" if p is ev.recommended else "",
                    )
                    for p in shown
                ),
                numeric=(0, 1, 2, 3),
            )
        )
    if ev.warning:
        parts.append(f"<p><strong>Warning:</strong> {escape(ev.warning)}.</p>")
    for plot_title, png in ev.plots:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{escape(plot_title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(plot_title)}</figcaption></figure>"
        )
    return "".join(parts)


def _rows_not_encoded(enc: dict[str, Any]) -> str:
    """What the encode skipped or could not read, so that no row is lost from the page unsaid:
    repeated ids, blank rows, the header repeated, ambiguous dates."""
    said = []
    repeats = enc.get("duplicate_ids") or []
    if repeats:
        kept = "skipped" if enc.get("on_duplicate_id") == "keep-first" else "kept"
        said.append(
            f"{counted(len(repeats), 'row')} {word(len(repeats), 'repeats', 'repeat')} an earlier "
            f"row's record id ({kept})"
        )
    if enc.get("blank_rows"):
        said.append(f"{counted(int(enc['blank_rows']), 'blank row')} skipped")
    if enc.get("header_rows"):
        said.append(f"{counted(len(enc['header_rows']), 'row')} repeating the header skipped")
    ambiguous = sum(int(f.get("ambiguous", 0)) for f in enc.get("fields") or [])
    if ambiguous:
        said.append(f"{counted(ambiguous, 'ambiguous date')} encoded as missing")
    return f"<p>{escape('; '.join(said))}.</p>" if said else ""


def _data_quality(r: MemberReport) -> str:
    head = "<h2>Data quality of your encoded export</h2>"
    enc = r.encode
    if enc is None:
        return head + (
            f"<p>No encode report in {escape(r.encode_folder)} (local/report.json); "
            "re-run <code>blindmatch encode</code> to get one.</p>"
        )
    fields = enc.get("fields") or []
    chart = charts.stacked_bar_chart(
        [
            (
                str(f.get("field", "")),
                [
                    charts.Segment(int(f.get("present", 0)), charts.PRESENT, "present"),
                    charts.Segment(int(f.get("missing", 0)), charts.MISSING, "missing"),
                    charts.Segment(int(f.get("invalid", 0)), charts.INVALID, "invalid"),
                ],
            )
            for f in fields
        ],
        title="Values per field: present / missing / invalid",
    )
    rows = []
    for f in fields:
        invalid_rows = [str(i.get("row", "")) for i in f.get("invalid_rows") or []]
        listed = ", ".join(invalid_rows[:MAX_INVALID_ROWS])
        if len(invalid_rows) > MAX_INVALID_ROWS:
            listed += f", ... ({len(invalid_rows) - MAX_INVALID_ROWS} more)"
        rows.append(
            (
                f.get("field", ""),
                ",".join(f.get("columns") or []) or "(not mapped)",
                f.get("present", 0),
                f.get("missing", 0),
                f.get("invalid", 0),
                f.get("distinct", 0),
                listed,
            )
        )
    summary = (
        f"<p>{escape(str(enc.get('rows_encoded', 0)))} of {escape(str(enc.get('rows_read', 0)))} "
        f"rows encoded from {escape(str(enc.get('source', '')))}; hardening: "
        f"{escape(str(enc.get('hardening') or 'not recorded'))}; "
        f"{counted(int(enc.get('empty_records', 0)), 'record')} with no usable value; "
        f"{escape(str(enc.get('few_fields_records', 0)))} with fewer than 3 usable fields.</p>"
        + _rows_not_encoded(enc)
    )
    warnings = "".join(f"<li>{escape(w)}</li>" for w in _warnings(enc))
    return (
        head
        + summary
        + f"<figure>{chart}</figure>"
        + _table(
            ("field", "column(s)", "present", "missing", "invalid", "distinct", "invalid at rows"),
            rows,
            numeric=(2, 3, 4, 5),
        )
        + (f"<p>Warnings:</p><ul>{warnings}</ul>" if warnings else "<p>No warnings.</p>")
        + '<p class="muted">Counts and row numbers only: the values themselves are in '
        "local/report.json of the ENCODED folder, which never leaves your machine.</p>"
    )


def _warnings(enc: dict[str, Any]) -> list[str]:
    """The encode report's warnings, with any value quoted from the export replaced."""
    values = [repr(f["commonest"]) for f in enc.get("fields") or [] if f.get("commonest")]
    out = []
    for w in enc.get("warnings") or []:
        for v in values:
            w = w.replace(v, "one value")
        out.append(w)
    return out


def _audit(r: MemberReport) -> str:
    me = r.member
    entries = r.audit
    head = "<h2>Audit summary</h2>"
    if not entries:
        return head + "<p>Your audit export is empty.</p>"
    actions = Counter(e["action"] for e in entries)
    about_me = [e for e in entries if e["action"] == "partner.disclosures" and e["actor"] != me]
    mine = [e for e in entries if e["actor"] == me and e["action"] in DISCLOSURES]
    last = entries[-1]
    parts = [
        head,
        f"<p>{len(entries)} entries concern {escape(me)} in this project, "
        f"{_iso(entries[0]['time'])} to {_iso(last['time'])}. The newest entry's hash is "
        f"<code>{escape(str(last['hash']))}</code>: record it elsewhere and ask the "
        "operator to find it in the log and check it with <code>blindmatch audit verify "
        "--anchor SEQ:HASH</code> (your view numbers its entries by itself, not by the "
        "log's seq).</p>",
        _table(("action", "entries"), sorted(actions.items()), numeric=(1,)),
        f"<h3>Your information disclosed to partners ({len(about_me)} partner-days)</h3>",
        "<p>One line per partner per UTC day, once that UTC day is over: how many of the "
        "partner's actions (results fetched, queries, watch notifications, looks at the "
        "project) disclosed something about your records to it, and the most it learnt. The "
        "matcher does not show you when within the day, which records, or why: ask the "
        "operator.</p>",
    ]
    if about_me:
        parts.append(
            _table(
                ("day", "partner", "actions", "most it learnt"),
                (
                    (
                        (e.get("detail") or {}).get("day", _iso(e["time"])),
                        e["actor"],
                        _actions(e),
                        e["disclosed"][me],
                    )
                    for e in reversed(about_me[-MAX_AUDIT_ROWS:])
                ),
            )
        )
    else:
        parts.append("<p>None recorded for a closed day.</p>")
    parts.append(f"<h3>What you asked for ({len(mine)})</h3>")
    if mine:
        parts.append(
            _table(
                ("time", "action", "purpose", "what you learnt"),
                (
                    (_iso(e["time"]), e["action"], e.get("purpose", ""), _learnt(e))
                    for e in reversed(mine[-MAX_AUDIT_ROWS:])
                ),
            )
        )
    else:
        parts.append("<p>None recorded.</p>")
    refs = request_tables(entries, me, MAX_AUDIT_ROWS)
    if refs.summary:
        parts += ["<h3>Request references</h3>", f"<p>{escape(refs.summary)}</p>"]
        parts += [_table(header, rows) for header, rows in refs.tables()]
    more = max(len(about_me), len(mine), refs.shown_of) - MAX_AUDIT_ROWS
    if more > 0:
        parts.append(
            f'<p class="muted">The newest {MAX_AUDIT_ROWS} of each are shown; '
            "<code>blindmatch audit export</code> gives them all.</p>"
        )
    parts.append(
        '<p class="muted">Other members\' requests, their purposes and what they learnt about '
        "anyone else are not in your audit export (ask the operator).</p>"
    )
    return "".join(parts)


def _actions(entry: dict[str, Any]) -> str:
    kinds = (entry.get("detail") or {}).get("actions") or {}
    return ", ".join(f"{action} x{n}" for action, n in sorted(kinds.items()))


def _learnt(entry: dict[str, Any]) -> str:
    detail = entry.get("detail") or {}
    counts = detail.get("counts") or {}
    parts = [
        f"{p}: {lvl}" + (f", {counts[p]} shared" if p in counts else "")
        for p, lvl in sorted((entry.get("disclosed") or {}).items())
    ]
    if "records" in detail:
        parts.append(f"{counted(int(detail['records']), 'record')} asked")
    return "; ".join(parts) or "nothing"
