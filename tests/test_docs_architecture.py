"""docs/architecture.md's tables name modules and what is in them; both must be there.

The rule a row follows (so that this test can read it):

- A backticked name ending in `.py` or `.c`, or a folder ending in `/`, is a path. It is looked
  for in the folders of the paths named before it in the same row (the latest first), then in
  the folders of its table (the matcher's layers: `matcher/`; the client and the command line:
  `client/`, `blindmatch/`; where each rule lives: `matcher/`, `blindmatch/`), then from the
  repository's root: `core/proposal.py` in the rules table is `matcher/core/proposal.py`,
  `cli/twoserver.py` is `blindmatch/cli/twoserver.py`, `files.py` after `client/results.py` is
  `client/files.py`. It must exist.
- The backticked names listed right after a module, `mod.py`: `a`, `b` and `c` (or `mod.py`
  `a`, or `mod.py` (`a`: ...)), separated only by `:`, `,`, `and`, `/` or a space, are that
  module's: each must be defined in it, as a top-level def, class or assignment, or a method or
  attribute of one of its classes (in the class's body, or `self.NAME = ...` in a method).
  `Class.name` must be defined in that class, and `f(x=...)` is `f`. A note in parentheses
  after a listed name is skipped and the list goes on after it (`mod.py`: `a` (note), `b`): a
  note names nothing of the module, but a path inside one starts its own list. Anything else
  (a word, an option, another span) ends the list.
- A new table needs its folders in TABLE_FOLDERS below.

Nothing is imported: the modules are read with `ast`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"

# Each table's folders, by the heading it is under.
TABLE_FOLDERS = {
    "The matcher's layers": ("matcher",),
    "The client and the command line": ("client", "blindmatch"),
    "Where each rule lives": ("matcher", "blindmatch"),
}

PATH = re.compile(r"^(?:[\w.-]+/)*(?:[\w.-]+\.(?:py|c)|[\w.-]+/)$")
NAME = re.compile(r"^@?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(.*\))?$")
BETWEEN = re.compile(r"^[\s:,/]*(?:\band\b[\s:,/]*)?$")


@dataclass
class Note:
    """A parenthesised part of a cell: its spans, text and notes in order."""

    items: list[str | Note] = field(default_factory=list)


def parse(cell: str) -> Note:
    """A cell as text ("t..."), spans ("`...") and notes, in order."""
    top = Note()
    stack = [top]
    for piece in re.split(r"(`[^`]*`|[()])", cell):
        if piece == "(":
            stack.append(Note())
            stack[-2].items.append(stack[-1])
        elif piece == ")" and len(stack) > 1:
            stack.pop()
        elif piece.startswith("`"):
            stack[-1].items.append(piece)
        elif piece:
            stack[-1].items.append("t" + piece)
    return top


@dataclass
class Row:
    """One table row read by the rule: what it names and what is wrong with it."""

    where: str
    folders: tuple[Path, ...]
    seen: list[Path] = field(default_factory=list)  # the folders of its paths, latest first
    paths: list[Path] = field(default_factory=list)
    named: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def resolve(self, name: str) -> Path | None:
        tried = [*self.seen, *self.folders, ROOT]
        found = next((base / name for base in tried if (base / name).exists()), None)
        if found is None:
            self.missing.append(f"{self.where}: no {name}")
        else:
            self.paths.append(found)
            folder = found if name.endswith("/") else found.parent
            self.seen = [folder, *(f for f in self.seen if f != folder)]
        return found

    def read(self, note: Note, module: Path | None = None) -> None:
        """A cell (or a note in it); `module`: the module a note right after a path lists."""
        listing = module
        after_path = False
        for item in note.items:
            if isinstance(item, Note):
                self.read(item, listing if after_path else None)
                after_path = False
                continue
            if item.startswith("t"):
                if not BETWEEN.match(item[1:]):
                    listing = None
                    after_path = False
                continue
            after_path = False
            span = item.strip("`")
            if PATH.match(span):
                found = self.resolve(span)
                listing = found if found and found.suffix == ".py" else None
                after_path = listing is not None
            elif listing is not None and (name := NAME.match(span)):
                self.named.append((listing, name[1]))
                if not defined(listing, name[1]):
                    where = listing.relative_to(ROOT)
                    self.missing.append(f"{self.where}: {span} is not in {where}")
            else:
                listing = None


def rows(text: str) -> Iterator[tuple[str, str, list[str]]]:
    """(table heading, first cell, cells) for every row of every table."""
    heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            yield heading, cells[0], cells


def read_rows(text: str) -> list[Row]:
    read = []
    for heading, first, cells in rows(text):
        if first in ("layer", "part", "rule"):
            continue  # the header row
        assert heading in TABLE_FOLDERS, f"give the table under {heading!r} its folders"
        row = Row(f"{heading} | {first[:60]}", tuple(ROOT / f for f in TABLE_FOLDERS[heading]))
        for cell in cells:
            row.read(parse(cell))
        read.append(row)
    return read


@cache
def definitions(module: Path) -> tuple[dict[str, ast.AST], frozenset[str]]:
    """A module's top-level names (each with its node), and every name a class of it defines."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    in_classes = {
        name for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for name in _members(node)
    }
    return dict(_defined(tree.body)), frozenset(in_classes)


