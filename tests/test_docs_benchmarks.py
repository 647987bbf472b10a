"""What the pages show of the benchmarks must exist: every `benchmarks/X.py` a page names is
there, and every `--option` a page shows on one (`.venv/bin/python benchmarks/X.py [--size
3000] ...`) is one the script takes, as its own `--help` lists them (tests/test_docs.py does
the same for the `blindmatch` commands' options). Every command a page shows whole parses
with its script's own parser (values, choices and positionals too; nothing is run past the
parse), as tests/test_docs_commands.py does for the `blindmatch` commands."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import ROOT
from tests.test_docs import PAGES, _code

SCRIPT = re.compile(r"(?<![\w.-])benchmarks/(\w+)\.py\b")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w*-])")


def benchmark_options(text: str) -> Iterator[tuple[str, str]]:
    """(script, option) for every `benchmarks/X.py ... --option` a page shows: the options
    after the script's path, up to the end of its command (`|`, `;`, `&&`, `#`) or the next
    script."""
    for code in _code(text):
        for at in SCRIPT.finditer(code):
            command = re.split(r"[|;#]|&&", code[at.end() :])[0]
            command = SCRIPT.split(command)[0]
            for option in OPTION.findall(command):
                yield at.group(1), option


def shown_on_pages() -> list[tuple[str, str, str]]:
    """(page, script, option) for every page but the generated docs/cli.md."""
    return [
        (str(page.relative_to(ROOT)), script, option)
        for page in PAGES
        if page.name != "cli.md"
        for script, option in benchmark_options(page.read_text(encoding="utf-8"))
    ]


# Runs each script's `--help` as `python benchmarks/X.py --help` would (the script as
# __main__, its folder first on sys.path), all in one process: numpy, gRPC, matplotlib ... are
# imported once, not once per script (~30 s of a loaded 2-core machine, one process each).
HELP_ALL = """
import contextlib, io, json, runpy, sys
said = {}
for path in sys.argv[1:]:
    out, err, code = io.StringIO(), io.StringIO(), None
    sys.argv, sys.path[0] = [path, "--help"], path.rpartition("/")[0]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exit:
            code = exit.code
        except BaseException as e:
            code = repr(e)
    said[path] = [code, out.getvalue(), err.getvalue()[-2000:]]
print(json.dumps(said))
"""


def options_taken(scripts: list[str]) -> dict[str, frozenset[str]]:
    """The options `benchmarks/SCRIPT.py --help` lists (argparse: usage and options), for each
    script."""
    paths = [str(ROOT / "benchmarks" / f"{script}.py") for script in scripts]
    done = subprocess.run(
        [sys.executable, "-c", HELP_ALL, *paths], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout)
    taken = {}
    for script, path in zip(scripts, paths, strict=True):
        code, out, err = said[path]
        assert code in (0, None) and "usage:" in out, (script, code, err)
        taken[script] = frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out))
    return taken


def test_benchmark_options_are_read_from_a_pages_commands() -> None:
    page = (
        "    .venv/bin/python benchmarks/watch_cli.py [--size 3000] --seed 3 | tee x # --no\n"
        "Run `benchmarks/quality.py --grid --flows blindmatch two-server` and "
        "`python benchmarks/a.py --one && benchmarks/b.py --two`; `--alone` is no script's."
    )
    assert list(benchmark_options(page)) == [
        ("watch_cli", "--size"), ("watch_cli", "--seed"), ("quality", "--grid"),
        ("quality", "--flows"), ("a", "--one"), ("b", "--two"),
    ]  # fmt: skip


def test_every_benchmark_a_page_names_is_there() -> None:
    named = {
        (str(page.relative_to(ROOT)), script)
        for page in PAGES
        for code in _code(page.read_text(encoding="utf-8"))
        for script in SCRIPT.findall(code)
    }
    assert len(named) > 50  # the pages were read
    assert [n for n in sorted(named) if not (ROOT / "benchmarks" / f"{n[1]}.py").exists()] == []


@pytest.mark.slow
def test_every_option_a_page_shows_on_a_benchmark_is_one_it_takes() -> None:
    shown = shown_on_pages()
    assert len(shown) > 100  # the pages were read
    scripts = sorted({script for _, script, _ in shown})
    taken = options_taken(scripts)
    assert [s for s in shown if s[2] not in taken[s[1]]] == []


# A shown command's sketch parts: an optional part that is itself a sketch (`[--routes ...]`,
# left out), alternatives (`[--churn u|f|uf]`: the first), and placeholders for a value.
SKETCHED = re.compile(r"\[[^\]]*(?:\.\.\.|…)[^\]]*\]")
ALTERNATIVES = re.compile(r"(?<=[^\s|])(?:\|[^\s|\]]+)+")
PLACEHOLDERS = {"N": "2", "M": "2", "K": "2", "D": "2", "SECONDS": "1"} | {
    name: "/dev/shm/benchmark-out" for name in ("DIR", "OUT", "OUT_DIR", "WORK_DIR")
}


def benchmark_commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(script, argv) for every `benchmarks/X.py ARGS` a page shows with arguments, as a user
    who copies it would pass them: up to the end of its command (`|`, `;`, `&&`, `#`, `>`, the
    next script, or prose after a `, `), optional `[parts]` taken in, placeholders filled."""
    for code in _code(text):
        code = ALTERNATIVES.sub("", SKETCHED.sub(" ", code))
        for at in SCRIPT.finditer(code):
            command = re.split(r"[|;#]|&&|\s\d?>|,\s", code[at.end() :])[0]
            command = SCRIPT.split(command)[0]
            words = shlex.split(re.sub(r"[\[\]]|\.\.\.|…", " ", command))
            if words:
                yield at.group(1), [PLACEHOLDERS.get(word, word) for word in words]


