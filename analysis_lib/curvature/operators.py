"""Curvature matrices of a model as linear operators on flat parameter vectors.

Every operator here is symmetric, has a ``size`` ``n`` (the number of parameters it acts on), a
``dtype`` and a ``device``, and maps a flat vector ``v`` of shape ``(n,)`` to ``A v`` with
:meth:`LinearOperator.matvec` (also ``A @ v``). The algorithms (:mod:`analysis_lib.curvature.krylov`,
``power``, ``trace``, ``density``) only use that, so they work on any of them:

* :class:`HessianOperator`: the Hessian of the sample-weighted mean loss over ``data``,
  ``H = sum_b (n_b / N) d^2 L_b / d theta^2``, with two Hessian-vector-product backends.
* :class:`GGNOperator`: the generalised Gauss-Newton matrix ``G = sum_b (n_b / N) J_b^T H_b J_b``,
  with ``J_b`` the Jacobian of the model's outputs and ``H_b`` the Hessian of the loss with respect
  to them (exactly ``diag(p) - p p^T`` per sample for cross-entropy, ``2 I`` for squared error,
  each divided by the number of terms the loss averages over).
* :class:`DiagonalScaledOperator`: ``D A D`` for a positive diagonal ``D``; with
  :func:`adam_preconditioner` it is the preconditioned Hessian ``P^(-1/2) H P^(-1/2)`` of an
  Adam-family optimizer (:func:`preconditioned_hessian`).
* :class:`DenseOperator`: an explicit symmetric matrix (for tests and small problems).

Parameters are flattened in the order of ``model.named_parameters()``; :class:`ParameterSpace`
converts between flat vectors and ``dict[str, Tensor]``. What ``data`` may be, and how its
batches are weighted, is the one rule of :mod:`analysis_lib._evaluation`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp

from .._checks import COMPUTE_DTYPES, check_compute_dtype
from .._evaluation import (
    FunctionalModel,
    ParameterSpace,
    eval_mode,
    select_parameters,
    warn_batchnorm,
)
from ..optim import effective_step_sizes

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DenseOperator",
    "DiagonalScaledOperator",
    "GGNOperator",
    "HessianOperator",
    "LinearOperator",
    "ParameterSpace",
    "adam_preconditioner",
    "dense_hessian",
    "eval_mode",
    "preconditioned_hessian",
    "select_parameters",
]

#: The dtypes curvature is computed in (the probes' one rule,
#: :data:`analysis_lib._checks.COMPUTE_DTYPES`). In bfloat16 (8 significant bits) and float16
#: (11) the rounding of every forward and backward pass is far larger than the differences
#: between eigenvalues, and Lanczos' orthogonality is lost: a bfloat16 model gave 0.35 for an
#: eigenvalue of 0.67 with a small residual that did not bound the error. Such models are
#: refused; evaluate a float32 copy instead.
SUPPORTED_DTYPES = COMPUTE_DTYPES


def check_dtype(name: str, dtype: torch.dtype) -> None:
    """Refuse a dtype other than float32 / float64 with an error that says what to do.

    Args:
        name: the argument checked, for the error message.
        dtype: the dtype to check.

    Raises:
        ValueError: ``dtype`` is not float32 or float64; the message names ``name``.
    """
    check_compute_dtype(
        name,
        dtype,
        "curvature",
        "in reduced precision the products are too inexact for the residuals to bound the "
        "eigenvalue errors",
    )


#: Hessian-vector-product backends: reverse-over-reverse (``torch.autograd.grad`` twice) and
#: forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``).
BACKENDS = ("double_backward", "forward_over_reverse")
#: The default backend: the faster of the two in ``benchmarks/bench_curvature.py`` on the digits
#: MLP (CPU, float32 and float64), and the one that works with every loss: torch's
#: ``F.mse_loss`` (mean reduction) fails under forward-over-reverse on torch <= 2.15
#: ("ZeroTensors are immutable", pytorch/pytorch#123996).
DEFAULT_BACKEND = "double_backward"


class LinearOperator:
    """A symmetric linear operator on flat vectors of length ``size``.

    Subclasses implement :meth:`_matvec`; :meth:`matvec` checks the shape and counts the products
    in :attr:`matvecs`.
    """

    size: int
    dtype: torch.dtype
    device: torch.device

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.size = int(size)
        self.dtype = dtype
        self.device = torch.device(device)
        #: The number of matrix-vector products computed so far.
        self.matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(size, size)``."""
        return (self.size, self.size)

    def matvec(self, v: Tensor) -> Tensor:
        """``A v`` for a flat vector ``v`` of shape ``(size,)`` (cast to the operator's dtype and
        device).

        Args:
            v: a tensor of shape ``(size,)``.

        Returns:
            ``A v``, shape ``(size,)``, in the operator's dtype and on its device.

        Raises:
            ValueError: ``v`` (or what :meth:`_matvec` returned) does not have shape ``(size,)``.

        Example:
            >>> import torch
            >>> DenseOperator(torch.tensor([[2.0, 1.0], [1.0, 3.0]])).matvec(torch.ones(2))
            tensor([3., 4.])
        """
        if v.shape != (self.size,):
            raise ValueError(f"Invalid v: shape {tuple(v.shape)} (expected ({self.size},))")
        self.matvecs += 1
        out = self._matvec(v.to(device=self.device, dtype=self.dtype))
        if not isinstance(out, Tensor) or out.shape != (self.size,):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"{type(self).__name__}._matvec returned {got} (expected a tensor of shape "
                f"({self.size},))"
            )
        return out

    def _matvec(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def nonfinite_cause(self) -> str:
        """Why the products are not finite, when the operator can tell (else ``""``): called by
        the algorithms to explain a NaN or an infinity in a product.

        Returns:
            A short explanation, or ``""`` when there is none.
        """
        return ""

    def asymmetry(self) -> float | None:
        """``max |A - A^T| / max |A|`` when the operator can tell it without products (an
        explicit matrix), else None; the algorithms that need symmetry check it
        (:func:`~analysis_lib.curvature.krylov.check_symmetry`).

        Returns:
            The relative asymmetry (0 for a symmetric matrix), or None when it is not known.
        """
        return None

    def __matmul__(self, v: Tensor) -> Tensor:
        if v.ndim == 2:
            return torch.stack([self.matvec(c) for c in v.T], dim=1)
        return self.matvec(v)

    def dense(self) -> Tensor:
        """The explicit ``(size, size)`` matrix, built from ``size`` products with the unit
        vectors (small operators only).

        Returns:
            The matrix, shape ``(size, size)``, in the operator's dtype and on its device.
        """
        eye = torch.eye(self.size, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(e) for e in eye], dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, dtype={self.dtype}, device={self.device})"


