"""The floors of the package, enforced: every import of every module, read with ``ast``.

The design draws four floors and lets an arrow point only down: ground (``alertbench.errors``,
``registry``, ``resources``, ``xmlsafe``) imports none of the others; ``refimpl`` (alert model,
codecs, mini-broker core) imports only ground; ``transports`` import only ground; ``harness``
imports anything, and nothing but the harness imports the harness. A broken floor is how the
redesign started (the mini-broker's core imported a transport, the gRPC transport a codec helper,
two CLI modules each other), so this test reads every import statement, wherever it is (module
level, inside a function, under ``if TYPE_CHECKING``), and every lazy registry string
(``"alertbench.transports.kafka:KafkaTransport"``), and fails on an arrow pointing up or sideways
and on any import cycle between modules, naming the file and line of each offending import.

Modules are found from the source folders, mapped to their import names the way the wheel maps
them (``[tool.setuptools.package-dir]`` in pyproject.toml), so what is checked is what installs.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = "alertbench"

LAYERS = ("ground", "refimpl", "transports", "harness")
ALLOWED = {
    "ground": {"ground"},
    "refimpl": {"ground", "refimpl"},
    "transports": {"ground", "transports"},
    "harness": {"ground", "refimpl", "transports", "harness"},
}
"""Which floors each floor may import (itself included)."""

REGISTRY_STRING = re.compile(r"^(alertbench(?:\.[A-Za-z_]\w*)+):[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    path: Path
    line: int
    kind: str  # "import" (a statement anywhere) or "lazy" (registry string, import_module)

    def where(self) -> str:
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Top-level folders by the import name they install as (pyproject's package-dir)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in mapping.items() if name.startswith(TOP)}


def collect_modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module (``alertbench.refimpl.codecs.avro`` -> its file) under the mapped folders.

    A folder counts as a package only if it and every folder above it (up to its mapped root)
    has an ``__init__.py``: refimpl/native (a Rust crate) and stray scripts are not Python
    packages of ours. A mapped folder nested in another (``alertbench.proto`` in proto/) is
    walked under its own name.
    """
    modules: dict[str, Path] = {}
    for name, folder in sorted(dirs.items()):
        if not (folder / "__init__.py").exists():
            continue  # package data only (proto/, schemas/)
        stack = [(name, folder)]
        while stack:
            package, path = stack.pop()
            modules[package] = path / "__init__.py"
            for child in sorted(path.iterdir()):
                if child.is_dir() and (child / "__init__.py").exists():
                    stack.append((f"{package}.{child.name}", child))
                elif child.suffix == ".py" and child.name != "__init__.py":
                    modules[f"{package}.{child.stem}"] = child
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of one of ours in ``module``: statements anywhere, and lazy strings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def add(target: str, node: ast.AST, kind: str) -> None:
        if target == TOP or target.startswith(TOP + "."):
            # the longest known module that is ``target`` or a package above it
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            found.append(Import(module, target, path, getattr(node, "lineno", 0), kind))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, "import")
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, is_package, node)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                add(candidate if candidate in known else base, node, "import")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = REGISTRY_STRING.match(node.value)
            if match:
                add(match.group(1), node, "lazy")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value, node, "lazy")
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "ground"


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        source, target = layer_of(imp.source), layer_of(imp.target)
        if target not in ALLOWED[source]:
            how = "names lazily" if imp.kind == "lazy" else "imports"
            problems.append(
                f"{imp.where()}: {imp.source} ({source}) {how} {imp.target} ({target}); "
                f"{source} may import only {', '.join(sorted(ALLOWED[source]))}"
            )
    return problems


