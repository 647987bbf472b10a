"""Evaluating results against known truth: precision, recall, F1, threshold sweeps.

A truth file is a CSV with the header `member,record_id,entity_id`: for every
record each member holds, the entity (the real person) it belongs to. Records
of the same person share an entity id across members. A member whose records
are all listed is *known*; a true hit is (member's record, partner) where the
partner holds a record of the same entity.

Results are a member's `blindmatch results` file: `record_id,partner` (hits),
with `partner_row` (mapping) and `score` (scores) when the project disclosed
them, read by `client.tools.resultsfile`. Plain functions only; the plots live in
`client.tools.plots`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from blindmatch.client.errors import InputError
from blindmatch.client.files import check_writable, write_csv
from blindmatch.client.tools.resultsfile import Scored, read_results
from blindmatch.client.tools.truth import Hit, Truth, read_truth
from blindmatch.client.words import counted, word

# How a measure nothing defines is said (`Quality.said`): precision with no hit claimed,
# recall with no true hit, F1 with neither (leftovers2: they were said 1.0000, "(0 of 0)").
UNDEFINED = "undefined"
MEASURES = ("precision", "recall", "f1")


@dataclass(frozen=True)
class Quality:
    """Hits claimed (`predicted`), those true, and the true hits there are (`actual`). The
    float properties keep the old convention where a measure is undefined (precision 1.0
    with no hit claimed, recall 1.0 with no true hit: what the sweep's choice and plots
    rank by); `defined` and `said`, what is printed and written, say it is undefined."""

    true_positives: int
    predicted: int
    actual: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.actual if self.actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def defined(self, measure: str) -> float | None:
        """`measure` ("precision", "recall", "f1"); None: no hit claimed, no true hit, neither."""
        if measure == "precision":
            return self.precision if self.predicted else None
        if measure == "recall":
            return self.recall if self.actual else None
        return self.f1 if self.predicted + self.actual else None  # (2 TP / (claimed + true))

    def said(self, measure: str, spec: str = ".4f", undefined: str = UNDEFINED) -> str:
        value = self.defined(measure)
        return undefined if value is None else format(value, spec)

    def __str__(self) -> str:
        p = self.said("precision") if self.predicted else f"{UNDEFINED} (no hits claimed)"
        r = self.said("recall") if self.actual else f"{UNDEFINED} (no true hits)"
        n, t = self.predicted, self.actual  # each counted in words (was "1 true hits")
        claimed = f"{self.true_positives} of {n} reported {word(n, 'hit')} true" if n else ""
        claimed, f1, true = claimed or "no hits reported", self.said("f1"), word(t, "hit")
        return f"precision {p}, recall {r}, F1 {f1} ({claimed}; {t} true {true})"


def quality(
    found: Iterable[Hit], truth: Truth, member: str | None = None, partner: str | None = None
) -> Quality:
    """Precision, recall and F1 of reported hits against every true hit (of `member`, with
    `partner`, when given)."""
    found = {h for h in found if partner is None or h[2] == partner}
    actual = truth.true_hits(member, partner)
    return Quality(len(found & actual), len(found), len(actual))


def per_partner(found: Iterable[Hit], truth: Truth, member: str) -> dict[str, Quality]:
    """`quality` of one member's hits with each partner apart."""
    found = set(found)
    partners = sorted(truth.members - {member})
    return {p: quality(found, truth, member, p) for p in partners}


# A recommended threshold needs labelled pairs on both sides of it: with fewer scored
# results, or fewer false ones, than these, or a precision whose 95% lower bound falls
# under the target, `evaluate` warns that the recommendation rests on too little.
FEW_LABELLED = 100
FEW_FALSE = 10


def wilson_low(successes: int, trials: int, z: float = 1.96) -> float:
    """The lower end of the Wilson score interval for a proportion (95% by default)."""
    if not trials:
        return 0.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (centre - spread) / (1 + z * z / trials)


