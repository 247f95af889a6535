"""Cached results on disk: arrays keyed by a hash of their configuration, written atomically,
read without unpickling.

A cache entry is one ``.npz`` file holding named NumPy arrays, the metadata as JSON (stored as a
0-d unicode array) and a SHA-256 checksum over both. Typical use::

    from analysis_lib import io

    arrays = io.cached("tune_lr", {"problem": "rosenbrock", "steps": 500},
                       lambda: {"lr": lrs, "distance": distances})

:func:`cached` returns the stored arrays when an entry for the configuration exists and is
intact, and otherwise calls ``compute`` and writes its result. A truncated, corrupt or tampered
file is detected (:class:`CacheCorruptError`), reported with a warning and recomputed; it is
never trusted. Files go to :func:`data_dir`: ``$ANALYSIS_LIB_DATA`` when set, else
``data/cache/`` at the project root; :func:`cached` checks that the folder is writable before
it computes anything (:func:`check_writable`).

:func:`describe` and :func:`callable_identity` give the content of a value or a callable as
JSON-able data (tensors by digest, functions by byte code, closure values and globals, partials
by their arguments): the one notion of identity that landscape cache keys and training
checkpoints use. Every write goes through :func:`write_atomically` (synced, then renamed).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import os
import re
import types
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields, is_dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATA_ENV_VAR",
    "CacheCorruptError",
    "UnidentifiableError",
    "cache_path",
    "cached",
    "callable_identity",
    "canonical_json",
    "check_entry_path",
    "check_writable",
    "config_key",
    "data_dir",
    "describe",
    "load_arrays",
    "project_root",
    "save_arrays",
    "write_atomically",
]

#: Environment variable that, when set, names the folder :func:`data_dir` returns.
DATA_ENV_VAR = "ANALYSIS_LIB_DATA"

_META = "__meta__"
_CHECKSUM = "__checksum__"
_FORMAT = 1  # version of the file layout, stored in the metadata
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_ARRAY_NAME_RE = re.compile(r"[A-Za-z0-9_]+")


class CacheCorruptError(Exception):
    """A cache file is truncated, unreadable, incomplete or fails its checksum."""


# -- keys -------------------------------------------------------------------------------------
def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON data: tuples become lists, NumPy scalars Python numbers,
    dataclass instances ``{"type": name, **fields}``, paths strings."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"Invalid config: {where} is {value!r} (JSON has no NaN or inf)")
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"Invalid config: key {k!r} in {where} is not a string")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "biuf":
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value.tolist())]
    if is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **_plain(asdict(value), where)}
    raise ValueError(
        f"Invalid config: {where} is a {type(value).__name__} ({value!r}), which has no JSON form"
    )


def canonical_json(config: Mapping[str, Any]) -> str:
    """``config`` as canonical JSON: sorted keys, no whitespace, floats written exactly
    (shortest round-trip repr), tuples as lists.

    Raises:
        ValueError: ``config`` is not a dict with string keys, or holds a value without a JSON
            form (a function, an object, NaN, ...); the message names where it is.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"Invalid config: {config!r} (expected a dict)")
    return json.dumps(
        _plain(config, "config"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def config_key(config: Mapping[str, Any], length: int = 16) -> str:
    """A short hex key for ``config``: the first ``length`` hex digits of the SHA-256 of its
    :func:`canonical_json`. Equal configurations (key order, tuples vs lists, NumPy vs Python
    numbers aside) get equal keys."""
    if not isinstance(length, int) or not 8 <= length <= 64:
        raise ValueError(f"Invalid length: {length!r} (expected an integer in [8, 64])")
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:length]


# -- identities of values and callables ---------------------------------------------------------
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


def check_writable(folder: str | os.PathLike, what: str = "folder") -> Path:
    """Create ``folder`` if missing and check that a file can be created in it (by creating and
    removing one), so that a long computation does not end in a failed write.

    Raises:
        ValueError: the folder cannot be created or written to; the message names it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{uuid.uuid4().hex[:12]}.tmp"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"Invalid {what}: cannot write to the folder {folder} "
            f"({type(exc).__name__}: {exc.strerror or exc})"
        ) from exc
    return folder


# -- the folder -------------------------------------------------------------------------------
def project_root() -> Path | None:
    """The folder holding ``pyproject.toml`` next to the ``analysis_lib`` package, or None when
    the package is installed somewhere without one (e.g. site-packages). Relative values of
    ``$ANALYSIS_LIB_DATA`` and ``$ANALYSIS_LIB_FIGURES`` are taken from it."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def data_dir() -> Path:
    """The folder cached results are kept in, created if missing.

    ``$ANALYSIS_LIB_DATA`` when it is set and not empty (a relative value is taken relative to
    the project root, or to the working directory when the package is installed elsewhere);
    otherwise ``data/cache/`` at the project root (``./data/cache`` without one). A folder that
    cannot be created (e.g. the path of a file) raises a ValueError naming it.
    """
    root = project_root()
    base = root if root is not None else Path.cwd()
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    folder = base / Path(env).expanduser() if env else base / "data" / "cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        source = f" (from ${DATA_ENV_VAR})" if env else ""
        raise ValueError(
            f"Invalid data folder {folder}{source}: it cannot be created "
            f"({type(exc).__name__}: {exc.strerror or exc})"
        ) from exc
    return folder


# -- files ------------------------------------------------------------------------------------
def write_atomically(path: str | os.PathLike, data: bytes, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and
    ``os.replace``: readers (and an interrupted run) see the old file or the complete new one,
    never a half-written one. ``mode``: the new file's permissions (less the umask)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _checksum(arrays: Mapping[str, np.ndarray], meta_json: str) -> str:
    h = hashlib.sha256()
    h.update(meta_json.encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode("utf-8"))
        h.update(a.reshape(-1).view(np.uint8) if a.size else b"")
    return h.hexdigest()


def _check_arrays(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise ValueError(f"Invalid arrays: {type(arrays).__name__} (expected a dict of arrays)")
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not _ARRAY_NAME_RE.fullmatch(name) or name.startswith("__"):
            raise ValueError(
                f"Invalid arrays key: {name!r} (expected letters, digits and '_', "
                "not starting with '__')"
            )
        a = np.asarray(value)
        if a.dtype.hasobject or a.dtype.kind not in "biufcUS":
            raise ValueError(
                f"Invalid arrays[{name!r}]: dtype {a.dtype} (numbers, booleans or "
                "strings only; nothing that would need pickling)"
            )
        out[name] = a
    return out


def save_arrays(
    path: str | os.PathLike, arrays: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``arrays`` (names -> NumPy arrays of numbers, booleans or strings) and ``meta``
    (JSON-able data) to the ``.npz`` file ``path``, atomically, with a SHA-256 checksum over
    both. Returns the path.

    Raises:
        ValueError: a bad array name or dtype, or ``meta`` without a JSON form.
    """
    arrays = _check_arrays(arrays)
    meta_json = canonical_json({"format": _FORMAT, "meta": dict(meta or {})})
    buf = BytesIO()
    np.savez_compressed(
        buf,
        **arrays,
        **{_META: np.array(meta_json), _CHECKSUM: np.array(_checksum(arrays, meta_json))},
    )
    path = Path(path)
    write_atomically(path, buf.getvalue())
    return path


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The ``(arrays, meta)`` stored by :func:`save_arrays` in ``path``; nothing is unpickled.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CacheCorruptError: the file is truncated, not a readable archive, lacks its metadata or
            checksum, or its content does not match the checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no cache file at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise CacheCorruptError(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from exc
    try:
        meta_json = str(stored.pop(_META)[()])
        checksum = str(stored.pop(_CHECKSUM)[()])
    except (KeyError, IndexError, ValueError) as exc:
        raise CacheCorruptError(f"{path.name}: no metadata or checksum") from exc
    if _checksum(stored, meta_json) != checksum:
        raise CacheCorruptError(f"{path.name}: checksum mismatch")
    try:
        meta = json.loads(meta_json)["meta"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheCorruptError(f"{path.name}: unreadable metadata") from exc
    return stored, meta


def check_entry_path(path: str | os.PathLike, what: str = "cache entry") -> Path:
    """``path`` when a file can be written there: nothing exists at it yet, or a regular file
    (a symbolic link to one counts). A directory, or anything else that is not a file, raises a
    ValueError naming it, so that the work is not done only to fail at the write."""
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ValueError(
            f"Invalid {what}: {path} is {kind} (the entry is written there as a file); "
            "remove or rename it"
        )
    return path


def cache_path(name: str, config: Mapping[str, Any]) -> Path:
    """Where :func:`cached` keeps the entry ``name`` for ``config``:
    ``data_dir() / f"{name}-{config_key(config)}.npz"``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"Invalid name: {name!r} (expected letters, digits, '_' and '-')")
    return data_dir() / f"{name}-{config_key(config)}.npz"


def cached(
    name: str,
    config: Mapping[str, Any],
    compute: Callable[[], Mapping[str, Any]],
    *,
    refresh: bool = False,
) -> dict[str, np.ndarray]:
    """The arrays ``compute()`` returns for ``config``, computed once and kept on disk.

    A hit (an intact file whose stored configuration equals ``config``) returns the stored
    arrays without calling ``compute``. A miss calls ``compute`` (which returns a dict of
    arrays), writes the result atomically and returns it (as NumPy arrays). A corrupt file is
    reported with a ``RuntimeWarning`` and recomputed; so is an entry whose stored
    configuration differs (a key collision). ``refresh=True`` always recomputes.

    Raises:
        ValueError: a bad ``name``, a ``config`` without a JSON form, a cache folder that
            cannot be written to or an entry path that is a directory (both checked before
            ``compute`` is called), or a result of
            ``compute`` that :func:`save_arrays` cannot store.
    """
    path = check_entry_path(cache_path(name, config))
    wanted = json.loads(canonical_json(config))
    if not refresh and path.is_file():
        try:
            arrays, meta = load_arrays(path)
        except CacheCorruptError as exc:
            warnings.warn(f"corrupt cache entry recomputed: {exc}", RuntimeWarning, stacklevel=2)
        else:
            if meta.get("name") == name and meta.get("config") == wanted:
                return arrays
            warnings.warn(
                f"cache entry {path.name} holds another configuration; recomputed",
                RuntimeWarning,
                stacklevel=2,
            )
    check_writable(path.parent, "cache folder")  # before the work, not after it
    result = _check_arrays(compute())
    save_arrays(path, result, {"name": name, "config": wanted})
    return {k: np.array(v) for k, v in result.items()}
