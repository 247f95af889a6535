"""The library's public API as the book documents it.

A name is public when it is listed in the ``__all__`` of ``analysis_lib`` or of a module that some
public ``__all__`` lists (``analysis_lib.optim``, ``analysis_lib.problems.tasks``, ...). The API
pages are generated from this walk, so a name added to an ``__all__`` appears in the book without
editing the docs, and the book's tests check the pages against the same walk.

A name that a module re-exports from another public module (``analysis_lib.problems.Task`` is
``analysis_lib.problems.tasks.Task``) is documented once, where the walk meets it first; later
modules list it as an alias pointing there.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass, field

KINDS = ("modules", "classes", "exceptions", "functions", "data", "aliases")


@dataclass
class Constant:
    """A public name that is neither a module, a class nor a function."""

    name: str  # the full dotted name it is documented under
    type: str  # its type's name
    value: str  # its repr, when short enough to read in a signature line; else ""
    doc: list[str] = field(default_factory=list)  # its ``#:`` comment, found where it is defined


def _kind(obj: object) -> str:
    if inspect.ismodule(obj):
        return "modules"
    if inspect.isclass(obj):
        return "exceptions" if issubclass(obj, BaseException) else "classes"
    if inspect.isroutine(obj):
        return "functions"
    return "data"


def _is_private(cls: type) -> bool:
    return any(part.startswith("_") for part in [*cls.__module__.split("."), cls.__name__])


def inherited_from_private_bases(cls: type, root: str = "analysis_lib") -> str | None:
    """For a class that inherits methods from a private base of the library (AdamNX's
    ``step`` and ``load_state_dict`` come from ``optim._base.AdamFamily``): the names of the
    other classes of its MRO, for autodoc's ``:inherited-members:`` option, which then shows the
    private bases' members on the class (public bases are documented themselves, torch's and
    Python's are not the library's). None when it has no private base."""
    ancestors = cls.__mro__[1:]
    if not any(c.__module__.startswith(root) and _is_private(c) for c in ancestors):
        return None
    return ", ".join(
        dict.fromkeys(
            c.__name__ for c in ancestors if not c.__module__.startswith(root) or not _is_private(c)
        )
    )


def _attribute_doc(module_name: str, name: str, value: object) -> list[str]:
    """The ``#:`` comment of ``name`` where ``value`` is defined: in ``module_name`` itself or in
    one of its submodules (a package re-exports its modules' names)."""
    from sphinx.pycode import ModuleAnalyzer, PycodeError

    submodules = sorted(
        m
        for m, mod in list(sys.modules.items())
        if m.startswith(module_name + ".") and getattr(mod, name, None) is value
    )
    candidates = [module_name, *submodules]
    for candidate in candidates:
        try:
            docs = ModuleAnalyzer.for_module(candidate).find_attr_docs()
        except PycodeError:
            continue
        lines = docs.get(("", name))
        if lines:
            return list(lines)
    return []


def _constant(module_name: str, name: str, value: object) -> Constant:
    text = repr(value)
    short = text if len(text) <= 80 and "\n" not in text else ""
    return Constant(
        name=f"{module_name}.{name}",
        type=type(value).__name__,
        value=short,
        doc=_attribute_doc(module_name, name, value),
    )


def public_api(root: str = "analysis_lib") -> dict[str, dict[str, list]]:
    """Every public module under ``root`` -> its public names by kind.

    Returns:
        ``{module: {"modules": [...], "classes": [...], "exceptions": [...], "functions":
        [...], "data": [Constant, ...], "aliases": [(name, documented_name), ...]}}``, with full
        dotted names, in ``__all__`` order.
    """
    pages: dict[str, dict[str, list]] = {}
    homes: dict[int, str] = {}  # id of a documented object -> the name it is documented under

    def visit(module_name: str) -> None:
        if module_name in pages:
            return
        module = importlib.import_module(module_name)
        kinds: dict = {kind: [] for kind in KINDS}
        kinds["inherited"] = {}  # class -> the :inherited-members: option (see above)
        pages[module_name] = kinds
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            kind = _kind(value)
            full = f"{module_name}.{name}"
            if kind != "modules" and not isinstance(value, str | int | float | bool | None):
                if id(value) in homes:
                    kinds["aliases"].append((full, homes[id(value)]))
                    continue
                homes[id(value)] = full
            if kind == "modules":
                if value.__name__.startswith(root + "."):
                    kinds["modules"].append(value.__name__)
                    visit(value.__name__)
            elif kind == "data":
                kinds["data"].append(_constant(module_name, name, value))
            else:
                kinds[kind].append(full)
                if kind in ("classes", "exceptions"):
                    inherited = inherited_from_private_bases(value, root)
                    if inherited:
                        kinds["inherited"][full] = inherited

    visit(root)
    return pages


def public_names(root: str = "analysis_lib") -> dict[str, str]:
    """The full dotted name of every public function, class, exception and constant, mapped to
    the name it is documented under (itself, or for an alias the first name the walk met)."""
    names = {}
    for kinds in public_api(root).values():
        for kind in ("classes", "exceptions", "functions"):
            names.update({name: name for name in kinds[kind]})
        names.update({c.name: c.name for c in kinds["data"]})
        names.update(dict(kinds["aliases"]))
    return names
