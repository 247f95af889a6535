"""Directions in parameter space for loss-landscape slices.

A direction is a ``dict[str, Tensor]`` keyed like ``model.named_parameters()``, with tensors of
the parameters' shapes, dtype and device. A plane is a :class:`Directions` pair ``(d1, d2)``;
the surface around a point ``theta`` is ``f(a, b) = L(theta + a d1 + b d2)``.

* :func:`random_directions` (Li et al. 2018): Gaussian directions, normalised per filter, per
  layer or not at all; as in Li et al. they are not orthogonalised by default (in thousands of
  dimensions they nearly are); ``orthogonal=True`` makes them exactly orthogonal filter by
  filter, so that both stay normalised.
* :func:`pca_directions`: the first two principal directions of a trajectory of parameter
  snapshots ``theta_t - theta_final`` (recorded by :class:`SnapshotCallback`), centred as in Li
  et al. by default, with the explained variance and the path projected on the plane.
* :func:`eigenvector_directions`: the top Hessian eigenvectors (:mod:`analysis_lib.curvature`).
* :func:`difference`: ``theta_b - theta_a``, the direction of a linear interpolation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_int
from .._evaluation import ParameterSpace, generator
from ..curvature import hessian_eigenvalues

__all__ = [
    "NORMALIZATIONS",
    "ONE_D_OPTIONS",
    "Directions",
    "SnapshotCallback",
    "difference",
    "dot",
    "eigenvector_directions",
    "flatten",
    "normalize",
    "orthogonalize",
    "parameters",
    "pca_directions",
    "random_direction",
    "random_directions",
    "unflatten",
]

#: How a Gaussian direction is scaled: per filter (slice along dim 0), per tensor, or not at all.
NORMALIZATIONS = ("filter", "layer", "none")
#: What happens to tensors with at most one dimension (biases, norm-layer weights).
ONE_D_OPTIONS = ("zero", "keep")

Direction = dict[str, Tensor]


@dataclass
class Directions:
    """Two directions spanning a plane, and how they were made.

    Attributes:
        d1, d2: the directions (dicts keyed like ``model.named_parameters()``).
        kind: ``"random"``, ``"pca"``, ``"eigen"`` or ``"given"``.
        cosine: for random directions, the cosine between the two normalised directions as
            drawn (before ``d2`` was orthogonalised, when it was); 0 for PCA and eigenvector
            directions, which are orthonormal by construction.
        orthogonalized: whether ``d2`` was orthogonalised against ``d1``.
        d2_change: random directions with ``orthogonal=True``: how much orthogonalising moved
            ``d2``, ``||d2_after - d2_before|| / ||d2_before||`` (0 otherwise).
        centered: PCA only: whether the trajectory matrix was centred before the decomposition.
        explained_variance_ratio: PCA only: the fraction of the trajectory's squared distance
            to its end captured by each of the two components, shape ``(2,)``.
        path: PCA only: the snapshots' coordinates on the plane, shape ``(T, 2)``; the last row
            is the final point, (0, 0).
        steps: PCA only: the step of each snapshot, shape ``(T,)``.
        eigenvalues: eigenvector directions only: the two Hessian eigenvalues, shape ``(2,)``.
    """

    d1: Direction
    d2: Direction
    kind: str = "given"
    cosine: float = 0.0
    orthogonalized: bool = False
    d2_change: float = 0.0
    centered: bool | None = None
    explained_variance_ratio: np.ndarray | None = None
    path: np.ndarray | None = None
    steps: np.ndarray | None = None
    eigenvalues: np.ndarray | None = None

    @property
    def pair(self) -> tuple[Direction, Direction]:
        return self.d1, self.d2


# -- helpers on dict vectors ---------------------------------------------------------------------
def parameters(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters as a dict of detached tensors (views, not copies).

    Args:
        model: the network.

    Returns:
        ``{name: tensor}`` in ``model.named_parameters()`` order.

    Raises:
        ValueError: ``model`` is not a ``torch.nn.Module`` or has no parameters.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
    params = {name: p.detach() for name, p in model.named_parameters()}
    if not params:
        raise ValueError("Invalid model: it has no parameters")
    return params


def check_direction(name: str, direction, reference: Mapping[str, Tensor]) -> Direction:
    """``direction`` checked against ``reference`` (same keys and shapes, finite values: a NaN
    or an infinity is refused naming ``name`` and the parameter), moved to its dtype and
    device.

    Args:
        name: the direction's name, for the error messages.
        direction: a mapping of parameter names to tensors (or array-likes).
        reference: the parameters it must match.

    Returns:
        A new dict of detached tensors, in ``reference``'s key order, dtype and device.

    Raises:
        ValueError: ``direction`` is not a mapping, its keys or a shape differ from
            ``reference``'s, or it holds NaN or infinite values; the message names ``name``.
    """
    if not isinstance(direction, Mapping):
        raise ValueError(
            f"Invalid {name}: {type(direction).__name__} (expected a dict keyed "
            "like model.named_parameters())"
        )
    missing = [k for k in reference if k not in direction]
    extra = [k for k in direction if k not in reference]
    if missing or extra:
        raise ValueError(
            f"Invalid {name}: keys do not match the model's parameters "
            f"(missing {missing}, unexpected {extra})"
        )
    out = {}
    for key, ref in reference.items():
        value = torch.as_tensor(direction[key])
        if tuple(value.shape) != tuple(ref.shape):
            raise ValueError(
                f"Invalid {name}[{key!r}]: shape {tuple(value.shape)} (the "
                f"parameter has shape {tuple(ref.shape)})"
            )
        value = value.detach().to(dtype=ref.dtype, device=ref.device)
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = (~torch.isfinite(value)).nonzero()[0].tolist()
            kind = "NaN" if bool(torch.isnan(value).any()) else "infinite values"
            raise ValueError(
                f"Invalid {name}[{key!r}]: it holds {kind} (first at index {tuple(bad)}); "
                "every point of a grid along it would be NaN"
            )
        out[key] = value
    return out


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """The inner product of two dict vectors with the same keys (in float64).

    Args:
        a: a dict vector.
        b: a dict vector with (at least) ``a``'s keys and shapes.

    Returns:
        ``sum_k <a[k], b[k]>`` as a Python float.

    Example:
        >>> import torch
        >>> dot({"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])},
        ...     {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0])})
        4.0
    """
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def flatten(direction: Mapping[str, Tensor]) -> Tensor:
    """The dict vector as one flat tensor, in its key order
    (:class:`~analysis_lib._evaluation.ParameterSpace` of its own keys).

    Args:
        direction: a dict vector.

    Returns:
        A 1-d tensor of all its entries.

    Example:
        >>> import torch
        >>> flatten({"w": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([3.0])})
        tensor([1., 2., 3.])
    """
    return ParameterSpace(direction).flatten(direction)


def unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> Direction:
    """A flat vector cut into tensors shaped, typed and placed like ``like``'s, in its order.

    Args:
        vector: a tensor (or array-like) with as many entries as ``like`` holds.
        like: the dict vector giving the keys, shapes, dtypes and devices.

    Returns:
        ``{name: tensor}`` in ``like``'s key order.

    Raises:
        ValueError: ``vector`` does not have as many entries as ``like``.

    Example:
        >>> import torch
        >>> unflatten(torch.arange(3.0), {"w": torch.zeros(1, 2), "b": torch.zeros(1)})
        {'w': tensor([[0., 1.]]), 'b': tensor([2.])}
    """
    space = ParameterSpace(like)
    vector = torch.as_tensor(vector).reshape(-1)
    if vector.numel() != space.size:
        raise ValueError(
            f"Invalid vector: {vector.numel()} entries (the parameters have {space.size})"
        )
    return {
        k: t.to(dtype=like[k].dtype, device=like[k].device)
        for k, t in space.unflatten(vector, "vector").items()
    }


def _check_choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {options})")


def normalize(
    direction: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    norm: str = "filter",
    one_d: str = "zero",
) -> Direction:
    """``direction`` rescaled to the scale of ``params``.

    ``norm="filter"``: each filter (slice ``[i]`` along the first, output dimension of a tensor
    with two or more dimensions) is scaled to the norm of the parameter's filter,
    ``d_i <- d_i * ||theta_i|| / ||d_i||``; ``"layer"``: each tensor as a whole,
    ``d <- d * ||theta|| / ||d||``; ``"none"``: unchanged. Tensors with at most one dimension
    (biases, norm-layer parameters) are set to zero with ``one_d="zero"`` (the usual choice: a
    shift of a bias has no natural scale) or, with ``one_d="keep"``, scaled as one filter
    (``"filter"`` and ``"layer"``) or left as they are (``"none"``). A zero slice stays zero.

    Args:
        direction: the dict vector to rescale, keyed like ``params``.
        params: the parameters whose scale it takes.
        norm: ``"filter"`` (default), ``"layer"`` or ``"none"``.
        one_d: ``"zero"`` (default) or ``"keep"``, for tensors of at most one dimension.

    Returns:
        A new dict vector in ``params``' dtypes and devices.

    Raises:
        ValueError: an unknown ``norm`` or ``one_d``, or a ``direction`` that does not match
            ``params`` (see :func:`check_direction`).

    Example:
        >>> import torch
        >>> normalize({"w": torch.tensor([[3.0, 4.0]]), "b": torch.tensor([1.0])},
        ...           {"w": torch.tensor([[0.0, 10.0]]), "b": torch.tensor([2.0])})
        {'w': tensor([[6., 8.]]), 'b': tensor([0.])}
    """
    _check_choice("norm", norm, NORMALIZATIONS)
    _check_choice("one_d", one_d, ONE_D_OPTIONS)
    direction = check_direction("direction", direction, params)
    out = {}
    for key, d in direction.items():
        theta = params[key]
        if d.dim() <= 1:
            if one_d == "zero":
                out[key] = torch.zeros_like(d)
                continue
            if norm == "none":
                out[key] = d.clone()
                continue
            out[key] = d * _ratio(theta.norm(), d.norm())
        elif norm == "filter":
            dims = tuple(range(1, d.dim()))
            scale = _ratio(
                torch.linalg.vector_norm(theta, dim=dims, keepdim=True),
                torch.linalg.vector_norm(d, dim=dims, keepdim=True),
            )
            out[key] = d * scale
        elif norm == "layer":
            out[key] = d * _ratio(theta.norm(), d.norm())
        else:
            out[key] = d.clone()
    return out


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(
        den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den)
    )


def orthogonalize(
    d1: Mapping[str, Tensor], d2: Mapping[str, Tensor], keep_norm: bool = True
) -> tuple[Direction, float]:
    """``d2`` with its component along ``d1`` removed (Gram-Schmidt, in float64), and the
    cosine between ``d1`` and ``d2`` before. ``keep_norm`` rescales the result to ``d2``'s norm,
    so both axes of a plot keep the scale normalisation gave them. Zero entries of both stay
    zero.

    Args:
        d1: the direction to keep.
        d2: the direction to orthogonalise against ``d1`` (same keys and shapes).
        keep_norm: rescale the result to ``d2``'s norm (default True).

    Returns:
        ``(d2_orthogonal, cosine)``: the new dict vector, in ``d2``'s dtypes, and the cosine
        between ``d1`` and ``d2`` before.

    Raises:
        ValueError: ``d1`` or ``d2`` is zero.

    Example:
        >>> import torch
        >>> d1, d2 = {"x": torch.tensor([1.0, 0.0])}, {"x": torch.tensor([1.0, 1.0])}
        >>> d, cosine = orthogonalize(d1, d2)
        >>> d, round(cosine, 4)
        ({'x': tensor([0.0000, 1.4142])}, 0.7071)
    """
    n1, n2 = dot(d1, d1), dot(d2, d2)
    if n1 == 0 or n2 == 0:
        raise ValueError("Invalid directions: a direction is zero (nothing to orthogonalise)")
    c = dot(d1, d2)
    cosine = c / np.sqrt(n1 * n2)
    out = {k: (d2[k].double() - (c / n1) * d1[k].double()) for k in d2}
    if keep_norm:
        scale = np.sqrt(n2 / max(dot(out, out), np.finfo(float).tiny))
        out = {k: v * scale for k, v in out.items()}
    return {k: v.to(d2[k].dtype) for k, v in out.items()}, float(cosine)


# -- random directions ---------------------------------------------------------------------------
def random_direction(
    model: nn.Module, seed: int | torch.Generator = 0, norm: str = "filter", one_d: str = "zero"
) -> Direction:
    """A Gaussian direction ``N(0, I)`` (drawn on the CPU in float64 from ``seed``, the same on
    every device), normalised to the model's parameters by :func:`normalize`.

    Args:
        model: the network.
        seed: an int >= 0 or a ``torch.Generator`` for the draw.
        norm: ``"filter"`` (default), ``"layer"`` or ``"none"``, as for :func:`normalize`.
        one_d: ``"zero"`` (default) or ``"keep"``, as for :func:`normalize`.

    Returns:
        A dict vector keyed like ``model.named_parameters()``, in their dtypes and devices.

    Raises:
        ValueError: an unknown ``norm`` or ``one_d``, an invalid ``seed``, or a model without
            parameters.
    """
    _check_choice("norm", norm, NORMALIZATIONS)
    _check_choice("one_d", one_d, ONE_D_OPTIONS)
    params = parameters(model)
    gen = generator(seed)
    raw = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64) for k, p in params.items()}
    params64 = {k: p.detach().double().cpu() for k, p in params.items()}
    d = normalize(raw, params64, norm, one_d)
    return {k: v.to(dtype=params[k].dtype, device=params[k].device) for k, v in d.items()}


def random_directions(
    model: nn.Module,
    seed: int | torch.Generator = 0,
    norm: str = "filter",
    one_d: str = "zero",
    orthogonal: bool = False,
) -> Directions:
    """Two random directions for a 2-D slice (Li et al. 2018): each Gaussian, normalised by
    :func:`normalize` (``norm``, ``one_d``).

    As in Li et al. the two are not orthogonalised by default: in ``n`` dimensions two Gaussian
    directions have a cosine of order ``1/sqrt(n)`` (somewhat more after filter normalisation),
    which ``cosine`` reports. With ``orthogonal=True``, ``d2`` is made exactly orthogonal to
    ``d1`` *within each normalisation unit* (each filter for ``norm="filter"``, each tensor for
    ``"layer"``) and rescaled to that unit's norm again, so both directions stay normalised and
    the pair is orthogonal as a whole (the sum of per-filter inner products is zero); with
    ``norm="none"`` it is plain Gram-Schmidt with ``d2``'s norm kept. How far this moves ``d2``
    is reported as ``d2_change``: filter by filter it is of order ``1/sqrt(filter size)``, far
    more than the global ``cosine``, so the orthogonalised plane is a different slice.

    Args:
        model: the network.
        seed: an int >= 0 or a ``torch.Generator``; both directions are drawn from it in turn.
        norm: ``"filter"`` (default), ``"layer"`` or ``"none"``, as for :func:`normalize`.
        one_d: ``"zero"`` (default) or ``"keep"``, as for :func:`normalize`.
        orthogonal: orthogonalise ``d2`` as described above (default False).

    Returns:
        :class:`Directions` with ``kind="random"``, ``cosine``, ``orthogonalized`` and
        ``d2_change``.

    Raises:
        ValueError: ``orthogonal`` not a bool, an unknown ``norm`` or ``one_d``, an invalid
            ``seed``, or a model without parameters.
    """
    if not isinstance(orthogonal, bool):
        raise ValueError(f"Invalid orthogonal: {orthogonal!r} (expected True or False)")
    gen = generator(seed)
    d1 = random_direction(model, gen, norm, one_d)
    d2 = random_direction(model, gen, norm, one_d)
    cosine = dot(d1, d2) / np.sqrt(dot(d1, d1) * dot(d2, d2))
    change = 0.0
    if orthogonal:
        before = d2
        d2 = orthogonalize(d1, d2)[0] if norm == "none" else _orthogonalize_units(d1, d2, norm)
        moved = {k: d2[k] - before[k] for k in d2}
        change = float(np.sqrt(dot(moved, moved) / dot(before, before)))
    return Directions(
        d1, d2, kind="random", cosine=float(cosine), orthogonalized=orthogonal, d2_change=change
    )


def _orthogonalize_units(d1: Direction, d2: Direction, norm: str) -> Direction:
    """``d2`` made orthogonal to ``d1`` within each normalisation unit (a filter: slice ``[i]``
    along the first dimension; or a whole tensor for ``norm="layer"`` and for one-dimensional
    tensors), each unit rescaled to its norm before the projection. Zero units stay zero."""
    out = {}
    for key, b in d2.items():
        a = d1[key]
        if b.dim() <= 1 or norm == "layer":
            a2, b2 = a.double().reshape(1, -1), b.double().reshape(1, -1)
        else:
            a2, b2 = a.double().reshape(a.shape[0], -1), b.double().reshape(b.shape[0], -1)
        aa = (a2 * a2).sum(1, keepdim=True)
        coef = _ratio((a2 * b2).sum(1, keepdim=True), aa)
        r = b2 - coef * a2
        scale = _ratio(b2.norm(dim=1, keepdim=True), r.norm(dim=1, keepdim=True))
        out[key] = (r * scale).reshape(b.shape).to(b.dtype)
    return out


# -- trajectories --------------------------------------------------------------------------------
class SnapshotCallback:
    """A :func:`~analysis_lib.training.train` callback that keeps a copy of the parameters every
    ``every`` steps (on the CPU, in float64), for :func:`pca_directions`.

    ``record(model, step)`` adds one by hand, e.g. the initial model
    (``task.make_model(seed)``) before training. ``snapshots`` is the list of parameter dicts,
    ``steps`` their steps.
    """

    def __init__(self, every: int = 10) -> None:
        self.every = check_int("every", every, 1)
        self.snapshots: list[Direction] = []
        self.steps: list[int] = []

    @property
    def name(self) -> str:
        return type(self).__name__

    def record(self, model: nn.Module, step: int = 0) -> None:
        """Keep a copy of ``model``'s parameters, labelled ``step``.

        Args:
            model: the network.
            step: the step to label the snapshot with (default 0).

        Raises:
            ValueError: ``model`` is not a ``torch.nn.Module`` or has no parameters.
        """
        self.snapshots.append(
            {
                k: p.detach().to("cpu", torch.float64, copy=True)
                for k, p in parameters(model).items()
            }
        )
        self.steps.append(int(step))

    def __call__(self, step, model, optimizer, batch) -> dict[str, float]:
        self.record(model, step)
        return {}


def pca_directions(
    snapshots: Sequence[Mapping[str, Tensor]] | SnapshotCallback,
    final: Mapping[str, Tensor] | nn.Module | None = None,
    steps: Sequence[int] | None = None,
    center: bool = True,
) -> Directions:
    """The plane of a training trajectory (Li et al. 2018, section 7): the first two principal
    directions of the matrix of rows ``theta_t - theta_final`` over the snapshots.

    Args:
        snapshots: parameter dicts (or a :class:`SnapshotCallback`, whose steps come along).
        final: the end point ``theta_final`` (a dict or a model); default the last snapshot.
        steps: the step of each snapshot (default ``0, 1, ...``).
        center: subtract the mean row before the decomposition, as Li et al. do (their code
            uses scikit-learn's PCA), so the explained variance is the fraction of the
            trajectory's variance about its mean and is comparable with theirs. With
            ``center=False`` the rows are decomposed as they are: the components span the
            best plane *through* ``theta_final`` and the ratio is the fraction of
            ``sum_t ||theta_t - theta_final||^2`` that plane captures (usually higher, since the
            mean offset from the end point is one large, easily captured direction). Either
            way the path is the projection of ``theta_t - theta_final``, so the final point is
            at (0, 0).

    Returns:
        :class:`Directions` with unit-norm, orthogonal ``d1``, ``d2`` (float64 tensors on the
        CPU; the surface functions move them to the model), ``explained_variance_ratio``, and
        ``path``: each snapshot's coordinates ``(<theta_t - theta_final, d1>,
        <theta_t - theta_final, d2>)``.

    Raises:
        ValueError: ``center`` not a bool; fewer than two snapshots; snapshots or ``final`` that
            do not match the last snapshot's keys and shapes or are not finite; a ``steps`` of
            another length; or a trajectory spanning fewer than two dimensions.
    """
    if not isinstance(center, bool):
        raise ValueError(f"Invalid center: {center!r} (expected True or False)")
    if isinstance(snapshots, SnapshotCallback):
        steps = snapshots.steps if steps is None else steps
        snapshots = snapshots.snapshots
    snapshots = list(snapshots)
    if len(snapshots) < 2:
        raise ValueError(f"Invalid snapshots: {len(snapshots)} (expected at least 2)")
    like = {
        k: torch.as_tensor(v).detach().to("cpu", torch.float64) for k, v in snapshots[-1].items()
    }
    if final is None:
        final = like
    elif isinstance(final, nn.Module):
        final = parameters(final)
    final = check_direction("final", final, like)
    rows = torch.stack(
        [
            flatten(check_direction(f"snapshots[{i}]", s, like)) - flatten(final)
            for i, s in enumerate(snapshots)
        ]
    )
    if steps is None:
        steps = np.arange(len(snapshots))
    steps = np.asarray(steps, dtype=np.int64)
    if steps.shape != (len(snapshots),):
        raise ValueError(f"Invalid steps: {steps.shape[0]} values for {len(snapshots)} snapshots")
    matrix = rows - rows.mean(0, keepdim=True) if center else rows
    _, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if len(s) < 2 or s[1] <= 0:
        raise ValueError("Invalid snapshots: the trajectory spans fewer than two dimensions")
    comps = vh[:2].clone()
    # a fixed sign: the start of the path lies at non-negative coordinates
    signs = torch.where(rows[0] @ comps.T < 0, -1.0, 1.0).to(comps.dtype)
    comps = comps * signs[:, None]
    ratio = (s[:2] ** 2 / (s**2).sum()).numpy()
    path = (rows @ comps.T).numpy()
    return Directions(
        unflatten(comps[0], like),
        unflatten(comps[1], like),
        kind="pca",
        centered=bool(center),
        explained_variance_ratio=ratio,
        path=path,
        steps=steps,
    )


# -- eigenvectors and interpolation --------------------------------------------------------------
def eigenvector_directions(
    model: nn.Module, loss_fn, data, k: int = 2, which: str = "LA", seed: int = 0, **kwargs
) -> Directions:
    """The plane of the two leading Hessian eigenvectors of the mean loss over ``data`` (the
    first two of :func:`analysis_lib.curvature.hessian_eigenvalues` with ``k``, ``which``,
    ``seed`` and ``kwargs``); unit norm, in the model's dtype and device. ``eigenvalues`` holds
    their eigenvalues.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        data: an iterable of ``(inputs, targets)`` batches.
        k: the number of eigenpairs Lanczos computes, >= 2 (default 2).
        which: ``"LA"`` (default), ``"SA"`` or ``"LM"``.
        seed: an int >= 0 for the start vector (default 0).
        **kwargs: further keywords of :func:`~analysis_lib.curvature.hessian_eigenvalues`.

    Returns:
        :class:`Directions` with ``kind="eigen"`` and ``eigenvalues``.

    Raises:
        ValueError: ``k`` not an integer >= 2, ``params`` given in ``kwargs``, or an argument
            :func:`~analysis_lib.curvature.hessian_eigenvalues` refuses.
        NonFiniteError: a Hessian-vector product is not finite.
    """

    k = check_int("k", k, 2)  # a plane needs two
    params = parameters(model)
    res = hessian_eigenvalues(model, loss_fn, data, k=k, which=which, seed=seed, **kwargs)
    vectors = res.vectors
    if vectors.shape[0] != sum(p.numel() for p in params.values()):
        raise ValueError(
            "eigenvector_directions needs the eigenvectors over all parameters "
            "(do not pass params=...)"
        )
    d1, d2 = (unflatten(vectors[:, i], params) for i in range(2))
    return Directions(d1, d2, kind="eigen", eigenvalues=np.asarray(res.values[:2], dtype=float))


def difference(
    model_a: nn.Module | Mapping[str, Tensor], model_b: nn.Module | Mapping[str, Tensor]
) -> Direction:
    """``theta_b - theta_a``: ``theta_a + alpha * difference`` walks from a (alpha = 0) to b
    (alpha = 1).

    Args:
        model_a: the start: a network or a dict of parameter tensors.
        model_b: the end, with the same parameter names and shapes.

    Returns:
        A dict vector keyed like ``model_a``'s parameters.

    Raises:
        ValueError: a model without parameters, or ``model_b`` does not match ``model_a`` or is
            not finite.
    """
    a = parameters(model_a) if isinstance(model_a, nn.Module) else dict(model_a)
    b = parameters(model_b) if isinstance(model_b, nn.Module) else dict(model_b)
    b = check_direction("model_b", b, a)
    return {k: b[k] - a[k] for k in a}
