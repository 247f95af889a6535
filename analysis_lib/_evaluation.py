"""The evaluation core that the probes, the tasks and the landscapes share.

It sits below every other module of the library and imports none of them.

**What ``data`` may be** (the one rule for every ``(model, loss_fn, data)`` probe; checked by
:func:`batches`, and every error names ``data``, or the argument's own name):

* an iterable of batches, read once: a list or tuple of batches, a generator, a
  ``torch.utils.data.DataLoader``. A single ``(inputs, targets)`` pair of tensors is refused
  (wrap it in a list: ``[(inputs, targets)]``), and so are a tensor, a string and a mapping;
* each batch an ``(inputs, targets)`` pair (a tuple or a list of two, as a DataLoader yields);
* ``inputs`` a tensor, or a tuple or list of tensors (the model's positional arguments, handed
  on as a tuple); ``targets`` a tensor, or a tuple or list of tensors (handed to the loss as a
  tuple). NumPy arrays are converted with ``torch.as_tensor``; anything else is refused;
* every tensor of a batch has the batch's ``n_b`` samples along its first dimension (so a 0-d
  tensor, or inputs and targets of different lengths, are refused);
* batches without samples are skipped; the data as a whole must hold at least one sample.

The loss over the data is the sample-weighted mean of the batch losses,
``L = sum_b (n_b / N) L_b`` with ``N = sum_b n_b``: with ``L_b`` the mean over batch ``b``'s
samples it is the mean over all ``N`` samples, so a ragged last batch counts right.
:func:`batches` returns the :class:`Batch` list with ``n_b`` and ``n_b / N``, every tensor moved
to the device once.

The other pieces:

* :class:`ParameterSpace`: flat vectors <-> ``dict[str, Tensor]`` keyed like
  ``model.named_parameters()``; :func:`select_parameters` picks the named parameters a probe
  differentiates with respect to.
* :class:`ModelCall`: ``model(*args)`` with its parameters and buffers replaced by given tensors
  (``torch.func.functional_call``), safe for a module used in two places and for parameters
  tied between layers; :func:`shares_tensors` tells whether a model has either.
* :class:`FunctionalModel`: a model, its loss and its checked batches as a function of chosen
  parameters (through :class:`ModelCall`), the rest of the model held fixed.
* :func:`accuracy`: the default accuracy of a classifier's batch (argmax of the outputs against
  integer class targets).
* :func:`eval_mode`: evaluate a model in eval mode (dropout off, batch norm with its running
  statistics) and give every submodule back its own train/eval flag afterwards, also when the
  block raises. ``model.train(flag)`` would not do: it sets one flag on every submodule, so a
  submodule that was deliberately left in the other mode (a frozen batch-norm layer in a
  training model, a dropout layer kept active in an evaluated one) would be changed.
* :func:`generator`: the ``torch.Generator`` of a ``seed`` argument (an integer >= 0, Python's or
  NumPy's, or a generator used as it is).
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "Batch",
    "FunctionalModel",
    "ModelCall",
    "ParameterSpace",
    "accuracy",
    "batches",
    "eval_mode",
    "generator",
    "select_parameters",
    "shares_tensors",
    "warn_batchnorm",
]


# -- batches -------------------------------------------------------------------------------------
class Batch(NamedTuple):
    """One checked batch: ``inputs`` (a tensor or a tuple of tensors), ``targets`` (likewise),
    its number of samples ``size`` (``n_b``) and its ``weight`` ``n_b / N`` in the mean over the
    data."""

    inputs: Tensor | tuple[Tensor, ...]
    targets: Tensor | tuple[Tensor, ...]
    size: int
    weight: float


def batches(
    data: Iterable, device: torch.device | str | None = None, name: str = "data"
) -> list[Batch]:
    """``data`` checked by the module's rules and read once, as a list of :class:`Batch` with
    every tensor on ``device`` (None: where it is) and ``weight = n_b / N``.

    A list of :class:`Batch` (what this returns) is accepted again, and only moved and
    re-weighted. Raises a ValueError naming ``name`` for anything the rules refuse.
    """
    iterator = _batch_iterator(data, name)
    device = None if device is None else torch.device(device)
    kept = []
    for i, batch in enumerate(iterator):
        inputs, targets = _pair(batch, i, name)
        inputs = _tensors(inputs, f"the inputs of batch {i}", name)
        targets = _tensors(targets, f"the targets of batch {i}", name)
        n = _samples(inputs, targets, i, name)
        if n > 0:
            kept.append((_to(inputs, device), _to(targets, device), n))
    total = sum(n for *_, n in kept)
    if total == 0:
        raise ValueError(
            f"Invalid {name}: no samples (expected a non-empty iterable of (inputs, targets) "
            "batches)"
        )
    return [Batch(x, y, n, n / total) for x, y, n in kept]


def _batch_iterator(data: Any, name: str) -> Iterator:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        raise ValueError(
            f"Invalid {name}: expected an iterable of (inputs, targets) batches, "
            "got one (inputs, targets) pair; wrap it in a list: [(inputs, targets)]"
        )
    if isinstance(data, Tensor | np.ndarray | str | bytes | Mapping):
        raise ValueError(
            f"Invalid {name}: {type(data).__name__} (expected an iterable of (inputs, targets) "
            "batches, e.g. a list or a DataLoader)"
        )
    try:
        return iter(data)
    except TypeError:
        raise ValueError(
            f"Invalid {name}: {type(data).__name__} (expected an iterable of (inputs, targets) "
            "batches, e.g. a list or a DataLoader)"
        ) from None


def _pair(batch: Any, i: int, name: str) -> tuple[Any, Any]:
    if isinstance(batch, Batch):
        return batch.inputs, batch.targets
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        what = f"{len(batch)} items" if isinstance(batch, tuple | list) else type(batch).__name__
        raise ValueError(f"Invalid {name}: batch {i} is not an (inputs, targets) pair (got {what})")
    return batch[0], batch[1]


def _tensors(value: Any, what: str, name: str) -> Tensor | tuple[Tensor, ...]:
    """A tensor, or a tuple of tensors (from a tuple or a list); NumPy arrays converted."""
    if isinstance(value, tuple | list):
        if not value:
            raise ValueError(f"Invalid {name}: {what} are an empty {type(value).__name__}")
        return tuple(_tensor(v, f"{what}[{j}]", name) for j, v in enumerate(value))
    return _tensor(value, what, name)


def _tensor(value: Any, what: str, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.as_tensor(value)
    if not isinstance(value, Tensor):
        raise ValueError(
            f"Invalid {name}: {what} are a {type(value).__name__} (expected a tensor or a "
            "tuple of tensors)"
        )
    if value.ndim == 0:
        raise ValueError(
            f"Invalid {name}: {what} are a 0-d tensor (expected the samples along the first "
            "dimension)"
        )
    return value


def _samples(inputs: Any, targets: Any, i: int, name: str) -> int:
    """The batch's number of samples: the common first dimension of all its tensors."""
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    ys = targets if isinstance(targets, tuple) else (targets,)
    n = xs[0].shape[0]
    for what, ts in (("inputs", xs), ("targets", ys)):
        for t in ts:
            if t.shape[0] != n:
                raise ValueError(
                    f"Invalid {name}: batch {i} has {n} inputs and {t.shape[0]} {what} "
                    "(every tensor of a batch holds its samples along the first dimension)"
                )
    return int(n)


