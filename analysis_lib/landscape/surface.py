"""Batched evaluation of loss surfaces: 1-D and 2-D slices and linear interpolations.

Every point ``theta + a d1 + b d2`` of a grid is a set of parameters, evaluated over all of
``data`` (the loss is the sample-weighted mean over the batches, so a ragged last batch counts
right), in eval mode. The model itself is never modified. There are two paths:

* **first layer** (``first_layer="auto"``, when the model is an ``nn.Sequential`` that starts with
  an affine layer, ``nn.Linear`` or a convolution, and no module is used twice nor any weight
  tied between modules). That layer is linear in its parameters, so
  ``f(x; W0 + a D1 + b D2) = f(x; W0) + a f(x; D1) + b f(x; D2)``, with ``W`` standing for weight
  and bias together (``x W^T + b`` is linear in the pair). The three terms are computed once per
  grid, and a chunk of points costs one small matrix product for the first layer; the layers
  after it run on the whole chunk at once (batched matrix products; tanh on the CPU through
  NumPy's kernel, measured 7x faster than torch 2.13's there).
* **generic** (any model). On accelerators a chunk of points is stacked and evaluated in one call
  of ``torch.func.vmap`` over ``torch.func.functional_call``; on the CPU, where batching points
  gains nothing, one point at a time through ``functional_call`` (each shared or tied tensor
  placed wherever the model holds it: :class:`analysis_lib._evaluation.ModelCall`).

A grid can be cached (``cache=True`` or a name): the result is stored in
:func:`analysis_lib.io.data_dir` keyed by a hash of the model (architecture, parameters,
buffers), the directions, the data, the loss and the grid, and written atomically. While it is
computed, the finished chunks are saved (atomically) to a ``.partial.npz`` file after each
chunk, so an interrupted computation resumes where it stopped and gives identical arrays.

With ``client=`` (a ``dask.distributed.Client``) the chunks are tasks on the client's workers,
the way Li et al.'s code spreads a grid over GPUs with MPI: the model, loss, data and
directions are scattered to every worker once, each task carries the coefficients of a group
of consecutive chunks (large groups first, single chunks last, so the workers finish together)
and runs on one torch thread, and the chunks are recorded (and saved to the partial file) as
they finish. ``analysis_lib.cluster.local_cluster`` gives a cluster of this machine set up for
such work. The chunk size is chosen by the caller, so every point goes through the same arithmetic
as in process: the grid is bit-identical to one computed here on one torch thread.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from .. import _evaluation, io, progress_disabled
from .._checks import check_finite_batches, check_int
from .._evaluation import eval_mode as _eval_mode
from .directions import Directions, _check_direction, difference, parameters

__all__ = [
    "FIRST_LAYER_OPTIONS",
    "LandscapeGrid",
    "SurfaceSettings",
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


def _check_data(data, device, name: str = "data") -> list[tuple[Tensor, Tensor]]:
    """``data`` by the library's one rule (:func:`analysis_lib._evaluation.batches`: read once,
    checked, moved to ``device``, batches without samples dropped) as ``(inputs, targets)``
    pairs; the evaluator weighs them by their sizes itself. Here inputs and targets are one
    tensor each (a tuple of tensors is refused, naming ``name``), without NaN (refused naming
    the batch and the sample: every point of a grid would be NaN)."""
    pairs = []
    for i, batch in enumerate(_evaluation.batches(data, device, name)):
        if isinstance(batch.inputs, tuple) or isinstance(batch.targets, tuple):
            raise ValueError(
                f"Invalid {name}: batch {i} holds a tuple of tensors (loss surfaces take one "
                "inputs tensor and one targets tensor per batch)"
            )
        pairs.append((batch.inputs, batch.targets))
    check_finite_batches(pairs, name)  # a NaN sample would make every point NaN
    return pairs


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
            accuracy_fn = _evaluation.accuracy if integer else None
        self.accuracy_fn = accuracy_fn
        self._buffers: dict[tuple, Tensor] = {}
        self._call = _evaluation.ModelCall(model)
        # a module used twice or weights tied between modules: the generic path, which
        # places each shared tensor wherever the model holds it
        shared = _evaluation.shares_tensors(model)
        split = _first_layer(model) if first_layer == "auto" and not shared else None
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
                out = self._call({**self.buffers, **p}, (x,))
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


def _tqdm(items, progress: bool, unit: str, total: int | None = None):
    return tqdm(
        items,
        desc="landscape",
        unit=unit,
        total=total,
        leave=False,
        disable=not progress or progress_disabled(),
    )


# -- what a grid is and how it is evaluated ------------------------------------------------------
@dataclass(frozen=True)
class SurfaceSettings:
    """How a grid is evaluated and kept: the keyword arguments of :func:`surface_1d` and
    :func:`surface_2d` (documented there), travelling together; pass one as ``settings=`` to
    reuse it over several grids. ``accuracy_fn`` and ``cache_key`` change what is computed or
    its cache key; ``first_layer`` and ``chunk_size`` change the arithmetic (rounding only);
    the others change neither (a grid on a ``client`` is the same as one here)."""

    chunk_size: int | None = None
    accuracy_fn: Callable | None = None
    first_layer: str = "auto"
    progress: bool = True
    cache: bool | str = False
    refresh: bool = False
    cache_extra: dict | None = None
    memory: int | None = None
    cache_key: str | None = None
    client: object = None

    @classmethod
    def of(cls, settings: SurfaceSettings | None, options: Mapping) -> SurfaceSettings:
        """``settings`` (default: the defaults) with the fields named in ``options`` replaced:
        what ``surface_2d(..., settings=s, chunk_size=8)`` means."""
        if settings is not None and not isinstance(settings, SurfaceSettings):
            raise ValueError(
                f"Invalid settings: {type(settings).__name__} (expected a SurfaceSettings)"
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(
                f"unexpected keyword argument {unknown[0]!r} (a surface's keyword arguments: "
                f"settings, {', '.join(names)})"
            )
        return replace(settings or cls(), **options)

    def checked(self) -> SurfaceSettings:
        """These settings, validated (ValueError naming the argument)."""
        if self.chunk_size is not None:
            check_int("chunk_size", self.chunk_size, 1)
        if self.cache_key is not None and not (isinstance(self.cache_key, str) and self.cache_key):
            raise ValueError(f"Invalid cache_key: {self.cache_key!r} (expected a non-empty string)")
        if self.first_layer not in FIRST_LAYER_OPTIONS:
            raise ValueError(
                f"Invalid first_layer: {self.first_layer!r} (expected one of {FIRST_LAYER_OPTIONS})"
            )
        if self.client is not None:
            _check_client(self.client)
        return self


def _check_client(client) -> None:
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise ValueError("Invalid client: the distributed package is not installed") from exc
    if not isinstance(client, Client):
        raise ValueError(
            f"Invalid client: {type(client).__name__} (expected a dask.distributed.Client or None)"
        )
    if client.status != "running":
        raise ValueError(f"Invalid client: its status is {client.status!r} (closed?)")


@dataclass(frozen=True)
class _Grid:
    """The coordinates of a 1-D (``betas`` None) or 2-D grid and its points as coefficient rows
    ``(alpha,)`` or ``(alpha, beta)``, alpha-major."""

    alphas: np.ndarray
    betas: np.ndarray | None

    @classmethod
    def of(cls, alphas, betas) -> _Grid:
        return cls(
            _check_grid("alphas", alphas), None if betas is None else _check_grid("betas", betas)
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.alphas),) if self.betas is None else (len(self.alphas), len(self.betas))

    @property
    def coefficients(self) -> np.ndarray:
        if self.betas is None:
            return self.alphas[:, None]
        a, b = np.meshgrid(self.alphas, self.betas, indexing="ij")
        return np.stack([a.ravel(), b.ravel()], axis=1)

    def arrays(self, loss: np.ndarray, accuracy: np.ndarray) -> dict[str, np.ndarray]:
        """What the cache keeps of a computed grid."""
        return {
            "alphas": self.alphas,
            "betas": np.zeros(0) if self.betas is None else self.betas,
            "loss": loss.reshape(self.shape),
            "accuracy": accuracy.reshape(self.shape),
        }

    def fits(self, arrays) -> bool:
        """Whether cached ``arrays`` are those of this grid."""
        try:
            return (
                np.asarray(arrays["loss"]).shape == self.shape
                and np.asarray(arrays["accuracy"]).shape == self.shape
                and np.array_equal(arrays["alphas"], self.alphas)
                and np.array_equal(
                    arrays["betas"], np.zeros(0) if self.betas is None else self.betas
                )
            )
        except KeyError:
            return False


@dataclass
class _Job:
    """Everything a chunk of points needs: what travels to the Dask workers, once per grid. A
    worker builds its evaluator (the first layer's terms included) on its first chunk, from its
    own copy of the model in eval mode, and keeps it for the others (one per thread: an
    evaluator's work buffers are not shared)."""

    model: nn.Module
    loss_fn: Callable
    batches: list[tuple[Tensor, Tensor]]
    directions: list[dict[str, Tensor]]
    accuracy_fn: Callable | None
    first_layer: str
    _evaluators: dict = field(default_factory=dict, repr=False, compare=False)

    def evaluator(self) -> _Evaluator:
        """An evaluator of ``self.model`` as it is (the caller holds it in eval mode)."""
        return _Evaluator(
            self.model,
            self.loss_fn,
            self.batches,
            self.directions,
            self.accuracy_fn,
            self.first_layer,
        )

    def worker_evaluator(self) -> _Evaluator:
        """This thread's evaluator of a private eval-mode copy of the model."""
        ev = self._evaluators.get(threading.get_ident())
        if ev is None:
            model = copy.deepcopy(self.model).eval()
            ev = _Evaluator(
                model,
                self.loss_fn,
                self.batches,
                self.directions,
                self.accuracy_fn,
                self.first_layer,
            )
            self._evaluators[threading.get_ident()] = ev
        return ev

    def __getstate__(self):
        return {**self.__dict__, "_evaluators": {}}


def _dask_chunks(job: _Job, chunks: list[np.ndarray]) -> tuple[list, str]:
    """Chunks of points (their coefficient rows) on a Dask worker, one after the other, on one
    torch thread (restored afterwards), as a sweep trial runs: the numbers do not depend on the
    worker's core count. Returns ``[(loss, accuracy), ...]`` and the evaluator's method."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ev = job.worker_evaluator()
        return [ev(coeffs) for coeffs in chunks], ev.method
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Progress:
    """The values of a grid so far, chunk by chunk; with a ``path``, saved there (atomically)
    after every chunk until the grid is complete, so that an interrupted computation resumes."""

    size: int
    loss: np.ndarray
    accuracy: np.ndarray
    done: np.ndarray
    path: Path | None = None
    config: dict | None = None

    @classmethod
    def start(cls, points: int, size: int, path=None, config=None) -> _Progress:
        """A fresh grid of ``points`` in chunks of ``size``, or the finished chunks of an
        interrupted computation when ``path`` holds them for the same ``config`` (in its chunk
        size)."""

        fresh = cls(
            size,
            np.full(points, np.nan),
            np.full(points, np.nan),
            np.zeros(math.ceil(points / size), dtype=bool),
            path,
            config,
        )
        if path is None or not path.is_file():
            return fresh
        try:
            arrays, meta = io.load_arrays(path)
        except io.CacheCorruptError:
            return fresh
        if meta.get("config") != config or arrays["loss"].shape != (points,):
            return fresh
        size = int(meta["chunk_size"])
        if arrays["done"].shape != (math.ceil(points / size),):  # a fresh start in its size
            return cls.start(points, size)._at(path, config)
        return cls(
            size,
            arrays["loss"].copy(),
            arrays["accuracy"].copy(),
            arrays["done"].copy(),
            path,
            config,
        )

    def _at(self, path, config) -> _Progress:
        self.path, self.config = path, config
        return self

    def chunks(self) -> list[tuple[int, int]]:
        return _chunks(len(self.loss), self.size)

    def todo(self) -> list[int]:
        return [i for i in range(len(self.done)) if not self.done[i]]

    def record(self, results: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """Chunk ``i``'s ``(loss, accuracy)`` for each ``i`` of ``results``; then saved."""

        chunks = self.chunks()
        for i, (loss, accuracy) in results.items():
            lo, hi = chunks[i]
            self.loss[lo:hi], self.accuracy[lo:hi] = loss, accuracy
            self.done[i] = True
        if self.path is not None and not self.done.all():
            io.save_arrays(
                self.path,
                {"loss": self.loss, "accuracy": self.accuracy, "done": self.done},
                {"config": self.config, "chunk_size": self.size},
            )


def _run_here(job: _Job, coeffs: np.ndarray, state: _Progress, progress: bool) -> str:
    """The missing chunks in this process; returns the evaluator's method."""
    with _eval_mode(job.model):
        ev = job.evaluator()
        chunks = state.chunks()
        for i in _tqdm(state.todo(), progress, "chunk"):
            lo, hi = chunks[i]
            state.record({i: ev(coeffs[lo:hi])})
    return ev.method


def _guided_groups(todo: list[int], threads: int) -> list[list[int]]:
    """``todo`` cut into consecutive groups that shrink as the grid fills (guided scheduling):
    each group takes ``1 / (2 threads)`` of the chunks still unassigned (at least one), so the
    first tasks are large (few of them to schedule) and the last are single chunks (the workers
    finish together instead of one waiting for another's large last task)."""
    groups, start = [], 0
    while start < len(todo):
        size = max(1, (len(todo) - start) // (2 * threads))
        groups.append(todo[start : start + size])
        start += size
    return groups


def _run_on_dask(client, job: _Job, coeffs: np.ndarray, state: _Progress, progress) -> str:
    """The missing chunks as tasks on ``client``'s workers, recorded as they finish. The job
    (model, loss, data, directions) is scattered to every worker once; each task carries only
    the coefficient rows of its chunks, consecutive chunks in the shrinking groups of
    :func:`_guided_groups` (a task per chunk spent more time scheduling than computing on a
    loaded machine; equal groups left one worker waiting for the other's last group, about a
    tenth of the wall time of a 41 x 41 grid on two workers). On an error or an interruption
    the outstanding tasks are cancelled (the chunks finished so far are kept in the partial file)."""
    from distributed import as_completed

    todo = state.todo()
    if not todo:
        return _run_here(job, coeffs, state, progress)
    chunks = state.chunks()
    threads = max(1, sum(client.nthreads().values()))
    groups = _guided_groups(todo, threads)
    [remote] = client.scatter([job], broadcast=True, hash=False)
    token = uuid.uuid4().hex[:12]
    submitted = client.map(  # one graph for all the tasks: less work here than a submit each
        _dask_chunks,
        [remote] * len(groups),
        [[coeffs[slice(*chunks[i])] for i in group] for group in groups],
        key=[f"landscape-{token}-{group[0]}" for group in groups],
    )
    futures = dict(zip(submitted, groups, strict=True))
    method = "vmap"
    bar = _tqdm(None, progress, "chunk", total=len(todo))
    try:
        for fut in as_completed(futures):
            results, method = fut.result()
            state.record(dict(zip(futures[fut], results, strict=True)))
            bar.update(len(results))
    finally:
        bar.close()
        client.cancel([*futures, remote])
    return method


def _compute(job: _Job, grid: _Grid, settings: SurfaceSettings, partial=None):
    """The grid's arrays (resuming from ``partial`` = (path, config) when given) and how they
    were computed: seconds, chunk size, method."""
    start = time.perf_counter()
    coeffs = grid.coefficients
    size = settings.chunk_size
    if size is None:
        size = auto_chunk_size(job.model, job.batches, len(coeffs), settings.memory)
    state = _Progress.start(len(coeffs), size, *(partial or ()))
    if settings.client is None:
        method = _run_here(job, coeffs, state, settings.progress)
    else:
        method = _run_on_dask(settings.client, job, coeffs, state, settings.progress)
    run = {"seconds": time.perf_counter() - start, "chunk_size": state.size, "method": method}
    return grid.arrays(state.loss, state.accuracy), run


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

    try:
        return io.callable_identity(fn, what)
    except io.UnidentifiableError as exc:
        raise ValueError(
            f"Invalid {what} for a cached grid: {exc}; pass cache_key='...' naming the loss "
            "and accuracy functions in the cache key instead"
        ) from exc


def _cache_config(job: _Job, grid: _Grid, settings: SurfaceSettings) -> dict:
    """What the cache key of a grid covers: everything that changes its numbers (not the
    chunk size, the progress bar or where the chunks run)."""
    model, key = job.model, settings.cache_key

    def model_hash(h):
        h.update(repr(model).encode())
        _hash_tensors(h, parameters(model))
        _hash_tensors(h, dict(model.named_buffers()))

    def dirs_hash(h):
        for d in job.directions:
            _hash_tensors(h, d)

    def data_hash(h):
        for i, (x, y) in enumerate(job.batches):
            _hash_tensors(h, {f"x{i}": x, f"y{i}": y})

    return {
        "model": _digest(model_hash),
        "directions": _digest(dirs_hash),
        "data": _digest(data_hash),
        "loss_fn": {"key": key} if key is not None else _fn_identity(job.loss_fn, "loss_fn"),
        "accuracy_fn": (
            None
            if job.accuracy_fn is None or key is not None
            else _fn_identity(job.accuracy_fn, "accuracy_fn")
        ),
        "alphas": grid.alphas.tolist(),
        "betas": None if grid.betas is None else grid.betas.tolist(),
        "first_layer": job.first_layer,
        "extra": settings.cache_extra or {},
    }


def _cached(job: _Job, grid: _Grid, settings: SurfaceSettings):
    """The grid's arrays from the cache, or computed (resuming an interrupted computation from
    its partial file) and stored; and how they were computed (empty for a hit)."""

    cache = settings.cache
    name = cache if isinstance(cache, str) else f"landscape_{len(grid.shape)}d"
    config = _cache_config(job, grid, settings)
    path = io.check_entry_path(io.cache_path(name, config))
    partial_path = io.check_entry_path(path.with_name(path.stem + ".partial.npz"), "partial file")
    partial = (partial_path, json.loads(io.canonical_json(config)))
    if settings.refresh:  # the finished chunks of an interrupted run are not trusted either
        partial[0].unlink(missing_ok=True)
    run = {}

    def compute() -> dict[str, np.ndarray]:
        arrays, info = _compute(job, grid, settings, partial)
        run.update(info)
        return arrays

    arrays = io.cached(name, config, compute, refresh=settings.refresh)
    if not grid.fits(arrays):  # intact, but not this grid's arrays
        warnings.warn(
            f"cache entry {path.name} holds arrays of another grid; recomputed",
            RuntimeWarning,
            stacklevel=4,
        )
        arrays = io.cached(name, config, compute, refresh=True)
    partial[0].unlink(missing_ok=True)
    return arrays, run


# -- the public functions ------------------------------------------------------------------------
def _surface(model, loss_fn, data, directions, alphas, betas, settings) -> LandscapeGrid:
    """A grid of ``directions`` (one or two) around ``model``: checked before any work, then
    read from the cache, computed here or computed on the Dask client of ``settings``."""
    grid = _Grid.of(alphas, betas)
    settings = settings.checked()
    params = parameters(model)
    directions = [_check_direction(f"d{i + 1}", d, params) for i, d in enumerate(directions)]
    data = _check_data(data, next(iter(params.values())).device)  # read once, checked first
    if not callable(loss_fn):
        raise ValueError(f"Invalid loss_fn: {loss_fn!r} (expected a callable)")
    job = _Job(model, loss_fn, data, directions, settings.accuracy_fn, settings.first_layer)
    if settings.cache:
        arrays, run = _cached(job, grid, settings)
    else:
        arrays, run = _compute(job, grid, settings)
    return LandscapeGrid(
        alphas=grid.alphas,
        betas=grid.betas,
        loss=np.asarray(arrays["loss"]),
        accuracy=np.asarray(arrays["accuracy"]),
        seconds=run.get("seconds", 0.0),
        chunk_size=run.get("chunk_size", 0),
        method=run.get("method", "cached"),
        from_cache=not run,
    )


def surface_1d(
    model: nn.Module,
    loss_fn: Callable,
    data,
    direction: Mapping[str, Tensor],
    alphas,
    *,
    settings: SurfaceSettings | None = None,
    **options,
) -> LandscapeGrid:
    """Loss and accuracy at ``theta + alpha * direction`` for each of ``alphas``; see
    :func:`surface_2d` for the arguments. ``betas`` of the result is None."""
    settings = SurfaceSettings.of(settings, options)
    return _surface(model, loss_fn, data, [direction], alphas, None, settings)


def surface_2d(
    model: nn.Module,
    loss_fn: Callable,
    data,
    d1: Mapping[str, Tensor] | Directions,
    d2: Mapping[str, Tensor] | None = None,
    alphas=None,
    betas=None,
    *,
    settings: SurfaceSettings | None = None,
    **options,
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
        settings: a :class:`SurfaceSettings` holding the keyword arguments below (default:
            their defaults); those given as keywords replace its fields.
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
        client: a ``dask.distributed.Client``: the chunks run as tasks on its workers (the
            way Li et al.'s code spreads a grid over GPUs with MPI). The model, loss, data
            and directions are sent to every worker once (scattered), each task carries its
            chunk's coefficients and runs on one torch thread; chunks are recorded as they
            finish (with ``cache``, in the partial file too, so that an interrupted grid
            resumes, with or without a client). The chunk size is chosen here, as without a
            client, so each point goes through the same arithmetic: the grid is bit-identical
            to one computed in this process on one torch thread, on the same device type and
            library versions (the workers evaluate on the device the model is on, so they
            need one of that type). Loss and accuracy functions must be picklable
            (cloudpickle: lambdas and closures are).

    Raises:
        ValueError: a direction whose keys or shapes do not match the model, an empty or
            non-finite grid, empty data, a bad chunk size, a ``client`` that is not a running
            ``distributed.Client``; before any work starts.
        TypeError: a keyword argument that is none of the above.
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
    settings = SurfaceSettings.of(settings, options)
    return _surface(model, loss_fn, data, [d1, d2], alphas, betas, settings)


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


def _model_at(model_a, params, direction, alpha: float, buffers_b, bn_batches) -> nn.Module:
    """A copy of model a at ``theta_a + alpha (theta_b - theta_a)`` in eval mode, its running
    statistics recomputed from ``bn_batches`` or, when that is None, interpolated like the
    parameters (``buffers_b`` are model b's)."""
    point = copy.deepcopy(model_a)
    with torch.no_grad():
        for k, p in point.named_parameters():
            p.copy_(params[k] + alpha * direction[k])
        if bn_batches is None:
            for k, b in point.named_buffers():
                if b.is_floating_point():
                    b.copy_((1 - alpha) * b + alpha * buffers_b[k])
    if bn_batches is not None:
        _recompute_bn(point, bn_batches)
    return point.eval()


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
    bn_batches = _check_data(bn_data, device, "bn_data") if recompute_bn else None
    buffers_b = dict(model_b.named_buffers())
    origin = [{k: torch.zeros_like(p) for k, p in params.items()}]  # the point model itself
    loss, acc = np.empty(len(alphas)), np.empty(len(alphas))
    for i, alpha in enumerate(_tqdm(alphas, progress, "point")):
        point = _model_at(model_a, params, direction, float(alpha), buffers_b, bn_batches)
        lo, ac = evaluate_points(
            point,
            loss_fn,
            batches,
            origin,
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