class DenseOperator(LinearOperator):
    """An explicit symmetric matrix as an operator.

    Its symmetry is checked exactly (:meth:`asymmetry`) by the algorithms that need it
    (Lanczos, power iteration, SLQ), which refuse a matrix with
    ``max |M - M^T| > sqrt(eps) max |M|`` (``eps`` of its dtype); trace estimation takes any
    square matrix."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"Invalid matrix: shape {tuple(matrix.shape)} (expected square)")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix
        self._asymmetry: float | None = None

    def asymmetry(self) -> float | None:
        """``max |M - M^T| / max |M|`` (0 for a zero matrix), computed once; None when the
        matrix holds NaN or inf (the algorithms then name that instead).

        Returns:
            The relative asymmetry, or None.

        Example:
            >>> import torch
            >>> DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]])).asymmetry()
            1.0
        """
        if self._asymmetry is None:
            m = self.matrix
            if not bool(torch.isfinite(m).all()):
                return None
            scale = float(m.abs().max()) if m.numel() else 0.0
            self._asymmetry = 0.0 if scale == 0 else float((m - m.T).abs().max()) / scale
        return self._asymmetry

    def _matvec(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def nonfinite_cause(self) -> str:
        if not bool(torch.isfinite(self.matrix).all()):
            return "the matrix holds NaN or infinite entries"
        return ""


class DiagonalScaledOperator(LinearOperator):
    """``D A D`` with ``D = diag(scale)``: symmetric when ``A`` is, with the eigenvalues of
    ``D^2 A``. With ``scale = P^(-1/2)`` it is the preconditioned operator ``P^(-1/2) A P^(-1/2)``."""

    def __init__(self, operator: LinearOperator, scale: Tensor) -> None:
        if scale.shape != (operator.size,):
            raise ValueError(
                f"Invalid scale: shape {tuple(scale.shape)} (expected ({operator.size},))"
            )
        if not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
            raise ValueError("Invalid scale: every entry must be finite and > 0")
        super().__init__(operator.size, operator.dtype, operator.device)
        self.operator = operator
        self.scale = scale.to(device=operator.device, dtype=operator.dtype)

    def _matvec(self, v: Tensor) -> Tensor:
        return self.scale * self.operator.matvec(self.scale * v)

    def nonfinite_cause(self) -> str:
        return self.operator.nonfinite_cause()

    def asymmetry(self) -> float | None:
        """Symmetric exactly when the scaled operator is: that one's asymmetry.

        Returns:
            ``operator.asymmetry()``: a float, or None when it is not known.
        """
        return self.operator.asymmetry()


@contextlib.contextmanager
def _quiet_forward_ad():
    """Silence the DeprecationWarning that torch's forward-mode AD raises (from
    ``torch.jit.script``, inside torch) when it first loads its decompositions."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning
        )
        yield


