"""The package's structure, read from the source: short functions and modules, clean boundaries.

The limits are the project's (docs/ARCHITECTURE.md): no function over 60 code lines, no
module over 800 lines, no import cycle, no private name imported across modules, ``__all__``
in every public module, and tests that use public names (or test a private helper in that
module's own test file). Each check names what breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmae_utils"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 800


def _check_none(found: set[str], what: str) -> None:
    assert not found, f"{what}: {sorted(found)}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """Lines of a function's body after its docstring that hold code (not blank, not comment)."""
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        if isinstance(first.value.value, str):
            body = body[1:]
    if not body:
        return 0
    span = range(body[0].lineno, node.end_lineno + 1)
    return sum(1 for i in span if lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """Absolute name of the module an ``ImportFrom`` reads from."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import in ``module``,
    top-level or inside functions (a lazy import still couples two modules)."""
    out = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:  # "from . import pp": the module itself
                    out.append((sub, None, node.lineno))
                else:
                    out.append((source, alias.name, node.lineno))
    return [(m, n, line) for m, n, line in out if m == "mmae_utils" or m.startswith("mmae_utils.")]


def test_functions_are_short():
    long = set()
    for name, tree in TREES.items():
        lines = MODULES[name].read_text().splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if code_lines(node, lines) > MAX_FUNCTION_LINES:
                    long.add(f"{name}.{node.name}")
    _check_none(long, f"functions over {MAX_FUNCTION_LINES} code lines")


def test_modules_are_short():
    long = {
        name
        for name, path in MODULES.items()
        if len(path.read_text().splitlines()) > MAX_MODULE_LINES
    }
    _check_none(long, f"modules over {MAX_MODULE_LINES} lines")


def _graph() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _, _ in imports(name):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    # a package importing its own submodules is how packages are built, not a cycle
    graph = {
        name: {t for t in targets if not (_is_package(t) and name.startswith(f"{t}."))}
        for name, targets in _graph().items()
    }
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _private_attribute_uses(tree: ast.AST, aliases: dict[str, str]) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in aliases and _is_private(node.attr):
                out.append((f"{aliases[node.value.id]}.{node.attr}", node.lineno))
    return out


def _module_aliases(module: str) -> dict[str, str]:
    """Local names bound to mmae_utils modules in ``module`` (``from . import pp as p``)."""
    aliases = {}
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    return aliases


def test_no_private_name_is_imported_across_modules():
    found = set()
    for name in MODULES:
        for target, imported, _ in imports(name):
            if imported is not None and _is_private(imported) and target != name:
                found.add(f"{name} imports {target}.{imported}")
        for use, _ in _private_attribute_uses(TREES[name], _module_aliases(name)):
            found.add(f"{name} uses {use}")
    _check_none(found, "private names used across modules")


def test_public_modules_have_all():
    missing = []
    for name, tree in TREES.items():
        if any(_is_private(part) for part in name.split(".")):
            continue
        names = [
            t.id
            for n in tree.body
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        ]
        if "__all__" not in names:
            missing.append(name)
    assert not missing, f"public modules without __all__: {missing}"


@pytest.mark.parametrize(
    "test_file", sorted((ROOT / "tests").glob("test_*.py")), ids=lambda p: p.name
)
def test_tests_use_public_names(test_file):
    """A test reaches a private helper only in the test file of that helper's module."""
    own = test_file.stem.removeprefix("test_")
    tree = ast.parse(test_file.read_text())
    found = []
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmae_utils"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    aliases[alias.asname or alias.name] = full
                elif _is_private(alias.name):
                    found.append((node.module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    for use, line in _private_attribute_uses(tree, aliases):
        module, attr = use.rsplit(".", 1)
        found.append((module, attr, line))
    wrong = [
        f"line {line}: {module}.{attr}"
        for module, attr, line in found
        if module.rsplit(".", 1)[-1].lstrip("_") != own
    ]
    assert not wrong, f"{test_file.name} uses private names of other modules: {wrong}"
