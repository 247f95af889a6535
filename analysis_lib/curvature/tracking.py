"""Sharpness during training: a callback for :func:`analysis_lib.training.train` that tracks the
largest Hessian eigenvalue (and, for Adam-family optimizers, the preconditioned one) beside the
stability thresholds of the optimizer at its current learning rate (edge of stability).

Thresholds for a quadratic with curvature lambda, at learning rate eta (Cohen et al. 2021, 2022):

* gradient descent: ``2 / eta``;
* heavy-ball momentum ``beta`` (torch's SGD, dampening ``d``): ``(2 + 2 beta) / ((1 - d) eta)``;
  with Nesterov: ``(2 + 2 beta) / ((1 + 2 beta)(1 - d) eta)``;
* Adam-like (AdamW, Adam, AdamNX, Ada2MS) on the preconditioned Hessian
  ``P^(-1/2) H P^(-1/2)``: ``(2 + 2 beta1) / ((1 - beta1) eta)`` (38 / eta for beta1 = 0.9).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._checks import NonFiniteError, check_int, check_positive
from .._evaluation import batches, generator
from ..optim import is_adaptive
from .krylov import lanczos
from .operators import BACKENDS, DiagonalScaledOperator, HessianOperator, adam_preconditioner

__all__ = ["SharpnessCallback", "stability_thresholds"]


def stability_thresholds(optimizer: torch.optim.Optimizer, group: int = 0) -> dict[str, float]:
    """The stability thresholds of ``optimizer`` at the current learning rate of a param group.

    Returns ``lr`` and ``threshold_gd = 2 / lr`` always; ``threshold_momentum`` for torch's SGD
    with momentum > 0 (heavy ball, or Nesterov's variant); ``threshold_adam`` for Adam-family
    optimizers (the adaptive family of the optimizer registry,
    :func:`analysis_lib.optim.is_adaptive`; to compare with the preconditioned sharpness).
    Infinite when ``lr == 0``.

    Args:
        optimizer: a ``torch.optim.Optimizer``.
        group: the index of the param group whose learning rate is used (default 0).

    Returns:
        ``{"lr": ..., "threshold_gd": ...}``, plus ``"threshold_momentum"`` or
        ``"threshold_adam"`` where they apply; thresholds in units of the Hessian's eigenvalues.

    Raises:
        ValueError: ``optimizer`` is not an optimizer, or ``group`` is not the index of one of its
            param groups.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
        >>> stability_thresholds(opt)
        {'lr': 0.1, 'threshold_gd': 20.0, 'threshold_momentum': 38.0}
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"Invalid optimizer: {type(optimizer).__name__} (expected a torch.optim.Optimizer)"
        )
    group = check_int("group", group, 0)
    if group >= len(optimizer.param_groups):
        raise ValueError(
            f"Invalid group: {group} (the optimizer has {len(optimizer.param_groups)} param groups)"
        )
    g = optimizer.param_groups[group]
    lr = float(g["lr"])
    inv = math.inf if lr == 0 else 1.0 / lr
    out = {"lr": lr, "threshold_gd": 2.0 * inv}
    if isinstance(optimizer, torch.optim.SGD) and g.get("momentum", 0.0) > 0:
        beta, damp = float(g["momentum"]), float(g.get("dampening", 0.0))
        scale = (1.0 + 2.0 * beta) if g.get("nesterov") else 1.0
        out["threshold_momentum"] = (
            (2.0 + 2.0 * beta) * inv / (scale * (1.0 - damp)) if damp < 1 else math.inf
        )
    if is_adaptive(optimizer):
        beta1 = float(g["betas"][0])
        out["threshold_adam"] = (2.0 + 2.0 * beta1) / (1.0 - beta1) * inv
    return out


