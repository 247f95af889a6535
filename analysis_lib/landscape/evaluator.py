"""The evaluator of a loss surface: the loss and accuracy of many parameter points at once.

Owns what a chunk of points costs: the checks of what a grid is evaluated on
(:func:`check_inputs`, done once where the inputs enter), the :class:`Evaluator` of
``theta + sum_k c_k d_k`` for chunks of coefficient rows ``c``, its memory-sized chunk size
(:func:`auto_chunk_size`) and :func:`evaluate_points`, the building block of the surfaces. Every
point is evaluated over all of ``data`` (the loss is the sample-weighted mean over the batches,
so a ragged last batch counts right), in eval mode; the model itself is never modified. There are
two paths:

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .. import _evaluation, progress_bar
from .._checks import check_finite_batches, check_int
from .._evaluation import eval_mode as _eval_mode
from .directions import check_direction, parameters

__all__ = ["FIRST_LAYER_OPTIONS", "auto_chunk_size", "evaluate_points"]

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


def check_data(data, device, name: str = "data") -> list[tuple[Tensor, Tensor]]:
    """``data`` by the library's one rule (:func:`analysis_lib._evaluation.batches`: read once,
    checked, moved to ``device``, batches without samples dropped) as ``(inputs, targets)``
    pairs; the evaluator weighs them by their sizes itself. Here inputs and targets are one
    tensor each (a tuple of tensors is refused, naming ``name``), without NaN (refused naming
    the batch and the sample: every point of a grid would be NaN).

    Args:
        data: an iterable of ``(inputs, targets)`` batches (a list or a DataLoader).
        device: where to move the batches.
        name: the argument's name, for the error messages (default ``"data"``).

    Returns:
        A list of ``(inputs, targets)`` tensor pairs on ``device``.

    Raises:
        ValueError: ``data`` is not a valid iterable of batches, or a batch holds a tuple of
            tensors; the message names ``name``.
        NonFiniteError: a batch holds NaN or infinite values.
    """
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


def check_inputs(
    model: nn.Module, loss_fn, data, directions: Sequence[Mapping[str, Tensor]]
) -> tuple[list[tuple[Tensor, Tensor]], list[dict[str, Tensor]]]:
    """What a grid is evaluated on, checked once where it enters: the model (it has
    parameters), the directions (``d1``, ``d2``, ...: keys, shapes, finite values; moved to the
    parameters' dtype and device), the data (:func:`check_data`, on the parameters' device) and
    the loss (a callable). Returns ``(batches, directions)``, what :class:`Evaluator` takes.

    Args:
        model: the network (it must have parameters).
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        data: an iterable of ``(inputs, targets)`` batches.
        directions: the directions, dicts keyed like ``model.named_parameters()``.

    Raises:
        ValueError: a model without parameters, a direction that does not match the parameters
            or is not finite, bad ``data``, or a ``loss_fn`` that is not callable.
        NonFiniteError: a batch holds NaN or infinite values.
    """
    params = parameters(model)
    dirs = [check_direction(f"d{i + 1}", d, params) for i, d in enumerate(directions)]
    batches = check_data(data, next(iter(params.values())).device)  # read once, checked first
    if not callable(loss_fn):
        raise ValueError(f"Invalid loss_fn: {loss_fn!r} (expected a callable)")
    return batches, dirs


def check_first_layer(first_layer) -> str:
    """``first_layer`` when it is one of :data:`FIRST_LAYER_OPTIONS`, else a ValueError.

    Args:
        first_layer: the option to check.

    Returns:
        ``first_layer``.

    Example:
        >>> check_first_layer("off")
        'off'
    """
    if first_layer not in FIRST_LAYER_OPTIONS:
        raise ValueError(
            f"Invalid first_layer: {first_layer!r} (expected one of {FIRST_LAYER_OPTIONS})"
        )
    return first_layer


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
    ``memory`` bytes (default: 64 MiB on the CPU, where larger chunks run slower, a quarter of
    the free memory on CUDA).

    Args:
        model: the network (one forward pass on the largest batch measures its activations).
        data: an iterable of ``(inputs, targets)`` batches.
        points: the number of grid points, an integer >= 1 (an upper bound on the result).
        memory: the budget in bytes, an integer >= 1; None: the default above.

    Returns:
        The chunk size, between 1 and ``points``.

    Raises:
        ValueError: an invalid ``points`` or ``memory``, a model without parameters, or bad
            ``data`` (see :func:`check_data`).
    """
    points = check_int("points", points, 1)
    if memory is not None:
        memory = check_int("memory", memory, 1)
    params = parameters(model)
    return chunk_size_for(
        model, check_data(data, next(iter(params.values())).device), points, memory
    )