class _ModelOperator(LinearOperator):
    """What the Hessian and the GGN share: the model as a function of the chosen parameters,
    with its loss and data (:class:`~analysis_lib._evaluation.FunctionalModel`)."""

    def __init__(self, model, loss_fn, data, params=None) -> None:
        named = select_parameters(model, params)
        check_dtype("model", named[0][1].dtype)
        fm = FunctionalModel(model, loss_fn, data, named)
        super().__init__(fm.size, fm.dtype, fm.device)
        self.function = fm
        self.model, self.loss_fn, self.space, self.batches = model, loss_fn, fm.space, fm.batches
        self._fixed = fm.fixed
        warn_batchnorm(model)

    def _batch_sum(self, v: Tensor, product) -> Tensor:
        """sum over batches of (n_b / N) product(params, v as a dict, x_b, y_b), flattened: the
        sample-weighted mean of a per-batch matrix-vector product, in eval mode."""
        vs = self.space.unflatten(v)
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        with eval_mode(self.model):
            p = self.parameters()
            for b in self.batches:
                total.add_(self.space.flatten(product(p, vs, b.inputs, b.targets)), alpha=b.weight)
        return total

    def nonfinite_cause(self) -> str:
        """The first of: a parameter, a buffer or a batch holding NaN or inf; the loss or its
        gradient not finite; else the second derivatives overflowing."""
        part = self.function.nonfinite_part()
        if part is not None:
            return part
        loss = self.loss()
        if not math.isfinite(loss):
            return f"the loss over the data is {loss} at the current parameters"
        g = self.gradient()
        if not bool(torch.isfinite(g).all()):
            return f"the loss is finite ({loss:.6g}) but its gradient is not"
        return (
            f"the loss ({loss:.6g}) and its gradient are finite: the second derivatives "
            "overflow or are undefined at the current parameters"
        )

    def parameters(self) -> dict[str, Tensor]:
        """The current values of the parameters the operator acts on, detached."""
        return self.function.parameters()

    def parameter_vector(self) -> Tensor:
        """The current parameters as one flat vector."""
        return self.space.flatten(self.parameters())

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """A flat vector as ``{name: tensor}``."""
        return self.space.unflatten(flat)

    def _outputs(self, p: dict[str, Tensor], inputs: Any) -> Tensor:
        return self.function.outputs(p, inputs)

    def _loss(self, p: dict[str, Tensor], inputs: Any, targets: Any) -> Tensor:
        loss = self.loss_fn(self._outputs(p, inputs), targets)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(
                f"Invalid loss_fn: it returned {got} (expected a scalar tensor: the mean loss "
                "of the batch, e.g. reduction='mean')"
            )
        return loss.reshape(())

    @torch.no_grad()
    def loss(self) -> float:
        """The sample-weighted mean loss over the data at the current parameters."""
        with eval_mode(self.model):
            p = self.parameters()
            return float(sum(b.weight * self._loss(p, b.inputs, b.targets) for b in self.batches))

    def gradient(self) -> Tensor:
        """The gradient of the mean loss as a flat vector."""
        with eval_mode(self.model):
            p = self.parameters()
            total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
            for b in self.batches:
                g = grad(self._loss)(p, b.inputs, b.targets)
                total.add_(self.space.flatten(g), alpha=b.weight)
            return total


