"""The command line as a whole: help and its reference page, version, exit codes, and
the failures a user meets before any real work (no matcher there, no clkhash)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blindmatch.cli import build_parser, main
from blindmatch.cli.reference import commands, render
from blindmatch.client import ProjectTokens
from tests.portheld import dead_port
from tests.support import NORTH_CSV, NORTH_MAP, PERSON_SCHEMA, ROOT, Matcher, db_rows, free_port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m blindmatch ARGS` as its own process: what a user's shell would see."""
    return subprocess.run(
        [sys.executable, "-m", "blindmatch", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_every_command_has_a_description_and_an_example() -> None:
    walked = list(commands(build_parser()))
    assert len(walked) > 30
    for path, parser in walked[1:]:
        name = " ".join(("blindmatch", *path))
        assert parser.description, f"`{name}` has no description"
        assert parser.epilog and parser.epilog.startswith("example"), f"`{name}`: no example"
        example_lines = parser.epilog.splitlines()[1:]
        assert all(line.strip().startswith(name) for line in example_lines if line.strip()), (
            f"`{name}`'s example does not use the command itself"
        )
    for path, parser in walked:
        for action in parser._actions:
            if isinstance(action.choices, dict):  # a command group: each entry is listed
                listed = {a.dest for a in action._choices_actions}  # type: ignore[attr-defined]
                assert listed == set(action.choices), f"{path}: a sub-command lacks help text"
                assert all(a.help for a in action._choices_actions)  # type: ignore[attr-defined]


def test_a_command_that_needs_a_member_token_shows_one_in_an_example(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`index show --project burglary` was shown without the token it needs (so were `index
    add`/`remove`/`sync`, `report` and `user revoke`): copied as shown, it is refused."""
    for path, parser in commands(build_parser()):
        if any("--token-file" in action.option_strings for action in parser._actions):
            examples = (parser.epilog or "").splitlines()[1:]
            assert any("--token-file " in e for e in examples), f"{path}: {examples}"
    monkeypatch.delenv("BLINDMATCH_TOKEN", raising=False)
    assert (
        main(["index", "show", "--project", "burglary", "--server", f"127.0.0.1:{free_port()}"])
        == 2
    )
    told = "no member token: pass --token-file FILE (or --token), or set BLINDMATCH_TOKEN"
    assert told in capsys.readouterr().err


def test_a_token_file_of_several_words_is_not_said_to_be_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: `expected one token, found none` for two tokens (two files joined) too."""
    told = {"": "found none (the file is empty)", "bm_a\nbm_b\n": "found 2 words",
            "Bearer bm_a": "found 2 words"}  # fmt: skip
    for i, (text, said) in enumerate(told.items()):
        (tmp_path / f"{i}.token").write_text(text)
        argv = ["run", "--project", "p", "--token-file", str(tmp_path / f"{i}.token")]
        assert main([*argv, "--server", f"127.0.0.1:{free_port()}"]) == 2
        err = capsys.readouterr().err
        assert f"{i}.token: expected one token, {said}" in err, err


def test_a_command_that_needs_a_ref_key_shows_one_in_an_example() -> None:
    """`index add north.encoded --project burglary --token-file north.token --id N1` was the
    example; copied as shown (without $BLINDMATCH_REF_KEY), it stopped: `no ref key: pass
    --ref-key FILE or set BLINDMATCH_REF_KEY`."""
    walked = [(p, c) for p, c in commands(build_parser()) if p]
    needing = [
        (p, c) for p, c in walked if any("--ref-key" in a.option_strings for a in c._actions)
    ]
    assert {p for p, _ in needing} >= {("index", "add"), ("index", "remove"), ("index", "sync")}
    for path, parser in needing:
        examples = (parser.epilog or "").splitlines()[1:]
        assert any("--ref-key " in e for e in examples), f"{path}: {examples}"


def test_every_option_with_a_default_says_it_in_its_help() -> None:
    """`demo --records`, `demo --seed`, `audit export/report --after` and `privacy-check --out`
    did not say theirs (2000, 7, 0 and ./privacy-check/)."""
    silent = []
    for path, parser in commands(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.default in (None, []):
                continue
            if action.default != argparse.SUPPRESS and "default" not in (action.help or ""):
                silent.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert not silent, silent


def test_file_folder_and_address_options_say_file_dir_and_host_port() -> None:
    """Every command's usage said `--token-file FILE` but `--secret-file SECRET_FILE`,
    `--ca-cert CA_CERT`, `--data-dir DATA_DIR`, `--key-file PATH`, `--server SERVER`: an
    option named for a file, certificate, key, CA or folder may not show its default
    uppercase dest; a folder's says DIR, the others' FILE (or ROLE=FILE), an address's
    HOST:PORT."""
    wrong = []
    for path, parser in commands(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            name = max(action.option_strings, key=len)
            shown = action.metavar or action.dest.upper()
            if name.endswith("-dir"):
                ok = shown == "DIR"
            elif name.endswith(("-file", "-cert", "-key", "-ca")):
                ok = shown != action.dest.upper() and str(shown).endswith("FILE")
            elif name in ("--server", "--listen") or name.endswith(("-s1", "-s2", "--combiner")):
                ok = shown == "HOST:PORT"
            else:
                continue
            if not ok:
                wrong.append(f"{' '.join(path)} {name} {shown}")
    assert not wrong, wrong


@pytest.mark.parametrize("command", ["serve", "encode", "upload", "run", "results", "demo"])
def test_help_exits_zero(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert f"usage: blindmatch {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "command", "unknown"),
    [
        (("admin", "backup", "--data-dir", "d", "--out", "o", "-q"), "admin backup", "-q"),
        (("admin", "--quiet", "backup", "--data-dir", "d", "--out", "o"), "admin", "--quiet"),
        (("project", "show", "trial", "--no-such-flag"), "project show", "--no-such-flag"),
    ],
)
def test_an_unknown_option_is_refused_with_its_commands_usage(
    args: tuple[str, ...], command: str, unknown: str
) -> None:
    """Was: `blindmatch: error: unrecognized arguments: -q` under the top-level usage, naming
    neither the command nor the options it takes (restorefix3)."""
    done = run_cli(*args)
    assert done.returncode == 2
    usage, *_, said = done.stderr.strip().splitlines()
    assert usage.startswith(f"usage: blindmatch {command} ["), done.stderr
    assert said.startswith(f"blindmatch {command}: error: unrecognized arguments: {unknown} (")
    assert said.endswith(f"`blindmatch {command} --help` lists its options)")  # (helpwalk)


def test_the_cli_reference_page_matches_the_help() -> None:
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == render(), "docs/cli.md is stale: run `make cli-docs`"


def test_the_reference_names_every_command_that_ends_cleanly_on_sigterm() -> None:
    """Exit 143 is documented for the commands whose handler cleans up on SIGTERM, read from
    the handlers themselves (the page once listed six of nineteen)."""
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split("\n## ", 1)[0]
    listed = " ".join(page.split("143 ended by SIGTERM", 1)[1].split("\n\n", 1)[0].split())
    for command in ("results", "report", "two-server run", "watch", "secret keygen", "encode"):
        assert f"`{command}`" in listed
    assert "`serve`" not in listed and "`upload`" not in listed


def test_an_operator_command_without_the_operator_token_says_where_serve_put_it(
    matcher: Matcher, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said only `BLINDMATCH_ADMIN_TOKEN is not set; it holds the operator's token`: an
    operator whose `serve` made the token up was not told where it is (newops, 2026-12-07)."""
    monkeypatch.delenv("BLINDMATCH_ADMIN_TOKEN", raising=False)
    assert main(["project", "list", "--server", matcher.target]) == 2
    err = capsys.readouterr().err
    assert "BLINDMATCH_ADMIN_TOKEN is not set" in err
    assert "export BLINDMATCH_ADMIN_TOKEN=$(cat DATA_DIR/operator.token)" in err


@pytest.mark.slow
def test_version_and_module_entry_point() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("blindmatch ") and done.stdout.split()[1][0].isdigit()


def test_quiet_means_the_same_on_every_command_that_has_it() -> None:
    helps = {
        " ".join(path): a.help
        for path, parser in commands(build_parser())
        for a in parser._actions
        if "-q" in a.option_strings
    }
    assert {"encode", "upload", "query", "project create", "audit export"} <= set(helps)
    assert len(set(helps.values())) == 1


def test_operator_commands_take_project_as_an_option_and_still_the_old_positional(
    matcher: Matcher,
    project: ProjectTokens,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    server = ["--server", matcher.target]
    for spelling in (["--project", "trial"], ["trial"]):  # the positional: before 0.2
        assert main(["admin", "query-report", *spelling, *server]) == 0
        assert "Query volume in trial, last 24 hours:" in capsys.readouterr().out
    assert main(["admin", "query-report", "trial", "--project", "other", *server]) == 2
    assert "two projects given" in capsys.readouterr().err


@pytest.mark.slow
def test_no_matcher_there_is_one_line_at_once() -> None:
    with dead_port() as port:
        target = f"127.0.0.1:{port}"
        done = run_cli("run", "--project", "p", "--token", "t", "--server", target)
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        f"Error: no matcher at {target}: is `blindmatch serve` running, and is the address right?"
    ]  # not a retry warning, not a gRPC log line


@pytest.mark.slow
def test_help_loads_neither_clkhash_numpy_nor_grpc() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from blindmatch.cli import main\n"
         "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'clkhash', 'numpy', 'grpc'}))"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.slow
def test_without_clkhash_encode_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "north.csv").write_text(NORTH_CSV, encoding="utf-8")
    (tmp_path / "north.toml").write_text(NORTH_MAP, encoding="utf-8")
    (tmp_path / "secret").write_text("s3cret")
    hide_clkhash = "import sys; sys.modules['clkhash'] = None; import runpy; "
    done = subprocess.run(
        [sys.executable, "-c", hide_clkhash + "runpy.run_module('blindmatch', run_name='__main__')",
         "encode", str(tmp_path / "north.csv"), "--schema", str(PERSON_SCHEMA),
         "--secret-file", str(tmp_path / "secret"), "--mapping", str(tmp_path / "north.toml"),
         "--out", str(tmp_path / "north.encoded")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "pip install --no-deps clkhash==0.18.3" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "north.encoded").exists()
    for other in (["--version"], ["--help"], ["project", "create", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-c", hide_clkhash + "runpy.run_module('blindmatch', "
             "run_name='__main__')", *other],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert shown.returncode == 0 and shown.stdout, (other, shown.stderr)


@pytest.mark.slow
def test_erase_asks_at_a_terminal_and_does_nothing_without_a_yes(
    matcher: Matcher, project: ProjectTokens
) -> None:
    import pty

    def erase_answering(answer: str) -> subprocess.CompletedProcess[str]:
        primary, terminal = pty.openpty()  # standard input is a terminal: it may ask
        try:
            os.write(primary, answer.encode() + b"\n")
            return subprocess.run(
                [sys.executable, "-m", "blindmatch", "erase", "--project", "trial",
                 "--token", project.tokens["north"], "--server", matcher.target],
                stdin=terminal, capture_output=True, text=True, cwd=ROOT, timeout=120,
            )  # fmt: skip
        finally:
            os.close(primary)
            os.close(terminal)

    refused = erase_answering("n")
    assert refused.returncode == 2
    assert "This cannot be undone. [y/N]" in refused.stderr
    assert "not erased" in refused.stderr
    assert not [r for r in db_rows(matcher.data_dir, "audit") if r[3] == "erase"]
    done = erase_answering("y")
    assert done.returncode == 0, done.stderr
    assert "Erased from trial" in done.stdout
    assert len([r for r in db_rows(matcher.data_dir, "audit") if r[3] == "erase"]) == 1


def test_a_tokens_dir_that_is_a_file_is_refused_before_the_tokens_are_made(
    matcher: Matcher,
    project: ProjectTokens,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tokens are shown once: before, `project create` made the project and `rotate-token`
    replaced north's token, and then neither could write the new tokens (nowhere to read
    them: north locked out until rotated again)."""
    from blindmatch.client import MatcherClient

    taken = tmp_path / "tokens"
    taken.write_text("not a folder\n")
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    net = ["--server", matcher.target, "--tokens-dir", str(taken)]
    assert main(["project", "create", "fresh", "--members", "north,south", *net]) == 2
    assert main(["project", "rotate-token", "trial", "--member", "north", *net]) == 2
    assert capsys.readouterr().err.count(f"--tokens-dir {taken}: is a file; give a folder") == 2
    with matcher.operator() as op:
        assert [p.project for p in op.list_projects()] == ["trial"]
    with MatcherClient(matcher.target, project.tokens["north"]) as north:
        assert north.describe("trial").project == "trial"  # north's token still works
