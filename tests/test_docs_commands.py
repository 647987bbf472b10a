"""Every whole `blindmatch` command a page shows parses as the command line reads it.

tests/test_docs.py checks each option a page shows against its command, one option at a
time; this reads each shown command whole, as a user who copies it runs it: a positional
the command no longer takes, an option's value missing, or two options that exclude each
other fail here, before a reader meets them. The commands are the lines of fenced blocks
and the `$ ` lines of indented ones (docs/cli.md's `--help` examples included), up to a
comment, pipe, `;`, `&&` or redirection; a line with a placeholder (`...`, `[--opt X]`,
`{a,b}`, `<file>`, `[FILL: ...]`, `$(...)`) is a sketch, not a command, and is skipped."""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
from collections.abc import Iterator

from blindmatch.cli.app import build_parser
from blindmatch.cli.reference import commands
from tests.support import ROOT
from tests.test_docs import PAGES

END = re.compile(r"\s+#|\s\||;|&&|\s&\s*$|\s\d?>|\s<")
SKETCH = re.compile(r"\.\.\.|[\[\]{}<>…]|FILL|\$\(")


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def shown_commands(text: str) -> Iterator[str]:
    """Each `blindmatch COMMAND ...` line of a page's code blocks, `\\`-continued lines
    joined, cut at its end; sketches left out."""
    top = {path[0] for path, _ in commands(_parser()) if path}
    fenced = False
    for line in re.sub(r"\s*\\\n\s*", " ", text).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        code = line.strip()
        if not fenced:
            if not (line.startswith("    ") and code.startswith("$ ")):
                continue  # an indented block's other lines are what a command printed
            code = code[2:]
        code = re.sub(r"^(\S*/)?\.venv/bin/blindmatch ", "blindmatch ", code)
        words = code.split()
        if words[:1] != ["blindmatch"] or len(words) < 2 or words[1] not in top:
            continue
        command = END.split(code)[0]
        if not SKETCH.search(command):
            yield command


def refusal(command: str) -> str | None:
    """What the command line says of `command` where it does not parse (None where it does)."""
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
        try:
            _parser().parse_args(shlex.split(command)[1:])
        except SystemExit as stop:
            if stop.code:
                return said.getvalue().strip().splitlines()[-1]
    return None


def test_every_command_a_page_shows_parses() -> None:
    shown = [
        (str(page.relative_to(ROOT)), command)
        for page in PAGES
        for command in shown_commands(page.read_text(encoding="utf-8"))
    ]
    assert len(shown) > 150  # the pages were read
    assert [(page, c, said) for page, c in shown if (said := refusal(c)) is not None] == []


def test_a_command_is_read_whole_and_a_sketch_is_left_out() -> None:
    page = (
        "```\nblindmatch admin query-report --project p --hours 168   # weekly\n"
        "blindmatch upload X --project p [--clk]\nblindmatch matcher listening on ...\n```\n"
        "    $ blindmatch run --project p \\\n        --token-file t | tee log\n"
        "    blindmatch run printed this\n"
    )
    assert list(shown_commands(page)) == [
        "blindmatch admin query-report --project p --hours 168",
        "blindmatch run --project p --token-file t",
    ]
    assert refusal("blindmatch run --project p --token-file t") is None
    said = refusal("blindmatch admin query-report --project p --hours weekly")
    assert said is not None and "--hours: weekly: not a whole number" in said
