"""The identity of values and callables, as JSON-able data that is equal for equal content.

:func:`describe` gives the content of a value (numbers and strings as they are, tensors and arrays
by digest, containers, dataclasses and modules by their fields); :func:`callable_identity` that of
a callable (functions by byte code, closure values and the globals they read, partials by their
arguments, bound methods by their object). It is the one notion of identity that landscape cache
keys and training checkpoints use (re-exported by :mod:`analysis_lib.io`, where callers find it);
a change to its output changes every stored cache key.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnidentifiableError", "callable_identity", "describe"]


class UnidentifiableError(ValueError):
    """A value (typically a callable) whose behaviour cannot be pinned down by its content."""


def _tensor_identity(t: Any) -> dict[str, Any]:
    import torch

    t = torch.as_tensor(t).detach().cpu().contiguous()
    h = hashlib.sha256()
    h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy
    return {"tensor": str(t.dtype), "shape": list(t.shape), "sha256": h.hexdigest()}


def _code_digest(code: types.CodeType, h) -> None:
    h.update(
        json.dumps(
            [code.co_argcount, code.co_kwonlyargcount, code.co_flags, list(code.co_names)]
        ).encode()
    )
    h.update(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, h)
        else:
            h.update(_const_text(const).encode())


def _const_text(const: Any) -> str:
    """A process-independent text for a code constant (frozensets are ordered by hash seed)."""
    if isinstance(const, frozenset):
        return "frozenset(" + ",".join(sorted(_const_text(c) for c in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ",".join(_const_text(c) for c in const) + ")"
    return f"{type(const).__name__}:{const!r}"


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', repr(obj))}"


def _function_identity(fn: types.FunctionType, where: str, seen: set[int]) -> dict[str, Any]:
    h = hashlib.sha256()
    _code_digest(fn.__code__, h)
    cells = []
    for i, cell in enumerate(fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            cells.append("<empty>")
            continue
        cells.append(
            _describe(value, f"{where} (closure variable {fn.__code__.co_freevars[i]})", seen)
        )
    used = {}
    for name in sorted(_global_names(fn.__code__)):
        if name not in fn.__globals__:
            continue  # an attribute name, or a builtin
        value = fn.__globals__[name]
        if isinstance(value, types.ModuleType):
            used[name] = {"module": value.__name__}
        elif isinstance(value, types.FunctionType) and "<" in value.__qualname__:
            used[name] = _describe(value, f"{where} (global {name})", seen)  # a lambda, followed
        elif isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
            used[name] = _qualified(value)  # named code: by its name, not followed
        else:
            used[name] = _describe(value, f"{where} (global {name})", seen)
    return {
        "function": _qualified(fn),
        "code": h.hexdigest(),
        "defaults": _describe(fn.__defaults__, f"{where} (defaults)", seen),
        "kwdefaults": _describe(fn.__kwdefaults__, f"{where} (defaults)", seen),
        "closure": cells,
        "globals": used,
    }


#: What a part of :func:`_describe` returns for a value that is not of its kinds.
_NOT_MINE = object()


def _describe(value: Any, where: str, seen: set[int]) -> Any:
    """The description of ``value`` (see :func:`describe`): plain values first, then, once
    ``value`` is known not to contain itself, containers, callables and objects with fields.
    ``where`` names the value in errors; ``seen`` holds the ids of the values it lies in."""
    out = _describe_plain(value, where, seen)
    if out is not _NOT_MINE:
        return out
    if id(value) in seen:
        return "<recursive>"
    seen = seen | {id(value)}
    for part in (_describe_container, _describe_callable, _describe_object):
        out = part(value, where, seen)
        if out is not _NOT_MINE:
            return out
    raise UnidentifiableError(
        f"{where} is a {type(value).__qualname__} ({value!r:.80}), whose content cannot be "
        "identified"
    )


def _describe_plain(value: Any, where: str, seen: set[int]) -> Any:
    """Numbers, strings, tensors and arrays (by content hash), dtypes, devices, paths,
    modules, classes and enum members; else ``_NOT_MINE``."""
    import torch

    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return _describe(value.item(), where, seen)
    if isinstance(value, torch.dtype | torch.device | Path):
        return str(value)
    if isinstance(value, torch.Tensor | np.ndarray):
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise UnidentifiableError(f"{where}: an object array cannot be identified")
        return _tensor_identity(value)
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    if isinstance(value, type):
        return {"class": _qualified(value)}
    if isinstance(value, enum.Enum):
        return {"enum": _qualified(type(value)), "value": _describe(value.value, where, seen)}
    return _NOT_MINE


def _describe_container(value: Any, where: str, seen: set[int]) -> Any:
    """Lists and tuples in order; sets and mappings with non-string keys sorted by the JSON of
    their items' descriptions (so the same in every process); else ``_NOT_MINE``."""
    if isinstance(value, list | tuple):
        return [_describe(v, f"{where}[{i}]", seen) for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_describe(v, where, seen) for v in value]
        return {"set": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _describe(v, f"{where}[{k!r}]", seen) for k, v in value.items()}
        pairs = [[_describe(k, where, seen), _describe(v, where, seen)] for k, v in value.items()]
        return {"pairs": sorted(pairs, key=lambda p: json.dumps(p[0], sort_keys=True))}
    return _NOT_MINE


