"""The optimizer registry: every optimizer of the project, once, with what the rest of the
library needs to know about it.

Each :class:`OptimizerSpec` names an optimizer (the key, lower case), says how to build it, how
figures show it (display name, one colour), its family and the kind of its stability threshold:

==========  ==============  =========  =========  ==========================================
name        display         family     threshold  threshold on the sharpness
==========  ==============  =========  =========  ==========================================
sgd         SGD             plain      gd         2 / eta
sgdm        SGD+momentum    momentum   momentum   (2 + 2 beta) / eta
adam        Adam            adaptive   adaptive   (2 + 2 beta1) / ((1 - beta1) eta), on the
adamw       AdamW           adaptive   adaptive   preconditioned Hessian P^(-1) H
adamnx      AdamNX          adaptive   adaptive
ada2ms      Ada2MS          adaptive   adaptive
==========  ==============  =========  =========  ==========================================

Names are case-insensitive everywhere (:func:`optimizer_spec`), and an unknown one is refused
with one message. The colours are the Okabe-Ito palette (colour-blind safe) for the first five
and, for Ada2MS, the point alpha = 0.5 of its sequential alpha scale (``plots.alpha_colors``).
The registry holds hex strings only; it imports nothing of matplotlib.

The per-optimizer facts that diagnostics read (effective step sizes, bias-corrected momentum,
the schedule of the last step) are methods of AdamNX and Ada2MS themselves; for torch's
optimizers the spec's ``facts`` wraps the instance in a view with the same methods
(:mod:`analysis_lib.optim._torch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import torch
from torch import Tensor

from .._checks import check_betas
from ._base import as_plain, check_nonnegative
from ._torch import TorchAdamFacts, TorchSGDFacts
from .ada2ms import Ada2MS
from .adamnx import AdamNX

__all__ = [
    "FAMILIES",
    "OPTIMIZERS",
    "THRESHOLDS",
    "OptimizerFacts",
    "OptimizerSpec",
    "is_adaptive",
    "optimizer_spec",
    "spec_of",
]

FAMILIES = ("plain", "momentum", "adaptive")
THRESHOLDS = ("gd", "momentum", "adaptive")


class OptimizerFacts(Protocol):
    """What diagnostics read from an optimizer after a step (see :mod:`._torch`)."""

    def effective_step_sizes(self) -> dict[Tensor, Tensor]:
        """The per-coordinate step sizes of the last step.

        Returns:
            parameter -> a tensor of its shape (parameters with state only).
        """
        ...

    def momentum_directions(self) -> dict[Tensor, Tensor]:
        """The bias-corrected momentum of each parameter with state.

        Returns:
            parameter -> a tensor of its shape.
        """
        ...

    def step_measures(self) -> dict[str, float]:
        """Optimizer-specific numbers of the last step (e.g. AdamNX's ``beta2_hat``).

        Returns:
            name -> value (may be empty).
        """
        ...


def _itself(optimizer: Any) -> Any:
    return optimizer


def _always(optimizer: torch.optim.Optimizer) -> bool:
    return True


def _has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    return any(g.get("momentum", 0.0) > 0 for g in optimizer.param_groups)


def _no_momentum(optimizer: torch.optim.Optimizer) -> bool:
    return not _has_momentum(optimizer)


#: The hyperparameters of torch's optimizers held to this library's one rule (AdamNX's and
#: Ada2MS's): a finite number >= 0 (NaN, inf, a bool, a string or a tensor refused); ``betas``
#: two numbers in [0, 1).
_NONNEGATIVE = ("lr", "eps", "weight_decay", "momentum", "dampening")


def _check_hparams(hparams: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``hparams`` checked, with a NumPy number among them as the Python float it equals."""
    checked = dict(hparams)
    for name in _NONNEGATIVE:
        if name in hparams:
            checked[name] = as_plain(hparams[name], check_nonnegative(name, hparams[name], where))
    if "betas" in hparams:
        betas = hparams["betas"]
        checked["betas"] = as_plain(betas, check_betas(f"betas{where}", betas))
    return checked


def _torch_optimizer(cls: type[torch.optim.Optimizer], **preset: Any) -> Callable:
    """torch's optimizer ``cls`` (with the ``preset`` defaults unless given) whose
    hyperparameters are checked by the library's rule: the keyword arguments before it is
    built, each param group's own values (``" in param group i"``) before it is returned."""

    def build(params: Iterable, **hparams) -> torch.optim.Optimizer:
        hparams = _check_hparams({**preset, **hparams}, "")
        optimizer = cls(params, **hparams)
        for gi, group in enumerate(optimizer.param_groups):
            _check_hparams(group, f" in param group {gi}")
        return optimizer

    build.__name__ = build.__qualname__ = cls.__name__
    build.__doc__ = (
        f"torch.optim.{cls.__name__}"
        + (
            f" with {', '.join(f'{k}={v!r}' for k, v in preset.items())} unless given"
            if preset
            else ""
        )
        + ", its hyperparameters checked by the library's rule."
    )
    return build


_sgd = _torch_optimizer(torch.optim.SGD)
_sgdm = _torch_optimizer(torch.optim.SGD, momentum=0.9)  # torch's SGD with momentum 0.9
_adam = _torch_optimizer(torch.optim.Adam)
_adamw = _torch_optimizer(torch.optim.AdamW)


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the registry.

    Attributes:
        name: the key, lower case (``"sgd"``, ``"sgdm"``, ``"adam"``, ``"adamw"``, ``"adamnx"``,
            ``"ada2ms"``).
        display: the name in figures and tables (``"SGD+momentum"``, ``"AdamNX"``, ...).
        color: ``"#rrggbb"``, the one colour of this optimizer in every figure.
        family: ``"plain"``, ``"momentum"`` or ``"adaptive"`` (a diagonal preconditioner).
        threshold: the stability-threshold kind: ``"gd"`` (2 / eta), ``"momentum"``
            ((2 + 2 beta) / eta) or ``"adaptive"`` ((2 + 2 beta1) / ((1 - beta1) eta) on the
            preconditioned Hessian).
        build: ``(params, **hparams) -> optimizer``.
        cls: the class whose instances this spec describes (subclasses included); None: no
            instance is recognised as this optimizer.
        matches: among specs of one class, whether an instance is this one (SGD with momentum
            is ``"sgdm"``, without it ``"sgd"``).
        facts: ``optimizer -> OptimizerFacts``, the view diagnostics read (the optimizer itself
            for AdamNX and Ada2MS).
    """

    name: str
    display: str
    color: str
    family: str
    threshold: str
    build: Callable[..., torch.optim.Optimizer]
    cls: type[torch.optim.Optimizer] | None = None
    matches: Callable[[torch.optim.Optimizer], bool] = _always
    facts: Callable[[torch.optim.Optimizer], OptimizerFacts] = _itself

    @property
    def adaptive(self) -> bool:
        """Whether the optimizer has a diagonal preconditioner (the Adam family).

        Returns:
            True when ``family`` is ``"adaptive"``.
        """
        return self.family == "adaptive"

    def __call__(self, params: Iterable, **hparams) -> torch.optim.Optimizer:
        """``build(params, **hparams)``: a spec can stand where a constructor is expected."""
        return self.build(params, **hparams)


_SPECS = (
    OptimizerSpec("sgd", "SGD", "#0072b2", "plain", "gd", _sgd, torch.optim.SGD,
                  matches=_no_momentum, facts=TorchSGDFacts),
    OptimizerSpec("sgdm", "SGD+momentum", "#56b4e9", "momentum", "momentum", _sgdm,
                  torch.optim.SGD, matches=_has_momentum, facts=TorchSGDFacts),
    OptimizerSpec("adam", "Adam", "#009e73", "adaptive", "adaptive", _adam,
                  torch.optim.Adam, facts=TorchAdamFacts),
    OptimizerSpec("adamw", "AdamW", "#e69f00", "adaptive", "adaptive", _adamw,
                  torch.optim.AdamW, facts=TorchAdamFacts),
    OptimizerSpec("adamnx", "AdamNX", "#cc79a7", "adaptive", "adaptive", AdamNX, AdamNX),
    OptimizerSpec("ada2ms", "Ada2MS", "#ae1759", "adaptive", "adaptive", Ada2MS, Ada2MS),
)  # fmt: skip
#: name -> spec, in the order sgd, sgdm, adam, adamw, adamnx, ada2ms (read-only).
OPTIMIZERS: Mapping[str, OptimizerSpec] = MappingProxyType({s.name: s for s in _SPECS})


def optimizer_spec(name: str) -> OptimizerSpec:
    """The spec of the optimizer called ``name`` (any case).

    Args:
        name: a registered name (``"sgd"``, ``"sgdm"``, ``"adam"``, ``"adamw"``, ``"adamnx"``,
            ``"ada2ms"``), in any case.

    Returns:
        Its :class:`OptimizerSpec`.

    Raises:
        ValueError: ``Unknown optimizer: 'x' (known: sgd, sgdm, adam, adamw, adamnx, ada2ms)``.
    """
    spec = OPTIMIZERS.get(name.lower()) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"Unknown optimizer: {name!r} (known: {', '.join(OPTIMIZERS)})")
    return spec


def spec_of(optimizer: torch.optim.Optimizer) -> OptimizerSpec | None:
    """The spec that describes the instance ``optimizer`` (a subclass of a registered class
    counts as that class; torch's SGD is ``"sgdm"`` when a param group has momentum > 0), or
    None when no spec does (another optimizer, or not an optimizer).

    Args:
        optimizer: any object; only a ``torch.optim.Optimizer`` can match.

    Returns:
        The matching :class:`OptimizerSpec`, or None.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        return None
    for klass in type(optimizer).__mro__:  # the most specific registered class first
        for spec in OPTIMIZERS.values():
            if spec.cls is not None and spec.cls is klass and spec.matches(optimizer):
                return spec
    return None


def is_adaptive(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is of the Adam family (a diagonal preconditioner: torch's Adam and
    AdamW, AdamNX, Ada2MS).

    Args:
        optimizer: any object (False for what the registry does not know).

    Returns:
        True for an adaptive optimizer, else False.
    """
    spec = spec_of(optimizer)
    return spec is not None and spec.adaptive
