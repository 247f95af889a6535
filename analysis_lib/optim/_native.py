"""The one native kernel of the fused path: Ada2MS's phase-1 reduction on the CPU.

``Ada2MS(fused=True)`` needs, before any parameter moves, the sum of g^2 over every gradient of
the scope. Compiled by ``torch.compile`` that is one reduction kernel per tensor, and on the CPU
those read memory at about half the rate of the fused update (``benchmarks/bench_optimizers.py``
shows the gap). ``_square_sums.c`` does the whole bucket in one parallel pass instead; see the
comment at its top for how, and for its accuracy and determinism.

The C source is compiled on first use with the C compiler that ``torch.compile`` already needs on
the CPU (``$CC``, else ``cc``), with OpenMP, and the library is cached under
``$ANALYSIS_LIB_NATIVE_CACHE`` (default: ``~/.cache/analysis_lib``, or
``$XDG_CACHE_HOME/analysis_lib``). Loaded into a process that has imported torch, it shares
torch's OpenMP runtime. Where it cannot be built or does not apply (no compiler, another device,
bfloat16, a non-contiguous gradient) :func:`square_sums_ema_` returns False and the caller falls
back to the compiled reduction: the results agree to rounding either way. Setting
``ANALYSIS_LIB_NATIVE=0`` switches the kernel off.

**The cache and what it trusts.** Loading a shared library runs its code (its constructors) in
this process, so the cache is a place where whoever can write can run code as the user. The
threat is another local user (or a process running as another user) who plants a library, or
replaces ours, in the folder the loader reads. What stops it:

* The folder must be private to the user: it is created with mode 0o700, and one that is not
  owned by the current user, or that its group or others may write, is refused: nothing is
  built in it or loaded from it (:data:`last_error` and a warning say why and how to fix it; the
  optimizer falls back to the compiled reduction). This is the guard against planting: whoever
  can write the folder could also write any record of what the library should be.
* The file is named by a SHA-256 of what it is built from: the C source, the compiler's identity
  (its resolved path, its arguments and its ``--version`` output), the flags and the platform. A
  changed source or compiler gives another file, never a stale one.
* A build goes into a private temporary folder inside the cache, and is moved into place
  atomically (mode 0o600) together with a sidecar (``<library>.sha256``) holding the SHA-256 of
  its bytes. Before loading, the library and its sidecar must be regular files (not links) owned
  by the user and not writable by group or others, and the library's bytes must match the
  sidecar; it is hashed through the descriptor that is then loaded (``/proc/self/fd`` on Linux),
  so what was checked is what runs. A file that fails (an old build without a sidecar, a
  corrupted or replaced one) is never loaded: it is rebuilt. The hash catches corruption and
  stale builds; the folder's privacy is what keeps others out.

Not covered: the user's own account (anything running as the user can write the cache, and
its source), and the compiler itself (``$CC`` is trusted, as ``torch.compile`` trusts it).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..io import write_atomically

SOURCE = Path(__file__).with_name("_square_sums.c")
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp")
_FUNCTIONS = {torch.float32: "ada2ms_square_sums_f32", torch.float64: "ada2ms_square_sums_f64"}

_lock = threading.Lock()
last_error: str | None = None  # why the library could not be built or loaded, if it could not
# the library by the settings that locate it (see _settings); None: off, or could not be built
_loaded: dict[tuple[str | None, ...], ctypes.CDLL | None] = {}


_OFF = frozenset({"0", "false", "no", "off"})


def enabled() -> bool:
    """False when ``ANALYSIS_LIB_NATIVE`` is set to 0 (or "false", "no", "off").

    Returns:
        Whether the native kernel may be used.
    """
    return os.environ.get("ANALYSIS_LIB_NATIVE", "1").strip().lower() not in _OFF


def cache_dir() -> Path:
    """The folder of the built library: ``$ANALYSIS_LIB_NATIVE_CACHE``, else
    ``$XDG_CACHE_HOME/analysis_lib`` (default ``~/.cache/analysis_lib``).

    Returns:
        The path (not created here).
    """
    env = os.environ.get("ANALYSIS_LIB_NATIVE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "analysis_lib"


def compiler() -> list[str]:
    """The C compiler command: ``$CC`` split as a shell would, else ``cc``.

    Returns:
        The command as a list of arguments.
    """
    return shlex.split(os.environ.get("CC") or "cc")


@functools.lru_cache(maxsize=8)
def _compiler_identity(command: tuple[str, ...]) -> bytes:
    """What identifies the compiler ``command``: its resolved path, its arguments and what
    ``--version`` prints (b"not found" when it is not there)."""
    found = shutil.which(command[0])
    if found is None:
        return b"not found: " + command[0].encode()
    try:
        done = subprocess.run(
            [*command, "--version"], capture_output=True, timeout=60, stdin=subprocess.DEVNULL
        )
        version = done.stdout + b"\0" + done.stderr + f"\0{done.returncode}".encode()
    except (OSError, subprocess.SubprocessError) as exc:
        version = f"--version failed: {type(exc).__name__}".encode()
    head = " ".join([os.path.realpath(found), *command[1:]]).encode()
    return head + b"\0" + version


def library_path() -> Path:
    """Where the library for this source, compiler (its identity: path, arguments and
    version), flags and platform is cached.

    Returns:
        The path of the ``.so`` in :func:`cache_dir` (it may not exist yet).
    """
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        _compiler_identity(tuple(compiler())),
        " ".join(FLAGS).encode(),
        f"{sys.platform} {platform.machine()}".encode(),
    ):
        key.update(hashlib.sha256(part).digest())
    return cache_dir() / f"square_sums-{key.hexdigest()[:32]}.so"


def _digest_path(library: Path) -> Path:
    """The sidecar holding the SHA-256 of ``library``'s bytes, written when it was built."""
    return library.with_name(library.name + ".sha256")


