"""What a loss-surface grid is: its coordinates and points, its settings and its result.

Owns the checked coordinates of a 1-D or 2-D grid and its points as coefficient rows
(:class:`Grid`), how a grid is evaluated and kept (:class:`SurfaceSettings`, the keyword
arguments of the surfaces, checked once where they enter) and the result (:class:`LandscapeGrid`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

import numpy as np

from .._checks import check_grid, check_int
from .evaluator import check_first_layer

__all__ = ["LandscapeGrid", "SurfaceSettings"]


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
        ``accuracy``.

        Returns:
            A ``pandas.DataFrame`` of ``points`` rows (alpha-major for a 2-D grid).
        """
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
        what ``surface_2d(..., settings=s, chunk_size=8)`` means.

        Args:
            settings: the settings to start from, or None for the defaults.
            options: field names -> new values.

        Returns:
            New :class:`SurfaceSettings` (not yet checked: see :meth:`checked`).

        Raises:
            ValueError: ``settings`` is neither None nor a :class:`SurfaceSettings`.
            TypeError: ``options`` names a field that does not exist.
        """
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
        """These settings, validated (ValueError naming the argument).

        Returns:
            ``self``.

        Raises:
            ValueError: an invalid ``chunk_size``, ``memory``, ``cache_key``, ``first_layer`` or
                ``client`` (not a running ``dask.distributed.Client``).
        """
        if self.chunk_size is not None:
            check_int("chunk_size", self.chunk_size, 1)
        elif self.memory is not None:  # it sizes the automatic chunks only
            check_int("memory", self.memory, 1)
        if self.cache_key is not None and not (isinstance(self.cache_key, str) and self.cache_key):
            raise ValueError(f"Invalid cache_key: {self.cache_key!r} (expected a non-empty string)")
        check_first_layer(self.first_layer)
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
class Grid:
    """The coordinates of a 1-D (``betas`` None) or 2-D grid and its points as coefficient rows
    ``(alpha,)`` or ``(alpha, beta)``, alpha-major."""

    alphas: np.ndarray
    betas: np.ndarray | None

    @classmethod
    def of(cls, alphas, betas) -> Grid:
        """The grid of ``alphas`` (and ``betas``), checked.

        Args:
            alphas: the first coordinate, a non-empty 1-D sequence of finite numbers.
            betas: the second coordinate, likewise, or None for a 1-D grid.

        Returns:
            The :class:`Grid`, with float64 coordinates.

        Raises:
            ValueError: ``alphas`` or ``betas`` is not a non-empty 1-D sequence of finite
                numbers; the message names it.

        Example:
            >>> grid = Grid.of([-1.0, 0.0, 1.0], [0.0, 0.5])
            >>> grid.shape, grid.coefficients[:2].tolist()
            ((3, 2), [[-1.0, 0.0], [-1.0, 0.5]])
        """
        return cls(
            check_grid("alphas", alphas), None if betas is None else check_grid("betas", betas)
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
        """What the cache keeps of a computed grid.

        Args:
            loss: the losses at the points, in :attr:`coefficients` order, ``points`` entries.
            accuracy: the accuracies, likewise.

        Returns:
            ``alphas``, ``betas`` (empty for a 1-D grid), and ``loss`` and ``accuracy`` reshaped to
            :attr:`shape`.
        """
        return {
            "alphas": self.alphas,
            "betas": np.zeros(0) if self.betas is None else self.betas,
            "loss": loss.reshape(self.shape),
            "accuracy": accuracy.reshape(self.shape),
        }

    def fits(self, arrays) -> bool:
        """Whether cached ``arrays`` are those of this grid.

        Args:
            arrays: a mapping as :meth:`arrays` returns it.

        Returns:
            True when the coordinates are equal and the shapes those of this grid; False otherwise,
            also when a key is missing.

        Example:
            >>> import numpy as np
            >>> grid = Grid.of([0.0, 1.0], None)
            >>> grid.fits(grid.arrays(np.zeros(2), np.zeros(2))), grid.fits({})
            (True, False)
        """
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
