"""The one native kernel of the fused path: Ada2MS's phase-1 reduction on the CPU.

``Ada2MS(fused=True)`` needs, before any parameter moves, the sum of g^2 over every gradient of
the scope. Compiled by ``torch.compile`` that is one reduction kernel per tensor, and on the CPU
those read memory at about half the rate of the fused update (``benchmarks/bench_optimizers.py``
shows the gap). ``_square_sums.c`` does the whole bucket in one parallel pass instead; see the
comment at its top for how, and for its accuracy and determinism.

The C source is compiled on first use with the C compiler that ``torch.compile`` already needs on
the CPU (``$CC``, else ``cc``), with OpenMP, and the library is cached per source, compiler and
platform under ``$ANALYSIS_LIB_NATIVE_CACHE`` (default: ``~/.cache/analysis_lib``, or
``$XDG_CACHE_HOME/analysis_lib``). Loaded into a process that has imported torch, it shares
torch's OpenMP runtime. Where it cannot be built or does not apply (no compiler, another device,
bfloat16, a non-contiguous gradient) :func:`square_sums_ema_` returns False and the caller falls
back to the compiled reduction: the results agree to rounding either way. Setting
``ANALYSIS_LIB_NATIVE=0`` switches the kernel off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
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
    """False when ``ANALYSIS_LIB_NATIVE`` is set to 0 (or "false", "no", "off")."""
    return os.environ.get("ANALYSIS_LIB_NATIVE", "1").strip().lower() not in _OFF


def cache_dir() -> Path:
    env = os.environ.get("ANALYSIS_LIB_NATIVE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "analysis_lib"


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def library_path() -> Path:
    """Where the library for this source, compiler, flags and platform is cached."""
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(compiler() + list(FLAGS)).encode(),
        f"{sys.platform} {platform.machine()}".encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"square_sums-{key.hexdigest()[:20]}.so"


def _build(target: Path) -> None:
    """Compile SOURCE into ``target`` atomically (:func:`analysis_lib.io.write_atomically`): a
    concurrent process sees all of it or none, and a failed build leaves nothing behind."""
    if shutil.which(compiler()[0]) is None:
        raise FileNotFoundError(f"C compiler not found: {compiler()[0]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".building-", dir=target.parent) as work:
        built = Path(work) / target.name
        subprocess.run(
            [*compiler(), *FLAGS, str(SOURCE), "-o", str(built)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        write_atomically(target, built.read_bytes())


def _settings() -> tuple[str | None, ...]:
    return tuple(
        os.environ.get(k)
        for k in ("ANALYSIS_LIB_NATIVE", "CC", "ANALYSIS_LIB_NATIVE_CACHE", "XDG_CACHE_HOME")
    )


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built first if needed; None if it cannot be built or loaded
    (or the kernel is switched off)."""
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
        path = library_path()
        if not path.exists():
            _build(path)
        lib = ctypes.CDLL(str(path))
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
    not apply or is unavailable."""
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
