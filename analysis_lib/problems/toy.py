"""Two-dimensional toy objectives for watching optimizers move.

Each problem is a small frozen :class:`ToyProblem`: a value function written in torch and
batched over points (``points`` of shape ``(..., 2)`` give values of shape ``(...)``), its gradient
by autograd, the known global minima, a suggested start, plot bounds and a colour scale (log
levels where the values span decades). The factories build the standard ones::

    from analysis_lib.problems import toy

    p = toy.rosenbrock()
    f, g = p.value_and_grad(torch.tensor([[-1.0, 1.0], [1.0, 1.0]]))
    noisy = p.with_noise(1.0)        # Gaussian gradient noise (drawn by the trajectory runner)
    scaled = p.scaled(100.0)         # the same problem with the loss multiplied by 100

:func:`toy_problem` builds any of them by name (``TOY_PROBLEMS`` lists the names).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_float, check_int, check_positive

__all__ = [
    "TOY_PROBLEMS",
    "ToyProblem",
    "badly_scaled",
    "beale",
    "himmelblau",
    "rastrigin",
    "rosenbrock",
    "rotated_quadratic",
    "saddle",
    "toy_problem",
    "toy_problems",
]

Point = tuple[float, float]
Bounds = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class ToyProblem:
    """A 2-D objective f(x, y) with what a plot and a comparison need to know about it.

    Attributes:
        name: the key of the problem in :data:`TOY_PROBLEMS` (e.g. ``"rosenbrock"``).
        title: a display name.
        formula: the definition in LaTeX (without ``$``), for figure titles.
        fn: ``fn(x, y) -> f`` on tensors of any (equal) shape; without the loss ``scale``.
        minima: the known global minima (empty when f is unbounded below).
        min_value: f at the minima (before ``scale``), or None when there are none.
        start: the suggested starting point.
        bounds: ``((x_min, x_max), (y_min, y_max))`` of the plot.
        log_scale: draw the values on a log colour scale (they span several decades).
        params: the parameters the factory was called with (part of :meth:`config`).
        scale: the loss is ``scale * fn`` (see :meth:`scaled`).
        noise: standard deviation of the Gaussian noise added to each gradient coordinate of
            ``fn`` by :meth:`noisy_gradient` (before ``scale``); 0 is a deterministic problem.
    """

    name: str
    title: str
    formula: str
    fn: Callable[[Tensor, Tensor], Tensor] = field(repr=False, compare=False)
    minima: tuple[Point, ...]
    min_value: float | None
    start: Point
    bounds: Bounds
    log_scale: bool
    params: tuple[tuple[str, float], ...] = ()
    scale: float = 1.0
    noise: float = 0.0

    # -- evaluation -----------------------------------------------------------------------------
    def value(self, points: Tensor) -> Tensor:
        """f at ``points`` of shape ``(..., 2)``; the result has shape ``(...)``.

        Args:
            points: a tensor (or array-like) of shape ``(..., 2)``, the last axis (x, y).

        Returns:
            ``scale * fn(x, y)``, a tensor of shape ``(...)``.

        Raises:
            ValueError: the last axis of ``points`` is not of size 2.

        Example:
            >>> import torch
            >>> rosenbrock().value(torch.tensor([[1.0, 1.0], [0.0, 0.0]])).tolist()
            [0.0, 1.0]
        """
        points = torch.as_tensor(points)
        if points.shape[-1:] != (2,):
            raise ValueError(f"Invalid points: shape {tuple(points.shape)} (expected (..., 2))")
        f = self.fn(points[..., 0], points[..., 1])
        return f * self.scale if self.scale != 1.0 else f

    def value_and_grad(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """(f, ∇f) at ``points`` of shape ``(..., 2)``, both detached; the gradient by autograd.
        Points are floating-point tensors (integers are converted to the default dtype).

        Args:
            points: a tensor (or array-like) of shape ``(..., 2)``.

        Returns:
            ``(f, g)``: f of shape ``(...)`` and the gradient g of shape ``(..., 2)``.

        Raises:
            ValueError: the last axis of ``points`` is not of size 2.
        """
        points = torch.as_tensor(points)
        if not points.is_floating_point():
            points = points.to(torch.get_default_dtype())
        with torch.enable_grad():
            p = points.detach().requires_grad_(True)
            f = self.value(p)
            (g,) = torch.autograd.grad(f.sum(), p)
        return f.detach(), g

    def gradient(self, points: Tensor) -> Tensor:
        """∇f at ``points`` of shape ``(..., 2)`` (autograd), shape ``(..., 2)``.

        Args:
            points: a tensor (or array-like) of shape ``(..., 2)``.

        Returns:
            The gradient, a detached tensor of shape ``(..., 2)``.

        Raises:
            ValueError: the last axis of ``points`` is not of size 2.
        """
        return self.value_and_grad(points)[1]

    def noisy_gradient(self, gradient: Tensor, generator: torch.Generator) -> Tensor:
        """``gradient`` plus this problem's gradient noise, ``scale * noise * N(0, I)``, drawn
        from ``generator`` with one draw of shape ``(2,)`` (the same noise for every point of a
        batch: a batch of learning rates then sees common random numbers).

        Args:
            gradient: the exact gradient, shape ``(..., 2)``.
            generator: the torch generator the noise is drawn from (not used when ``noise`` is
                0).

        Returns:
            The noisy gradient, of the dtype and device of ``gradient`` (``gradient`` itself
            for a deterministic problem).
        """
        if self.noise == 0.0:
            return gradient
        xi = torch.randn(2, generator=generator, dtype=torch.float64)
        return gradient + (self.scale * self.noise * xi).to(gradient)

    # -- variants -------------------------------------------------------------------------------
    def scaled(self, factor: float) -> ToyProblem:
        """The same problem with the loss (and its gradient noise) multiplied by ``factor`` > 0.

        Args:
            factor: the multiplier (> 0), compounded with the current ``scale``.

        Returns:
            A new :class:`ToyProblem`.

        Raises:
            ValueError: ``factor`` not a positive number.
        """
        factor = check_positive("factor", factor)
        return replace(self, scale=self.scale * factor)

    def with_noise(self, std: float) -> ToyProblem:
        """The same problem made stochastic: each gradient gets Gaussian noise of standard
        deviation ``std`` per coordinate (``std = 0`` makes it deterministic again).

        Args:
            std: the noise's standard deviation (>= 0), before ``scale``; it replaces the
                current ``noise``.

        Returns:
            A new :class:`ToyProblem`.

        Raises:
            ValueError: ``std`` negative or not a number.
        """
        std = check_float("std", std, 0.0)
        return replace(self, noise=std)

    def config(self) -> dict[str, Any]:
        """Everything that defines the problem, as JSON-able data (used for cache keys; the plot
        bounds are included because they set where a run counts as diverged);
        :func:`toy_problem` rebuilds it from ``name`` and ``params``.

        Returns:
            A dict with ``name``, ``params``, ``scale``, ``noise`` and ``bounds``.
        """
        return {
            "name": self.name,
            "params": dict(self.params),
            "scale": self.scale,
            "noise": self.noise,
            "bounds": [list(b) for b in self.bounds],
        }

    # -- geometry -------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The title, with the loss scale and the noise when they are not the defaults.

        Returns:
            The label as a string.
        """
        extra = []
        if self.scale != 1.0:
            extra.append(f"loss × {self.scale:g}")
        if self.noise:
            extra.append(f"gradient noise σ = {self.noise:g}")
        return self.title + (f" ({', '.join(extra)})" if extra else "")

    def distance_to_minimum(self, points) -> np.ndarray:
        """Euclidean distance of each of ``points`` (shape ``(..., 2)``) to the nearest known
        minimum; NaN where the point is not finite.

        Args:
            points: an array-like of shape ``(..., 2)``.

        Returns:
            A float64 array of shape ``(...)``.

        Raises:
            ValueError: the problem has no known minima.

        Example:
            >>> rosenbrock().distance_to_minimum([[1.0, 1.0], [4.0, 5.0]]).tolist()
            [0.0, 5.0]
        """
        if not self.minima:
            raise ValueError(f"Problem {self.name!r} has no minima (it is unbounded below)")
        p = np.asarray(points, dtype=np.float64)[..., None, :]
        d = np.sqrt(((p - np.asarray(self.minima)) ** 2).sum(-1)).min(-1)
        return d

    def inside(self, points, factor: float = 1.0) -> np.ndarray:
        """Whether each of ``points`` lies in the plot bounds enlarged ``factor`` times about
        their centre (False for non-finite points).

        Args:
            points: an array-like of shape ``(..., 2)``.
            factor: the enlargement of the bounds (> 0; 1 is the plot itself).

        Returns:
            A boolean array of shape ``(...)``.

        Raises:
            ValueError: ``factor`` not a positive number.
        """
        factor = check_positive("factor", factor)
        p = np.asarray(points, dtype=np.float64)
        (x0, x1), (y0, y1) = self.bounds
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        half = factor * np.array([(x1 - x0) / 2, (y1 - y0) / 2])
        with np.errstate(invalid="ignore"):
            return (np.abs(p - centre) <= half).all(-1)

    def grid(self, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, Y, F) on an ``n`` x ``n`` grid over the plot bounds, for contour plots.

        Args:
            n: the number of points along each axis (>= 2).

        Returns:
            ``(X, Y, F)``, float64 arrays of shape ``(n, n)`` (``"xy"`` indexing), F with the
            loss ``scale``.

        Raises:
            ValueError: ``n`` < 2.
        """
        n = check_int("n", n, 2)
        (x0, x1), (y0, y1) = self.bounds
        x = torch.linspace(x0, x1, n, dtype=torch.float64)
        y = torch.linspace(y0, y1, n, dtype=torch.float64)
        xx, yy = torch.meshgrid(x, y, indexing="xy")
        f = self.value(torch.stack([xx, yy], dim=-1))
        return xx.numpy(), yy.numpy(), f.numpy()

    def levels(self, n: int = 15, grid: int = 200) -> np.ndarray:
        """``n`` contour levels over the plot bounds: log-spaced between a small value above
        the minimum and the largest value when :attr:`log_scale`, else evenly spaced.

        Args:
            n: the number of levels (>= 1).
            grid: the size of the :meth:`grid` the range is read from (>= 2).

        Returns:
            A float array of ``n`` increasing levels.

        Raises:
            ValueError: ``n`` < 1 or ``grid`` < 2.
        """
        n = check_int("n", n, 1)
        _, _, f = self.grid(grid)
        lo, hi = float(np.min(f)), float(np.max(f))
        if self.log_scale:
            floor = (self.min_value or 0.0) * self.scale
            top = hi - floor
            low = max(lo - floor, top * 1e-6)
            return floor + np.geomspace(low, top, n)
        return np.linspace(lo, hi, n)


# -- the problems -----------------------------------------------------------------------------
def rosenbrock(a: float = 1.0, b: float = 100.0) -> ToyProblem:
    """Rosenbrock's banana valley (a - x)² + b (y - x²)²; minimum (a, a²). The valley is easy to
    find and slow to follow: the curvature across it is ~10³ times that along it.

    Args:
        a: the x of the minimum (a finite number).
        b: the steepness of the valley walls (> 0).

    Returns:
        The :class:`ToyProblem`.

    Raises:
        ValueError: ``a`` not finite or ``b`` not positive.
    """
    a = check_float("a", a)
    b = check_positive("b", b)
    return ToyProblem(
        name="rosenbrock",
        title="Rosenbrock",
        formula=rf"({a:g} - x)^2 + {b:g}\,(y - x^2)^2",
        fn=lambda x, y: (a - x) ** 2 + b * (y - x * x) ** 2,
        minima=((a, a * a),),
        min_value=0.0,
        start=(-1.2, 1.0),
        bounds=((-2.0, 2.0), (-1.0, 3.0)),
        log_scale=True,
        params=(("a", a), ("b", b)),
    )


def beale() -> ToyProblem:
    """Beale's function; minimum (3, 0.5) at the end of a long, flat, curved valley, with steep
    walls (values up to ~10⁵ at the corners of the plot).

    Returns:
        The :class:`ToyProblem`.
    """

    def fn(x, y):
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2

    return ToyProblem(
        name="beale",
        title="Beale",
        formula=r"\sum_{i=1}^{3} (c_i - x + x y^i)^2,\ c = (1.5, 2.25, 2.625)",
        fn=fn,
        minima=((3.0, 0.5),),
        min_value=0.0,
        start=(0.7, 1.4),
        bounds=((-4.5, 4.5), (-4.5, 4.5)),
        log_scale=True,
    )


# Himmelblau's four minima (value 0); three have no closed form, these are accurate to ~1e-12.
_HIMMELBLAU_MINIMA = (
    (3.0, 2.0),
    (-2.805118086952745, 3.131312518250573),
    (-3.779310253377747, -3.283185991286170),
    (3.584428340330492, -1.848126526964404),
)


def himmelblau() -> ToyProblem:
    """Himmelblau's function (x² + y - 11)² + (x + y² - 7)²: four global minima (value 0). Which
    one an optimizer reaches depends on where its first steps take it.

    Returns:
        The :class:`ToyProblem`.
    """
    return ToyProblem(
        name="himmelblau",
        title="Himmelblau",
        formula=r"(x^2 + y - 11)^2 + (x + y^2 - 7)^2",
        fn=lambda x, y: (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2,
        minima=_HIMMELBLAU_MINIMA,
        min_value=0.0,
        start=(-0.27, -0.92),
        bounds=((-5.0, 5.0), (-5.0, 5.0)),
        log_scale=True,
    )


def rastrigin(amplitude: float = 10.0) -> ToyProblem:
    """Rastrigin's egg box 2A + Σ (xᵢ² - A cos 2πxᵢ): a bowl covered in local minima near the
    integer points; the global minimum is the origin. The suggested start lies in the basin of
    the local minimum next to it, near (1, -1).

    Args:
        amplitude: A, the depth of the local minima (> 0).

    Returns:
        The :class:`ToyProblem`.

    Raises:
        ValueError: ``amplitude`` not a positive number.
    """
    amp = check_positive("amplitude", amplitude)
    two_pi = 2 * math.pi
    return ToyProblem(
        name="rastrigin",
        title="Rastrigin",
        formula=rf"{2 * amp:g} + \sum_i (x_i^2 - {amp:g} \cos 2\pi x_i)",
        fn=lambda x, y: (
            2 * amp + x * x - amp * torch.cos(two_pi * x) + y * y - amp * torch.cos(two_pi * y)
        ),
        minima=((0.0, 0.0),),
        min_value=0.0,
        start=(1.3, -0.7),
        bounds=((-2.5, 2.5), (-2.5, 2.5)),
        log_scale=False,
        params=(("amplitude", amp),),
    )


def rotated_quadratic(condition: float = 20.0, angle: float = 30.0) -> ToyProblem:
    """The convex quadratic ½ pᵀ A p with A = R diag(1/condition, 1) Rᵀ: a valley whose floor
    runs at ``angle`` degrees to the x-axis (curvature 1/condition along it, 1 across it), so its
    condition number is ``condition``. Minimum at the origin.

    The valley is not aligned with the coordinates, so per-coordinate scaling (Adam) cannot
    undo the ill-conditioning; compare :func:`badly_scaled`.

    Args:
        condition: the condition number of A (>= 1).
        angle: the direction of the valley floor, in degrees from the x-axis.

    Returns:
        The :class:`ToyProblem`.

    Raises:
        ValueError: ``condition`` < 1 or ``angle`` not finite.
    """
    kappa = check_positive("condition", condition)
    if kappa < 1:
        raise ValueError(f"Invalid condition: {condition!r} (expected a number >= 1)")
    deg = check_float("angle", angle)
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    lo, hi = 1.0 / kappa, 1.0
    # A = lo u uᵀ + hi w wᵀ with u = (c, s) along the valley and w = (-s, c) across it
    axx, axy, ayy = lo * c * c + hi * s * s, (lo - hi) * c * s, lo * s * s + hi * c * c
    # start far along the valley and a little across it
    start = (round(-2.6 * c - 0.6 * s, 3), round(-2.6 * s + 0.6 * c, 3))
    return ToyProblem(
        name="rotated_quadratic",
        title="Ill-conditioned quadratic",
        formula=rf"\frac{{1}}{{2}} p^\top A p,\ \kappa = {kappa:g},\ {deg:g}^\circ",
        fn=lambda x, y: 0.5 * (axx * x * x + 2 * axy * x * y + ayy * y * y),
        minima=((0.0, 0.0),),
        min_value=0.0,
        start=start,
        bounds=((-3.0, 3.0), (-3.0, 3.0)),
        log_scale=True,
        params=(("condition", kappa), ("angle", deg)),
    )


def saddle() -> ToyProblem:
    """The saddle x² - y², unbounded below: no minimum, only the question of how fast an
    optimizer that starts almost on the ridge escapes along y.

    Returns:
        The :class:`ToyProblem` (no ``minima``, ``min_value`` None).
    """
    return ToyProblem(
        name="saddle",
        title="Saddle",
        formula=r"x^2 - y^2",
        fn=lambda x, y: x * x - y * y,
        minima=(),
        min_value=None,
        start=(-1.8, 1e-3),
        bounds=((-2.0, 2.0), (-2.0, 2.0)),
        log_scale=False,
    )


def badly_scaled(ratio: float = 100.0) -> ToyProblem:
    """½ (ratio·x² + y²): an axis-aligned bowl in which the x-gradient is ``ratio`` times the
    y-gradient at the start (1, 1). Gradient descent's step size is capped by the steep x
    direction (lr < 2/ratio) and crawls along y; per-coordinate scaling (Adam) takes equal
    steps in both coordinates.

    Args:
        ratio: the ratio of the x-curvature to the y-curvature (> 0).

    Returns:
        The :class:`ToyProblem`.

    Raises:
        ValueError: ``ratio`` not a positive number.
    """
    r = check_positive("ratio", ratio)
    return ToyProblem(
        name="badly_scaled",
        title="Badly scaled bowl",
        formula=rf"\frac{{1}}{{2}}({r:g}\,x^2 + y^2)",
        fn=lambda x, y: 0.5 * (r * x * x + y * y),
        minima=((0.0, 0.0),),
        min_value=0.0,
        start=(1.0, 1.0),
        bounds=((-1.5, 1.5), (-1.5, 1.5)),
        log_scale=True,
        params=(("ratio", r),),
    )


#: The factories by name.
TOY_PROBLEMS: dict[str, Callable[..., ToyProblem]] = {
    "rosenbrock": rosenbrock,
    "beale": beale,
    "himmelblau": himmelblau,
    "rastrigin": rastrigin,
    "rotated_quadratic": rotated_quadratic,
    "saddle": saddle,
    "badly_scaled": badly_scaled,
}


def toy_problem(name: str, **params) -> ToyProblem:
    """The problem called ``name`` (a key of :data:`TOY_PROBLEMS`), built with ``params``.

    Args:
        name: the problem's key, e.g. ``"rosenbrock"``.
        **params: the factory's keyword arguments.

    Returns:
        The :class:`ToyProblem`.

    Raises:
        ValueError: an unknown ``name``, or a parameter the factory refuses.
        TypeError: a keyword the factory does not take.
    """
    if name not in TOY_PROBLEMS:
        raise ValueError(f"Invalid name: {name!r} (known: {', '.join(TOY_PROBLEMS)})")
    return TOY_PROBLEMS[name](**params)


def toy_problems() -> list[ToyProblem]:
    """Every problem with its default parameters, in the order of :data:`TOY_PROBLEMS`.

    Returns:
        A list of :class:`ToyProblem`.
    """
    return [factory() for factory in TOY_PROBLEMS.values()]
