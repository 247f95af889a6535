"""Batched evaluation of loss surfaces: 1-D and 2-D slices and linear interpolations.

Every point ``theta + a d1 + b d2`` of a grid is a set of parameters, evaluated over all of
``data`` (the loss is the sample-weighted mean over the batches, so a ragged last batch counts
right), in eval mode. The model itself is never modified. There are two paths:

* **first layer** (``first_layer="auto"``, when the model is an ``nn.Sequential`` that starts with
  an affine layer, ``nn.Linear`` or a convolution). That layer is linear in its parameters, so
  ``f(x; W0 + a D1 + b D2) = f(x; W0) + a f(x; D1) + b f(x; D2)``, with ``W`` standing for weight
  and bias together (``x W^T + b`` is linear in the pair). The three terms are computed once per
  grid, and a chunk of points costs one small matrix product for the first layer; the layers
  after it run on the whole chunk at once (batched matrix products; tanh on the CPU through
  NumPy's kernel, measured 7x faster than torch 2.13's there).
* **generic** (any model). On accelerators a chunk of points is stacked and evaluated in one call
  of ``torch.func.vmap`` over ``torch.func.functional_call``; on the CPU, where batching points
  gains nothing, one point at a time through ``functional_call``.

A grid can be cached (``cache=True`` or a name): the result is stored in
:func:`analysis_lib.io.data_dir` keyed by a hash of the model (architecture, parameters,
buffers), the directions, the data, the loss and the grid, and written atomically. While it is
computed, the finished chunks are saved (atomically) to a ``.partial.npz`` file after each
chunk, so an interrupted computation resumes where it stopped and gives identical arrays.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .._checks import check_int
from .._evaluation import eval_mode as _eval_mode
from .directions import Directions, _check_direction, difference, parameters

__all__ = [
    "FIRST_LAYER_OPTIONS",
    "LandscapeGrid",
    "auto_chunk_size",
    "evaluate_points",
    "interpolate",
    "surface_1d",
    "surface_2d",
]

FIRST_LAYER_OPTIONS = ("auto", "off")
_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# parameter-free modules that act element by element (so on a batch of points as they are)
_ELEMENTWISE = (
    nn.Tanh,
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Identity,
    nn.LeakyReLU,
    nn.ELU,
    nn.Softplus,
    nn.Mish,
    nn.Hardtanh,
)


def _tanh_(z: Tensor) -> Tensor:
    """tanh in place. On the CPU through NumPy's SIMD kernel, which is as accurate (a few ulp) and
    was measured 7x faster than torch 2.13's CPU tanh on these activations; elsewhere torch's."""
    if (
        z.device.type == "cpu"
        and z.dtype in (torch.float32, torch.float64)
        and z.is_contiguous()
        and not z.requires_grad
    ):
        a = z.numpy()
        np.tanh(a, out=a)
        return z
    return z.tanh_()


_IN_PLACE = {nn.Tanh: _tanh_, nn.ReLU: torch.relu_, nn.Sigmoid: torch.sigmoid_}
_TERMS_BUDGET = 2**30  # bytes: the most the first-layer terms of a grid may take
_CPU_BUDGET = 64 * 2**20  # bytes per chunk on the CPU: larger chunks fall out of the caches
# The generic path vmaps a chunk of points on accelerators; on the CPU, where the time goes to
# element-wise work and a batch of points falls out of the caches, it evaluates one point at a
# time (vmap measured 0.6-0.8x a per-point loop there). Tests switch vmap on to check it on CPU.
_VMAP_ON_CPU = False


@dataclass
class LandscapeGrid:
    """Loss (and accuracy) over a 1-D or 2-D grid of a slice.

    ``loss[i]`` (1-D) is ``L(theta + alphas[i] d)``; ``loss[i, j]`` (2-D) is
    ``L(theta + alphas[i] d1 + betas[j] d2)`` (so ``contour(alphas, betas, loss.T)``).
    ``accuracy`` has the same shape (NaN where the task has none). ``seconds`` is the wall time
    of the evaluation (0 for a grid read from the cache), ``method`` ``"first-layer"``,
    ``"vmap"`` or ``"per-point"`` (the generic path on the CPU), ``"loop"`` (an interpolation
    with batch norm) or ``"cached"``.
    """

    alphas: np.ndarray
    betas: np.ndarray | None
    loss: np.ndarray
    accuracy: np.ndarray
    seconds: float = 0.0
    chunk_size: int = 0
    method: str = "vmap"
    from_cache: bool = False

    @property
    def points(self) -> int:
        return int(self.loss.size)

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("nan")

    @property
    def center_loss(self) -> float:
        """The loss at alpha = 0 (and beta = 0): the loss of the model itself (NaN when the
        grid does not contain the origin)."""
        i = np.flatnonzero(self.alphas == 0)
        if len(i) == 0:
            return float("nan")
        if self.betas is None:
            return float(self.loss[i[0]])
        j = np.flatnonzero(self.betas == 0)
        return float(self.loss[i[0], j[0]]) if len(j) else float("nan")

    def to_frame(self):
        """A tidy DataFrame: one row per point, columns ``alpha`` (``beta``), ``loss``,
        ``accuracy``."""
        import pandas as pd

        if self.betas is None:
            return pd.DataFrame(
                {"alpha": self.alphas, "loss": self.loss, "accuracy": self.accuracy}
            )
        a, b = np.meshgrid(self.alphas, self.betas, indexing="ij")
        return pd.DataFrame(
            {
                "alpha": a.ravel(),
                "beta": b.ravel(),
                "loss": self.loss.ravel(),
                "accuracy": self.accuracy.ravel(),
            }
        )


# -- checks --------------------------------------------------------------------------------------
def _check_grid(name: str, values) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid {name}: {values!r} (expected a 1-D array of numbers)") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"Invalid {name}: shape {arr.shape} (expected a non-empty 1-D array)")
    if not np.isfinite(arr).all():
        raise ValueError(f"Invalid {name}: it holds NaN or infinite values")
    return arr


def _check_data(data, device) -> list[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        raise ValueError(
            "Invalid data: a single (inputs, targets) pair (expected an iterable of "
            "batches, e.g. [(inputs, targets)])"
        )
    try:
        batches = [(torch.as_tensor(x).to(device), torch.as_tensor(y).to(device)) for x, y in data]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid data: {exc} (expected (inputs, targets) batches)") from exc
    batches = [(x, y) for x, y in batches if len(x) > 0]
    if not batches:
        raise ValueError("Invalid data: no samples")
    for i, (x, y) in enumerate(batches):
        if len(x) != len(y):
            raise ValueError(f"Invalid data: batch {i} has {len(x)} inputs and {len(y)} targets")
    return batches


# -- the evaluator -------------------------------------------------------------------------------
def _first_layer(model: nn.Module):
    """(name of the first module, the module, the rest) when the model is a Sequential that
    starts with an affine layer without buffers, else None."""
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        return None
    name, first = next(iter(model._modules.items()))
    if type(first) not in _AFFINE or len(list(first.buffers())) > 0:
        return None
    return name, first, model[1:]  # a slice keeps the original module names


def _default_accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs.argmax(dim=-1) == targets).to(outputs.dtype).mean()


def _activation_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of all leaf-module outputs for one forward pass on ``x``."""
    total = [0]

    def hook(_module, _inputs, output):
        if isinstance(output, Tensor):
            total[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], x.numel() * x.element_size())