def _unsafe(st: os.stat_result) -> str | None:
    """Why a file or folder with this status is not private to the user (None when it is):
    owned by someone else, or writable by its group or others."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is not None and st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(
            w
            for w, bit in (("its group", stat.S_IWGRP), ("others", stat.S_IWOTH))
            if st.st_mode & bit
        )
        return f"is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


class UnsafeCacheError(PermissionError):
    """The cache folder is not private to the user: nothing is built in or loaded from it."""


def _private_cache() -> Path:
    """The cache folder, created private (0o700) when missing; refused (UnsafeCacheError) when
    it is not a folder private to the user."""
    folder = cache_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.stat(folder)
    why = "is not a folder" if not stat.S_ISDIR(st.st_mode) else _unsafe(st)
    if why is not None:
        raise UnsafeCacheError(
            f"native kernel cache {folder} {why}: a library planted there would run in this "
            "process, so nothing is loaded from it; make it private to you "
            f"(chmod 700 {folder}, owned by you) or point ANALYSIS_LIB_NATIVE_CACHE at a "
            "private folder"
        )
    return folder


def _open_private(path: Path) -> int | None:
    """A read-only descriptor of ``path`` when it is a regular file (not a link) private to the
    user, else None."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and _unsafe(st) is None:
        return fd
    os.close(fd)
    return None


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _verified(library: Path) -> int | None:
    """A descriptor of ``library`` when it and its sidecar are private to the user and its
    bytes match the SHA-256 the sidecar recorded at build time; None otherwise (missing, not
    private, a link, or other bytes)."""
    sidecar = _open_private(_digest_path(library))
    if sidecar is None:
        return None
    try:
        expected = _read_all(sidecar)[:65].decode("ascii", "replace").strip()
    finally:
        os.close(sidecar)
    fd = _open_private(library)
    if fd is None:
        return None
    if len(expected) == 64 and hashlib.sha256(_read_all(fd)).hexdigest() == expected:
        return fd
    os.close(fd)
    return None


