"""Splink on the plaintext: the quality benchmark's probabilistic anchor (issue 21).

    benchmarks/.venv-splink/bin/python benchmarks/splink_link.py RECORDS.csv PAIRS.csv

Runs in the benchmark's own environment (`make bench-quality` makes benchmarks/.venv-splink
with Splink and DuckDB); blindmatch never imports it. RECORDS.csv holds every organisation's
hand-normalised records, `source_dataset,unique_id,first_name,surname,dob,sex,postcode`
(dob as YYYY-MM-DD, blanks for missing values). PAIRS.csv gets every cross-dataset pair
with match probability >= 0.5: `source_dataset_l,unique_id_l,source_dataset_r,unique_id_r,
match_probability`.

The model is Splink's standard person model, unsupervised: Fellegi-Sunter with term
frequency adjustments on both names, Jaro-Winkler/Levenshtein levels for names, Splink's
date-of-birth and postcode comparisons, u estimated by random sampling, m by expectation
maximisation under two blocking rules (date of birth; both names), the prior from
deterministic rules at an assumed recall of 0.7.
"""

from __future__ import annotations

import sys
import time

import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on


def main(records_path: str, pairs_path: str) -> int:
    started = time.monotonic()
    frame = pd.read_csv(records_path, dtype=str, keep_default_na=False)
    frame = frame.replace({"": None})
    db = DuckDBAPI()
    # Table names must be SQL identifiers: 'met-custody' is registered as t0, and so on.
    names = list(dict.fromkeys(frame["source_dataset"]))
    tables = [
        db.register(frame[frame["source_dataset"] == name].drop(columns=["source_dataset"]),
                    dataset_display_name=f"t{i}")
        for i, name in enumerate(names)
    ]  # fmt: skip
    settings = SettingsCreator(
        link_type="link_only",
        blocking_rules_to_generate_predictions=[
            block_on("first_name", "surname"),
            block_on("surname", "dob"),
            block_on("first_name", "dob"),
            block_on("dob", "postcode"),
            block_on("surname", "postcode"),
            block_on("first_name", "postcode"),
        ],
        comparisons=[
            cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.ExactMatch("sex"),
            cl.PostcodeComparison("postcode"),
        ],
    )
    linker = Linker(tables, settings)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "surname", "dob")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("first_name", "surname")
    )
    pairs = linker.inference.predict(threshold_match_probability=0.5).as_pandas_dataframe()
    columns = ["source_dataset_l", "unique_id_l", "source_dataset_r", "unique_id_r"]
    back = {f"t{i}": name for i, name in enumerate(names)}
    for side in ("source_dataset_l", "source_dataset_r"):
        pairs[side] = pairs[side].map(back)
    pairs[[*columns, "match_probability"]].to_csv(pairs_path, index=False)
    print(f"splink: {len(pairs)} pairs in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
