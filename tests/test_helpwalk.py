"""The command line as a new member's analyst meets it, reading only the README and
docs/cli.md (helpwalk): the common mistakes (an option of another command, a typo, the
schema and the mapping swapped, a results file given as the truth) are refused naming
what was given and what to do, and the `--help` examples chain into one another."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from blindmatch.cli import build_parser
from blindmatch.cli.reference import commands
from tests.support import NORTH_CSV, NORTH_MAP, PERSON_SCHEMA
from tests.test_cli import run_cli


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ("run", "--project", "pilot", "--encoded", "north.encoded"),
            "blindmatch run: error: unrecognized arguments: --encoded north.encoded (--encoded "
            "is an option of project show, results, report, request and resolve, not of run; "
            "`blindmatch run --help` lists its options)",
        ),
        (
            ("index", "show", "--project", "pilot", "--ref-key", "north.refkey"),
            "blindmatch index show: error: unrecognized arguments: --ref-key north.refkey "
            "(--ref-key is an option of index add, index remove and index sync, not of index "
            "show; `blindmatch index show --help` lists its options)",
        ),
        (
            ("upload", "north.encoded", "--project", "pilot", "--clks"),
            "blindmatch upload: error: unrecognized arguments: --clks (did you mean --clk? "
            "`blindmatch upload --help` lists its options)",
        ),
        (
            ("project", "show", "pilot", "--no-such-flag"),
            "blindmatch project show: error: unrecognized arguments: --no-such-flag (no "
            "blindmatch command takes --no-such-flag; `blindmatch project show --help` lists "
            "its options)",
        ),
    ],
)
def test_an_option_of_another_command_says_which_commands_take_it(
    args: tuple[str, ...], said: str
) -> None:
    """Was: `unrecognized arguments: --encoded north.encoded` alone, with the command's usage:
    nothing said that `--encoded` belongs to `results`, nor that `--clks` is `--clk`."""
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == said


def test_the_schema_and_the_mapping_swapped_are_named_as_such(tmp_path: Path) -> None:
    """Was: `north.toml: not a JSON file (Expecting value: line 1 column 1 (char 0))` and
    `person-uk.json: not a valid TOML file (...)`: true, but the user who gave the files the
    wrong way round was not told so."""
    (tmp_path / "north.csv").write_text(NORTH_CSV, encoding="utf-8")
    (tmp_path / "north.toml").write_text(NORTH_MAP, encoding="utf-8")
    secret = tmp_path / "linkage.secret"
    assert run_cli("secret", "new", str(secret)).returncode == 0
    common = ["encode", str(tmp_path / "north.csv"), "--secret-file", str(secret)]
    out = ["--out", str(tmp_path / "north.encoded")]

    swapped = run_cli(*common, "--schema", str(tmp_path / "north.toml"), "--mapping",
                      str(PERSON_SCHEMA), *out)  # fmt: skip
    assert swapped.returncode == 2
    assert "north.toml: not a JSON file" in swapped.stderr
    assert (
        "it looks like a member's mapping (TOML), not a linkage schema: the schema is the "
        "shared clkhash v3 JSON file (such as schemas/person-uk.json), and a mapping goes to "
        "--mapping"
    ) in swapped.stderr

    schema_twice = run_cli(*common, "--schema", str(PERSON_SCHEMA), "--mapping",
                           str(PERSON_SCHEMA), *out)  # fmt: skip
    assert schema_twice.returncode == 2
    assert "person-uk.json: not a valid TOML file" in schema_twice.stderr
    assert (
        "it looks like the linkage schema (JSON), not a mapping: give it as --schema, and this "
        "member's mapping of its columns (TOML, docs/mapping.md) as --mapping"
    ) in schema_twice.stderr

    checked = run_cli("schema", "check", str(tmp_path / "north.csv"))
    assert checked.returncode == 2
    assert checked.stderr.strip().endswith(
        "; the schema is the shared clkhash v3 JSON file (such as schemas/person-uk.json)"
    )
    assert not (tmp_path / "north.encoded").exists()


def test_a_results_file_given_as_the_truth_is_named_as_a_results_file(tmp_path: Path) -> None:
    """Was: `columns member, entity_id missing; the header must start with
    member,record_id,entity_id (it is record_id,partner)`, and nothing about the two files
    being given the wrong way round."""
    hits = tmp_path / "hits.csv"
    hits.write_text("record_id,partner\nNP-1001,south\n", encoding="utf-8")
    truth = tmp_path / "truth.csv"
    truth.write_text("member,record_id,entity_id\nnorth,NP-1001,e1\nsouth,S1,e1\n", "utf-8")

    done = run_cli("evaluate", "--results", str(truth), "--truth", str(hits))
    assert done.returncode == 2
    said = done.stderr.strip()
    assert said.startswith("Error: ")
    assert (
        "it looks like a results file (record_id,partner, as `blindmatch results` writes it), "
        "which `evaluate` takes as --results and `request` as --hits"
    ) in said or (
        "it looks like a truth file (member,record_id,entity_id), which `evaluate` and "
        "`report` take as --truth"
    ) in said
    right = run_cli("evaluate", "--results", str(hits), "--truth", str(truth))
    assert right.returncode == 0, right.stderr


def _examples(parser_help: str) -> list[list[str]]:
    """The `blindmatch ...` lines of a command's `--help` examples, as words."""
    return [
        shlex.split(line.strip())
        for line in parser_help.split("example")[-1].splitlines()
        if line.strip().startswith("blindmatch ")
    ]


