"""What the benchmark generators share: writing an organisation's export, its mapping and
the truth file, and the hand normalisation the anchors get (benchmarks/messy.py,
benchmarks/households.py). Only the file formats are shared; each generator draws its
own people and corrupts them its own way."""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Export:
    csv: Path
    mapping: Path
    truth: dict[str, int]  # record id -> entity


def write_export(
    folder: Path,
    name: str,
    header: Sequence[str],
    rows: Sequence[dict[str, str]],
    mapping_toml: str,
    entities: Sequence[int],
) -> Export:
    """One organisation's CSV (rows keyed by `header`, the record id first) and mapping."""
    csv_path = folder / f"{name}.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(header))
        writer.writeheader()
        writer.writerows(rows)
    map_path = folder / f"{name}.toml"
    map_path.write_text(mapping_toml, encoding="utf-8")
    truth = {row[header[0]]: entity for row, entity in zip(rows, entities, strict=True)}
    return Export(csv_path, map_path, truth)


def write_truth(folder: Path, exports: dict[str, Export]) -> None:
    """truth.csv: `member,record_id,entity_id` for every record, as `blindmatch evaluate`
    reads it."""
    with open(folder / "truth.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["member", "record_id", "entity_id"])
        for name, export in exports.items():
            writer.writerows((name, rid, ent) for rid, ent in export.truth.items())


def hand_text(value: str) -> str:
    """Folded to letters and digits, as a careful person would before hashing."""
    text = unicodedata.normalize("NFKD", value.casefold())
    return "".join(ch for ch in text if ch.isalnum())


def hand_words(value: str) -> str:
    """Each name folded, separated by one space (the anchors join them, Splink takes the
    first)."""
    return " ".join(w for w in map(hand_text, value.split()) if w)


def hand_row(
    given: str, surname: str, dob: str, date_format: str, sex: str, postcode: str
) -> list[str]:
    """One record normalised by hand: given names (words kept apart), surname, ISO date of
    birth, sex letter, postcode."""
    dob = dob.strip()
    if dob:
        dob = datetime.strptime(dob, date_format).strftime("%Y-%m-%d")
    return [
        hand_words(given),
        hand_text(surname),
        dob,
        sex.strip()[:1].upper(),
        hand_text(postcode),
    ]