def _describe_callable(value: Any, where: str, seen: set[int]) -> Any:
    """Partials (function and arguments), bound methods (function and object), Python
    functions (:func:`_function_identity`) and builtins (by name, and their object); else
    ``_NOT_MINE``."""
    if isinstance(value, functools.partial):
        return {
            "partial": _describe(value.func, where, seen),
            "args": _describe(value.args, f"{where} (partial arguments)", seen),
            "keywords": _describe(value.keywords, f"{where} (partial arguments)", seen),
        }
    if isinstance(value, types.MethodType):
        return {
            "method": _describe(value.__func__, where, seen),
            "self": _describe(value.__self__, f"{where} (its object)", seen),
        }
    if isinstance(value, types.FunctionType):
        return _function_identity(value, where, seen)
    if isinstance(value, types.BuiltinFunctionType | types.BuiltinMethodType):
        owner = getattr(value, "__self__", None)
        out = {"builtin": _qualified(value)}
        if owner is not None and not isinstance(owner, types.ModuleType | type):
            out["self"] = _describe(owner, f"{where} (its object)", seen)
        return out
    return _NOT_MINE


def _describe_object(value: Any, where: str, seen: set[int]) -> Any:
    """An ``nn.Module`` (public attributes, tensors, children), a dataclass (its fields), a
    callable object with a ``__dict__`` (its ``__call__`` and attributes); else ``_NOT_MINE``."""
    import torch

    if isinstance(value, torch.nn.Module):
        attrs = {
            k: _describe(v, f"{where}.{k}", seen)
            for k, v in sorted(vars(value).items())
            if not k.startswith("_") and k != "training"
        }
        return {
            "nn.Module": _qualified(type(value)),
            "attributes": attrs,
            "tensors": _describe(value.state_dict(keep_vars=False), where, seen),
            "children": {k: _describe(m, f"{where}.{k}", seen) for k, m in value.named_children()},
        }
    if is_dataclass(value):
        return {
            "dataclass": _qualified(type(value)),
            **{
                f.name: _describe(getattr(value, f.name), f"{where}.{f.name}", seen)
                for f in fields(value)
            },
        }
    state = getattr(value, "__dict__", None)
    if callable(value) and isinstance(state, dict) and not hasattr(type(value), "__slots__"):
        call = type(value).__call__
        return {
            "object": _qualified(type(value)),
            "call": _describe(call, where, seen) if isinstance(call, types.FunctionType) else None,
            "attributes": _describe(dict(sorted(state.items())), where, seen),
        }
    return _NOT_MINE


def describe(value: Any, where: str = "value") -> Any:
    """A JSON-able description of ``value`` that is equal for equal content and differs when
    the content differs, the same in every process: numbers and strings as they are, tensors
    and arrays by dtype, shape and SHA-256, dataclasses and modules by their fields,
    callables as :func:`callable_identity` describes them.

    Raises:
        UnidentifiableError: ``value`` holds something whose content cannot be read (an object
            of a class without fields, an extension type); the message says where it is.
    """
    return _describe(value, where, set())


def callable_identity(fn: Callable, where: str = "callable") -> Any:
    """The identity of a callable as JSON-able data: two callables get equal identities only
    when their behaviour is fixed by equal content. A Python function (a lambda too) is
    identified by its qualified name, the SHA-256 of its byte code and constants (nested code
    included), its default arguments, the values of its closure cells and the values of the
    plain globals it reads (modules, classes and named functions it uses by their name); a
    ``functools.partial`` by its function and arguments; a bound method by its function and
    its object; a callable object (a dataclass such as a schedule, an ``nn.Module``, an object
    with attributes) by its class and attributes. Byte code differs between Python versions,
    so an identity is stable within one Python version.

    Raises:
        UnidentifiableError: ``fn`` is not callable, or reads an object whose content cannot be
            identified (the message says which); give such a callable an explicit key.
    """
    if not callable(fn):
        raise UnidentifiableError(f"{where} is a {type(fn).__qualname__}, not a callable")
    return _describe(fn, where, set())