def _defined(body: list[ast.stmt]) -> Iterator[tuple[str, ast.AST]]:
    """The names a block defines, looking into its `if`s, `try`s and `with`s."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        yield name.id, node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for part in getattr(node, block, []):
                    inner = part.body if isinstance(part, ast.ExceptHandler) else [part]
                    yield from _defined(inner)


def _members(cls: ast.ClassDef) -> dict[str, ast.AST]:
    """What a class defines: its body's names, and the `self.NAME`s its methods assign."""
    found = dict(_defined(cls.body))
    for node in ast.walk(cls):
        targets = (
            node.targets if isinstance(node, ast.Assign)
            else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign))
            else []
        )  # fmt: skip
        for target in targets:
            if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self":
                found.setdefault(target.attr, target)
    return found


def defined(module: Path, name: str) -> bool:
    """Whether `name` (`f`, `Class.method`, a method of any class) is defined in `module`."""
    top, in_classes = definitions(module)
    first, *rest = name.split(".")
    if not rest:
        return first in top or first in in_classes
    node = top.get(first)
    for part in rest:
        if not isinstance(node, ast.ClassDef):
            return node is not None  # an attribute of a function or a value: not read here
        node = _members(node).get(part)
    return node is not None


def test_every_module_architecture_md_names_is_there_and_defines_what_it_lists() -> None:
    read = read_rows(PAGE.read_text(encoding="utf-8"))
    assert len(read) > 80  # the tables were read
    assert len({p for row in read for p in row.paths}) > 150
    assert sum(len(row.named) for row in read) > 150
    missing = [m for row in read for m in row.missing]
    assert missing == [], "\n".join(missing)


def test_a_rows_paths_and_names_are_read_by_the_rule() -> None:
    table = (
        "## Where each rule lives\n"
        "| rule | place |\n|---|---|\n"
        "| a run | `core/tworun.py`: `run`, `drive(earlier=...)` (over `core/twoserver.py`'s "
        "roles; `solve.py`), `Gone` (no `Nope`); `rpc/auth.py` (`Authenticator`: ...) and "
        "`Call.still_valid`; `server.py`; `core/proposal.py`: `Checked.capped`/`over_quota` "
        "`Missing.name`; `core/nothere.py`; `cli/twoserver.py` |\n"
    )
    (row,) = read_rows(table)
    assert [(p.relative_to(ROOT).as_posix(), n) for p, n in row.named] == [
        ("matcher/core/tworun.py", "run"),
        ("matcher/core/tworun.py", "drive"),
        ("matcher/core/tworun.py", "Gone"),
        ("matcher/rpc/auth.py", "Authenticator"),
        ("matcher/rpc/auth.py", "Call.still_valid"),
        ("matcher/core/proposal.py", "Checked.capped"),
        ("matcher/core/proposal.py", "over_quota"),
        ("matcher/core/proposal.py", "Missing.name"),
    ]
    assert [p.relative_to(ROOT).as_posix() for p in row.paths] == [
        "matcher/core/tworun.py",
        "matcher/core/twoserver.py",
        "matcher/core/solve.py",
        "matcher/rpc/auth.py",
        "matcher/server.py",
        "matcher/core/proposal.py",
        "blindmatch/cli/twoserver.py",
    ]
    assert [m.split(": ", 1)[1] for m in row.missing] == [
        "Gone is not in matcher/core/tworun.py",
        "Missing.name is not in matcher/core/proposal.py",
        "no core/nothere.py",
    ]
