"""What AdamNX and Ada2MS share: the torch.optim contract, validation, state, path selection."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .._checks import check_betas, check_float
from ._backends import CompiledRunner, ForeachRunner, LoopRunner

LOOP = LoopRunner()
FOREACH = ForeachRunner()


# The parameter dtypes the optimizers step. float16 is refused: its smallest normal number is
# 6e-5 and its smallest subnormal 6e-8, so the default eps = 1e-8 rounds to zero and a
# gradient below about 2e-4 squares to zero (AdamNX then divides by zero); train such
# models with float32 parameters under torch.autocast instead. bfloat16 has float32's range
# and is supported (its moments are kept in bfloat16, as torch's AdamW does).
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def check_nonnegative(name: str, value: Any, where: str = "") -> float:
    """``value`` as a float when it is a finite real number >= 0 (the library's one rule:
    :func:`analysis_lib._checks.check_float`); the error names ``name`` and ``where``.

    Args:
        name: the hyperparameter's name.
        value: the value to check.
        where: appended to the name in the error (e.g. ``" in param group 1"``).

    Returns:
        ``value`` as a float.

    Raises:
        ValueError: ``value`` not a finite real number >= 0.
    """
    return check_float(f"{name}{where}", value, 0.0)


def as_plain(given: Any, checked: Any) -> Any:
    """``given`` when it is a Python number (or a tuple or list of them), else ``checked``, its value
    as Python floats: a hyperparameter given as a NumPy number is kept as a Python float.

    Args:
        given: the value as the caller gave it.
        checked: the same value as Python floats (from a check).

    Returns:
        ``given`` or ``checked``.

    Example:
        >>> import numpy as np
        >>> as_plain(0.5, 0.5), type(as_plain(np.float32(0.5), 0.5)).__name__
        (0.5, 'float')
    """
    items = given if isinstance(given, tuple | list) else (given,)
    return given if all(type(x) in (int, float) for x in items) else checked


def check_param_dtype(owner: str, p: Tensor, where: str = "") -> None:
    """Refuse a parameter of a dtype the optimizers do not step (see ``SUPPORTED_DTYPES``).

    Args:
        owner: the optimizer's name, for the error.
        p: the parameter.
        where: appended to the error (e.g. ``" in param group 1"``).

    Returns:
        None.

    Raises:
        ValueError: ``p`` not float32, float64 or bfloat16 (float16 with the reason).
    """
    if p.dtype not in SUPPORTED_DTYPES:
        why = (
            " (eps and small squared gradients underflow to zero in float16: keep float32 "
            "parameters and use torch.autocast)"
            if p.dtype == torch.float16
            else ""
        )
        raise ValueError(
            f"{owner} supports parameters of dtype float32, float64 and bfloat16; got a "
            f"parameter of dtype {p.dtype}{where}{why}"
        )


@dataclass
class Bucket:
    """Parameters of one group that share step count, device and dtype: one batched update."""

    step: int
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    exp_avgs: list[Tensor] = field(default_factory=list)
    exp_avg_sqs: list[Tensor] = field(default_factory=list)


class AdamFamily(Optimizer):
    """Base of the Adam-family optimizers here: per-parameter ``exp_avg``, ``exp_avg_sq`` and
    ``step`` state (named as in torch.optim.AdamW), decoupled weight decay, and three execution
    paths chosen per group by ``foreach`` / ``fused``.

    Subclasses provide ``_check_group`` (hyperparameter validation), ``_check_step`` (validation
    that depends on the step about to be taken) and ``_update(group, buckets, runner)``.
    """

    def __init__(
        self, params: Iterable, *, lr, betas, eps, weight_decay, foreach, fused, **hparams
    ) -> None:
        """``lr``, ``betas``, ``eps``, ``weight_decay`` (and a subclass's own ``hparams``)
        become the defaults of every param group; ``foreach`` / ``fused`` choose the path."""
        if isinstance(betas, list):
            betas = tuple(betas)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **hparams)
        if foreach and fused:
            raise ValueError("foreach and fused cannot both be True")
        for name, flag in (("foreach", foreach), ("fused", fused)):
            if flag not in (None, True, False):
                raise ValueError(f"Invalid {name}: {flag!r} (expected None, True or False)")
        self._check_group(defaults, "")
        self._runners: dict[str, Any] = {}
        super().__init__(params, {**defaults, "foreach": foreach, "fused": fused})

    # -- validation -------------------------------------------------------------------------
    def _check_group(self, group: dict[str, Any], where: str) -> None:
        """Check ``group``'s hyperparameters; a NumPy number among them is replaced (in
        ``group``) by the Python float it equals, as torch.optim's own groups hold."""
        for name in ("lr", "eps", "weight_decay"):
            group[name] = as_plain(group[name], check_nonnegative(name, group[name], where))
        group["betas"] = as_plain(group["betas"], check_betas(f"betas{where}", group["betas"]))

    def _check_step(self, group: dict[str, Any], params: list[Tensor], where: str) -> Any:
        """Checks that depend on the step about to be taken (e.g. a scheduled hyperparameter).
        What it returns (e.g. the schedule's values, computed once) is handed to ``_update``."""
        return None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's, after checking the group's parameters' dtypes and hyperparameters.

        Args:
            param_group: a dict with ``params`` and any hyperparameters (the others default to
                the optimizer's).

        Returns:
            None.

        Raises:
            ValueError: a parameter of an unsupported dtype, a hyperparameter out of range, or
                both ``foreach`` and ``fused`` True.
        """
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif not isinstance(params, set):  # torch.optim rejects sets (unordered) itself
            params = list(params)
        where = f" in param group {len(self.param_groups)}"
        for p in params:
            if isinstance(p, Tensor):
                check_param_dtype(type(self).__name__, p, where)
        merged = {**self.defaults, **param_group}
        self._check_group(merged, where)
        param_group = {k: merged[k] if k in self.defaults else v for k, v in param_group.items()}
        if merged.get("foreach") and merged.get("fused"):
            raise ValueError(f"foreach and fused cannot both be True{where}")
        super().add_param_group({**param_group, "params": params})

    # -- loading state ----------------------------------------------------------------------
    STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")  # what every parameter's state holds
    OPTIONAL_STATE_KEYS: tuple[str, ...] = ()
    GROUP_KEYS = ("lr", "betas", "eps", "weight_decay")

    def _check_state_dict(self, state_dict: Any) -> list[dict[str, Any]]:
        """Check that ``state_dict`` is this optimizer's kind of state and fits its parameters
        (keys, shapes, dtypes) before anything changes; return the saved groups as they would
        be loaded (:meth:`_adapt_groups`)."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(
                f"Invalid state_dict: expected a dict with 'state' and 'param_groups' "
                f"(an optimizer's state_dict), got {type(state_dict).__name__}"
                + (
                    f" with keys {sorted(map(str, state_dict))}"
                    if isinstance(state_dict, dict)
                    else ""
                )
            )
        saved, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(saved, list) or not all(isinstance(g, dict) for g in saved):
            raise ValueError("Invalid state_dict: 'param_groups' must be a list of dicts")
        if not isinstance(state, dict):
            raise ValueError("Invalid state_dict: 'state' must be a dict")
        if len(saved) != len(self.param_groups):
            raise ValueError(
                f"Invalid state_dict: it has {len(saved)} param groups, {name} has "
                f"{len(self.param_groups)}"
            )
        params: dict[Any, Tensor] = {}
        for gi, (g, live) in enumerate(zip(saved, self.param_groups, strict=True)):
            missing = [k for k in (*self.GROUP_KEYS, "params") if k not in g]
            if missing:
                raise ValueError(
                    f"Invalid state_dict: param group {gi} lacks {', '.join(map(repr, missing))}"
                    f": not the state of {name} (or of an optimizer whose state it can take)"
                )
            if len(g["params"]) != len(live["params"]):
                raise ValueError(
                    f"Invalid state_dict: param group {gi} has {len(g['params'])} parameters, "
                    f"{name}'s has {len(live['params'])}"
                )
            params.update(zip(g["params"], live["params"], strict=True))
        groups = self._adapt_groups([dict(g) for g in saved])
        known = set(self.STATE_KEYS) | set(self.OPTIONAL_STATE_KEYS)
        for k, entry in state.items():
            where = f"Invalid state_dict: state of parameter {k!r}"
            if k not in params:
                raise ValueError(f"{where}: no parameter of the param groups has this index")
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: expected a dict, got {type(entry).__name__}")
            if not entry:
                continue
            p = params[k]
            missing = [key for key in self.STATE_KEYS if key not in entry]
            extra = sorted(str(key) for key in entry if key not in known)
            if missing or extra:
                raise ValueError(
                    f"{where}: "
                    + (f"lacks {', '.join(map(repr, missing))}" if missing else "")
                    + ("; " if missing and extra else "")
                    + (f"has unknown {', '.join(map(repr, extra))}" if extra else "")
                    + f" (not the state of {name})"
                )
            for key in ("exp_avg", "exp_avg_sq"):
                value = entry[key]
                if not isinstance(value, Tensor) or value.shape != p.shape:
                    got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                    raise ValueError(
                        f"{where}: {key} is {got}, the parameter's shape is {tuple(p.shape)}"
                    )
                if value.dtype not in SUPPORTED_DTYPES:
                    raise ValueError(f"{where}: {key} has dtype {value.dtype}")
            step = entry["step"]
            ok = isinstance(step, Tensor) and step.numel() == 1 and step.is_floating_point()
            try:
                check_float("step", float(step) if ok else step, 0.0)
            except ValueError:
                raise ValueError(
                    f"{where}: step is {step!r} (expected a finite number >= 0)"
                ) from None
        return groups

    def _adapt_groups(self, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Refuse saved param groups of another kind of optimizer; return them as they would
        be loaded (e.g. a schedule saved as data made a callable again)."""
        return groups

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, after checking that ``state_dict`` is this optimizer's kind of state and
        fits its parameters (:meth:`_check_state_dict`): a refused one changes nothing.

        Args:
            state_dict: a dict from :meth:`state_dict`.

        Returns:
            None.

        Raises:
            ValueError: another optimizer's state, one that does not fit the parameters, or
                hyperparameters out of range.
        """
        groups = self._check_state_dict(state_dict)
        for gi, g in enumerate(groups):
            self._check_group({**self.defaults, **g}, f" in state_dict param group {gi}")
        super().load_state_dict(state_dict)

    # -- the step ---------------------------------------------------------------------------
    def _runner(self, group: dict[str, Any], params: list[Tensor]):
        if group["fused"]:
            if "fused" not in self._runners:
                self._runners["fused"] = CompiledRunner()
            return self._runners["fused"]
        foreach = group["foreach"]
        if foreach is None:  # torch's default: multi-tensor kernels on CUDA, a loop elsewhere
            foreach = all(p.is_cuda for p in params)
        return FOREACH if foreach else LOOP

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss.

        Args:
            closure: a callable that recomputes the loss (with gradients), or None.

        Returns:
            The closure's loss, or None without a closure.

        Raises:
            RuntimeError: a sparse gradient.
            ValueError: a hyperparameter out of range or a parameter of an unsupported dtype,
                before any state changes.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # 1. Validate, and compute what can fail, before any state changes.
        name = type(self).__name__
        work = []
        for gi, group in enumerate(self.param_groups):
            where = f" in param group {gi}"
            self._check_group(group, where)
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{name} does not support sparse gradients")
                if p.dtype not in SUPPORTED_DTYPES:  # e.g. model.half() after construction
                    check_param_dtype(name, p, where)
            work.append((group, params, self._check_step(group, params, where)))

        # 2. Update.
        self._apply([w for w in work if w[1]])
        return loss

    def _apply(self, work: list[tuple[dict[str, Any], list[Tensor], Any]]) -> None:
        """Update every (group, parameters with a gradient, plan from ``_check_step``)."""
        for group, params, plan in work:
            self._update(group, self._buckets(params), self._runner(group, params), plan)

    def _steps(self, params: list[Tensor]) -> list[int]:
        """The step count of each parameter (0 before its first step)."""
        counters = [self.state[p]["step"] for p in params if self.state.get(p)]
        counts = iter(torch.stack(counters).tolist() if counters else [])
        return [int(next(counts)) if self.state.get(p) else 0 for p in params]

    def _buckets(self, params: list[Tensor]) -> list[Bucket]:
        """Initialise state where needed, advance the step counters and group the parameters by
        (step, device, dtype) so that each bucket is updated with one set of scalars."""
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if not state:
                self._init_state(p, state)
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1.0)
        return self._group_state(params, states, torch.stack(steps).tolist())

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        # as torch.optim.AdamW: a float step counter on the CPU, moments in p's dtype
        state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _group_state(
        self,
        params: list[Tensor],
        states: list[dict[str, Any]] | None = None,
        steps: list[float] | None = None,
    ) -> list[Bucket]:
        """Bucket ``params`` (which all have state) by (step, device, dtype); ``states`` and
        ``steps`` may be passed when the caller has them already."""
        if states is None:
            states = [self.state[p] for p in params]
        if steps is None:
            steps = self._steps(params)
        buckets: dict[tuple, Bucket] = {}
        for p, state, t in zip(params, states, steps, strict=True):
            key = (t, p.device, p.dtype)
            b = buckets.get(key)
            if b is None:
                b = buckets[key] = Bucket(int(t))
            b.params.append(p)
            b.grads.append(p.grad)
            b.exp_avgs.append(state["exp_avg"])
            b.exp_avg_sqs.append(state["exp_avg_sq"])
        return list(buckets.values())

    def _update(self, group: dict[str, Any], buckets: list[Bucket], runner, plan: Any) -> None:
        raise NotImplementedError

    def _denominators(self, group: dict[str, Any], buckets: list[Bucket]) -> list[list[Tensor]]:
        """The denominator of the last step's update (sqrt(v) + eps, or its analogue) for each
        parameter of each bucket."""
        raise NotImplementedError

    # -- what diagnostics read (see analysis_lib.optim.diagnostics) ---------------------------
    #: Whether a coordinate's update depends on other coordinates of its scope (Ada2MS's mean
    #: second moment), not only on its own gradients.
    couples_coordinates: bool = False
    #: Whether ``exp_avg`` is already the bias-corrected momentum m_hat (AdamNX folds the
    #: correction into its decay); else m_hat = exp_avg / (1 - beta1^t), as in AdamW.
    momentum_bias_corrected: bool = False

    @torch.no_grad()
    def momentum_directions(self) -> dict[Tensor, Tensor]:
        """The bias-corrected momentum m_hat of each parameter that has state: the update is
        -lr * m_hat / (sqrt(d) + eps) (decoupled weight decay aside).

        Returns:
            parameter -> a tensor of its shape (empty before the first step).
        """
        out: dict[Tensor, Tensor] = {}
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                m = state["exp_avg"]
                if not self.momentum_bias_corrected:
                    m = m / (1.0 - group["betas"][0] ** float(state["step"]))
                out[p] = m
        return out

    def step_measures(self) -> dict[str, float]:
        """Scalars that describe the last step's schedule (e.g. AdamNX's beta2_hat); none here.

        Returns:
            name -> value (empty here).
        """
        return {}

    @torch.no_grad()
    def effective_step_sizes(self) -> dict[Tensor, Tensor]:
        """The per-coordinate effective step size lr / denominator of the last step, for each
        parameter that has state: the diagonal preconditioner as it acts on the momentum.

        Returns:
            parameter -> a tensor of its shape (empty before the first step).
        """
        out: dict[Tensor, Tensor] = {}
        for group in self.param_groups:
            buckets = self._group_state([p for p in group["params"] if self.state.get(p)])
            for b, denoms in zip(buckets, self._denominators(group, buckets), strict=True):
                for p, d in zip(b.params, denoms, strict=True):
                    out[p] = group["lr"] / d
        return out


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