def _to(x: Tensor | tuple[Tensor, ...], device: torch.device | None):
    if device is None:
        return x
    if isinstance(x, tuple):
        return tuple(t.to(device) for t in x)
    return x.to(device)


# -- parameters ----------------------------------------------------------------------------------
class ParameterSpace:
    """Named tensors (a dict, or ``(name, tensor)`` pairs as ``model.named_parameters()`` gives)
    as one flat vector: their names, shapes and offsets, in their order.

    ``flatten`` concatenates the tensors (each reshaped to 1-D) in that order; ``unflatten``
    cuts a flat vector back into tensors of the shapes (views of it where the layout allows).
    """

    def __init__(self, named: Mapping[str, Tensor] | Sequence[tuple[str, Tensor]]) -> None:
        pairs = list(named.items()) if isinstance(named, Mapping) else list(named)
        self.names = [n for n, _ in pairs]
        self.shapes = [tuple(p.shape) for _, p in pairs]
        self.numels = [p.numel() for _, p in pairs]
        self.size = sum(self.numels)

    def flatten(self, tensors: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
        """One flat vector from a dict keyed by name (or a sequence in the same order)."""
        if isinstance(tensors, Mapping):
            tensors = [tensors[n] for n in self.names]
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, flat: Tensor, name: str = "flat") -> dict[str, Tensor]:
        """The dict ``{name: tensor}`` of a flat vector of shape ``(size,)``."""
        if flat.shape != (self.size,):
            raise ValueError(f"Invalid {name}: shape {tuple(flat.shape)} (expected ({self.size},))")
        chunks = torch.split(flat, self.numels)
        return {n: c.reshape(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}


def select_parameters(
    model: nn.Module, params: str | Iterable[str] | None
) -> list[tuple[str, Tensor]]:
    """The named parameters to differentiate with respect to: all that require grad when
    ``params`` is None, else those whose name equals one of ``params`` or lies under it as a
    module prefix (``"0"`` selects ``"0.weight"`` and ``"0.bias"``); a module used in two
    places is selected by either of its names, and a parameter reached by two names (tied
    weights) is chosen once, under its name in ``model.named_parameters()``. They must share one
    floating-point dtype and one device."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        wanted = _parameter_names(params)
        # every path to a parameter counts (a module used twice is reached by both of its
        # names); what is chosen is the tensor, under its name in named_parameters()
        canonical = {id(p): n for n, p in named}
        paths = [(a, canonical[id(p)]) for a, p in model.named_parameters(remove_duplicate=False)]
        hits = set()
        for w in wanted:
            found = {n for a, n in paths if a == w or a.startswith(f"{w}.")}
            if not found:
                known = ", ".join(n for n, _ in named)
                raise ValueError(f"Invalid params: {w!r} matches no parameter (known: {known})")
            hits |= found
        chosen = [(n, p) for n, p in named if n in hits]
    if not chosen:
        raise ValueError("Invalid model: it has no parameters that require grad")
    dtypes = {p.dtype for _, p in chosen}
    devices = {p.device for _, p in chosen}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            f"Invalid model: parameters must share one dtype and device, got "
            f"{sorted(map(str, dtypes))} on {sorted(map(str, devices))}"
        )
    if not next(iter(dtypes)).is_floating_point:
        raise ValueError(f"Invalid model: parameters of dtype {next(iter(dtypes))}")
    return chosen


def _parameter_names(params: Any) -> list[str]:
    try:
        wanted = [params] if isinstance(params, str) else list(params)
    except TypeError:
        wanted = [params]
    if not all(isinstance(w, str) for w in wanted):
        raise ValueError(
            f"Invalid params: {params!r} (expected a parameter or module name, or a list of them)"
        )
    if not wanted:
        raise ValueError("Invalid params: empty (expected parameter or module names)")
    return wanted


def _slots(model: nn.Module) -> list[tuple[str, str]]:
    """``(slot, name)`` for every distinct place that holds a parameter or a buffer, a place
    being one attribute of one module object: ``slot`` is the first path that reaches it,
    ``name`` the name the tensor it holds has in ``model.named_parameters()`` /
    ``named_buffers()`` (which list a tensor once, under its first name)."""
    canonical: dict[int, str] = {}
    for n, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        canonical.setdefault(id(t), n)
    seen: set[tuple[int, str]] = set()
    slots = []
    every = itertools.chain(
        model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
    )
    for n, t in every:
        prefix, _, attr = n.rpartition(".")
        owner = model.get_submodule(prefix) if prefix else model
        if (id(owner), attr) not in seen:
            seen.add((id(owner), attr))
            slots.append((n, canonical[id(t)]))
    return slots


def shares_tensors(model: nn.Module) -> bool:
    """Whether a parameter or buffer of ``model`` is reached by more than one name: a module
    used in two places of the module tree, or one tensor held by two modules (tied weights)."""
    n_named = sum(1 for _ in itertools.chain(model.named_parameters(), model.named_buffers()))
    every = itertools.chain(
        model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
    )
    return sum(1 for _ in every) != n_named


class ModelCall:
    """``model(*args)`` with parameters and buffers replaced by given tensors, keyed by their
    names in ``model.named_parameters()`` / ``model.named_buffers()`` (those not given keep
    their values); differentiable and vmappable with respect to the tensors given.

    ``torch.func.functional_call`` alone is not safe for every model: with a module used in two
    places, one attribute is reached by two paths, and its swap-in / swap-back records the
    tensor it swapped in as the "original" of the second path, then leaves it in the module
    (a vmapped tensor that has escaped, or a plain tensor where the optimizer's
    ``nn.Parameter`` was). Here every place (one attribute of one module object) is swapped
    exactly once, and a tensor shared by two modules (tied weights) is put into each of them.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
        self.model = model
        self.slots = _slots(model)

    def __call__(self, tensors: Mapping[str, Tensor], args: tuple) -> Any:
        placed = {slot: tensors[name] for slot, name in self.slots if name in tensors}
        return functional_call(self.model, placed, args, tie_weights=False, strict=False)


class FunctionalModel:
    """``model`` as a function of the parameters ``named`` (from :func:`select_parameters`), the
    other parameters and the buffers held at their current values, with ``loss_fn`` and the
    checked :func:`batches` of ``data`` on the parameters' device.

    :meth:`outputs` is ``model(*inputs)`` at the parameter values ``p`` (a dict keyed like
    ``space.names``), through :class:`ModelCall`, so it can be differentiated and vmapped with
    respect to ``p``; the model itself is not touched (shared and tied parameters included).
    """

    def __init__(self, model: nn.Module, loss_fn, data, named: Sequence[tuple[str, Tensor]]):
        if not callable(loss_fn):
            raise ValueError(f"Invalid loss_fn: {loss_fn!r} (expected a callable)")
        self.model = model
        self._call = ModelCall(model)
        self.loss_fn = loss_fn
        self.space = ParameterSpace(named)
        first = named[0][1]
        self.dtype, self.device = first.dtype, first.device
        self.batches = batches(data, self.device)
        chosen = set(self.space.names)
        self.fixed = {n: p.detach() for n, p in model.named_parameters() if n not in chosen}
        self.fixed.update(dict(model.named_buffers()))

    @property
    def size(self) -> int:
        """The number of parameters the function is of."""
        return self.space.size

    @property
    def samples(self) -> int:
        """``N``, the number of samples in the data."""
        return sum(b.size for b in self.batches)

    def parameters(self) -> dict[str, Tensor]:
        """The current values of the chosen parameters, detached."""
        live = dict(self.model.named_parameters())
        return {n: live[n].detach() for n in self.space.names}

    def nonfinite_part(self) -> str | None:
        """What holds NaN or infinite values, described: the first of the chosen parameters,
        the other parameters and the buffers, and the batches' floating-point inputs and
        targets; None when all of them are finite."""
        buffers = {n for n, _ in self.model.named_buffers()}
        for n, t in (*self.parameters().items(), *self.fixed.items()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                kind = "buffer" if n in buffers else "parameter"
                return f"the model's {kind} {n!r} holds NaN or infinite values"
        for i, b in enumerate(self.batches):
            for what, value in (("inputs", b.inputs), ("targets", b.targets)):
                for t in value if isinstance(value, tuple) else (value,):
                    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        return f"the {what} of batch {i} hold NaN or infinite values"
        return None

    def outputs(self, p: Mapping[str, Tensor], inputs: Tensor | tuple[Tensor, ...]) -> Tensor:
        """The model's outputs on ``inputs`` with the chosen parameters set to ``p``."""
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        return self._call({**self.fixed, **p}, args)


# -- evaluation ------------------------------------------------------------------------------------
def accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    """The fraction of a batch's samples whose largest output (over the last dimension) is at
    the target class: ``mean_i [argmax_c outputs[i, c] == targets[i]]``, in the outputs' dtype."""
    return (outputs.argmax(dim=-1) == targets).to(outputs.dtype).mean()


_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


def warn_batchnorm(model: nn.Module, what: str = "curvature", stacklevel: int = 3) -> None:
    """Warn that ``what`` is evaluated with batch norm's running statistics, when the model has
    batch-norm layers (in eval mode they do not use the batch's own statistics)."""
    if any(isinstance(m, _BATCHNORM) for m in model.modules()):
        warnings.warn(
            f"the model has batch norm layers: {what} is evaluated in eval mode, with the "
            "running statistics (not the batch statistics)",
            UserWarning,
            stacklevel=stacklevel,
        )


def generator(seed: int | torch.Generator, name: str = "seed") -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``, or ``seed`` itself when it is one."""
    if isinstance(seed, torch.Generator):
        return seed
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(
            f"Invalid {name}: {seed!r} (expected an integer >= 0 or a torch.Generator)"
        )
    return torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` and all its submodules in eval mode for the block; on exit (normal or by
    an exception) restore each module's own ``training`` flag as it was on entry."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
