"""`privacy-check`'s report: what the attacks found, the verdict, and what to do about a leak.

`check.py` runs the attacks (`check_csv`, `check_synthetic`) and gathers their results
into a `CheckReport`: rendered as the command's table and verdict, and as
privacy-check.json (`to_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from blindmatch.client.tools.privacy.attacks import AttackResult

# The verdict: every attack must re-identify fewer than this share of records.
LIMIT = 0.01
# Below this many records no verdict is given: the attacks align the data's value frequencies
# with public lists, and a small sample has too few repeats to align, so a PASS would mean
# nothing (and 1% of a few hundred records is a handful of people).
MIN_RECORDS = 1000
# Graph matching needs no repeated values, so a leak it finds stands on a small sample too,
# but only one of at least this many people (1% of MIN_RECORDS): on a few dozen records one
# or two right claims are a share over the limit, and could be luck.
MIN_LEAKED = 10


@dataclass
class CheckReport:
    source: str
    records: int
    hardening: str
    results: list[AttackResult]
    skipped: list[str]
    limit: float = LIMIT
    field_level: bool = False  # what the checked schema uploads, for the advice
    fallback: tuple[str, ...] = ()
    synthetic: bool = False  # the seeded synthetic data (no DATA): the advice on a small sample

    def larger(self, minimum: int, option: str) -> str:
        """What to check instead of a sample too small for a verdict: on the synthetic data
        more of it (pointing a synthetic run at the synthetic data helps no one)."""
        if self.synthetic:
            return f"check a larger sample ({option} {minimum:,} or more)"
        return "check a larger export, or the synthetic data (no DATA argument)"

    def share_of_all(self, r: AttackResult) -> float:
        """The member's records `r` re-identified, as a share of all of them (of its sample's,
        graph matching's): what ranks the attacks, so that the worst is the one that names
        the most of the member's people, not the one right most often on the few it tried
        (50 known pairs: 69 of the 70 left is 57.5% of 120 records, under the blind attack's
        118)."""
        total = r.sample or self.records
        return r.records_reidentified / total if total else 0.0

    def reidentified(self, r: AttackResult) -> str:
        """What `r` re-identified, as a verdict says it: its share of the records it attacked,
        and where those are not all of the member's, its share of all (`share_of_all`):
        `98.6% of records (69 of 70, 57.5% of all 120)`."""
        total = r.sample or self.records
        of_all = f", {self.share_of_all(r):.1%} of all {total:,}" if total != r.records else ""
        return f"{r.record_share:.1%} of records ({r.records_reidentified} of {r.records}{of_all})"

    @property
    def worst(self) -> AttackResult | None:
        return max(self.results, key=self.share_of_all, default=None)

    @staticmethod
    def inconclusive(r: AttackResult) -> bool:
        """Graph matching run on fewer than MIN_RECORDS records (`--graph-records` small)
        that re-identified fewer than MIN_LEAKED people: neither a leak (one or two right
        claims could be luck) nor a defence (a 1% leak there is under MIN_LEAKED people)."""
        return (
            r.attack.startswith("graph")
            and r.records < MIN_RECORDS
            and r.records_reidentified < MIN_LEAKED
        )

    @property
    def counted(self) -> list[AttackResult]:
        """The results a verdict on MIN_RECORDS records or more rests on."""
        return [r for r in self.results if not self.inconclusive(r)]

    @property
    def too_few(self) -> bool:
        return self.records < MIN_RECORDS

    @property
    def passed(self) -> bool:
        # Nothing attacked is no PASS either (NO VERDICT: `--strict` exits 1 on it).
        return (
            not self.too_few
            and bool(self.counted)
            and all(r.record_share < self.limit for r in self.counted)
        )

    @property
    def graph_leak(self) -> bool:
        """Graph matching re-identified at least the limit, and at least MIN_LEAKED people: it
        needs no repeated values, so its leak stands on a small sample too."""
        return any(
            r.attack.startswith("graph")
            and r.record_share >= self.limit
            and r.records_reidentified >= MIN_LEAKED
            for r in self.results
        )

    def verdict(self) -> str:
        worst = self.worst
        if self.too_few and self.graph_leak:  # name a leak that stands, not a lucky few
            worst = max(
                (r for r in self.results if r.attack.startswith("graph")
                 and r.records_reidentified >= MIN_LEAKED),
                key=self.share_of_all,
            )  # fmt: skip
        if self.too_few and not self.graph_leak:
            graph = any(r.attack.startswith("graph") for r in self.results)
            return (
                f"NO VERDICT: {self.records} records are too few for the attacks to mean "
                f"anything (at least {MIN_RECORDS:,}: they align value frequencies, and a small "
                "sample has too few repeats to align"
                + (
                    f"; graph matching's leak counts on a small sample only where it "
                    f"re-identifies at least {MIN_LEAKED} people"
                    if graph
                    else ""
                )
                + f"); {self.larger(MIN_RECORDS, '--records')}"
            )
        if not self.too_few:  # a graph attack on a handful of records decides nothing
            worst = max(self.counted, key=self.share_of_all, default=None)
        if worst is None:
            return "NO VERDICT: no field could be attacked (no text or date field with a value)"
        of = "" if worst.field == "(record)" else f" of {worst.field}"  # graph matching
        where = f"{worst.attack} on {worst.encoding} encodings{of}"
        if self.passed:
            graphs = [r for r in self.results if r.attack.startswith("graph")]
            return (
                f"PASS: every attack re-identified under {self.limit:.0%} of records "
                f"(worst: {worst.record_share:.2%}, {where})" + self._graph_caveat(graphs)
            )
        return (
            f"LEAKS: {where} re-identified {self.reidentified(worst)}; the limit is "
            f"{self.limit:.0%}. " + self.advice(worst)
        )

    def _graph_caveat(self, graphs: list[AttackResult]) -> str:
        """What a PASS does not cover: graph matching not run, or run on too few records."""
        if graphs and not all(self.inconclusive(r) for r in graphs):
            return ""
        why = (
            f"was run on only {graphs[0].records} records (--graph-records), too few to tell: "
            f"its leak counts from {MIN_LEAKED} people, 1% of {MIN_RECORDS:,}"
            if graphs
            else "was not run (--graph-records 0)"
        )
        return (
            f"; graph matching {why}, and it re-identifies most records of any upload it can "
            "compare pairwise: this PASS covers the other attacks only (docs/privacy.md)"
        )

    def advice(self, worst: AttackResult) -> str:
        """What to do about the leak, for the schema that was checked (docs/privacy.md)."""
        if worst.attack.startswith("graph"):
            remedy = (
                "a field-level schema has no two-server upload: use a record-level schema such "
                "as schemas/person-uk.json in a project in two-server mode"
                if self.field_level
                else "a project in two-server mode (`project create --mode two-server`, "
                "members `encode --two-server`) gives no role encodings it can compare"
            )
            return (
                "Whoever holds encodings it can compare pairwise can match their similarity "
                "graph to plaintext it holds on the same people; no hardening stops it at a "
                f"usable F1: {remedy}; check that with `privacy-check --mode two-server` "
                "(docs/privacy.md, docs/privacy-design.md)"
            )
        if worst.encoding == "field" and self.field_level:
            return (
                "This schema is field-level, which shows the linkage service each field's value "
                "frequencies and supports no hardening: use a record-level schema such as "
                "schemas/person-uk.json (docs/privacy.md, docs/schema.md)"
            )
        if worst.encoding == "field":
            return (
                "These are the field-level filters this record-level schema would upload if it "
                "were field-level (--encoding field/both), not what it uploads: field-level "
                "filters need salting (docs/privacy.md)"
            )
        if worst.encoding == "fallback":
            return (
                f"The fallback CLKs (blindmatch.fallback, without {', '.join(self.fallback)}) "
                "leak: remove the fallback from the schema (for the default: "
                "schemas/person-uk-no-fallback.json), or harden it (blindmatch.hardening, "
                "docs/privacy.md)"
            )
        return (
            "The record-level CLKs this schema uploads leak: harden the schema "
            "(blindmatch.hardening, docs/privacy.md)"
        )

    def render(self) -> str:
        wa = max([20, *(len(r.attack) for r in self.results)])
        we = max([8, *(len(r.encoding) for r in self.results)])
        lines = [
            f"privacy-check of {self.source}: {self.records} records, hardening: {self.hardening}",
            f"  {'attack':<{wa}} {'encoding':<{we}} {'field':<12} {'records':>9} {'values':>9}"
            "  public list",
        ]
        for r in self.results:
            values = f"{r.value_share:>9.2%}" if r.claims is None else f"{'':>9}"
            lines.append(
                f"  {r.attack:<{wa}} {r.encoding:<{we}} {r.field:<12} {r.record_share:>9.2%} "
                f"{values}  {r.public_list}"
            )
        lines.append(
            "  (share of records and of distinct values re-identified; graph matching: share of "
            "the records the attacker's plaintext covers)"
        )
        lines.extend(f"  not attacked: {s}" for s in self.skipped)
        lines.append(self.verdict())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "records": self.records,
            "hardening": self.hardening,
            "limit": self.limit,
            "passed": self.passed,
            "verdict": self.verdict(),
            "results": [
                {
                    **dataclasses.asdict(r),
                    "record_share": r.record_share,
                    "share_of_all_records": self.share_of_all(r),
                    "value_share": r.value_share,
                    "precision": r.precision,
                }
                for r in self.results
            ],
            "skipped": self.skipped,
        }
