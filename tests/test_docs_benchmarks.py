"""What the pages show of the benchmarks must exist: every `benchmarks/X.py` a page names is
there, and every `--option` a page shows on one (`.venv/bin/python benchmarks/X.py [--size
3000] ...`) is one the script takes, as its own `--help` lists them (tests/test_docs.py does
the same for the `blindmatch` commands' options)."""

from __future__ import annotations

import json
import re
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
