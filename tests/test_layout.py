"""The library's shape, checked: lower layers never import higher ones, and no function is
longer than a reader can follow (the limits of the design, kept from coming back)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "analysis_lib"

#: Layers, bottom up: a module may import from its own layer and the ones below.
LAYERS = [
    {"__init__", "_checks", "_evaluation", "_identity", "cluster", "io", "stats"},
    {"optim", "problems"},
    {"training", "trajectory"},
    {"curvature", "landscape", "sharpness", "rescaling"},
    {"sweep"},
    {"plots"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_LINES = 80  # a function's code, its docstring not counted


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _source(node: ast.ImportFrom, here: tuple[str, ...]) -> list[str] | None:
    """The module path inside the package that ``from ... import`` reads from (relative to
    the package; ``[]`` is the package itself), or None when it is not the library."""
    if node.level == 0:
        parts = (node.module or "").split(".")
        return parts[1:] if parts[0] == "analysis_lib" else None
    parts = [*here[: len(here) - node.level + 1], *(node.module or "").split(".")]
    return [p for p in parts if p]


def _imported(path: Path) -> set[str]:
    """The top-level library modules that ``path`` imports from."""
    here = path.relative_to(PACKAGE).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            parts = [a.name.split(".") for a in node.names]
            found |= {p[1] for p in parts if p[0] == "analysis_lib" and len(p) > 1}
        elif isinstance(node, ast.ImportFrom):
            parts = _source(node, here)
            if parts is None:
                continue
            if parts:
                found.add(parts[0])
            else:  # from .. import io, training
                found |= {a.name if (PACKAGE / a.name).exists() or
                          (PACKAGE / f"{a.name}.py").exists() else "__init__"
                          for a in node.names}  # fmt: skip
    return found


def test_every_module_has_a_layer():
    assert {_top(p) for p in _modules()} <= set(RANK), "a new module needs a place in LAYERS"


def test_every_public_module_is_an_attribute_of_the_package():
    """``import analysis_lib`` then ``analysis_lib.<module>`` works for every public module (the
    package imports them on first use)."""
    import analysis_lib

    public = {_top(p) for p in _modules()} - {"__init__"}
    public = {m for m in public if not m.startswith("_")}
    assert public <= set(analysis_lib.__all__)
    for name in sorted(public):
        assert getattr(analysis_lib, name).__name__ == f"analysis_lib.{name}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_higher_layer(path):
    me = _top(path)
    upward = sorted(m for m in _imported(path) - {me} if RANK.get(m, -1) > RANK[me])
    assert not upward, f"{me} (layer {RANK[me]}) imports {upward} from a higher layer"


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            body = body[1:] or body
    return fn.end_lineno - body[0].lineno + 1


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if (n := _code_lines(node)) > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n})")
    assert not long, f"functions over {MAX_LINES} lines of code: {long}"


#: Private modules another module may import (and import names from): the private core at the
#: bottom layer, and a package's own private modules (``_common``, ``_objective``, ...) from
#: inside that package.
PRIVATE_CORE = {"_checks", "_evaluation", "_identity"}

#: ``(importing module, imported private name)`` pairs let through, each with its reason.
PRIVATE_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}


def _private_imports(path: Path) -> list[str]:
    """The private names (``_x``, not dunders) that ``path`` imports from another module of the
    package, where neither the name nor its module is one of the allowed private modules."""
    here = path.relative_to(PACKAGE).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        parts = _source(node, here) if isinstance(node, ast.ImportFrom) else None
        if parts is None:
            continue
        for alias in node.names:
            name = alias.name
            if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
                continue
            target = [*parts, name]
            is_module = (PACKAGE.joinpath(*target).with_suffix(".py")).exists() or (
                PACKAGE.joinpath(*target) / "__init__.py"
            ).exists()
            own_package = is_module and tuple(parts) == here and len(here) > 0
            if is_module and (name in PRIVATE_CORE or own_package):
                continue
            found.append(f"{'.'.join(parts) or '__init__'}.{name}")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_private_name_of_another(path):
    """A private name another module needs is a missing public helper: ``from .x import _y``
    is refused (private modules of the core and of one's own package are allowed)."""
    me = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    found = [n for n in _private_imports(path) if (me, n) not in PRIVATE_IMPORTS_ALLOWED]
    assert not found, f"{me} imports the private names {found}"


MAX_MODULE_LINES = 500  # lines of code: a module over ~500 is usually two units


def _module_code_lines(text: str) -> int:
    """Lines of code of a module: not blank, not a comment, not in a docstring (documentation
    and examples do not make a unit bigger)."""
    documented: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = body[0] if body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    documented.update(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for i, line in enumerate(text.splitlines(), 1)
        if i not in documented and line.strip() and not line.lstrip().startswith("#")
    )


def test_module_lines_of_code_are_counted_without_documentation():
    text = '"""Doc.\n\nMore."""\n\n# a comment\nx = 1\n\n\ndef f():\n    """Doc."""\n    return x\n'
    assert _module_code_lines(text) == 3  # x = 1, def f():, return x


def test_no_module_is_longer_than_the_limit():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := _module_code_lines(p.read_text(encoding="utf-8"))) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines of code: {long}"