def thin_evidence(
    points: Sequence[SweepPoint], best: SweepPoint | None, min_precision: float = 0.98
) -> str:
    """Why a recommended threshold should not be trusted yet ('' when it can be)."""
    if best is None or not points:
        return ""
    scored = points[-1].quality.predicted
    true = points[-1].quality.true_positives
    false = scored - true
    q = best.quality
    low = wilson_low(q.true_positives, q.predicted)
    few = scored < FEW_LABELLED or false < FEW_FALSE
    if not few and low >= min_precision:
        return ""
    evidence = (
        f"({scored} scored results: {true} true, {false} false; at it, precision "
        f"{q.precision:.4f} from {q.predicted} results could be as low as {low:.4f}, 95% "
        "interval)"
    )
    if few:
        return (
            f"the recommended threshold rests on few labelled pairs {evidence}; label more "
            f"pairs (at least {FEW_LABELLED} scored, {FEW_FALSE} of them false) before "
            "relying on it"
        )
    return (  # enough pairs overall, but too few at and above the threshold for the target
        f"the recommended threshold's precision may be under {min_precision:g} {evidence}; "
        "label more pairs scoring near it, or choose a higher threshold, before relying on it"
    )


@dataclass(frozen=True)
class SweepPoint:
    threshold: float
    quality: Quality


def sweep(scored: Sequence[Scored], truth: Truth, member: str | None = None) -> list[SweepPoint]:
    """Quality if only results scoring at least t were reported, for every distinct t."""
    actual = len(truth.true_hits(member))
    kept = [(s.score, s.hit) for s in scored if s.score is not None]
    ranked = sorted(
        zip([score for score, _ in kept], truth.are_true([hit for _, hit in kept]), strict=True),
        key=lambda item: -item[0],
    )
    points: list[SweepPoint] = []
    tp = 0
    for i, (score, is_true) in enumerate(ranked):
        tp += is_true
        if i + 1 == len(ranked) or ranked[i + 1][0] != score:
            points.append(SweepPoint(score, Quality(tp, i + 1, actual)))
    return points


def recommend(points: Sequence[SweepPoint], min_precision: float = 0.98) -> SweepPoint | None:
    """The threshold with the best F1 among those with precision >= `min_precision`
    (the best F1 overall if none reaches it); ties go to the higher threshold."""
    if not points:
        return None
    eligible = [p for p in points if p.quality.precision >= min_precision] or list(points)
    return max(eligible, key=lambda p: (round(p.quality.f1, 6), p.threshold))


def check_scored(
    scored: Sequence[Scored], truth: Truth, member: str, *, truth_path: object, results: object
) -> None:
    """Refuse a member the truth file does not list, a result it has no record of, one naming
    the member itself as its partner, or a partner it does not list (its hits could not be
    judged: each would count as false).
    When `results` is a file, `Scored.line` is each item's line in it."""
    members = ", ".join(sorted(truth.members))
    if member not in truth.members:
        raise InputError(f"{truth_path}: member {member!r} not found (members: {members})")

    def where(index: int) -> str:
        return f"{results}: row {scored[index].line}" if isinstance(results, Path) else str(results)

    held = truth.known(member, [s.hit[1] for s in scored]).tolist()
    unknown = [i for i, known in enumerate(held) if not known]
    if unknown:
        ids = [s.hit[1] for s in scored]
        # --member naming the wrong member: say whose the ids are, if one member's
        owners = [m for m in sorted(truth.members) if m != member and truth.known(m, ids).all()]
        hint = (
            f"; these ids are {owners[0]}'s: pass --member {owners[0]}, or leave --member out"
            if len(owners) == 1
            else ""
        )
        raise InputError(
            f"{where(unknown[0])}: record id {scored[unknown[0]].hit[1]!r} is not in the truth "
            f"file {truth_path} for {member} ({len(unknown)} unknown ids){hint}"
        )
    selves = [i for i, s in enumerate(scored) if s.hit[2] == member]
    if selves:  # (was counted as a false hit: the truth file has the member's own records)
        raise InputError(
            f"{where(selves[0])}: record {scored[selves[0]].hit[1]!r} names {member} itself as "
            f"its partner; a results file of {member} lists hits with the other members only "
            "(is --member right, or is it another member's file?)"
        )
    strangers = [i for i, s in enumerate(scored) if s.hit[2] not in truth.records]
    if strangers:
        partner = scored[strangers[0]].hit[2]
        count = sum(1 for s in scored if s.hit[2] == partner)
        raise InputError(
            f"{where(strangers[0])}: partner {partner!r} is not in the truth file {truth_path} "
            f"(members: {members}), so its {counted(count, 'hit')} cannot be judged; the truth "
            "file lists every record of every member of the project, the partners' too"
        )


