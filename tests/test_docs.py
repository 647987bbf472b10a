"""The README's walkthrough, and the pages that carry it on, run as a new user runs them.

The commands are read from the documents themselves (every indented `$ ` line of a page, with
its `\\`-continued lines), run in order with bash in a fresh folder that has the checkout's
`docs/` and `schemas/`, against a real `blindmatch serve` on a free loopback port; what each
page shows a command print must be what it prints: each shown line appears, in order, among the
command's output lines. `...` in a shown line stands for anything; the values that change from
run to run (upload ids, secret and fingerprint ids, request references, times) are compared by
their form, and a request reference a page quotes in a later command is the one printed.

Beside it, what the pages name must exist: every option shown on a `blindmatch` command, every
link's file and section, every source file and test named, every import of a Python block, every
command and environment variable in the README's tables; and `make demo` must end as the
README shows.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blindmatch.cli.app import build_parser, main
from blindmatch.cli.reference import commands
from tests.support import ROOT, Matcher

BIN = Path(sys.executable).parent

# What changes from run to run, and the form it is compared by.
VOLATILE = (
    (re.compile(r"bmr-[a-z2-7]{26}"), "<reference>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<upload id>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d,\d{3})?"), "<time>"),
    (re.compile(r"\b[a-z2-7]{4}-[a-z2-7]{4}\b"), "<id>"),
)
REFERENCE = VOLATILE[0][0]


@dataclass
class Step:
    """One `$ ` command of a page and the lines the page shows it print."""

    command: str
    shown: list[str]


def steps(markdown: str) -> Iterator[Step]:
    """Every indented `$ ` command of a page, in order, with the output shown under it."""
    step: Step | None = None
    continued = False
    for line in markdown.splitlines():
        text = line[4:] if line.startswith("    ") else None
        if text is not None and continued and step is not None:
            step.command += " " + text.strip().rstrip("\\").strip()
            continued = text.rstrip().endswith("\\")
        elif text is not None and text.lstrip().startswith("$ "):
            if step is not None:
                yield step
            command = text.lstrip()[2:].rstrip()
            continued = command.endswith("\\")
            step = Step(command.rstrip("\\").strip(), [])
        elif text is not None and step is not None and text.strip():
            step.shown.append(text.strip())
        elif step is not None:
            yield step
            step, continued = None, False
    if step is not None:
        yield step


def _form(text: str) -> str:
    for pattern, name in VOLATILE:
        text = pattern.sub(name, text)
    return text


def _pattern(shown: str) -> re.Pattern[str]:
    """A shown line as a pattern: `...` is anything; volatile values match by form."""
    parts = [re.escape(part) for part in _form(shown).split("...")]
    return re.compile(".*".join(parts))


def assert_shows(step: Step, output: str) -> dict[str, str]:
    """Each line the page shows appears, in order, in the output; returns the references the
    page quotes mapped to the ones printed in their place."""
    lines = [line.strip() for line in output.splitlines()]
    seen: dict[str, str] = {}
    at = 0
    for shown in step.shown:
        if shown == "...":
            continue
        pattern = _pattern(shown)
        for i in range(at, len(lines)):
            if pattern.fullmatch(_form(lines[i])):
                seen.update(zip(REFERENCE.findall(shown), REFERENCE.findall(lines[i]), strict=True))
                at = i + 1
                break
        else:
            raise AssertionError(
                f"`{step.command}` did not print, in this order, the line the page shows:\n"
                f"  {shown}\nIt printed:\n{output}"
            )
    return seen


class Walkthrough:
    """A new user's shell: a folder with the checkout's docs and schemas, `.venv` on PATH."""

    def __init__(self, where: Path) -> None:
        self.where = where
        for name in ("docs", "schemas"):
            (where / name).symlink_to(ROOT / name)
        venv = where / ".venv" / "bin"
        venv.mkdir(parents=True)
        (venv / "activate").write_text(f'export PATH="{BIN}:$PATH"\n', encoding="utf-8")
        self.state: list[str] = []  # `source` and `export` lines, replayed before each command
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BLINDMATCH_")}
        self.quoted: dict[str, str] = {}
        self.servers: list[subprocess.Popen[str]] = []

    def _script(self, command: str) -> str:
        for doc, real in self.quoted.items():
            command = command.replace(doc, real)
        return "set -e\n" + "\n".join([*self.state, command]) + "\n"

    def run(self, step: Step) -> None:
        if step.command.startswith(("source ", "export ")):
            self.state.append(step.command)
        if " serve " in f" {step.command} ":
            self.serve(step)
            return
        done = subprocess.run(
            ["bash", "-c", self._script(step.command)], cwd=self.where, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
        )  # fmt: skip
        output = done.stdout
        assert done.returncode == 0, f"`{step.command}` exited {done.returncode}:\n{output}"
        self.quoted.update(assert_shows(step, output))

    def serve(self, step: Step) -> None:
        """`blindmatch serve` in the background, on a free port in place of the page's."""
        shown_port = re.search(r"--listen [\d.]+:(\d+)", step.command)
        assert shown_port, step.command
        log = self.where / "serve.log"
        command = step.command.replace(f":{shown_port[1]}", ":0")
        with log.open("w") as out:
            self.servers.append(subprocess.Popen(
                ["bash", "-c", self._script("exec " + command)], cwd=self.where, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, text=True,
            ))  # fmt: skip
        deadline = time.monotonic() + 60
        while not (port := re.search(r"matcher listening on [\d.]+:(\d+)", log.read_text())):
            assert self.servers[-1].poll() is None, f"serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"serve did not start:\n{log.read_text()}"
            time.sleep(0.1)
        self.env["BLINDMATCH_SERVER"] = f"127.0.0.1:{port[1]}"
        shown = [line.replace(shown_port[1], port[1]) for line in step.shown]
        assert_shows(Step(step.command, shown), log.read_text())

    def stop(self) -> None:
        for server in self.servers:
            server.terminate()
            server.wait(timeout=30)


