"""Audit entries (as `MatcherClient.audit` yields them) as files people read: CSV, one
self-contained HTML page, and the member-side report of who in the organisation looked at
what, and why (DPA 2018 s.62: consultations and disclosures, with the person and the
justification).

Times are ISO-8601 UTC (`2026-12-03T13:24:19Z`). The HTML page loads nothing (no scripts,
no styles or fonts from elsewhere) and every value in it is escaped; a CSV cell that a
spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
return) is prefixed with `'`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from html import escape
from typing import Any

from blindmatch import __version__

Entry = dict[str, Any]

# The columns of the CSV and the HTML table, in order.
COLUMNS = (
    "seq", "time", "project", "actor", "user", "action", "member", "purpose", "disclosed",
    "detail", "hash",
)  # fmt: skip

# Consultations and disclosures: what the report of who looked at what lists.
CONSULTATIONS = {
    "results.disclose": "fetched results",
    "query": "queried partners' records",  # indexes, or in a two-server project uploads
    "watch": "opened a watch",
    "watch.notify": "was told of a watched match",
    "query.refused": "was refused a query (quota or rate limit)",
    "project.describe": "looked at the project's upload status",
    "request.issue": "was issued request references for a hit",
    "request.resolve": "resolved a partner's request reference",
    "request.withdraw": "withdrew a request reference it was issued",
}
ORGANISATION_TOKEN = "(organisation token)"
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def iso(unix: float) -> str:
    """Seconds since 1970 as ISO-8601 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def cells(entry: Entry) -> list[str]:
    """One entry's values, as text, in `COLUMNS` order."""
    values = {
        **entry,
        "time": iso(float(entry["time"])),
        "disclosed": _mapping(entry.get("disclosed") or {}),
        "detail": json.dumps(entry.get("detail") or {}, sort_keys=True, ensure_ascii=False),
    }
    return [str(values.get(c, "")) for c in COLUMNS]


def _mapping(value: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in sorted(value.items()))


def _safe_cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA) else text


def safe_rows(rows: Iterable[Sequence[str]]) -> Iterator[list[str]]:
    """Each row's cells as a CSV of them is written: a spreadsheet formula made text."""
    for row in rows:
        yield [_safe_cell(c) for c in row]


def entry_rows(entries: Iterable[Entry]) -> Iterator[list[str]]:
    """The CSV's rows (after its header, `COLUMNS`), an entry at a time."""
    return safe_rows(cells(e) for e in entries)


def jsonl_lines(entries: Iterable[Entry]) -> Iterator[str]:
    """The JSON-lines export, a line an entry."""
    for e in entries:
        yield json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n"


CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.wrap { max-width: 28em; overflow-wrap: anywhere; }
.muted { color: #666; font-size: 0.9em; }
"""


def html_parts(
    title: str, intro: str, header: Sequence[str], rows: Iterable[Sequence[str]]
) -> Iterator[str]:
    """One self-contained page: a title, a paragraph and a table, every value escaped; its
    parts in order, a table row each, for a file to be written as they come."""
    yield (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{escape(title)}</h1>\n<p>{escape(intro)}</p>\n"
        "<table><thead><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in header)
        + "</tr></thead><tbody>\n"
    )
    for row in rows:
        yield "<tr>" + "".join(f'<td class="wrap">{escape(c)}</td>' for c in row) + "</tr>\n"
    yield (
        "</tbody></table>\n"
        f'<p class="muted">Made {escape(iso(time.time()))} by blindmatch '
        f"{escape(__version__)}. Times are UTC.</p>\n</body></html>\n"
    )


def entries_html(entries: Sequence[Entry], scope: str) -> Iterator[str]:
    """The export's page (`html_parts`); its opening says how many entries: all are held."""
    intro = (
        f"{len(entries)} audit entries ({scope}). A member's export holds its own actions, "
        "what was done to it, project-wide events, and its partners' disclosures about its "
        "records as one partner.disclosures line per partner per closed UTC day."
    )
    return html_parts("blindmatch audit log", intro, COLUMNS, (cells(e) for e in entries))


# -- who in my organisation looked at what, and why ------------------------------------------

WHO_COLUMNS = ("time", "member", "user", "what", "purpose", "partners", "records")


def who_looked(entries: Iterable[Entry]) -> Iterator[list[str]]:
    """Every consultation and disclosure made by a member (through its users or its own
    token), oldest first: when, who, what, why, whose information and how many records;
    a row at a time, as `entries` come."""
    for e in entries:
        what = CONSULTATIONS.get(str(e["action"]))
        actor = str(e["actor"])
        if what is None or actor in ("operator", "matcher"):
            continue
        if e.get("member") not in ("", actor):
            continue  # a partner's line about this member, not this member's own look
        detail = e.get("detail") or {}
        if e["action"] == "request.resolve" and "records" not in detail:
            continue  # a partner answering this member's request (its view has no count)
        records = detail.get("records", "")
        if e["action"] == "results.disclose":  # how many of its records each partner holds
            records = _mapping(detail.get("counts") or {})
        yield [
            iso(float(e["time"])),
            actor,
            str(e.get("user") or ORGANISATION_TOKEN),
            what,
            str(e.get("purpose") or ""),
            _mapping(e.get("disclosed") or {}),
            str(records),
        ]


def who_text(rows: Sequence[Sequence[str]]) -> Iterator[str]:
    """The report as aligned text columns, a line at a time (the widths need every row)."""
    if not rows:
        yield "No consultations or disclosures recorded.\n"
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(WHO_COLUMNS)]
    for r in (WHO_COLUMNS, *rows):
        yield "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"


def who_html(rows: Sequence[Sequence[str]], scope: str) -> Iterator[str]:
    intro = (
        f"Who looked at what, and why ({scope}): {len(rows)} consultations and disclosures, "
        f"each with the named user who made it ({ORGANISATION_TOKEN} where the member's own "
        "token was used) and the purpose given."
    )
    return html_parts("Who looked at what, and why", intro, WHO_COLUMNS, rows)
