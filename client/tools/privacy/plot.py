"""`privacy-check`'s bar chart and output files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from blindmatch.client.errors import InputError
from blindmatch.client.files import check_writable, write_bytes, write_text

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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes(path, buf.getvalue())  # the whole PNG or none
    return path


def output_paths(out: Path) -> tuple[Path, Path]:
    """privacy-check.json and .png in `out`, refused as they could not be written (`out` a
    file, a folder of either name, no permission): checked before the attacks run, so a
    check of minutes does not end in an error at the write, nor with one file of two."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; --out names the folder to write the results in")
    paths = (out / "privacy-check.json", out / "privacy-check.png")
    for path in paths:
        check_writable(path)
    return paths


def write_outputs(report: CheckReport, out: Path) -> tuple[Path, Path]:
    json_path, png_path = output_paths(out)
    write_text(json_path, json.dumps(report.to_dict(), indent=2))
    return json_path, plot(report, png_path)