def test_the_member_examples_use_the_project_and_token_files_the_create_example_makes() -> None:
    """Was: `project create`'s (and `rotate-token`'s) examples printed the tokens to the
    terminal while every member example passes `--token-file north.token`, which nothing had
    written; `report`'s named project `pilot` where the others name `burglary`; `consent`'s
    and `user`'s own examples left the token out (refused: no member token) where their
    actions' examples give it."""
    walked = dict(commands(build_parser()))
    created = _examples(walked[("project", "create")].format_help())[0]
    assert created[:4] == ["blindmatch", "project", "create", "burglary"]
    assert "--tokens-dir" in created  # north.token, south.token, east.token, as used below
    rotated = _examples(walked[("project", "rotate-token")].format_help())[0]
    assert "--tokens-dir" in rotated  # the new north.token, never the terminal
    members = {"north", "south", "east"}
    for path, parser in walked.items():
        if not path or path[0] in {"two-server", "serve", "lookup-server", "admin", "demo"}:
            continue
        for n, example in enumerate(_examples(parser.format_help())):
            if "--token-file" in example:
                token = example[example.index("--token-file") + 1]
                assert token.removesuffix(".token") in members | {"pc-4471"}, (path, example)
            if "--project" in example:
                assert example[example.index("--project") + 1] == "burglary", (path, example)
            member_command = (  # (`audit`'s examples are the operator's as well)
                any(a.dest == "token_file" for a in parser._actions)
                and "--operator" not in example
                and path[0] != "audit"
            )
            if member_command and n == 0:  # (later ones may show $BLINDMATCH_TOKEN's use)
                assert "--token-file" in example, (path, example)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("uplod", "north.encoded"), "; did you mean 'upload'?"),
        (("project", "shw", "pilot"), "; did you mean 'show'?"),
        (
            ("--project", "pilot", "upload", "north.encoded"),
            "blindmatch: error: --project comes before the command: a command's options go "
            "after its name, e.g. blindmatch upload ... --project ...",
        ),
    ],
)
def test_a_mistyped_command_or_an_option_before_it_says_what_was_meant(
    args: tuple[str, ...], said: str
) -> None:
    """Was: `invalid choice: 'uplod' (choose from ...)` with 25 names to scan, and for
    `blindmatch --project pilot upload ...` `invalid choice: 'pilot'`: the project's name
    refused as a command, the misplaced option unmentioned."""
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(said)
    assert "Traceback" not in done.stderr


def test_the_version_and_help_still_come_before_a_command() -> None:
    assert run_cli("--version").returncode == 0
    assert run_cli("--help").returncode == 0
    assert run_cli("-h", "upload").returncode == 0
