"""PNG plots for `blindmatch evaluate` and `blindmatch report`: matplotlib's object API
on the Agg backend (no display, no global pyplot state). Each plot is a figure
function (`*_figure`) and a function that saves it to a file."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from blindmatch.client.files import write_bytes
from blindmatch.client.tools.evaluate import Scored, SweepPoint, Truth


def _save(fig: Figure, path: Path) -> Path:
    write_bytes(path, png_bytes(fig))  # the whole PNG or none: never half a file
    return path


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (for embedding in a page as a data URI)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def score_histogram(
    scored: Sequence[Scored], truth: Truth, path: Path, *, recommended: float | None = None
) -> Path:
    """Scores of true hits and of false hits, side by side, with the recommended cut."""
    return _save(score_histogram_figure(scored, truth, recommended=recommended), path)


def score_histogram_figure(
    scored: Sequence[Scored], truth: Truth, *, recommended: float | None = None
) -> Figure:
    """The figure `score_histogram` saves."""
    kept = [(s.score, s.hit) for s in scored if s.score is not None]
    judged = truth.are_true([hit for _, hit in kept])  # looked up together, not one by one
    true = [score for (score, _), ok in zip(kept, judged, strict=True) if ok]
    false = [score for (score, _), ok in zip(kept, judged, strict=True) if not ok]
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    values = true + false
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    bins = [lo + (hi - lo) * i / 40 for i in range(41)] if hi > lo else 10
    ax.set_yscale("log")
    n_true, _, _ = ax.hist(
        true, bins=bins, alpha=0.7, color="#2a7ab0", label=f"true hits ({len(true)})"
    )
    n_false, _, _ = ax.hist(
        false, bins=bins, alpha=0.8, color="#d1495b", label=f"false hits ({len(false)})"
    )
    ax.set_ylim(0.8, max([1.0, *n_true, *n_false]) * 2)
    if recommended is not None:
        ax.axvline(
            recommended, color="black", linestyle="--", label=f"recommended {recommended:.3f}"
        )
    ax.set_xlabel("score reported by the matcher")
    ax.set_ylabel("results (log scale)")
    ax.set_title("Scores of true and false hits")
    ax.legend(loc="upper left")
    return fig


def precision_recall(
    points: Sequence[SweepPoint], path: Path, *, recommended: SweepPoint | None = None
) -> Path:
    """Precision against recall as the threshold rises, the recommendation marked."""
    return _save(precision_recall_figure(points, recommended=recommended), path)


def precision_recall_figure(
    points: Sequence[SweepPoint], *, recommended: SweepPoint | None = None
) -> Figure:
    """The figure `precision_recall` saves."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    ax.plot(
        [p.quality.recall for p in points],
        [p.quality.precision for p in points],
        color="#2a7ab0",
        marker=".",
        markersize=3,
    )
    if recommended is not None:
        q = recommended.quality
        ax.plot(
            [q.recall], [q.precision], "o", color="#d1495b",
            label=f"threshold {recommended.threshold:.3f}: F1 {q.f1:.3f}",
        )  # fmt: skip
        ax.legend(loc="lower left")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    recalls = [p.quality.recall for p in points] or [0.0]
    precisions = [p.quality.precision for p in points] or [0.0]
    ax.set_xlim(max(0.0, min(recalls) - 0.05), 1.005)
    ax.set_ylim(max(0.0, min(precisions) - 0.05), 1.005)
    ax.grid(alpha=0.3)
    ax.set_title("Precision and recall by threshold")
    return fig
