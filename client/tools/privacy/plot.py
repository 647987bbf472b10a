"""`privacy-check`'s bar chart and output files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from blindmatch.client.tools.privacy.report import CheckReport


def plot(report: CheckReport, path: Path) -> Path:
    """A bar chart of the share of records re-identified per attack, with the 1% line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"{r.field}\n{r.encoding}\n{r.attack.split()[0]}"
        + (f"\n{r.attack.split('(')[1].rstrip(')')}" if "(" in r.attack else "")
        for r in report.results
    ]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) + 2), 4.2), dpi=100)
    x = np.arange(len(labels))
    colours = {
        "frequency alignment": "#d95f02",
        "pattern mining": "#1b9e77",
        "q-gram alignment": "#7570b3",
        "graph matching": "#e7298a",
        "trilateration": "#66a61e",
        "collisions": "#e6ab02",
    }
    for attack, colour in colours.items():
        shares = [
            100 * r.record_share if r.attack.startswith(attack) else 0 for r in report.results
        ]
        if any(r.attack.startswith(attack) for r in report.results):  # the attacks that ran
            ax.bar(x, shares, 0.7, label=attack, color=colour)
    ax.axhline(100 * report.limit, color="black", linestyle="--", linewidth=1)
    ax.text(
        len(labels) - 0.5, 100 * report.limit, f" {report.limit:.0%} limit", va="bottom", ha="right"
    )
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("records re-identified (%)")
    top = max([100 * r.record_share for r in report.results] + [2 * 100 * report.limit])
    ax.set_ylim(0, top * 1.15)
    ax.set_title(f"{report.verdict().split(':')[0]} - hardening: {report.hardening}", fontsize=9)
    if report.results:  # no attack run (a sample too small: NO VERDICT), no legend
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(report: CheckReport, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "privacy-check.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return json_path, plot(report, out / "privacy-check.png")
