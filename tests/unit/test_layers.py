"""The packages import one way (issue 25, item 3), read from every module's imports with `ast` (lazy imports inside
functions included): the library (harness/) imports none of the others, the kit (kit/) only the library, the commands
(commands/) the library and the kit, the pytest plugins (fixtures/) any of them; so no arrow points up and the packages
have no cycle. And no module takes another's private (`_name`) names: `from X import _name` anywhere, and `X._name` on
an imported module in the packages (the unit tests may reach a helper of the module they test)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.config import ROOT

# Lower imports nothing above it.
LAYERS = {"harness": 0, "kit": 1, "commands": 2, "fixtures": 3}
OTHERS = ["tests", "conftest.py", "toxfile.py"]  # read for private names only


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    line: int
    target: str  # the imported module, dotted
    names: tuple[str, ...] = ()  # `from target import names`


def module_name(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(rel: Path, text: str) -> list[Import]:
    """Every import of a module's text (`rel`, its path under the repository), relative ones resolved."""
    me = module_name(rel)
    package = me if rel.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out += [Import(me, node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            out.append(Import(me, node.lineno, target, tuple(a.name for a in node.names)))
    return out


def sources(root: Path, folders: list[str]) -> dict[Path, str]:
    """Each .py file under the folders (or the file itself), by its path under root."""
    out = {}
    for folder in folders:
        path = root / folder
        for p in sorted(path.rglob("*.py") if path.is_dir() else [path] if path.is_file() else []):
            out[p.relative_to(root)] = p.read_text()
    return out


def package_of(dotted: str) -> str:
    return dotted.split(".")[0]


def upward(files: dict[Path, str]) -> list[str]:
    """Each import from a package of a package above it, as `file:line: a imports b`."""
    found = []
    for rel, text in files.items():
        for i in imports(rel, text):
            mine, theirs = package_of(i.module), package_of(i.target)
            if mine in LAYERS and theirs in LAYERS and LAYERS[theirs] > LAYERS[mine]:
                found.append(f"{rel}:{i.line}: {mine} imports {i.target}")
    return found


def cycles(files: dict[Path, str]) -> list[list[str]]:
    """Cycles of the package graph (an edge: some module of one package imports the other), each once."""
    edges: dict[str, set[str]] = {}
    for rel, text in files.items():
        for i in imports(rel, text):
            a, b = package_of(i.module), package_of(i.target)
            if a != b and a in LAYERS and b in LAYERS:
                edges.setdefault(a, set()).add(b)
    found: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == path[0]:
                if path[0] == min(path):  # each cycle once: from its smallest package
                    found.append([*path, nxt])
            elif nxt not in path:
                walk(nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, [start])
    return found


def private_names(files: dict[Path, str], attributes: bool) -> list[str]:
    """`from X import _name` of another module of the repository; with `attributes`, also `X._name` where X is a
    module of the repository bound by an import. Each as `file:line: ...`."""
    ours = {module_name(rel) for rel in files} | set(LAYERS)
    found = []
    for rel, text in files.items():
        tree = ast.parse(text)
        bound = set()
        for i in imports(rel, text):
            if package_of(i.target) not in {package_of(m) for m in ours}:
                continue
            if i.names:
                found += [f"{rel}:{i.line}: from {i.target} import {n}" for n in i.names
                          if n.startswith("_") and not n.startswith("__") and i.target != i.module]
                bound |= {n for n in i.names if f"{i.target}.{n}" in ours}
            else:
                bound.add(i.target.split(".")[0])
        if attributes:
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                        and node.attr.startswith("_") and not node.attr.startswith("__")):
                    found.append(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


PACKAGES = sources(ROOT, list(LAYERS))


def test_every_package_is_read():
    assert {package_of(module_name(rel)) for rel in PACKAGES} == set(LAYERS)


def test_the_library_imports_neither_the_kit_nor_the_commands_and_the_kit_not_the_commands():
    assert upward(PACKAGES) == []


def test_the_packages_have_no_cycle():
    assert cycles(PACKAGES) == []


def test_no_module_takes_another_modules_private_names():
    assert private_names(PACKAGES, attributes=True) + private_names(sources(ROOT, OTHERS), attributes=False) == []


# Negative controls: each check on small modules that break its rule, as HEAD before this test had them.

def control(**modules: str) -> dict[Path, str]:
    return {Path(name.replace("__", "/") + ".py"): text for name, text in modules.items()}


@pytest.mark.parametrize("files, seen", [
    (control(harness__repeat="import kit\n"), "harness/repeat.py:1: harness imports kit"),
    (control(harness__clients="def f():\n    from kit import clients\n"), "harness/clients.py:2: harness imports kit"),
    (control(kit__build="from commands import preflight\n"), "kit/build.py:1: kit imports commands"),
    (control(harness__x="import fixtures.target\n"), "harness/x.py:1: harness imports fixtures.target"),
])
def test_an_import_that_points_up_is_named(files, seen):
    assert upward(files) == [seen]


def test_an_import_that_points_down_passes():
    assert upward(control(commands__repeat="import kit\nfrom harness import bench\n", kit__build="import harness\n")) \
        == []


def test_a_cycle_between_packages_is_found_once():
    files = control(harness__clients="from kit import clients\n", kit__clients="from harness.config import ROOT\n")
    assert cycles(files) == [["harness", "kit", "harness"]]
    assert cycles(control(kit__clients="from harness.config import ROOT\n")) == []


def test_a_private_name_taken_from_another_module_is_named():
    files = control(kit__build="def _lock(): ...\n", kit__clients="from kit.build import _lock, say\n",
                    commands__preflight="from harness import traps\ntraps._gib(1)\n", harness__traps="")
    assert private_names(files, attributes=True) == ["kit/clients.py:1: from kit.build import _lock",
                                                     "commands/preflight.py:2: traps._gib"]
    assert private_names(control(harness__traps="def _gib(): ...\n_gib(1)\n"), attributes=True) == []


def test_relative_imports_are_resolved():
    [i] = imports(Path("tests/selftest/test_kit.py"), "from .runner import _private\n")
    assert i.target == "tests.selftest.runner" and i.names == ("_private",)
    [j] = imports(Path("commands/__init__.py"), "from . import repeat\n")
    assert j.target == "commands"