def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle per strongly connected group of modules, as the imports that close it.

    Lazy registry strings are left out: naming ``"alertbench.transports.kafka:KafkaTransport"``
    in transports.base is how a registry avoids importing what it lists.
    """
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.kind == "import" and imp.source != imp.target:
            graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    # Tarjan's strongly connected components, iteratively (no recursion limit to hit).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    cycles = []
    for group in groups:
        members = set(group)
        # shortest path back to the group's first module, breadth first, inside the group
        first = group[0]
        previous: dict[str, str] = {}
        frontier = [first]
        closing = None
        while frontier and closing is None:
            next_frontier = []
            for node in frontier:
                for child in sorted(graph.get(node, {})):
                    if child == first:
                        closing = node
                        break
                    if child in members and child not in previous:
                        previous[child] = node
                        next_frontier.append(child)
                if closing:
                    break
            frontier = next_frontier
        assert closing is not None
        path = [closing]
        while path[-1] != first:
            path.append(previous[path[-1]])
        path.reverse()
        cycles.append([graph[a][b] for a, b in zip(path, [*path[1:], first], strict=True)])
    return cycles


def describe_cycle(cycle: list[Import]) -> str:
    return "import cycle: " + " -> ".join(
        [*(f"{imp.source} ({imp.where()})" for imp in cycle), cycle[0].source]
    )


def check(root: Path = ROOT) -> list[str]:
    modules = collect_modules(package_dirs(root))
    known = set(modules)
    imports = [imp for name, path in modules.items() for imp in imports_of(name, path, known)]
    return layer_violations(imports) + [describe_cycle(c) for c in import_cycles(imports)]


# -- the tests ---------------------------------------------------------------------------------


def test_imports_only_point_down_and_never_in_a_circle() -> None:
    problems = check()
    assert not problems, "layer rules broken:\n  " + "\n  ".join(problems)


def test_every_layer_is_found() -> None:
    """An empty walk would pass the rule above vacuously: the walk must see each floor."""
    modules = collect_modules(package_dirs())
    seen = {layer_of(name) for name in modules}
    assert seen == set(LAYERS), f"floors found: {sorted(seen)}"
    assert "alertbench.refimpl.minibroker.service" in modules
    assert "alertbench.transports.base" in modules
    assert not any(".native" in name for name in modules), "the Rust crate is not Python"


def test_every_package_folder_is_in_the_wheel() -> None:
    """A package folder missing from pyproject's list would be checked here, yet not install."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {name for name, path in collect_modules(package_dirs()).items()
             if path.name == "__init__.py"}  # fmt: skip
    assert found <= listed, f"packages not in pyproject.toml: {sorted(found - listed)}"


def _fake_project(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\n"alertbench" = "alertbench"\n'
        '"alertbench.refimpl" = "refimpl"\n"alertbench.transports" = "transports"\n'
        '"alertbench.harness" = "harness"\n'
    )
    for folder in ("alertbench", "refimpl", "transports", "harness"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"refimpl/codec.py": "def f():\n    from alertbench.transports import tcp\n",
             "transports/tcp.py": ""},
            r"refimpl/codec\.py:2: alertbench\.refimpl\.codec \(refimpl\) imports "
            r"alertbench\.transports\.tcp \(transports\)",
        ),
        (
            {"transports/tcp.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                  "    from ..refimpl import codec\n",
             "refimpl/codec.py": ""},
            r"transports/tcp\.py:3: .* imports alertbench\.refimpl\.codec \(refimpl\)",
        ),
        (
            {"alertbench/errors.py": 'X = {"k": "alertbench.harness.cli:main"}\n',
             "harness/cli.py": ""},
            r"alertbench/errors\.py:1: alertbench\.errors \(ground\) names lazily "
            r"alertbench\.harness\.cli \(harness\)",
        ),
        (
            {"refimpl/a.py": "import alertbench.refimpl.b\n",
             "refimpl/b.py": "from alertbench.refimpl import a\n"},
            r"import cycle: alertbench\.refimpl\.a \(refimpl/a\.py:1\) -> "
            r"alertbench\.refimpl\.b \(refimpl/b\.py:1\) -> alertbench\.refimpl\.a",
        ),
    ],
    ids=["refimpl-to-transports", "transports-to-refimpl-type-checking", "ground-registry",
         "cycle"],
)  # fmt: skip
def test_the_checker_catches_each_kind_of_violation(tmp_path, files, expected) -> None:
    problems = check(_fake_project(tmp_path, files))
    shown = [p.replace(str(tmp_path) + "/", "") for p in problems]
    assert len(shown) == 1 and re.search(expected, shown[0]), shown


def test_a_registry_naming_what_imports_it_is_not_a_cycle(tmp_path) -> None:
    files = {
        "transports/base.py": 'TRANSPORTS = {"tcp": "alertbench.transports.tcp:Tcp"}\n',
        "transports/tcp.py": "from alertbench.transports.base import TRANSPORTS\n",
    }
    assert check(_fake_project(tmp_path, files)) == []