def assess(
    scored: Sequence[Scored], truth: Truth, member: str
) -> tuple[Quality, list[SweepPoint], SweepPoint | None]:
    """One member's scored hits against the truth: overall quality, the threshold sweep
    (empty without scores) and the recommended point on it."""
    points = sweep(scored, truth, member)
    return quality((s.hit for s in scored), truth, member), points, recommend(points)


def table_rows(points: Sequence[SweepPoint], recommended: SweepPoint | None) -> list[SweepPoint]:
    """About a dozen of the sweep's points for a printed table, evenly spaced by rank, with
    the recommended one and the lowest (the floor: the table spans the whole sweep)."""
    step = max(1, len(points) // 12)
    shown = list(points[::step])
    for point in (recommended, points[-1] if points else None):
        if point is not None and point not in shown:
            shown.append(point)
    return sorted(shown, key=lambda p: -p.threshold)


@dataclass(frozen=True)
class AtThreshold:
    """The results as if only those scoring at least `threshold` had been reported."""

    threshold: float
    quality: Quality
    partners: dict[str, Quality]


def at_threshold(
    scored: Sequence[Scored], truth: Truth, member: str, threshold: float, *, results: object
) -> AtThreshold:
    """`evaluate --threshold`: quality overall and per partner of the results scoring at
    least `threshold`. Refused on results without scores, and under their lowest score: the
    project reported nothing under its own threshold, so what a lower one adds is unknown."""
    scores = [s.score for s in scored if s.score is not None]
    if not scores:
        raise InputError(
            f"--threshold {threshold:g}: {results} has no scores; a threshold can only be "
            "judged on the results of a project created with --disclose scores"
        )
    if threshold < min(scores):
        # With three or more members a link completing a group is reported with its own
        # pair's score, which can be under the floor: the lowest score is then not the floor.
        grouped = len({s.hit[2] for s in scored}) > 1
        raise InputError(
            f"--threshold {threshold:g}: under the lowest score in {results} "
            f"({min(scores):.4f}); the project reported no pair under its own threshold (its "
            + (
                "floor) but links completing a group of three or more, each with its own "
                "pair's score, so what a lower threshold would add is unknown: judge thresholds "
                "from the project's own --threshold up"
                if grouped
                else f"floor), so what a lower threshold would add is unknown: judge thresholds "
                f"from {min(scores):.4f} up"
            )
            + ", or create a project with a lower --threshold"
        )
    kept = [s.hit for s in scored if s.score is not None and s.score >= threshold]
    return AtThreshold(threshold, quality(kept, truth, member), per_partner(kept, truth, member))


def _partner_lines(partners: dict[str, Quality], indent: str = "  ") -> list[str]:
    """One line per partner; a partner no result names is pointed out: it may not have been
    in the project at all (then its rows do not belong in the truth file)."""
    lines = []
    for partner, q in partners.items():
        note = ""
        if not q.predicted and q.actual:
            note = (
                f" - in none of these results: if {partner} was not a member of this project, "
                "leave its rows out of the truth file"
            )
        lines.append(f"{indent}with {partner}: {q}{note}")
    return lines


@dataclass
class Evaluation:
    """What `blindmatch evaluate` found, ready to print."""

    results: Path
    member: str
    quality: Quality
    sweep: list[SweepPoint]
    recommended: SweepPoint | None
    files: list[Path]
    partners: dict[str, Quality] = dataclasses.field(default_factory=dict)
    warning: str = ""
    at: list[AtThreshold] = dataclasses.field(default_factory=list)

    def render(self) -> str:
        lines = [f"{self.results} ({self.member}): {self.quality}"]
        lines.extend(_partner_lines(self.partners))
        for at in self.at:
            lines.append(f"  at threshold {at.threshold:g}: {at.quality}")
            lines.extend(_partner_lines(at.partners, "    "))
        if self.at and sum(q.predicted > 0 for q in self.partners.values()) > 1:  # named
            lines.append(
                "  (with three or more members, a close estimate of what a project at that "
                "threshold reports, not an exact replay; one under the project's own threshold "
                "cannot be judged: docs/evaluation.md)"
            )
        if not self.sweep:
            lines.append(
                "  no scores in these results: a CLK project created with `--disclose "
                "scores` (and a low --threshold; `--mode clk` on a matcher with S1 and S2, "
                "since a two-server project never discloses scores) gives a threshold sweep "
                "and plots"
            )
        else:
            lines.append(f"  {'threshold':>10} {'precision':>9} {'recall':>7} {'F1':>7}")
            for point in table_rows(self.sweep, self.recommended):
                q = point.quality
                mark = "  <- recommended" if point is self.recommended else ""
                lines.append(
                    f"  {point.threshold:>10.4f} {q.said('precision'):>9} {q.said('recall'):>7} "
                    f"{q.said('f1'):>7}{mark}"
                )
            if self.recommended is not None:
                lines.append(
                    f"  recommended threshold: {self.recommended.threshold:.4f} (best F1 with "
                    "precision >= 0.98; results below the project's own threshold were never "
                    "reported, so lower thresholds cannot be judged here)"
                )
            if self.warning:
                lines.append(f"  warning: {self.warning}")
        lines.extend(f"  wrote {path}" for path in self.files)
        return "\n".join(lines)


# What `evaluate` writes for scored results, in --out-dir.
OUT_FILES = ("sweep.csv", "scores.png", "precision-recall.png")


def _infer_member(scored_ids: set[str], truth: Truth, path: Path) -> str:
    if not scored_ids:
        raise InputError(
            f"{path}: no results (a header and no rows), so whose they are cannot be told "
            "from their ids; pass --member"
        )
    ids = sorted(scored_ids)
    held = {m: int(truth.known(m, ids).sum()) for m in truth.members}
    owners = [m for m in sorted(truth.members) if held[m] == len(ids)]
    if len(owners) == 1:
        return owners[0]
    if not owners:
        best = max(sorted(held), key=lambda m: held[m])
        most = f"the most, {best}, holds {held[best]}" if held[best] else "none holds any"
        raise InputError(
            f"{path}: no member in the truth file holds all these record ids ({len(scored_ids)}; "
            f"{most}): are the results and the truth file of the same project? If so, pass "
            "--member to see the ids it lacks"
        )
    raise InputError(f"{path}: the ids fit members {', '.join(owners)}; pass --member")


def evaluate_files(
    results: str | Path,
    truth_path: str | Path,
    *,
    member: str | None = None,
    out_dir: str | Path | None = None,
    thresholds: Sequence[float] = (),
) -> Evaluation:
    """Score one member's results file against a truth file (and, scored, at each of
    `thresholds`); write sweep.csv and plots. Every input is checked before anything is
    written."""
    results = Path(results)
    truth = read_truth(truth_path)
    probe = read_results(results, member or "?")
    if member is None:
        member = _infer_member({s.hit[1] for s in probe}, truth, results)
    scored = [dataclasses.replace(s, hit=(member, s.hit[1], s.hit[2])) for s in probe]
    check_scored(scored, truth, member, truth_path=truth_path, results=results)
    found_quality, points, best = assess(scored, truth, member)
    partners = per_partner((s.hit for s in scored), truth, member)
    at = [at_threshold(scored, truth, member, t, results=results) for t in thresholds]
    files: list[Path] = []
    if points:
        from blindmatch.client.tools.plots import precision_recall, score_histogram

        folder = Path(out_dir) if out_dir else results.with_name(f"{results.stem}-evaluation")
        if folder.exists() and not folder.is_dir():
            raise InputError(
                f"{folder}: is a file; --out-dir names the folder to write sweep.csv and the "
                "plots in"
            )
        sweep_csv, histogram, curve = (folder / n for n in OUT_FILES)
        for path in (sweep_csv, histogram, curve):  # each checked before any is written
            check_writable(path)
        write_csv(  # whole or not at all, as each plot is written
            sweep_csv,
            ["threshold", "precision", "recall", "f1", "reported", "true"],
            [[f"{p.threshold:.6f}", *(p.quality.said(m, ".6f", "") for m in MEASURES),
              str(p.quality.predicted), str(p.quality.true_positives)]
             for p in points],  # (an undefined measure empty: recall with no true hit)
        )  # fmt: skip
        files.append(sweep_csv)
        threshold = best.threshold if best else None
        files.append(score_histogram(scored, truth, histogram, recommended=threshold))
        files.append(precision_recall(points, curve, recommended=best))
    return Evaluation(
        results, member, found_quality, points, best, files, partners,
        thin_evidence(points, best), at,
    )  # fmt: skip
