"""The architecture, checked over the source (docs/architecture.md draws the same map).

Every module's imports are read from its syntax tree (nothing is imported, so this runs
in well under a second) and checked against the layers:

- inside the matcher, imports point down only: domain <- core <- storage <- use cases
  (usecases/, realtime/) <- the gRPC edge (rpc/, server.py, placement.py);
- the domain and the core import no SQLite, gRPC or protobuf; storage no gRPC or
  protobuf; the use cases no gRPC and no generated protobuf code;
- the client never imports the matcher (the command line, above both, may); inside the
  client, only the remote side (client/remote/) imports gRPC or the generated protobuf
  code, the encoding side (client/encoding/) imports neither the remote side nor the tools,
  and the remote side does not import the tools;
- nothing imports the command line but `python -m blindmatch` (blindmatch/__main__.py);
- everything imports `blindmatch.client`, `blindmatch.matcher`, `blindmatch.protos`,
  never the bare folders `client`, `matcher`, `protos`;
- no import cycles, and no module over MAX_LINES lines but generated code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The folders mapped into the one namespace (symbolic links in blindmatch/).
MAPPED = {
    "client": "blindmatch.client",
    "matcher": "blindmatch.matcher",
    "protos": "blindmatch.protos",
}
MAX_LINES = 500

# The matcher's layers, lowest first: a module may import its own layer and those below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("domain", ("blindmatch.matcher.domain", "blindmatch.matcher.errors")),
    ("core", ("blindmatch.matcher.core",)),
    ("storage", ("blindmatch.matcher.storage",)),
    ("use cases", ("blindmatch.matcher.usecases", "blindmatch.matcher.realtime")),
    ("gRPC edge", ("blindmatch.matcher.rpc", "blindmatch.matcher.server",
                   "blindmatch.matcher.placement")),
]  # fmt: skip
GRPC = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf")
GENERATED = ("blindmatch.protos.blindmatch_pb2", "blindmatch.protos.blindmatch_pb2_grpc")
# What each layer may not import besides the layers above it.
FORBIDDEN = {
    "domain": ("sqlite3", *GRPC, "blindmatch.protos"),
    "core": ("sqlite3", *GRPC, "blindmatch.protos"),
    "storage": (*GRPC, "blindmatch.protos"),
    "use cases": ("sqlite3", *GRPC, *GENERATED),
}
CLI = ("blindmatch.cli",)
ENTRY_POINT = "blindmatch.__main__"  # `python -m blindmatch`: the one importer of the CLI

# The client's sides, and what each may not import (besides the matcher, which none may).
CLIENT_REMOTE = ("blindmatch.client.remote",)
CLIENT_FORBIDDEN = {
    "blindmatch.client.encoding": ("blindmatch.client.remote", "blindmatch.client.tools"),
    "blindmatch.client.remote": ("blindmatch.client.tools",),
}

# Modules over MAX_LINES, to be split by whoever next changes them (none now: the
# privacy attacks and core/index.py have been split).
LONG: set[str] = set()


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass(frozen=True)
class Import:
    module: str  # the importer
    target: str  # what it imports: a module, or a name in one
    line: int
    at_import: bool  # runs when the module is imported (not in a function or TYPE_CHECKING)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def _dotted(path: Path, base: Path, prefix: str) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts]) if parts else prefix


def _package_files() -> Iterator[tuple[str, Path]]:
    for folder, prefix in MAPPED.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield _dotted(path, ROOT / folder, prefix), path
    for path in sorted((ROOT / "blindmatch").rglob("*.py")):  # the namespace's own modules
        if not any(p.is_symlink() for p in path.relative_to(ROOT).parents if p != Path(".")):
            yield _dotted(path, ROOT / "blindmatch", "blindmatch"), path


def _load(files: Iterator[tuple[str, Path]]) -> dict[str, Module]:
    return {
        name: Module(name, path, ast.parse(path.read_text(), str(path))) for name, path in files
    }


# Parsed on first use, not at import: a pytest worker that runs none of these tests (`-n 2`)
# or a run of other files does not pay for parsing every module.
@cache
def package() -> dict[str, Module]:
    return _load(_package_files())


@cache
def others() -> dict[str, Module]:
    return _load(
        (f"{folder}.{path.stem}", path)
        for folder in ("tests", "benchmarks")
        for path in sorted((ROOT / folder).glob("*.py"))
    )


def imports(module: Module, known: dict[str, Module]) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, at_import: bool) -> None:
        for child in ast.iter_child_nodes(node):
            deferred = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            nested = at_import and not deferred
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module.name, alias.name, child.lineno, at_import))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the importer's package
                    package = module.name if module.is_package else module.name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".rstrip(".")
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    target = sub if sub in known else base
                    found.append(Import(module.name, target, child.lineno, at_import))
            visit(child, nested)

    visit(module.tree, True)
    return found


@cache
def all_imports() -> list[Import]:
    return [i for m in package().values() for i in imports(m, package())]


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_of(name: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if within(name, prefixes):
            return rank
    return None


def test_the_layers_cover_every_matcher_module() -> None:
    unplaced = [
        name
        for name in package()
        if within(name, ("blindmatch.matcher",)) and name != "blindmatch.matcher"
        if layer_of(name) is None
    ]
    assert unplaced == [], "add these to LAYERS (and to docs/architecture.md)"


def test_matcher_imports_point_down() -> None:
    upward = []
    for i in all_imports():
        mine, theirs = layer_of(i.module), layer_of(i.target)
        if mine is not None and theirs is not None and theirs > mine:
            upward.append(f"{i} ({LAYERS[mine][0]} -> {LAYERS[theirs][0]})")
    assert upward == []


def test_inner_layers_import_no_storage_or_grpc() -> None:
    leaks = []
    for i in all_imports():
        mine = layer_of(i.module)
        if mine is None:
            continue
        forbidden = FORBIDDEN.get(LAYERS[mine][0], ())
        if within(i.target, forbidden):
            leaks.append(f"{i} (the {LAYERS[mine][0]} layer may not)")
    assert leaks == []


def test_the_client_does_not_import_the_matcher() -> None:
    leaks = [
        str(i)
        for i in all_imports()
        if within(i.module, ("blindmatch.client",)) and within(i.target, ("blindmatch.matcher",))
    ]
    assert leaks == []


def test_only_the_clients_remote_side_knows_grpc_and_protobuf() -> None:
    leaks = [
        str(i)
        for i in all_imports()
        if within(i.module, ("blindmatch.client",))
        and not within(i.module, CLIENT_REMOTE)
        and within(i.target, (*GRPC, *GENERATED))
    ]
    assert leaks == []


def test_the_clients_sides_keep_apart() -> None:
    leaks = [
        f"{i} ({side} may not)"
        for i in all_imports()
        for side, forbidden in CLIENT_FORBIDDEN.items()
        if within(i.module, (side,)) and within(i.target, forbidden)
    ]
    assert leaks == []


def test_nothing_imports_the_command_line() -> None:
    assert [
        str(i)
        for i in all_imports()
        if within(i.target, CLI) and not within(i.module, CLI) and i.module != ENTRY_POINT
    ] == []


@pytest.mark.parametrize("where", ["package", "tests and benchmarks"])
def test_imports_go_through_the_blindmatch_namespace(where: str) -> None:
    modules = package() if where == "package" else others()
    bare = [
        str(i)
        for m in modules.values()
        for i in imports(m, package())
        if i.target.split(".")[0] in MAPPED
    ]
    assert bare == []


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {name: set() for name in package()}
    for i in all_imports():
        if i.at_import and i.target in package() and i.target != i.module:
            graph[i.module].add(i.target)
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def test_no_module_is_too_long() -> None:
    long = {
        name: len(m.path.read_text().splitlines())
        for name, m in package().items()
        if name not in GENERATED
    }
    over = {name: n for name, n in long.items() if n > MAX_LINES and name not in LONG}
    assert over == {}
    no_longer = sorted(name for name in LONG if name in long and long[name] <= MAX_LINES)
    assert no_longer == [], "these are short enough now: delete them from LONG"


def test_make_lint_type_checks_the_benchmarks_too() -> None:
    """`make lint` runs mypy with pyproject.toml's packages: the benchmarks are code the
    documented figures come from, so a type error there is caught like one in the package."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert {"blindmatch", "benchmarks"} <= set(config["packages"])
    assert (ROOT / "benchmarks" / "__init__.py").exists()  # mypy finds it as a package