def auto_chunk_size(model: nn.Module, data, points: int, memory: int | None = None) -> int:
    """How many grid points to evaluate at once: the working memory of one point (its
    parameters, and about three times the activations of the largest batch) fitted into
    ``memory`` bytes (default: 64 MiB on the CPU, where larger chunks run slower, a quarter of the free memory on CUDA)."""
    points = check_int("points", points, 1)
    if memory is not None:
        memory = check_int("memory", memory, 1)
    params = parameters(model)
    device = next(iter(params.values())).device
    batches = _check_data(data, device)
    if memory is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            memory = free // 4
        else:
            memory = _CPU_BUDGET
    x = max(batches, key=lambda b: len(b[0]))[0]
    with _eval_mode(model):
        act = _activation_bytes(model, x)
    per_point = 3 * act + 2 * sum(p.numel() * p.element_size() for p in params.values())
    return int(max(1, min(points, memory // per_point)))


class _Evaluator:
    """Evaluates ``theta + sum_k c_k D_k`` for chunks of coefficient rows ``c``."""

    def __init__(
        self,
        model,
        loss_fn,
        data,
        directions: Sequence[Mapping[str, Tensor]],
        accuracy_fn,
        first_layer: str,
    ) -> None:
        if first_layer not in FIRST_LAYER_OPTIONS:
            raise ValueError(
                f"Invalid first_layer: {first_layer!r} (expected one of {FIRST_LAYER_OPTIONS})"
            )
        if not callable(loss_fn):
            raise ValueError(f"Invalid loss_fn: {loss_fn!r} (expected a callable)")
        self.model = model
        self.params = parameters(model)
        ref = next(iter(self.params.values()))
        self.dtype, self.device = ref.dtype, ref.device
        self.dirs = [
            _check_direction(f"d{i + 1}", d, self.params) for i, d in enumerate(directions)
        ]
        self.buffers = {k: b.detach() for k, b in model.named_buffers()}
        self.batches = _check_data(data, self.device)
        self.n = sum(len(x) for x, _ in self.batches)
        self.loss_fn = loss_fn
        if accuracy_fn is None:
            integer = all(not y.is_floating_point() and not y.is_complex() for _, y in self.batches)
            accuracy_fn = _default_accuracy if integer else None
        self.accuracy_fn = accuracy_fn
        self._buffers: dict[tuple, Tensor] = {}
        split = _first_layer(model) if first_layer == "auto" else None
        self.method = "vmap" if self.device.type != "cpu" or _VMAP_ON_CPU else "per-point"
        if split is not None and self._setup_first_layer(*split):
            self.method = "first-layer"

    def _setup_first_layer(self, name: str, first: nn.Module, rest: nn.Module) -> bool:
        """Precompute the first layer's terms; False (generic path) when they would take more
        than ``_TERMS_BUDGET`` bytes (e.g. a convolution over a large data set)."""
        prefix = f"{name}."
        local = [k for k in self.params if k.startswith(prefix)]

        def layer(weights: Mapping[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(first, {k[len(prefix) :]: weights[k] for k in local}, (x,))

        self.rest = rest
        self.rest_params = [k for k in self.params if not k.startswith(prefix)]
        self.first_terms, self.first_shapes = [], {}
        with torch.no_grad():  # per batch: f(x; W0) and f(x; D_k), once per grid
            x0 = self.batches[0][0][:1]
            per_sample = layer(self.params, x0).numel() * x0.element_size()
            if per_sample * self.n * (1 + len(self.dirs)) > _TERMS_BUDGET:
                return False
            for x, _ in self.batches:
                terms = [layer(w, x) for w in (self.params, *self.dirs)]
                stacked = torch.stack([t.reshape(-1) for t in terms])  # (1 + k, outputs)
                self.first_terms.append(stacked)
                self.first_shapes[id(stacked)] = tuple(terms[0].shape)
        return True

    def _run_rest(self, params: Mapping[str, Tensor], z: Tensor) -> Tensor:
        """The modules after the first, on a batch of points (leading dimension of ``z`` and of
        ``params``): linear layers as one batched matrix product with the bias fused in,
        element-wise activations applied directly, anything else through vmap."""
        for name, module in self.rest.named_children():
            local = {k[len(name) + 1 :]: v for k, v in params.items() if k.startswith(f"{name}.")}
            if type(module) is nn.Linear and z.dim() == 3:
                w = local["weight"].transpose(1, 2)
                bias = local.get("bias")
                out = self._workspace(name, (z.shape[0], z.shape[1], w.shape[2]), z.dtype)
                if bias is None:
                    z = torch.bmm(z, w, out=out)
                else:
                    z = torch.baddbmm(bias.unsqueeze(1), z, w, out=out)
            elif type(module) in _IN_PLACE:  # z is a fresh or a work buffer: overwrite it
                z = _IN_PLACE[type(module)](z)
            elif type(module) in _ELEMENTWISE:
                z = module(z)
            else:
                bufs = {
                    k[len(name) + 1 :]: v
                    for k, v in self.buffers.items()
                    if k.startswith(f"{name}.")
                }

                def call(p, inp, module=module, bufs=bufs):
                    return functional_call(module, (p, bufs), (inp,))

                z = vmap(call, in_dims=(0, 0))(local, z)
        return z

    def _workspace(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A buffer of ``shape`` (points first) kept from chunk to chunk, one per layer (so that
        no output aliases its input) and per-point shape (so that a ragged last batch has its
        own). Reusing them matters on the CPU: allocating and freeing megabyte-sized arrays at
        every chunk made the C library hand memory back to the system and fault it in again,
        measured 40% of the time of a grid."""
        slot = (key, tuple(shape[1:]), dtype)
        buf = self._buffers.get(slot)
        if buf is None or buf.shape[0] < shape[0]:
            buf = self._buffers[slot] = torch.empty(shape, dtype=dtype, device=self.device)
        return buf[: shape[0]]

    def _point_params(self, coeffs: Tensor, names) -> dict[str, Tensor]:
        out = {}
        for k in names:
            p = self.params[k].unsqueeze(0)
            for i, d in enumerate(self.dirs):
                c = coeffs[:, i].reshape(-1, *([1] * d[k].dim()))
                p = p + c * d[k].unsqueeze(0)
            out[k] = p
        return out

    def _metrics(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss = self.loss_fn(out, y)
        if self.accuracy_fn is None:
            return loss, torch.full_like(loss, float("nan"))
        return loss, torch.as_tensor(self.accuracy_fn(out, y), dtype=loss.dtype)

    @torch.no_grad()
    def __call__(self, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = torch.as_tensor(coeffs, dtype=self.dtype, device=self.device)
        loss = torch.zeros(len(c), dtype=torch.float64, device=self.device)
        acc = torch.zeros_like(loss)
        if self.method == "first-layer":
            params = self._point_params(c, self.rest_params)

            weights = torch.cat([torch.ones_like(c[:, :1]), c], dim=1)  # (points, 1 + k)
            for (_, y), terms in zip(self.batches, self.first_terms, strict=True):
                # z_p = f(x; W0) + sum_k c_pk f(x; D_k) for every point p: one matrix product
                z = torch.mm(
                    weights,
                    terms,
                    out=self._workspace(
                        f"first-{id(terms)}", (len(c), terms.shape[1]), terms.dtype
                    ),
                )
                z = z.reshape(len(c), *self.first_shapes[id(terms)])
                out = self._run_rest(params, z)
                lo, ac = vmap(self._metrics, in_dims=(0, None))(out, y)
                loss += lo.double() * len(y)
                acc += ac.double() * len(y)
        else:
            params = self._point_params(c, list(self.params))

            def point(p, x, y):
                out = functional_call(self.model, (p, self.buffers), (x,))
                return self._metrics(out, y)

            for x, y in self.batches:
                if self.method == "vmap":
                    lo, ac = vmap(point, in_dims=(0, None, None))(params, x, y)
                else:
                    per_point = [
                        point({k: v[i] for k, v in params.items()}, x, y) for i in range(len(c))
                    ]
                    lo, ac = (torch.stack(t) for t in zip(*per_point, strict=True))
                loss += lo.double() * len(y)
                acc += ac.double() * len(y)
        return (loss / self.n).cpu().numpy(), (acc / self.n).cpu().numpy()


def evaluate_points(
    model: nn.Module,
    loss_fn,
    data,
    directions: Sequence[Mapping[str, Tensor]],
    coefficients,
    *,
    chunk_size: int | None = None,
    accuracy_fn=None,
    first_layer: str = "auto",
    progress: bool = True,
    memory: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy over ``data`` at the points ``theta + sum_k c[p, k] d_k`` for each
    row ``c[p]`` of ``coefficients`` (shape ``(points, len(directions))``), ``chunk_size`` points
    at a time (default :func:`auto_chunk_size`), in eval mode. The building block of
    :func:`surface_1d` and :func:`surface_2d`."""
    coeffs = np.asarray(coefficients, dtype=np.float64)
    if coeffs.ndim != 2 or coeffs.shape[1] != len(directions) or coeffs.shape[0] == 0:
        raise ValueError(
            f"Invalid coefficients: shape {coeffs.shape} (expected (points, "
            f"{len(directions)}) with points >= 1)"
        )
    with _eval_mode(model):
        ev = _Evaluator(model, loss_fn, data, directions, accuracy_fn, first_layer)
        if chunk_size is None:
            chunk_size = auto_chunk_size(model, ev.batches, len(coeffs), memory)
        chunk_size = check_int("chunk_size", chunk_size, 1)
        losses, accs = [], []
        for lo, hi in _tqdm(_chunks(len(coeffs), chunk_size), progress, "points"):
            a, b = ev(coeffs[lo:hi])
            losses.append(a)
            accs.append(b)
    return np.concatenate(losses), np.concatenate(accs)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _tqdm(items, progress: bool, unit: str):
    from tqdm.auto import tqdm

    from analysis_lib import progress_disabled

    return tqdm(
        items,
        desc="landscape",
        unit="chunk",
        leave=False,
        disable=not progress or progress_disabled(),
    )


# -- cache keys ----------------------------------------------------------------------------------
def _hash_tensors(h, tensors: Mapping[str, Tensor]) -> None:
    for k, t in tensors.items():
        t = torch.as_tensor(t).detach().cpu().contiguous().reshape(-1)
        h.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        h.update(t.view(torch.uint8).numpy())  # the buffer itself: no copy


def _digest(fill) -> str:
    h = hashlib.sha256()
    fill(h)
    return h.hexdigest()[:32]


def _fn_identity(fn, what: str):
    """The identity of ``fn`` in a cache key (:func:`analysis_lib.io.callable_identity`: code,
    closure, partial arguments, the object of a bound method); a clear error when it cannot be
    identified."""
    from analysis_lib import io

    try:
        return io.callable_identity(fn, what)
    except io.UnidentifiableError as exc:
        raise ValueError(
            f"Invalid {what} for a cached grid: {exc}; pass cache_key='...' naming the loss "
            "and accuracy functions in the cache key instead"
        ) from exc


def _cache_config(
    model, loss_fn, data, directions, alphas, betas, accuracy_fn, first_layer, extra, key=None
) -> dict:
    def model_hash(h):
        h.update(repr(model).encode())
        _hash_tensors(h, parameters(model))
        _hash_tensors(h, dict(model.named_buffers()))

    def dirs_hash(h):
        for d in directions:
            _hash_tensors(h, d)

    def data_hash(h):
        for i, (x, y) in enumerate(data):
            _hash_tensors(h, {f"x{i}": x, f"y{i}": y})

    return {
        "model": _digest(model_hash),
        "directions": _digest(dirs_hash),
        "data": _digest(data_hash),
        "loss_fn": {"key": key} if key is not None else _fn_identity(loss_fn, "loss_fn"),
        "accuracy_fn": (
            None
            if accuracy_fn is None or key is not None
            else _fn_identity(accuracy_fn, "accuracy_fn")
        ),
        "alphas": alphas.tolist(),
        "betas": None if betas is None else betas.tolist(),
        "first_layer": first_layer,
        "extra": extra or {},
    }


# -- the public functions ------------------------------------------------------------------------
def _surface(
    model,
    loss_fn,
    data,
    directions,
    alphas,
    betas,
    *,
    chunk_size,
    accuracy_fn,
    first_layer,
    progress,
    cache,
    refresh,
    cache_extra,
    memory,
    cache_key=None,
) -> LandscapeGrid:
    from analysis_lib import io

    alphas = _check_grid("alphas", alphas)
    betas = None if betas is None else _check_grid("betas", betas)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
    if cache_key is not None and not (isinstance(cache_key, str) and cache_key):
        raise ValueError(f"Invalid cache_key: {cache_key!r} (expected a non-empty string)")
    if first_layer not in FIRST_LAYER_OPTIONS:
        raise ValueError(
            f"Invalid first_layer: {first_layer!r} (expected one of {FIRST_LAYER_OPTIONS})"
        )
    params = parameters(model)
    directions = [_check_direction(f"d{i + 1}", d, params) for i, d in enumerate(directions)]
    data = _check_data(data, next(iter(params.values())).device)  # read once, checked first
    if betas is None:
        coeffs = alphas[:, None]
        shape = (len(alphas),)
    else:
        a, b = np.meshgrid(alphas, betas, indexing="ij")
        coeffs = np.stack([a.ravel(), b.ravel()], axis=1)
        shape = (len(alphas), len(betas))
    state = {}

    def compute() -> dict[str, np.ndarray]:
        start = time.perf_counter()
        with _eval_mode(model):
            ev = _Evaluator(model, loss_fn, data, directions, accuracy_fn, first_layer)
            size = chunk_size
            if size is None:
                size = auto_chunk_size(model, ev.batches, len(coeffs), memory)
            loss = np.full(len(coeffs), np.nan)
            acc = np.full(len(coeffs), np.nan)
            partial = state.get("partial")
            done = np.zeros(math.ceil(len(coeffs) / size), dtype=bool)
            if partial is not None:
                size, loss, acc, done = _load_partial(
                    partial, state["config"], size, loss, acc, done
                )
            chunks = _chunks(len(coeffs), size)
            todo = [i for i in range(len(chunks)) if not done[i]]
            for i in _tqdm(todo, progress, "chunk"):
                lo, hi = chunks[i]
                loss[lo:hi], acc[lo:hi] = ev(coeffs[lo:hi])
                done[i] = True
                if partial is not None and not done.all():
                    io.save_arrays(
                        partial,
                        {"loss": loss, "accuracy": acc, "done": done},
                        {"config": state["config"], "chunk_size": size},
                    )
        state.update(seconds=time.perf_counter() - start, chunk_size=size, method=ev.method)
        return {
            "alphas": alphas,
            "betas": np.zeros(0) if betas is None else betas,
            "loss": loss.reshape(shape),
            "accuracy": acc.reshape(shape),
        }

    if cache:
        name = (
            cache
            if isinstance(cache, str)
            else ("landscape_2d" if betas is not None else "landscape_1d")
        )
        config = _cache_config(
            model,
            loss_fn,
            data,
            directions,
            alphas,
            betas,
            accuracy_fn,
            first_layer,
            cache_extra,
            cache_key,
        )
        path = io.cache_path(name, config)
        state["config"] = json.loads(io.canonical_json(config))
        state["partial"] = path.with_name(path.stem + ".partial.npz")
        if refresh:  # the finished chunks of an interrupted run are not trusted either
            state["partial"].unlink(missing_ok=True)
        arrays = io.cached(name, config, compute, refresh=refresh)
        if not _grid_fits(arrays, alphas, betas, shape):  # intact, but not this grid's arrays
            warnings.warn(
                f"cache entry {path.name} holds arrays of another grid; recomputed",
                RuntimeWarning,
                stacklevel=3,
            )
            arrays = io.cached(name, config, compute, refresh=True)
        state["partial"].unlink(missing_ok=True)
    else:
        arrays = compute()
    return LandscapeGrid(
        alphas=alphas,
        betas=betas,
        loss=np.asarray(arrays["loss"]),
        accuracy=np.asarray(arrays["accuracy"]),
        seconds=state.get("seconds", 0.0),
        chunk_size=state.get("chunk_size", 0),
        method=state.get("method", "cached"),
        from_cache="seconds" not in state,
    )


def _grid_fits(arrays, alphas, betas, shape) -> bool:
    """Whether cached ``arrays`` are those of the grid ``alphas x betas``."""
    try:
        return (
            np.asarray(arrays["loss"]).shape == shape
            and np.asarray(arrays["accuracy"]).shape == shape
            and np.array_equal(arrays["alphas"], alphas)
            and np.array_equal(arrays["betas"], np.zeros(0) if betas is None else betas)
        )
    except KeyError:
        return False


def _load_partial(path, config, size, loss, acc, done):
    """The finished chunks of an interrupted computation, when ``path`` holds them for the same
    configuration; else the fresh arrays."""
    from analysis_lib import io

    if not path.is_file():
        return size, loss, acc, done
    try:
        arrays, meta = io.load_arrays(path)
    except io.CacheCorruptError:
        return size, loss, acc, done
    if meta.get("config") != config or arrays["loss"].shape != loss.shape:
        return size, loss, acc, done
    size = int(meta["chunk_size"])
    if arrays["done"].shape != (math.ceil(len(loss) / size),):
        return size, loss, acc, np.zeros(math.ceil(len(loss) / size), dtype=bool)
    return size, arrays["loss"].copy(), arrays["accuracy"].copy(), arrays["done"].copy()


def surface_1d(
    model: nn.Module,
    loss_fn: Callable,
    data,
    direction: Mapping[str, Tensor],
    alphas,
    *,
    chunk_size: int | None = None,
    accuracy_fn=None,
    first_layer: str = "auto",
    progress: bool = True,
    cache: bool | str = False,
    refresh: bool = False,
    cache_extra: dict | None = None,
    memory: int | None = None,
    cache_key: str | None = None,
) -> LandscapeGrid:
    """Loss and accuracy at ``theta + alpha * direction`` for each of ``alphas``; see
    :func:`surface_2d` for the arguments. ``betas`` of the result is None."""
    return _surface(
        model,
        loss_fn,
        data,
        [direction],
        alphas,
        None,
        chunk_size=chunk_size,
        accuracy_fn=accuracy_fn,
        first_layer=first_layer,
        progress=progress,
        cache=cache,
        refresh=refresh,
        cache_extra=cache_extra,
        memory=memory,
        cache_key=cache_key,
    )


def surface_2d(
    model: nn.Module,
    loss_fn: Callable,
    data,
    d1: Mapping[str, Tensor] | Directions,
    d2: Mapping[str, Tensor] | None = None,
    alphas=None,
    betas=None,
    *,
    chunk_size: int | None = None,
    accuracy_fn=None,
    first_layer: str = "auto",
    progress: bool = True,
    cache: bool | str = False,
    refresh: bool = False,
    cache_extra: dict | None = None,
    memory: int | None = None,
    cache_key: str | None = None,
) -> LandscapeGrid:
    """Loss and accuracy at ``theta + alpha d1 + beta d2`` over the grid ``alphas x betas``.

    Args:
        model: the network; its parameters are ``theta`` (it is not modified). Evaluated in
            eval mode (batch norm uses its running statistics), its modes restored afterwards.
        loss_fn: ``loss_fn(outputs, targets)``, the mean over a batch.
        data: an iterable of ``(inputs, targets)`` batches; the result is the sample-weighted
            mean over all of them.
        d1, d2: directions keyed like ``model.named_parameters()`` (or a :class:`Directions`
            as ``d1`` and no ``d2``).
        alphas, betas: the grid coordinates along ``d1`` and ``d2`` (1-D, non-empty, finite).
        chunk_size: points per vectorised call (default :func:`auto_chunk_size`).
        accuracy_fn: ``(outputs, targets) -> mean accuracy``; default the arg-max accuracy for
            integer targets, none (NaN) otherwise.
        first_layer: ``"auto"`` computes the first affine layer of a Sequential once per grid
            (see the module docstring); ``"off"`` always uses the generic path.
        progress: a progress bar over the chunks (also silenced by ``TQDM_DISABLE``).
        cache: ``True`` or an entry name: keep the grid in :func:`analysis_lib.io.data_dir`,
            keyed by a hash of the model, directions, data, loss and grid, and resume an
            interrupted computation. ``refresh`` recomputes, discarding the finished chunks of
            an interrupted computation too; ``cache_extra`` (JSON-able) enters the key, for
            anything else that changes the result. The loss and accuracy functions enter by
            their identity (:func:`analysis_lib.io.callable_identity`: code, closure values,
            partial arguments, a bound method's object); a function that cannot be identified
            is refused unless ``cache_key`` names it (then it replaces both identities). The
            cache folder must be writable; that is checked before any work.
        memory: bytes of working memory for the automatic chunk size.

    Raises:
        ValueError: a direction whose keys or shapes do not match the model, an empty or
            non-finite grid, empty data, a bad chunk size; before any work starts.
    """
    if isinstance(d1, Directions):
        if d2 is not None and not isinstance(d2, Mapping) and betas is None:
            alphas, betas, d2 = d2, alphas, None  # surface_2d(model, loss, data, dirs, a, b)
        if d2 is not None:
            raise ValueError("Invalid d2: pass either a Directions as d1 or two directions")
        d1, d2 = d1.pair
    if d2 is None:
        raise ValueError("Invalid d2: None (a 2-D surface needs two directions)")
    if alphas is None or betas is None:
        raise ValueError("Invalid alphas/betas: both grids are required")
    return _surface(
        model,
        loss_fn,
        data,
        [d1, d2],
        alphas,
        betas,
        chunk_size=chunk_size,
        accuracy_fn=accuracy_fn,
        first_layer=first_layer,
        progress=progress,
        cache=cache,
        refresh=refresh,
        cache_extra=cache_extra,
        memory=memory,
        cache_key=cache_key,
    )


# -- interpolation -------------------------------------------------------------------------------
def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def _recompute_bn(model: nn.Module, batches) -> None:
    """Running statistics of every batch-norm layer set to the exact per-channel mean and
    unbiased variance of its inputs over all of ``batches`` (weighted by their sizes), as the
    model sees them in eval mode: one pass per layer, in the order the forward pass reaches them,
    each with the layers before it already using their new statistics."""
    bns = _batch_norms(model)
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
    done: set[int] = set()
    for _ in range(len(bns)):
        sums: dict[int, list] = {}

        def collect(module, inputs, sums=sums):
            x = inputs[0].detach().double()
            x = x.movedim(1, -1).reshape(-1, x.shape[1]) if x.dim() > 1 else x[:, None]
            acc = sums.setdefault(id(module), [module, 0, 0.0, 0.0])
            acc[1] += x.shape[0]
            acc[2] = acc[2] + x.sum(0)
            acc[3] = acc[3] + (x * x).sum(0)

        hooks = [bn.register_forward_pre_hook(collect) for bn in bns if id(bn) not in done]
        try:
            for x, _ in batches:
                model(x)
        finally:
            for hook in hooks:
                hook.remove()
        if not sums:  # the remaining layers are never reached
            break
        bn, n, s1, s2 = next(iter(sums.values()))  # the first one the forward pass reached
        mean = s1 / n
        var = (s2 - n * mean * mean).clamp_min(0) / max(n - 1, 1)
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
        done.add(id(bn))


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    loss_fn: Callable,
    data,
    alphas,
    *,
    recompute_bn: bool = True,
    bn_data=None,
    accuracy_fn=None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> LandscapeGrid:
    """Loss and accuracy along the line ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b``
    (alpha = 0 is model a, 1 is model b; values outside [0, 1] extrapolate).

    Without batch norm, this is :func:`surface_1d` around ``theta_a`` along
    ``theta_b - theta_a`` (batched; the buffers are model a's). With batch norm, each point is
    a copy of model a with the interpolated parameters and, with ``recompute_bn`` (the
    default), running statistics recomputed from ``bn_data``, the *training* data: the exact
    per-channel mean and unbiased variance of each batch-norm layer's inputs over all of it,
    layer after layer as the eval-mode network sees them. ``bn_data`` is then required, so that a
    curve drawn on the test split never takes its statistics from the test split. Without
    ``recompute_bn``, the running statistics are interpolated too. Evaluated in eval mode; the
    models are not modified.
    """
    alphas = _check_grid("alphas", alphas)
    direction = difference(model_a, model_b)
    for name, m in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(m, nn.Module):
            raise ValueError(f"Invalid {name}: {type(m).__name__} (expected a torch.nn.Module)")
    if not _batch_norms(model_a):
        return surface_1d(
            model_a,
            loss_fn,
            data,
            direction,
            alphas,
            chunk_size=chunk_size,
            accuracy_fn=accuracy_fn,
            progress=progress,
        )
    if recompute_bn and bn_data is None:
        raise ValueError(
            "Invalid bn_data: None, but the models have batch norm and recompute_bn=True: pass "
            "the training data (e.g. bn_data=task.data('train')) to recompute the running "
            "statistics from, or recompute_bn=False to interpolate them"
        )
    start = time.perf_counter()
    params = parameters(model_a)
    device = next(iter(params.values())).device
    batches = _check_data(data, device)
    bn_batches = _check_data(bn_data, device) if recompute_bn else None
    buffers_b = dict(model_b.named_buffers())
    loss, acc = np.empty(len(alphas)), np.empty(len(alphas))
    for i, alpha in enumerate(_tqdm(alphas, progress, "point")):
        point = copy.deepcopy(model_a)
        with torch.no_grad():
            for k, p in point.named_parameters():
                p.copy_(params[k] + float(alpha) * direction[k])
            if not recompute_bn:
                for k, b in point.named_buffers():
                    if b.is_floating_point():
                        b.copy_((1 - float(alpha)) * b + float(alpha) * buffers_b[k])
        if recompute_bn:
            _recompute_bn(point, bn_batches)
        point.eval()
        lo, ac = evaluate_points(
            point,
            loss_fn,
            batches,
            [{k: torch.zeros_like(p) for k, p in params.items()}],
            np.zeros((1, 1)),
            accuracy_fn=accuracy_fn,
            progress=False,
        )
        loss[i], acc[i] = lo[0], ac[0]
    return LandscapeGrid(
        alphas=alphas,
        betas=None,
        loss=loss,
        accuracy=acc,
        seconds=time.perf_counter() - start,
        chunk_size=1,
        method="loop",
    )
