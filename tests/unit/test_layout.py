"""The layout's rules, read from the source: imports point one way, no import circle, each
package states its public names and other packages import only those.

Rooms and direction (README "Layout"):
cli -> api, closing, stream, producer -> runtime -> aggregation, invoicing -> schemas.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("metering", "aggregation", "invoicing", "schemas")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module or package named after `from` / `import`
    names: tuple[str, ...]
    line: int


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for top in PACKAGES for p in (ROOT / top).rglob("*.py")}


SOURCES = _sources()
PACKAGE_NAMES = {name for name, path in SOURCES.items() if path.name == "__init__.py"}


def _imports() -> list[Import]:
    found = []
    for module, path in SOURCES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = tuple(alias.name for alias in node.names)
                found.append(Import(module, node.module, names, node.lineno))
            elif isinstance(node, ast.Import):
                found.extend(Import(module, alias.name, (), node.lineno) for alias in node.names)
    return [i for i in found if i.target.split(".")[0] in PACKAGES]


IMPORTS = _imports()


def package_of(module: str) -> str:
    """The package a module belongs to: itself for a package, else its parent."""
    return module if module in PACKAGE_NAMES else module.rpartition(".")[0]


def owner(target: str) -> str:
    """The project module a dotted import target names (a name inside a module is cut)."""
    while target not in SOURCES and "." in target:
        target = target.rpartition(".")[0]
    return target


def _in(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


# (room, rooms it must not import)
FORBIDDEN = [
    ("schemas", ("aggregation", "invoicing", "metering")),
    ("aggregation", ("invoicing", "metering")),
    ("invoicing", ("metering",)),
    ("metering.runtime", ("metering.closing", "metering.stream", "metering.api",
                          "metering.producer", "metering.cli")),
    ("metering.stream", ("invoicing", "metering.api", "metering.producer", "metering.closing",
                         "metering.runtime", "metering.cli")),
    ("metering.producer", ("metering.stream", "metering.api", "metering.closing",
                           "metering.runtime", "metering.cli", "invoicing", "aggregation")),
    ("metering.api", ("metering.stream", "metering.producer", "metering.cli")),
    ("metering.closing", ("metering.stream", "metering.api", "metering.producer",
                          "metering.cli")),
    ("metering.local", ("metering.stream", "metering.api", "metering.producer",
                        "metering.closing", "metering.runtime", "metering.cli", "invoicing",
                        "aggregation")),
]


def test_the_rooms_exist() -> None:
    for room in ("metering.stream", "metering.api", "metering.producer", "metering.cli",
                 "metering.local", "metering.runtime", "metering.closing", "invoicing.plans",
                 "schemas.wire", "schemas.periods"):
        assert room in SOURCES, room


@pytest.mark.parametrize(("room", "forbidden"), FORBIDDEN, ids=[r for r, _ in FORBIDDEN])
def test_imports_point_one_way(room: str, forbidden: tuple[str, ...]) -> None:
    wrong = [f"{i.module}:{i.line} imports {i.target}" for i in IMPORTS
             if _in(i.module, room) and any(_in(owner(i.target), f) for f in forbidden)]
    assert wrong == []


def test_nothing_outside_the_cli_imports_it() -> None:
    wrong = [f"{i.module}:{i.line}" for i in IMPORTS
             if _in(owner(i.target), "metering.cli") and not _in(i.module, "metering.cli")]
    assert wrong == []


def test_no_import_circle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in SOURCES}
    for i in IMPORTS:
        target = owner(i.target)
        # `from package import name` may name a submodule: the edge goes to it
        for name in i.names:
            if f"{target}.{name}" in SOURCES:
                graph[i.module].add(f"{target}.{name}")
        # importing from a package runs its __init__ first, submodule or not
        if target != i.module:
            graph[i.module].add(target)
    circles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circles.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert circles[:3] == []


def test_each_package_states_its_public_names() -> None:
    for package in sorted(PACKAGE_NAMES):
        tree = ast.parse(SOURCES[package].read_text(encoding="utf-8"))
        declared = [n for n in tree.body if isinstance(n, ast.Assign | ast.AnnAssign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__"
                            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))]
        assert declared, f"{package}/__init__.py has no __all__"


def _public_names(package: str) -> set[str]:
    tree = ast.parse(SOURCES[package].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                return {ast.literal_eval(e) for e in getattr(node.value, "elts", [])}
    return set()


def _shared_by(module: str, target_package: str) -> bool:
    """Modules of an enclosing package (metering.settings for metering.stream.app) are
    shared modules, imported by module: the top package's __init__ stays empty so that
    the producer imports nothing it does not need."""
    return _in(package_of(module), target_package)


def test_other_packages_are_imported_through_their_public_names() -> None:
    wrong = []
    for i in IMPORTS:
        target = owner(i.target)
        home = package_of(i.module)
        target_package = package_of(target)
        if _in(home, target_package) and (target_package == home or _shared_by(
                i.module, target_package)):
            continue  # inside its own package, or a shared module of an enclosing one
        if target in PACKAGE_NAMES:
            public = _public_names(target)
            wrong += [f"{i.module}:{i.line} {target}.{n} is not in __all__"
                      for n in i.names if n not in public and f"{target}.{n}" not in SOURCES]
        else:
            wrong.append(f"{i.module}:{i.line} imports {i.target} instead of {target_package}")
    assert wrong == []


def test_no_docstring_points_users_to_a_file_they_do_not_have() -> None:
    shipped = [*SOURCES.values(), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    here = Path(__file__).resolve()
    assert [str(p) for p in shipped if p != here
            and "ARCHITECTURE" in p.read_text(encoding="utf-8")] == []