def _page(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _section(name: str, heading: str) -> str:
    """One section of a page: from its heading to the next of the same level or above."""
    level = heading.split()[0]
    after = _page(name).split(f"\n{heading}\n", 1)[1]
    return re.split(rf"^#{{1,{len(level)}}} ", after, maxsplit=1, flags=re.M)[0]


@pytest.fixture
def walkthrough(tmp_path: Path) -> Iterator[Walkthrough]:
    if not (BIN / "blindmatch").exists():
        pytest.skip(f"no blindmatch command beside {sys.executable} (run `make install`)")
    shell = Walkthrough(tmp_path)
    try:
        yield shell
    finally:
        shell.stop()


def test_the_steps_of_a_page_are_read_with_their_output() -> None:
    page = (
        "Text.\n\n    $ blindmatch a --x 1 \\\n        --y 2\n    Did a.\n    ...\n"
        "    $ cat f\n    k,v\n\n    not a command\n"
    )
    assert list(steps(page)) == [
        Step("blindmatch a --x 1 --y 2", ["Did a.", "..."]),
        Step("cat f", ["k,v"]),
    ]
    assert assert_shows(
        Step("x", ["Ref for 2026-12-03 14:29: bmr-nf3rlsmggzhtosxc6ywu4co65y ..."]),
        "noise\nRef for 2027-01-01 09:00: bmr-aaaaaaaaaaaaaaaaaaaaaaaaaa (kept)\n",
    ) == {"bmr-nf3rlsmggzhtosxc6ywu4co65y": "bmr-aaaaaaaaaaaaaaaaaaaaaaaaaa"}
    with pytest.raises(AssertionError, match="did not print"):
        assert_shows(Step("x", ["Done: 5 records."]), "Done: 6 records.\n")


def test_project_create_lists_the_members_in_the_order_given(
    matcher: Matcher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The walkthrough shows north-police's token file, then city-retail's: as --members said.
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    members = ["north-police", "city-retail", "west-police", "b-retail", "a-retail", "z-bank"]
    create = ["project", "create", "--members", ",".join(members), "--server", matcher.target]
    assert main([*create, "in-files", "--tokens-dir", str(tmp_path / "tokens")]) == 0
    listed = re.findall(r"^  ([a-z-]+): ", capsys.readouterr().out, flags=re.M)
    assert listed == members
    assert main([*create, "shown"]) == 0
    assert re.findall(r"^  ([a-z-]+): ", capsys.readouterr().out, flags=re.M) == members
    assert main([*create, "as-json", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["tokens"]) == members


@pytest.mark.slow
def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    # README, "Exit codes": errors are `Error: ...` lines; a closed pipe (`... | head`) is none.
    if not (BIN / "blindmatch").exists():
        pytest.skip(f"no blindmatch command beside {sys.executable} (run `make install`)")
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line is written
    try:
        done = subprocess.run(
            [BIN / "blindmatch", "schema", "check", ROOT / "schemas" / "person-uk.json"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (1, "")


@pytest.mark.slow
# About 30 CLI commands and a server: 12 s on a quiet machine, over 120 s at load 9 (seen).
@pytest.mark.timeout(300)
def test_the_readme_walkthrough_runs_as_written(walkthrough: Walkthrough) -> None:
    shown = list(steps(_page("README.md")))
    # The page's steps were read (a changed layout would skip them silently): its whole flow.
    flow = iter(s.command.split()[1] for s in shown if s.command.startswith("blindmatch "))
    for command in ("serve", "project", "secret", "encode", "upload", "run", "results",
                    "request", "resolve", "report"):  # fmt: skip
        assert command in flow, f"the README's walkthrough no longer shows `{command}`"
    # security.md checks City Retail's folder against the project between the two uploads.
    (check,) = steps(_section("docs/security.md", "## The shared secret"))
    for step in shown:
        walkthrough.run(step)
        if step.command.startswith("blindmatch upload out/north-police.encoded"):
            walkthrough.run(check)
    with open(walkthrough.where / "out" / "hits.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["record_id", "partner"]  # DESIGN.md's contract
    # "City Retail runs `results` with its own token and folder and gets `CR-0001` to
    # `CR-0004` and `CR-0007`."
    walkthrough.run(Step(
        "blindmatch results --project pilot --token-file out/tokens/city-retail.token "
        "--encoded out/city-retail.encoded --out out/city-hits.csv", []
    ))  # fmt: skip
    with open(walkthrough.where / "out" / "city-hits.csv", newline="") as fh:
        assert [row["record_id"] for row in csv.DictReader(fh)] == [
            "CR-0001", "CR-0002", "CR-0003", "CR-0004", "CR-0007"
        ]  # fmt: skip

    # mapping.md's encode report, of the walkthrough's own files (the next step of that
    # section is a sketch, `...`).
    (report, *_) = steps(_section("docs/mapping.md", "## The encode report"))
    walkthrough.run(report)

    # operations.md's look at the projects, with the operator token the walkthrough exported.
    operations = list(steps(_section("docs/operations.md", "### Projects at a glance")))
    assert [s.command for s in operations] == [
        "blindmatch project list",
        "blindmatch project show pilot --operator",
    ]
    for step in operations:
        walkthrough.run(step)

    # requests.md carries the walkthrough on: every hit at once, then the partner's side.
    for step in steps(_page("docs/requests.md")):
        walkthrough.run(step)
    with open(walkthrough.where / "out" / "refs.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["record_id", "partner", "reference"]


# -- what the pages name: commands' options, files and sections -----------------------------

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _code(text: str) -> Iterator[str]:
    """The code of a page: indented and fenced blocks' lines, and inline `spans`."""
    fenced = False
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            yield line.strip()
        else:
            yield from re.findall(r"`([^`]+)`", line)


def command_options(text: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """(command words, option) for every `blindmatch COMMAND ... --option` a page shows."""
    known = {path for path, _ in commands(build_parser())}
    for code in _code(text):
        if code.split()[:1] and (code.split()[0],) in known:
            code = "blindmatch " + code  # `serve --workers N`, `project create --mode`
        for at in re.finditer(r"(?<![\w/.-])blindmatch (?=[a-z])", code):
            before = code[: at.start()].split()
            if before and before[-1].startswith("-"):
                continue  # a value (`--flows blindmatch two-server`), not a command
            words = re.split(r"[|;#]|&&| blindmatch ", code[at.end() :])[0].split()
            path = tuple(words[:2]) if tuple(words[:2]) in known else tuple(words[:1])
            if path in known:
                for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w*-])", " ".join(words)):
                    yield path, option


def test_every_option_a_page_shows_is_one_its_command_takes() -> None:
    taken = {
        path: {s for action in parser._actions for s in action.option_strings}
        for path, parser in commands(build_parser())
    }
    shown = [
        (page.relative_to(ROOT), " ".join(path), option)
        for page in PAGES
        if page.name != "cli.md"  # generated from --help itself
        for path, option in command_options(page.read_text(encoding="utf-8"))
    ]
    assert len(shown) > 500  # the pages were read
    assert [s for s in shown if s[2] not in taken[tuple(s[1].split())]] == []
    assert list(command_options("    $ blindmatch upload X --project p --tokn t")) == [
        (("upload",), "--project"),
        (("upload",), "--tokn"),
    ]


def _anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    found: set[str] = set()
    for heading in re.findall(r"^#+\s+(.*)$", text, flags=re.M):
        slug, n = _anchor(heading), 0
        while (slug if n == 0 else f"{slug}-{n}") in found:
            n += 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def test_every_link_between_pages_finds_its_file_and_section() -> None:
    broken = []
    for page in PAGES:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if link.startswith(("http:", "https:", "mailto:")):
                continue
            path, _, section = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such file)")
            elif section and target.suffix == ".md" and section not in _anchors(target):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such section)")
    assert broken == []


SOURCE = re.compile(r"(?<![\w./~$-])((?:[\w.-]+/)*[\w-]+\.(?:pyi?|c))(?![\w/-])")


def source_files(text: str) -> Iterator[str]:
    """Every source file (`.py`, `.pyi`, `.c`) a page's code and `spans` name."""
    for code in _code(text):
        yield from SOURCE.findall(code)


def test_every_source_file_a_page_names_is_there() -> None:
    # A path is from the root, or the matcher's or the command line's (`core/tworun.py`,
    # `cli/serve.py`); a bare name (`lookup_wire.py`) is some file's of the repository.
    folders = ("benchmarks", "blindmatch", "client", "matcher", "protos", "tests")
    names = {p.name for folder in folders for p in (ROOT / folder).rglob("*")}
    named = {
        (str(page.relative_to(ROOT)), path)
        for page in PAGES
        for path in source_files(page.read_text(encoding="utf-8"))
    }
    assert len(named) > 500  # the pages were read
    gone = [
        (page, path)
        for page, path in sorted(named)
        if not (
            path in names
            if "/" not in path
            else any((ROOT / base / path).exists() for base in ("", "matcher", "blindmatch"))
        )
    ]
    assert gone == []
    assert list(source_files("`core/a.py`: see rpc/b.py, `c.pyi`\n    $ python d/e.c x.pyc")) == [
        "core/a.py",
        "c.pyi",
        "d/e.c",
    ]


def test_every_test_a_page_names_is_there() -> None:
    tests = {
        name
        for source in (ROOT / "tests").glob("*.py")
        for name in re.findall(r"^\s*def (test_\w+)", source.read_text("utf-8"), re.M)
    }
    named = {
        (str(page.relative_to(ROOT)), name)
        for page in PAGES
        for span in re.findall(r"`([^`\n]+)`", page.read_text(encoding="utf-8"))
        for name in re.findall(r"(?<![\w.])test_\w+(?![\w.])", span)
    }
    assert len(named) > 10  # the pages were read
    assert [n for n in sorted(named) if n[1] not in tests] == []


def _python_imports(text: str) -> Iterator[str]:
    """The import statements of a page's ```python blocks, each whole."""
    for block in re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S):
        yield from re.findall(r"^(?:from \S+ import (?:\([^)]*\)|.*)|import .*)$", block, re.M)


@pytest.mark.slow
def test_what_a_pages_python_imports_is_there_for_an_installed_blindmatch(
    tmp_path: Path,
) -> None:
    # Run outside the checkout, as a user's script: what the package installs, nothing more.
    imports = sorted({i for page in PAGES for i in _python_imports(page.read_text("utf-8"))})
    assert len(imports) > 10  # the blocks were read
    before = _bytecode_in_the_checkout()
    done = subprocess.run(
        [sys.executable, "-I", *_bytecode_flags(), "-c", "\n".join(imports)], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    if sys.dont_write_bytecode or sys.pycache_prefix:  # (else Python writes it there anyway)
        assert _bytecode_in_the_checkout() == before


def _bytecode_flags() -> list[str]:
    """`-I` ignores PYTHONPYCACHEPREFIX and PYTHONDONTWRITEBYTECODE: the same said as flags,
    or the editable install's modules get a `__pycache__` beside them in the checkout."""
    if sys.pycache_prefix:
        return ["-X", f"pycache_prefix={sys.pycache_prefix}"]
    return ["-B"] if sys.dont_write_bytecode else []


def _bytecode_in_the_checkout() -> set[str]:
    """The checkout's `__pycache__` folders (git's ignored files; the venv's aside)."""
    listed = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".",
         ":(exclude).venv"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {line for line in listed.splitlines() if "__pycache__" in line}


def test_the_mapping_the_readme_shows_is_the_walkthroughs_file() -> None:
    (shown,) = re.findall(r"^```toml\n(.*?)^```", _page("README.md"), flags=re.M | re.S)
    assert shown == (ROOT / "docs" / "walkthrough-data" / "north-police.toml").read_text("utf-8")


def test_the_readme_lists_every_environment_variable_the_code_reads() -> None:
    table = _page("README.md").split("## Environment variables")[1].split("\n## ")[0]
    listed = set(re.findall(r"`(BLINDMATCH_[A-Z_]+)`", table))
    read = {
        name
        for folder in ("blindmatch", "client", "matcher")  # the package's parts
        for source in (ROOT / folder).rglob("*.py")
        for name in re.findall(r"\bBLINDMATCH_[A-Z_]+\b", source.read_text("utf-8"))
    }
    assert listed == read
    named = {
        n for page in PAGES for n in re.findall(r"\bBLINDMATCH_[A-Z_]+", page.read_text("utf-8"))
    }
    assert named - read == set()  # and no page names one the code does not read


def test_the_readmes_commands_table_has_every_command() -> None:
    table = _page("README.md").split("## Commands")[1].split("\n## ")[0]
    rows = [
        re.split(r"(?<!\\)\|", line)[1] for line in table.splitlines() if line.startswith("| `")
    ]
    named = {span.split()[0] for row in rows for span in re.findall(r"`([^`]+)`", row)}
    every = {path[0] for path, _ in commands(build_parser()) if path}
    assert every - named == set(), "add a row to the README's table for each"


def _counts_as_n(text: str) -> str:
    """A demo's output with its numbers as N: each run draws a new secret, and its counts move."""
    return re.sub(r" +", " ", re.sub(r"\d+(\.\d+)?", "N", text))


def test_make_demo_ends_as_the_readme_shows(capsys: pytest.CaptureFixture[str]) -> None:
    readme = _page("README.md")
    after = readme.split("`make demo` ends like this")[1].split("\n\n", 1)[1]
    block = re.match(r"((?:    .*\n|\n)+)", after)
    assert block is not None
    shown = [line.strip() for line in block[1].splitlines() if line.strip()]
    assert shown[0] == "Run demo-run-1: done" and len(shown) > 5  # the block was found
    assert main(["demo"]) == 0
    printed = capsys.readouterr().out
    assert_shows(Step("blindmatch demo", [_counts_as_n(s) for s in shown]), _counts_as_n(printed))