class SharpnessCallback:
    """Every ``every`` steps, the sharpness of the loss over a fixed ``data`` subset.

    Returns (for ``run.measurements``):

    * ``sharpness``: the largest eigenvalue of the Hessian of the mean of ``loss_fn`` over
      ``data``, by Lanczos warm-started from the previous call's eigenvector (a few products
      once it is tracking), with ``sharpness_residual`` (a bound on its error) and
      ``sharpness_matvecs``;
    * for Adam-family optimizers, when ``preconditioned``: ``preconditioned_sharpness``, the
      largest eigenvalue of ``P^(-1/2) H P^(-1/2)`` with ``P`` the optimizer's denominator
      (:func:`~analysis_lib.curvature.adam_preconditioner`), likewise warm-started, and its
      residual and products;
    * :func:`stability_thresholds` at the current learning rate (``lr``, ``threshold_gd``, and
      ``threshold_momentum`` or ``threshold_adam``).

    Args:
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch (e.g. ``task.loss_fn``).
        data: the fixed subset, ``(inputs, targets)`` batches as every probe takes them (see
            :mod:`analysis_lib._evaluation`), read once (e.g. ``task.data("train")`` for
            gradient descent).
        every: measure every ``every`` steps.
        preconditioned: also measure the preconditioned sharpness of Adam-family optimizers.
        tol, max_matvecs: Lanczos' relative residual tolerance and product budget per call.
        params: restrict to these parameter names / module prefixes.
        backend: the Hessian-vector-product backend.
        seed: seeds the start of the first call (later calls start from the last eigenvector).
    """

    def __init__(
        self,
        loss_fn,
        data,
        every: int = 10,
        preconditioned: bool = True,
        tol: float = 1e-3,
        max_matvecs: int = 50,
        params=None,
        backend: str | None = None,
        seed: int = 0,
    ) -> None:
        every = check_int("every", every, 1)
        max_matvecs = check_int("max_matvecs", max_matvecs, 1)
        tol = check_positive("tol", tol)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"Invalid backend: {backend!r} (expected one of {BACKENDS})")
        if not isinstance(preconditioned, bool | np.bool_):
            raise ValueError(f"Invalid preconditioned: {preconditioned!r} (expected True or False)")
        if not callable(loss_fn):
            raise ValueError(f"Invalid loss_fn: {loss_fn!r} (expected a callable)")
        self.data = batches(data)  # checked once here; each call moves it to the model
        self.loss_fn, self.every, self.preconditioned = loss_fn, every, preconditioned
        self.tol, self.max_matvecs, self.params, self.backend = tol, max_matvecs, params, backend
        self.seed = seed
        self._generator = generator(seed)
        self._vectors: dict[str, torch.Tensor] = {}

    @property
    def name(self) -> str:
        return type(self).__name__

    def _top(self, key: str, op) -> dict[str, float]:
        try:
            res = self._lanczos(key, op)
        except NonFiniteError:  # a diverging run: record NaN, let the training loop decide
            self._vectors.pop(key, None)
            return {key: math.nan, f"{key}_residual": math.nan, f"{key}_matvecs": math.nan}
        self._vectors[key] = res.vectors[:, 0].detach()
        return {
            key: float(res.values[0]),
            f"{key}_residual": float(res.residuals[0]),
            f"{key}_matvecs": float(res.matvecs),
        }

    def _lanczos(self, key: str, op):
        return lanczos(
            op,
            k=1,
            which="LA",
            tol=self.tol,
            max_matvecs=self.max_matvecs,
            v0=self._vectors.get(key),
            seed=self._generator,
            progress=False,
        )

    def __call__(
        self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Any = None
    ) -> dict[str, float]:
        hessian = HessianOperator(
            model, self.loss_fn, self.data, params=self.params, backend=self.backend
        )
        out = self._top("sharpness", hessian)
        thresholds = stability_thresholds(optimizer)
        if self.preconditioned and "threshold_adam" in thresholds:
            if thresholds["lr"] > 0:
                p = adam_preconditioner(optimizer, model, self.params).to(hessian.dtype)
                out.update(
                    self._top(
                        "preconditioned_sharpness", DiagonalScaledOperator(hessian, p.rsqrt())
                    )
                )
            else:
                out.update(
                    {
                        "preconditioned_sharpness": math.nan,
                        "preconditioned_sharpness_residual": math.nan,
                        "preconditioned_sharpness_matvecs": 0.0,
                    }
                )
        out.update(thresholds)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The warm-start vectors and the generator's state (for a resumed run).

        Returns:
            ``{"vectors": {key: tensor}, "generator": state tensor}``, for :meth:`load_state_dict`.
        """
        return {"vectors": dict(self._vectors), "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Args:
            state: ``{"vectors": ..., "generator": ...}``; a missing key leaves no vectors or
                the generator as it is.
        """
        self._vectors = dict(state.get("vectors", {}))
        if "generator" in state:
            self._generator.set_state(state["generator"])