def _build(target: Path) -> None:
    """Compile SOURCE into ``target`` (in the private cache folder), in a private temporary
    folder, then move it into place atomically with its SHA-256 sidecar: a concurrent process
    sees all of it or none, and a failed build leaves nothing behind."""
    if shutil.which(compiler()[0]) is None:
        raise FileNotFoundError(f"C compiler not found: {compiler()[0]}")
    with tempfile.TemporaryDirectory(prefix=".building-", dir=target.parent) as work:
        built = Path(work) / target.name
        subprocess.run(
            [*compiler(), *FLAGS, str(SOURCE), "-o", str(built)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        data = built.read_bytes()
    write_atomically(target, data, mode=0o600)
    write_atomically(_digest_path(target), hashlib.sha256(data).hexdigest().encode() + b"\n", 0o600)


def _loadable(fd: int, path: Path) -> str:
    """A name ``dlopen`` opens as the file behind ``fd`` (what was verified), where the system
    offers one; else ``path``."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else str(path)


def _settings() -> tuple[str | None, ...]:
    return tuple(
        os.environ.get(k)
        for k in ("ANALYSIS_LIB_NATIVE", "CC", "ANALYSIS_LIB_NATIVE_CACHE", "XDG_CACHE_HOME")
    )


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built first if needed; None if it cannot be built or loaded
    (or the kernel is switched off).

    Returns:
        The ``ctypes.CDLL``, or None (the reason in ``last_error``).
    """
    settings = _settings()
    if settings in _loaded:  # the common case, without hashing the source again
        return _loaded[settings]
    with _lock:
        if settings not in _loaded:
            _loaded[settings] = _load() if enabled() else None
        return _loaded[settings]


def _load() -> ctypes.CDLL | None:
    global last_error
    try:
        _private_cache()
        path = library_path()
        fd = _verified(path)
        if fd is None:  # missing, an old build, corrupted or replaced: (re)built, never loaded
            _build(path)
            fd = _verified(path)
            if fd is None:
                raise OSError(f"{path}: the library just built does not match its SHA-256")
        try:
            lib = ctypes.CDLL(_loadable(fd, path))
        finally:
            os.close(fd)
        for name in _FUNCTIONS.values():
            fn = getattr(lib, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [
                ctypes.c_int64,
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_double,
                ctypes.c_int,
            ]
        return lib
    except subprocess.CalledProcessError as e:
        stderr = e.stderr.decode(errors="replace") if e.stderr else ""
        last_error = f"{' '.join(e.cmd[:1])} failed ({e.returncode}): {stderr.strip()[-2000:]}"
    except UnsafeCacheError as e:
        last_error = str(e)
        warnings.warn(f"{e}; Ada2MS uses the compiled reduction", RuntimeWarning, stacklevel=2)
    except (OSError, subprocess.SubprocessError, AttributeError) as e:
        last_error = f"{type(e).__name__}: {e}"
    return None


def _pointers(grads: list[Tensor], sums: list[Tensor]) -> tuple[list[int], ...] | None:
    """The gradients' and sums' addresses and the gradients' sizes, or None where the kernel
    does not apply: CPU tensors, gradients of one dtype (float32 or float64) and contiguous, and
    float64 sums of one element each. One pass, checks and all: this runs at every step."""
    if not grads or len(grads) != len(sums) or grads[0].dtype not in _FUNCTIONS:
        return None
    dtype, f64 = grads[0].dtype, torch.float64
    x, numel, target = [], [], []
    for g, s in zip(grads, sums, strict=True):
        if not (
            g.is_cpu
            and g.dtype == dtype
            and g.is_contiguous()
            and s.is_cpu
            and s.dtype == f64
            and s.numel() == 1
        ):
            return None
        x.append(g.data_ptr())
        numel.append(g.numel())
        target.append(s.data_ptr())
    return x, numel, target


def square_sums_ema_(grads: list[Tensor], sums: list[Tensor], beta2: float) -> bool:
    """sums[k] <- beta2 sums[k] + (1 - beta2) sum(grads[k]^2) (as ``torch.lerp``), in one
    parallel pass over the gradients. Returns False, and changes nothing, where the kernel does
    not apply or is unavailable.

    Args:
        grads: CPU gradients of one dtype (float32 or float64), contiguous.
        sums: one one-element float64 CPU tensor per gradient, updated in place.
        beta2: the decay.

    Returns:
        True when the kernel ran, else False.

    Raises:
        MemoryError: the kernel could not allocate its partial sums.
    """
    lib = library()
    found = None if lib is None else _pointers(grads, sums)
    if found is None:
        return False
    x, numel, target = found
    n = len(x)
    status = getattr(lib, _FUNCTIONS[grads[0].dtype])(
        n,
        (ctypes.c_void_p * n)(*x),
        (ctypes.c_int64 * n)(*numel),
        (ctypes.c_void_p * n)(*target),
        1.0 - beta2,
        torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError("ada2ms_square_sums: could not allocate its partial sums")
    return True
