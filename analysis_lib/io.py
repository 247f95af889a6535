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

A caller that computes between the read and the write (a landscape grid resuming from its own
partial file) uses the two halves of :func:`cached`: :func:`load_entry` and :func:`store_entry`.
Every write goes through :func:`write_atomically` (synced, then renamed).

The identity of values and callables (:func:`describe`, :func:`callable_identity`,
:class:`UnidentifiableError`), which cache keys are built from, lives beside this module in
:mod:`analysis_lib._identity` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, is_dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from ._identity import UnidentifiableError, callable_identity, describe

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
    "load_entry",
    "project_root",
    "save_arrays",
    "store_entry",
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

    Args:
        config: a mapping with string keys of JSON-able values (numbers, strings, None,
            lists/tuples, 1-d numeric arrays, paths, dataclasses, nested mappings).

    Returns:
        The JSON text.

    Example:
        >>> canonical_json({"b": (1, 2.5), "a": "x"})
        '{"a":"x","b":[1,2.5]}'

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
    numbers aside) get equal keys.

    Args:
        config: the configuration, as for :func:`canonical_json`.
        length: how many hex digits to keep, 8 to 64 (default 16).

    Returns:
        The lowercase hex key.

    Raises:
        ValueError: ``length`` is not an integer in [8, 64], or ``config`` has no JSON form (see
            :func:`canonical_json`).

    Example:
        >>> config_key({"steps": 500, "problem": "rosenbrock"})
        '9ba87a975809e956'
        >>> config_key({"problem": "rosenbrock", "steps": 500}, length=8)
        '9ba87a97'
    """
    if not isinstance(length, int) or not 8 <= length <= 64:
        raise ValueError(f"Invalid length: {length!r} (expected an integer in [8, 64])")
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:length]


def check_writable(folder: str | os.PathLike, what: str = "folder") -> Path:
    """Create ``folder`` if missing and check that a file can be created in it (by creating and
    removing one), so that a long computation does not end in a failed write.

    Args:
        folder: the folder to create and check.
        what: what the folder is, for the error message (default ``"folder"``).

    Returns:
        ``folder`` as a ``Path``.

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
    ``$ANALYSIS_LIB_DATA`` and ``$ANALYSIS_LIB_FIGURES`` are taken from it.

    Returns:
        The project root, or None.
    """
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def data_dir() -> Path:
    """The folder cached results are kept in, created if missing.

    ``$ANALYSIS_LIB_DATA`` when it is set and not empty (a relative value is taken relative to
    the project root, or to the working directory when the package is installed elsewhere);
    otherwise ``data/cache/`` at the project root (``./data/cache`` without one). A folder that
    cannot be created (e.g. the path of a file) raises a ValueError naming it.

    Returns:
        The folder, as a ``Path``.

    Raises:
        ValueError: the folder cannot be created; the message names it (and
            ``$ANALYSIS_LIB_DATA`` when it came from there).
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
    never a half-written one. ``mode``: the new file's permissions (less the umask).

    Args:
        path: the file to write (replaced when it exists).
        data: the bytes to write.
        mode: permission bits of a new file, default ``0o666`` (less the umask).

    Raises:
        OSError: the temporary file cannot be created, written or renamed; it is removed.
    """
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

    Args:
        path: the ``.npz`` file to write (replaced when it exists).
        arrays: array names (letters, digits, ``_``; not starting with ``__``) -> array-likes.
        meta: JSON-able metadata, default none (``{}``).

    Returns:
        ``path`` as a ``Path``.

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

    Args:
        path: the ``.npz`` file written by :func:`save_arrays`.

    Returns:
        ``(arrays, meta)``: array names -> NumPy arrays, and the metadata dict.

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
    ValueError naming it, so that the work is not done only to fail at the write.

    Args:
        path: where the entry will be written.
        what: what the entry is, for the error message (default ``"cache entry"``).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: something other than a regular file exists at ``path``.
    """
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
    ``data_dir() / f"{name}-{config_key(config)}.npz"``.

    Args:
        name: the entry's name: letters, digits, ``_`` and ``-``.
        config: the configuration, as for :func:`canonical_json`.

    Returns:
        The path of the ``.npz`` file (which may not exist).

    Raises:
        ValueError: a bad ``name``, a ``config`` without a JSON form, or a data folder that
            cannot be created (see :func:`data_dir`).
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"Invalid name: {name!r} (expected letters, digits, '_' and '-')")
    return data_dir() / f"{name}-{config_key(config)}.npz"


def load_entry(name: str, config: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The arrays stored for ``config`` under ``name``, or None when there are none to trust:
    no entry, a corrupt file or an entry for another configuration (a key collision), each of
    the last two reported with a ``RuntimeWarning``. The first half of :func:`cached`.

    Args:
        name: the entry's name: letters, digits, ``_`` and ``-``.
        config: the configuration the entry was stored for.

    Returns:
        Array names -> NumPy arrays, or None.

    Raises:
        ValueError: a bad ``name``, a ``config`` without a JSON form, an entry path that is a
            directory.
    """
    path = check_entry_path(cache_path(name, config))
    if not path.is_file():
        return None
    try:
        arrays, meta = load_arrays(path)
    except CacheCorruptError as exc:
        warnings.warn(f"corrupt cache entry recomputed: {exc}", RuntimeWarning, stacklevel=3)
        return None
    if meta.get("name") == name and meta.get("config") == json.loads(canonical_json(config)):
        return arrays
    warnings.warn(
        f"cache entry {path.name} holds another configuration; recomputed",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def store_entry(
    name: str, config: Mapping[str, Any], arrays: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Write ``arrays`` as the entry ``name`` for ``config`` (atomically) and return them as NumPy
    arrays. The second half of :func:`cached`: check the folder with :func:`check_writable`
    before computing what is stored here.

    Args:
        name: the entry's name: letters, digits, ``_`` and ``-``.
        config: the configuration the entry is stored for.
        arrays: array names -> array-likes of numbers, booleans or strings.

    Returns:
        Array names -> NumPy arrays (copies of what was written).

    Raises:
        ValueError: a bad ``name``, a ``config`` without a JSON form, or ``arrays`` that
            :func:`save_arrays` cannot store.
    """
    path = check_entry_path(cache_path(name, config))
    result = _check_arrays(arrays)
    save_arrays(path, result, {"name": name, "config": json.loads(canonical_json(config))})
    return {k: np.array(v) for k, v in result.items()}


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

    Args:
        name: the entry's name: letters, digits, ``_`` and ``-``.
        config: the configuration the result is keyed by (JSON-able, see :func:`canonical_json`).
        compute: called with no arguments on a miss; returns array names -> array-likes.
        refresh: recompute and overwrite even when an intact entry exists (default False).

    Returns:
        Array names -> NumPy arrays.

    Raises:
        ValueError: a bad ``name``, a ``config`` without a JSON form, a cache folder that
            cannot be written to or an entry path that is a directory (both checked before
            ``compute`` is called), or a result of
            ``compute`` that :func:`save_arrays` cannot store.
    """
    path = check_entry_path(cache_path(name, config))
    arrays = None if refresh else load_entry(name, config)
    if arrays is not None:
        return arrays
    check_writable(path.parent, "cache folder")  # before the work, not after it
    return store_entry(name, config, compute())