class HessianOperator(_ModelOperator):
    """The Hessian of the mean loss over ``data``: ``H = sum_b (n_b / N) d^2 L_b / d theta^2``.

    Args:
        model: the network, with float32 or float64 parameters (bfloat16 and float16 are
            refused: see :data:`SUPPORTED_DTYPES`); it is evaluated in eval mode (batch norm
            with running statistics, a warning says so; dropout off), and every submodule's own
            mode is restored after every product.
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        data: an iterable of ``(inputs, targets)`` batches (a list or a DataLoader), read once
            and kept (moved to the model's device). Batch ``b`` of ``n_b`` samples weighs
            ``n_b / N``.
        params: the parameters to take the Hessian over: names or module prefixes (``"0"`` for
            the first layer of a Sequential), or None for every parameter that requires grad.
        backend: ``"double_backward"`` (gradient with ``create_graph``, then the gradient of
            ``g . v``) or ``"forward_over_reverse"`` (``torch.func.jvp`` of ``torch.func.grad``;
            it needs forward-mode formulas for every op, and fails for ``F.mse_loss`` on
            torch <= 2.15); None picks :data:`DEFAULT_BACKEND`.
    """

    def __init__(self, model, loss_fn, data, params=None, backend: str | None = None) -> None:
        backend = DEFAULT_BACKEND if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"Invalid backend: {backend!r} (expected one of {BACKENDS})")
        super().__init__(model, loss_fn, data, params)
        self.backend = backend

    def _matvec(self, v: Tensor) -> Tensor:
        product = self._hvp_reverse if self.backend == "double_backward" else self._hvp_forward
        return self._batch_sum(v, product)

    def _hvp_reverse(self, p, vs, x, y):
        with torch.enable_grad():
            leaves = {n: t.requires_grad_() for n, t in p.items()}
            tensors = list(leaves.values())
            g = torch.autograd.grad(
                self._loss(leaves, x, y),
                tensors,
                create_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
            dot = sum((gi * vs[n]).sum() for gi, n in zip(g, leaves, strict=True))
            return torch.autograd.grad(dot, tensors, allow_unused=True, materialize_grads=True)

    def _hvp_forward(self, p, vs, x, y):
        def gradient(q):
            return grad(self._loss)(q, x, y)

        with _quiet_forward_ad():
            return jvp(gradient, (p,), (vs,))[1]


class GGNOperator(_ModelOperator):
    """The generalised Gauss-Newton matrix of the mean loss over ``data``:
    ``G = sum_b (n_b / N) J_b^T H_b J_b``, ``J_b`` the Jacobian of the model's outputs on batch
    ``b`` with respect to the parameters, ``H_b`` the Hessian of ``loss_fn`` with respect to the
    outputs (computed by automatic differentiation, so it is exact for any loss; for
    cross-entropy and squared error it is positive semi-definite, and so is ``G``). Arguments
    as :class:`HessianOperator`. Each product costs one forward-mode and one reverse-mode pass
    through the model."""

    def _matvec(self, v: Tensor) -> Tensor:
        return self._batch_sum(v, self._ggn_product)

    def _ggn_product(self, p, vs, x, y):
        def outputs(q):
            return self._outputs(q, x)

        def loss_of_outputs(z):
            return self.loss_fn(z, y)

        def output_gradient_dot_jv(z, jv):
            return (grad(loss_of_outputs)(z) * jv).sum()

        with _quiet_forward_ad():
            z, jv = jvp(outputs, (p,), (vs,))
        # H_out (J v) by reverse-over-reverse in the outputs: forward-over-reverse fails
        # for F.mse_loss on torch <= 2.15 (pytorch/pytorch#123996)
        hjv = grad(output_gradient_dot_jv)(z, jv)
        _, pullback = vjp(outputs, p)
        return pullback(hjv)[0]


def dense_hessian(model: torch.nn.Module, loss_fn, data, params=None) -> Tensor:
    """The explicit Hessian of the sample-weighted mean loss over ``data`` (as
    :class:`HessianOperator`, in eval mode), by ``torch.autograd.functional.hessian`` of the flat
    parameter vector (vectorised over rows): a reference for small models only, since it holds
    ``n x n`` numbers and ``n`` copies of the activations at once.

    Args:
        model: the network (float32 or float64 parameters).
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        data: an iterable of ``(inputs, targets)`` batches.
        params: the parameters (names or module prefixes), or None for all that require grad.

    Returns:
        The Hessian, shape ``(n, n)`` for ``n`` selected parameter entries.

    Raises:
        ValueError: a reduced-precision model, unknown ``params``, bad ``data``, or a ``loss_fn``
            that does not return a scalar tensor.
    """
    op = HessianOperator(model, loss_fn, data, params=params)

    def loss(flat):
        p = op.space.unflatten(flat)
        return sum(b.weight * op._loss(p, b.inputs, b.targets) for b in op.batches)

    with eval_mode(model):
        return torch.autograd.functional.hessian(loss, op.parameter_vector(), vectorize=True)


# -- Adam-family preconditioning ---------------------------------------------------------------
def adam_preconditioner(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, params=None
) -> Tensor:
    """The diagonal ``P = sqrt(d) + eps`` of an Adam-family optimizer's last step, as a flat
    vector over the parameters ``params`` of ``model`` (see :func:`select_parameters`).

    The update is ``theta <- theta - lr * m / P``; ``d`` is each optimizer's own second-moment
    estimate (AdamW/Adam: the bias-corrected ``v_hat``; AdamNX: ``v``; Ada2MS:
    ``v_hat^alpha * s^(1-alpha)``). It is read through
    :func:`analysis_lib.optim.effective_step_sizes` (``lr / P``), so it follows the optimizers'
    own denominator code.

    Args:
        optimizer: an Adam-family optimizer that has taken at least one step.
        model: the network it optimizes.
        params: the parameters (names or module prefixes), or None for all that require grad.

    Returns:
        ``P``, a flat vector over the selected parameters (in :func:`select_parameters` order).

    Raises:
        ValueError: a parameter has no optimizer state yet (take a step first), or its param
            group's learning rate is not > 0.
        TypeError: the optimizer is not of the Adam family.
    """

    sizes = effective_step_sizes(optimizer)
    lrs = {p: float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    out = []
    for name, p in select_parameters(model, params):
        if p not in sizes:
            raise ValueError(
                f"Invalid optimizer: no state for parameter {name!r} (take an optimizer step first)"
            )
        if not lrs[p] > 0:
            raise ValueError(
                f"Invalid optimizer: lr = {lrs[p]!r} for parameter {name!r} "
                "(the preconditioner lr / step size needs lr > 0)"
            )
        out.append((lrs[p] / sizes[p]).reshape(-1))
    return torch.cat(out)


def preconditioned_hessian(
    model, loss_fn, data, optimizer, params=None, backend: str | None = None
) -> DiagonalScaledOperator:
    """``P^(-1/2) H P^(-1/2)`` with ``P`` from :func:`adam_preconditioner`: its eigenvalues are
    those of ``P^(-1) H``, whose largest is the preconditioned sharpness that Adam-like methods
    hold at ``(2 + 2 beta1) / ((1 - beta1) lr)`` (Cohen et al. 2022).

    Args:
        model: the network (float32 or float64 parameters).
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        data: an iterable of ``(inputs, targets)`` batches.
        optimizer: an Adam-family optimizer that has taken at least one step.
        params: the parameters (names or module prefixes), or None for all that require grad.
        backend: the Hessian-vector-product backend (see :class:`HessianOperator`).

    Returns:
        A :class:`DiagonalScaledOperator` of the :class:`HessianOperator`.

    Raises:
        ValueError: as for :class:`HessianOperator` and :func:`adam_preconditioner`, or a
            preconditioner that is not finite and > 0.
        TypeError: the optimizer is not of the Adam family.
    """
    hessian = HessianOperator(model, loss_fn, data, params=params, backend=backend)
    p = adam_preconditioner(optimizer, model, params).to(hessian.dtype)
    return DiagonalScaledOperator(hessian, p.rsqrt())