# Parses each (script, argv) with the script's own parser, run as `python benchmarks/X.py ARGV`
# would run it, and stops there: argparse's first parse (a script's own, not one it makes
# inside another's) ends the script before it does anything. One process for all of them.
PARSE_ALL = """
import argparse, contextlib, io, json, runpy, sys
class Parsed(BaseException):
    pass
depth = [0]
def stopping(parse):
    def parsed(self, *args, **kwargs):
        depth[0] += 1
        try:
            result = parse(self, *args, **kwargs)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            raise Parsed(result)
        return result
    return parsed
for name in ("parse_args", "parse_known_args", "parse_intermixed_args"):
    setattr(argparse.ArgumentParser, name, stopping(getattr(argparse.ArgumentParser, name)))
said = []
for script, argv in json.loads(sys.argv[1]):
    path, err, verdict = f"benchmarks/{script}.py", io.StringIO(), None
    if "argparse" not in open(path, encoding="utf-8").read():
        said.append("no argparse parser: not run")
        continue
    sys.argv, sys.path[0] = [path, *argv], "benchmarks"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(path, run_name="__main__")
            verdict = "ended without parsing its arguments"
        except Parsed as parsed:
            known = parsed.args[0]
            if isinstance(known, tuple) and known[1]:
                verdict = f"left unparsed: {known[1]}"
        except SystemExit as exit:
            verdict = (err.getvalue().strip().splitlines() or [f"exit {exit.code}"])[-1]
        except BaseException as e:
            verdict = repr(e)
    said.append(verdict)
print(json.dumps(said))
"""


def refusals(commands: list[tuple[str, list[str]]]) -> list[str | None]:
    """What each script's parser says of its argv (None where it parses)."""
    done = subprocess.run(
        [sys.executable, "-c", PARSE_ALL, json.dumps(commands)], cwd=ROOT,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_benchmark_command_is_read_whole_with_its_sketch_filled_in() -> None:
    page = (
        "    .venv/bin/python benchmarks/role_backup_churn.py --backups 30 [--churn u|f|uf] |"
        " tee x\n`benchmarks/frequency.py --seeds messy:2205 [--routes ...] [--leak]`, and"
        " `benchmarks/messy.py OUT_DIR --population 300`, its exports; `benchmarks/cluster.py`"
    )
    assert list(benchmark_commands(page)) == [
        ("role_backup_churn", ["--backups", "30", "--churn", "u"]),
        ("frequency", ["--seeds", "messy:2205", "--leak"]),
        ("messy", ["/dev/shm/benchmark-out", "--population", "300"]),
    ]  # fmt: skip


def makefile_benchmarks() -> list[tuple[str, str, list[str]]]:
    """("Makefile", script, argv) for every benchmark a Makefile recipe runs with arguments."""
    recipes = (ROOT / "Makefile").read_text(encoding="utf-8")
    code = "".join(f"    {line}\n" for line in recipes.splitlines() if line.startswith("\t"))
    return [("Makefile", *command) for command in benchmark_commands(code)]


def test_every_make_bench_target_a_page_names_is_there() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = {
        (str(page.relative_to(ROOT)), target)
        for page in PAGES
        for code in _code(page.read_text(encoding="utf-8"))
        for target in re.findall(r"(?<![\w-])make (bench[\w-]*)", code)
    }
    assert len(named) >= 3 and {"bench-speed", "bench-quality"} <= targets
    assert [n for n in sorted(named) if n[1] not in targets] == []
    assert ("Makefile", "quality", ["--grid"]) in makefile_benchmarks()


# Commands no script takes, one per way a shown command goes stale.
REFUSED = [
    ("messy", ["--population", "300"]),  # its out folder missing
    ("frequency", ["--seeds", "--leak"]),  # a value missing
    ("speed", ["--only", "kernels"]),  # a value it does not take
    ("quality", ["--grid", "--no-such-option"]),  # an option since renamed
]


@pytest.mark.slow
def test_every_benchmark_command_a_page_shows_parses() -> None:
    """A page's (or a Makefile recipe's) `benchmarks/X.py ...` command as its script's own
    parser reads it: an option since renamed, a value it no longer takes, a positional
    missing, each fails here."""
    shown = sorted(
        {
            (str(page.relative_to(ROOT)), script, tuple(argv))
            for page in PAGES
            if page.name != "cli.md"
            for script, argv in benchmark_commands(page.read_text(encoding="utf-8"))
        }
        | {(where, script, tuple(argv)) for where, script, argv in makefile_benchmarks()}
    )
    assert len(shown) > 150  # the pages were read
    *said, missing, unvalued, unchosen, renamed = refusals(
        [(script, list(argv)) for _, script, argv in shown] + REFUSED
    )
    assert "required: out" in missing and "--seeds: expected at least one" in unvalued
    assert "invalid choice: 'kernels'" in unchosen and "unrecognized arguments" in renamed
    assert [(*s, why) for s, why in zip(shown, said, strict=True) if why is not None] == []