def chunk_size_for(model: nn.Module, batches, points: int, memory: int | None) -> int:
    """:func:`auto_chunk_size` for checked ``batches`` (:func:`check_data`) and arguments.

    Args:
        model: the network.
        batches: the checked ``(inputs, targets)`` pairs.
        points: the number of grid points (>= 1).
        memory: the budget in bytes, or None for the default of :func:`auto_chunk_size`.

    Returns:
        The chunk size, between 1 and ``points``.
    """
    params = {k: p.detach() for k, p in model.named_parameters()}
    device = next(iter(params.values())).device
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


class Evaluator:
    """Evaluates ``theta + sum_k c_k D_k`` for chunks of coefficient rows ``c``."""

    def __init__(
        self,
        model,
        loss_fn,
        batches: list[tuple[Tensor, Tensor]],
        directions: Sequence[Mapping[str, Tensor]],
        accuracy_fn,
        first_layer: str,
    ) -> None:
        """``batches`` and ``directions`` as :func:`check_inputs` returns them, ``first_layer``
        one of :data:`FIRST_LAYER_OPTIONS`: checked where they entered, not here."""
        self.model = model
        self.params = {k: p.detach() for k, p in model.named_parameters()}
        ref = next(iter(self.params.values()))
        self.dtype, self.device = ref.dtype, ref.device
        self.dirs = list(directions)
        self.buffers = {k: b.detach() for k, b in model.named_buffers()}
        self.batches = batches
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
    :func:`surface_1d` and :func:`surface_2d`.

    Args:
        model: the network at ``theta`` (not modified).
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        data: an iterable of ``(inputs, targets)`` batches, weighted by their sizes.
        directions: the directions ``d_k``, dicts keyed like ``model.named_parameters()``.
        coefficients: array-like of shape ``(points, len(directions))``.
        chunk_size: points per evaluation, an integer >= 1; None: :func:`auto_chunk_size`.
        accuracy_fn: ``accuracy_fn(outputs, targets)``, the mean accuracy of a batch; None:
            classification accuracy for integer targets, else none.
        first_layer: ``"auto"`` (default: the first affine layer's output is computed once per
            direction, when the model allows) or ``"off"``.
        progress: show a progress bar (default True; ``TQDM_DISABLE=1`` silences it too).
        memory: the budget in bytes for :func:`auto_chunk_size`, or None.

    Returns:
        ``(loss, accuracy)``, float64 arrays of shape ``(points,)``; accuracy is NaN when there is
        no accuracy function.

    Raises:
        ValueError: ``coefficients`` of another shape or empty, an invalid ``first_layer``,
            ``chunk_size`` or ``memory``, or inputs :func:`check_inputs` refuses.
        NonFiniteError: a batch holds NaN or infinite values.
    """
    coeffs = np.asarray(coefficients, dtype=np.float64)
    if coeffs.ndim != 2 or coeffs.shape[1] != len(directions) or coeffs.shape[0] == 0:
        raise ValueError(
            f"Invalid coefficients: shape {coeffs.shape} (expected (points, "
            f"{len(directions)}) with points >= 1)"
        )
    first_layer = check_first_layer(first_layer)
    batches, dirs = check_inputs(model, loss_fn, data, directions)
    with _eval_mode(model):
        ev = Evaluator(model, loss_fn, batches, dirs, accuracy_fn, first_layer)
        if chunk_size is None:
            if memory is not None:
                memory = check_int("memory", memory, 1)
            chunk_size = chunk_size_for(model, batches, len(coeffs), memory)
        chunk_size = check_int("chunk_size", chunk_size, 1)
        losses, accs = [], []
        for lo, hi in progress_bar(
            chunk_bounds(len(coeffs), chunk_size),
            desc="landscape",
            unit="points",
            progress=progress,
        ):
            a, b = ev(coeffs[lo:hi])
            losses.append(a)
            accs.append(b)
    return np.concatenate(losses), np.concatenate(accs)


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """The ``[lo, hi)`` index ranges that cut ``n`` points into chunks of ``size`` (the last
    one shorter).

    Args:
        n: the number of points.
        size: the chunk size, >= 1.

    Returns:
        The ``(lo, hi)`` pairs in order (none when ``n`` is 0).

    Example:
        >>> chunk_bounds(5, 2)
        [(0, 2), (2, 4), (4, 5)]
    """
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]
